//! `grpc.health.v1.Health` on the client port (Kubernetes' gRPC probes): SERVING while the node
//! answers reads with no alarm, NOT_SERVING while an alarm stands, NOT_FOUND for a service it does
//! not serve; a Watch reports each change.

mod common;

use std::time::Duration;

use common::Server;
use t4::proto::etcdserverpb::alarm_request::AlarmAction;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{AlarmRequest, AlarmType};
use t4::proto::grpc_health::health_check_response::ServingStatus;
use t4::proto::grpc_health::health_client::HealthClient;
use t4::proto::grpc_health::{HealthCheckRequest, HealthCheckResponse};

/// The watch's next answer, waited for at most 10 s.
async fn next(watch: &mut tonic::Streaming<HealthCheckResponse>) -> HealthCheckResponse {
    let message = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("an answer in time");
    message.expect("the watch goes on").expect("not ended")
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_string() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_the_nodes_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let channel = common::channel(&server.endpoint).await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut maintenance = MaintenanceClient::new(channel);
    let status = |r: tonic::Response<HealthCheckResponse>| r.into_inner().status;
    assert_eq!(status(health.check(check("")).await.unwrap()), ServingStatus::Serving as i32);
    assert_eq!(status(health.check(check("etcdserverpb.KV")).await.unwrap()), ServingStatus::Serving as i32);
    let unknown = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = next(&mut watch).await;
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let alarm =
        |action: AlarmAction| AlarmRequest { action: action as i32, member_id: 0, alarm: AlarmType::Nospace as i32 };
    maintenance.alarm(alarm(AlarmAction::Activate)).await.unwrap();
    assert_eq!(status(health.check(check("")).await.unwrap()), ServingStatus::NotServing as i32);
    let changed = next(&mut watch).await;
    assert_eq!(changed.status, ServingStatus::NotServing as i32, "the watch reports the alarm");

    maintenance.alarm(alarm(AlarmAction::Deactivate)).await.unwrap();
    let back = next(&mut watch).await;
    assert_eq!(back.status, ServingStatus::Serving as i32, "and its end");
}
