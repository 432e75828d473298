//! The etcd v3 gRPC services: thin `Send` proxies that read a store snapshot or message an actor
//! (the sequencer, or a shard). The lock and election services are etcd's recipes on top of the
//! others. A method not built yet answers `Unimplemented` naming itself.

mod auth;
mod cluster;
pub(crate) mod codec;
mod concurrency;
mod convert;
mod election;
mod gateway;
mod header;
mod health;
pub mod http;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub mod status;
pub(crate) mod txn_wire;
pub mod validate;
mod watch;

use std::sync::Arc;

use tonic::server::NamedService;

use crate::config::GRPC_OVERHEAD_BYTES;
use crate::mvcc::Store;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::grpc_health::health_server::HealthServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::runtime::blocking::BlockingPool;
use crate::sequencer::SequencerHandle;
use crate::shard::ShardHandle;

/// The gRPC services [`Services::routes`] serves, by name.
const SERVED_SERVICES: &[&str] = &[
    <KvServer<Services> as NamedService>::NAME,
    <MaintenanceServer<Services> as NamedService>::NAME,
    <WatchServer<Services> as NamedService>::NAME,
    <LeaseServer<Services> as NamedService>::NAME,
    <AuthServer<Services> as NamedService>::NAME,
    <LockServer<Services> as NamedService>::NAME,
    <ElectionServer<Services> as NamedService>::NAME,
    <HealthServer<Services> as NamedService>::NAME,
    <ClusterServer<Services> as NamedService>::NAME,
];

/// What every service handler shares. Cheap to clone; owns no state of its own.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<Store>,
    pub sequencer: SequencerHandle,
    pub reads: BlockingPool,
    pub name: String,
    /// The client URLs MemberList reports (`--advertise-client-urls`, or the listen address).
    pub client_urls: Vec<String>,
    pub max_request_bytes: usize,
    /// What every write and range is validated against (`src/etcd/validate.rs`).
    pub limits: validate::Limits,
    /// One handle per core's shard actor, in core order.
    pub shards: Arc<[ShardHandle]>,
    /// The node's alarms and standing errors (Maintenance reports them; writes check NOSPACE).
    pub alarms: crate::alarms::Alarms,
    /// Counts of what the node served, for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Becomes true when the node shuts down (long-lived streams end then).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Services {
    /// All services as one router.
    pub fn routes(self) -> status::FrameLimitCompat<tonic::service::Routes> {
        let max_message = self.max_request_bytes + GRPC_OVERHEAD_BYTES;
        let metrics = self.metrics.clone();
        let routes = tonic::service::Routes::new(KvServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(MaintenanceServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(WatchServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(LeaseServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(AuthServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(LockServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(ElectionServer::new(self.clone()).max_decoding_message_size(max_message))
            .add_service(HealthServer::new(self.clone()))
            .add_service(ClusterServer::new(self));
        status::FrameLimitCompat { inner: routes, metrics, served_services: SERVED_SERVICES }
    }
}
