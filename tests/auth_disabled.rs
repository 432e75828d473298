//! The Auth service with authentication disabled, membership changes on a single member, and every
//! call T4 does not serve yet, differentially against etcd 3.4: the same calls go to both and the
//! answers must be equal field by field (header ids and raft terms aside), errors by code and
//! message. Where T4 answers otherwise on purpose (it cannot store users and roles, or add members;
//! it knows etcd 3.5's AuthStatus), the test pins both answers.

mod common;

use common::answers::{assert_same_answers, grpc_answer};
use common::{Server, channel};
use serde_json::{Value, json};
use t4::proto::authpb::Permission;
use t4::proto::etcdserverpb::auth_client::AuthClient;
use t4::proto::etcdserverpb::cluster_client::ClusterClient;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::*;
use tonic::Code;
use tonic::transport::Channel;

/// One server's clients.
struct Clients {
    auth: AuthClient<Channel>,
    cluster: ClusterClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    channel: Channel,
    /// The server's own member id.
    member_id: u64,
}

async fn clients(server: &Server) -> Clients {
    let channel = channel(&server.endpoint).await.expect("connect");
    let mut cluster = ClusterClient::new(channel.clone());
    let members = cluster.member_list(MemberListRequest::default()).await.expect("member list").into_inner();
    Clients {
        auth: AuthClient::new(channel.clone()),
        cluster,
        maintenance: MaintenanceClient::new(channel.clone()),
        member_id: members.members[0].id,
        channel,
    }
}

/// The calls both servers must answer alike, each with its name; `c` is the server's clients.
async fn same_answers(c: &mut Clients) -> Vec<(&'static str, Value)> {
    let user = |name: &str| name.to_string();
    let perm = Some(Permission { perm_type: 0, key: b"k".to_vec(), range_end: vec![] });
    let own_id = c.member_id;
    let other_id = own_id ^ 0x5555;
    vec![
        ("AuthDisable", grpc_answer(c.auth.auth_disable(AuthDisableRequest {}).await)),
        (
            "Authenticate",
            grpc_answer(c.auth.authenticate(AuthenticateRequest { name: user("root"), password: user("pw") }).await),
        ),
        ("AuthEnable", grpc_answer(c.auth.auth_enable(AuthEnableRequest {}).await)),
        ("UserList", grpc_answer(c.auth.user_list(AuthUserListRequest {}).await)),
        ("UserGet", grpc_answer(c.auth.user_get(AuthUserGetRequest { name: user("u") }).await)),
        ("UserGet root", grpc_answer(c.auth.user_get(AuthUserGetRequest { name: user("root") }).await)),
        ("UserDelete", grpc_answer(c.auth.user_delete(AuthUserDeleteRequest { name: user("u") }).await)),
        (
            "UserChangePassword",
            grpc_answer(
                c.auth
                    .user_change_password(AuthUserChangePasswordRequest {
                        name: user("u"),
                        password: user("p"),
                        ..Default::default()
                    })
                    .await,
            ),
        ),
        (
            "UserGrantRole",
            grpc_answer(c.auth.user_grant_role(AuthUserGrantRoleRequest { user: user("u"), role: user("r") }).await),
        ),
        (
            "UserRevokeRole",
            grpc_answer(c.auth.user_revoke_role(AuthUserRevokeRoleRequest { name: user("u"), role: user("r") }).await),
        ),
        ("UserAdd empty", grpc_answer(c.auth.user_add(AuthUserAddRequest::default()).await)),
        ("RoleList", grpc_answer(c.auth.role_list(AuthRoleListRequest {}).await)),
        ("RoleGet", grpc_answer(c.auth.role_get(AuthRoleGetRequest { role: user("r") }).await)),
        ("RoleGet root", grpc_answer(c.auth.role_get(AuthRoleGetRequest { role: user("root") }).await)),
        ("RoleDelete", grpc_answer(c.auth.role_delete(AuthRoleDeleteRequest { role: user("r") }).await)),
        (
            "RoleGrantPermission",
            grpc_answer(c.auth.role_grant_permission(AuthRoleGrantPermissionRequest { name: user("r"), perm }).await),
        ),
        (
            "RoleRevokePermission",
            grpc_answer(
                c.auth
                    .role_revoke_permission(AuthRoleRevokePermissionRequest {
                        role: user("r"),
                        key: b"k".to_vec(),
                        range_end: vec![],
                    })
                    .await,
            ),
        ),
        ("RoleAdd empty", grpc_answer(c.auth.role_add(AuthRoleAddRequest::default()).await)),
        ("MemberRemove self", grpc_answer(c.cluster.member_remove(MemberRemoveRequest { id: own_id }).await)),
        ("MemberRemove other", grpc_answer(c.cluster.member_remove(MemberRemoveRequest { id: other_id }).await)),
        ("MemberRemove 0", grpc_answer(c.cluster.member_remove(MemberRemoveRequest { id: 0 }).await)),
        (
            "MemberUpdate other",
            grpc_answer(
                c.cluster
                    .member_update(MemberUpdateRequest { id: other_id, peer_ur_ls: vec!["http://127.0.0.1:1".into()] })
                    .await,
            ),
        ),
        ("MemberPromote self", grpc_answer(c.cluster.member_promote(MemberPromoteRequest { id: own_id }).await)),
        ("MemberPromote other", grpc_answer(c.cluster.member_promote(MemberPromoteRequest { id: other_id }).await)),
        ("MemberAdd no URL", grpc_answer(c.cluster.member_add(MemberAddRequest::default()).await)),
        (
            "MemberAdd bad URL",
            grpc_answer(
                c.cluster.member_add(MemberAddRequest { peer_ur_ls: vec!["bad".into()], is_learner: false }).await,
            ),
        ),
        (
            "MemberAdd URL without port",
            grpc_answer(
                c.cluster
                    .member_add(MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1".into()], is_learner: true })
                    .await,
            ),
        ),
        ("unknown method", raw_call(&c.channel, "/etcdserverpb.KV/Nope").await),
        ("unknown service", raw_call(&c.channel, "/etcdserverpb.Nope/Range").await),
    ]
}

/// Calls gRPC `path` with an empty message.
async fn raw_call(channel: &Channel, path: &'static str) -> Value {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc_answer(grpc.unary(tonic::Request::new(RangeRequest::default()), path, codec).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_membership_answer_as_a_single_etcd_with_auth_disabled() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let (mut on_etcd, mut on_t4) = (clients(&etcd).await, clients(&t4).await);
    let (want, got) = (same_answers(&mut on_etcd).await, same_answers(&mut on_t4).await);
    assert_same_answers(&want, &got);

    // On purpose, T4 answers these otherwise. It has no user or role store: etcd adds them even
    // with auth disabled, T4 says what it lacks.
    let unimplemented = |answer: Value, naming: &str| {
        assert_eq!(answer["code"], Code::Unimplemented as i32, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(naming) && message.contains("no user or role store"), "{message}");
    };
    let add_user = AuthUserAddRequest { name: "u".into(), password: "p".into(), ..Default::default() };
    assert!(on_etcd.auth.user_add(add_user.clone()).await.is_ok());
    unimplemented(grpc_answer(on_t4.auth.user_add(add_user).await), "UserAdd");
    let add_role = AuthRoleAddRequest { name: "r".into() };
    assert!(on_etcd.auth.role_add(add_role.clone()).await.is_ok());
    unimplemented(grpc_answer(on_t4.auth.role_add(add_role).await), "RoleAdd");
    // AuthStatus is etcd 3.5's; T4 answers it as 3.5 would, with the state 3.4 has.
    let status = grpc_answer(on_etcd.auth.auth_status(AuthStatusRequest {}).await);
    assert_eq!(status, json!({"code": 12, "message": "unknown method AuthStatus for service etcdserverpb.Auth"}));
    let status = grpc_answer(on_t4.auth.auth_status(AuthStatusRequest {}).await);
    assert_eq!(status["ok"]["authRevision"], "1", "{status}");
    assert!(status["ok"].get("enabled").is_none(), "disabled (false is left out): {status}");
    // Adding a member, or changing this one's peer URLs, needs clustering.
    let learner = MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1:9".into()], is_learner: true };
    let added = grpc_answer(on_t4.cluster.member_add(learner).await);
    assert_eq!(added["code"], Code::Unimplemented as i32, "{added}");
    assert!(added["message"].as_str().unwrap_or_default().contains("clustering"), "{added}");
    let update = MemberUpdateRequest { id: on_t4.member_id, peer_ur_ls: vec!["http://127.0.0.1:9".into()] };
    let updated = grpc_answer(on_t4.cluster.member_update(update).await);
    assert_eq!(updated["code"], Code::Unimplemented as i32, "{updated}");
}

/// A client that sends credentials works against T4 as against etcd with auth disabled: etcdctl
/// asks for a token, is told authentication is not enabled, and goes on without one.
#[test]
fn etcdctl_with_credentials_works_while_auth_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under_test(dir.path(), &[]);
    let run = |args: &[&str]| {
        let (ok, out, err) = server.etcdctl(&[&["--user", "root:pw"], args].concat());
        assert!(ok, "etcdctl --user root:pw {args:?} failed: {err}");
        out
    };
    assert_eq!(run(&["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(run(&["get", "foo"]), "foo\nbar\n");
    assert_eq!(run(&["user", "list"]), "");
    let (ok, _, err) = server.etcdctl(&["auth", "enable"]);
    assert!(!ok && err.contains("etcdserver: root user does not exist"), "{err}");
}

/// Every call T4 does not serve says what is missing, never an empty `Unimplemented`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_not_served_yet_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut maintenance = clients(&server).await.maintenance;
    let answers = [
        ("Hash", grpc_answer(maintenance.hash(HashRequest {}).await)),
        ("HashKV", grpc_answer(maintenance.hash_kv(HashKvRequest { revision: 0 }).await)),
        ("Defragment", grpc_answer(maintenance.defragment(DefragmentRequest {}).await)),
        ("MoveLeader", grpc_answer(maintenance.move_leader(MoveLeaderRequest { target_id: 1 }).await)),
        ("Downgrade", grpc_answer(maintenance.downgrade(DowngradeRequest::default()).await)),
        ("Snapshot", snapshot_answer(&mut maintenance).await),
    ];
    let mut unimplemented = 0;
    for (method, answer) in answers {
        if answer["code"] == Code::Unimplemented as i32 {
            unimplemented += 1;
            let message = answer["message"].as_str().unwrap_or_default();
            assert_eq!(message, format!("t4: etcdserverpb.Maintenance/{method} is not implemented yet"));
        }
    }
    assert!(unimplemented > 0, "some call is not served yet (else this test has nothing left to check)");
    let snapshot = common::http1::request(&server.endpoint, "POST", "/v3/maintenance/snapshot", b"{}");
    if snapshot.status == 501 {
        assert_eq!(snapshot.json()["message"], "t4: etcdserverpb.Maintenance/Snapshot is not implemented yet");
    }
}

async fn snapshot_answer(maintenance: &mut MaintenanceClient<Channel>) -> Value {
    match maintenance.snapshot(SnapshotRequest {}).await {
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(_) => json!({ "ok": "streams" }),
            Err(status) => json!({ "code": status.code() as i32, "message": status.message() }),
        },
        Err(status) => json!({ "code": status.code() as i32, "message": status.message() }),
    }
}
