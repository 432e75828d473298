//! `grpc.health.v1.Health` (what Kubernetes' gRPC probes and load balancers call): SERVING when the
//! node answers reads and no alarm stands, as `/health` says `true`; NOT_FOUND for a service name the
//! node does not serve, as the protocol asks.

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Services;
use crate::mvcc::VersionReader;
use crate::proto::grpc_health::health_check_response::ServingStatus;
use crate::proto::grpc_health::health_server::Health;
use crate::proto::grpc_health::{HealthCheckRequest, HealthCheckResponse};

/// The names a health check may ask about: the whole node (""), or one of its services.
const SERVICES: [&str; 6] = [
    "",
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Cluster",
];

impl Services {
    /// Whether the node answers a read now (a snapshot of the store at its current revision).
    pub async fn serves_reads(&self) -> bool {
        let store = self.store.clone();
        let read = self
            .reads
            .run(move || -> crate::Result<crate::ids::Revision> { Ok(store.read_view()?.current_revision()) });
        matches!(read.await, Ok(Ok(_)))
    }

    /// What `/health` and the gRPC health service say: reads work and no alarm stands.
    pub async fn is_healthy(&self) -> bool {
        self.alarms.raised().is_empty() && self.serves_reads().await
    }

    async fn serving_status(&self) -> ServingStatus {
        if self.is_healthy().await { ServingStatus::Serving } else { ServingStatus::NotServing }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for Services {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            return Err(super::status::health_service_unknown());
        }
        Ok(Response::new(answer(self.serving_status().await)))
    }

    /// The status now, then each change, until the node shuts down (SERVICE_UNKNOWN once for a name
    /// the node does not serve, as the protocol asks).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<BoxStream<HealthCheckResponse>>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            let once = futures_lite::stream::once(Ok(answer(ServingStatus::ServiceUnknown)));
            return Ok(Response::new(Box::pin(once.chain(futures_lite::stream::pending()))));
        }
        let state = (self.clone(), self.alarms.changes(), None::<ServingStatus>);
        let changes = futures_lite::stream::unfold(state, |(services, mut alarms, last)| async move {
            let mut shutdown = services.shutdown.clone();
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let now = services.serving_status().await;
                if last != Some(now) {
                    return Some((Ok(answer(now)), (services, alarms, Some(now))));
                }
                // The status follows the alarms: look again when one is raised or disarmed.
                let changed = async { alarms.changed().await.is_ok() };
                let stop = async {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                    false
                };
                if !futures_lite::future::or(stop, changed).await {
                    return None;
                }
            }
        });
        Ok(Response::new(Box::pin(changes)))
    }
}

use futures_lite::StreamExt as _;
