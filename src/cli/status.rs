//! `t4 status`: asks a running node (T4 or etcd) over the etcd API what `etcdctl endpoint status`
//! and `member list` show: revision, leader, db size, version, the node's role and the members.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use t4::proto::etcdserverpb::cluster_client::ClusterClient;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{Member, MemberListRequest, StatusRequest, StatusResponse};

use crate::cli::grpc::{Channel, origin};
use crate::cli::output::{Format, Table, fields, print_json, print_text};

#[derive(Debug, clap::Args)]
#[command(after_long_help = STATUS_JSON_HELP)]
pub struct StatusArgs {
    /// The node's etcd gRPC address: HOST:PORT (or http://HOST:PORT).
    #[arg(long, env = "T4_ENDPOINT", default_value = t4::defaults::DEFAULT_LISTEN)]
    endpoint: String,

    /// Print a table, or one JSON document with stable field names (see --help).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    output: Format,

    /// Milliseconds to wait for the node to connect and answer.
    #[arg(long, default_value_t = t4::defaults::DEFAULT_STATUS_TIMEOUT_MS)]
    timeout_ms: u64,
}

const STATUS_JSON_HELP: &str = "JSON (--output json): endpoint, version (the etcd API version served), \
db_size_bytes, db_size_in_use_bytes, revision, raft_term, raft_index, leader (member id; 0: none), member_id, \
cluster_id, role (\"leader\", \"follower\", \"learner\" or \"no leader\"), errors (the node's alarms and errors), \
members ([{id, name, client_urls, peer_urls, is_learner}]). Ids are integers in JSON and hex in the table.";

/// What one node said about itself and its cluster.
#[derive(Debug, Serialize)]
struct StatusDoc {
    endpoint: String,
    version: String,
    db_size_bytes: i64,
    db_size_in_use_bytes: i64,
    revision: i64,
    raft_term: u64,
    raft_index: u64,
    leader: u64,
    member_id: u64,
    cluster_id: u64,
    role: &'static str,
    errors: Vec<String>,
    members: Vec<MemberDoc>,
}

#[derive(Debug, Serialize)]
struct MemberDoc {
    id: u64,
    name: String,
    client_urls: Vec<String>,
    peer_urls: Vec<String>,
    is_learner: bool,
}

fn role(status: &StatusResponse, member_id: u64) -> &'static str {
    match status.leader {
        _ if status.is_learner => "learner",
        0 => "no leader",
        leader if leader == member_id => "leader",
        _ => "follower",
    }
}

fn status_doc(endpoint: &str, status: StatusResponse, members: Vec<Member>) -> StatusDoc {
    let header = status.header.unwrap_or_default();
    StatusDoc {
        endpoint: endpoint.to_string(),
        role: role(&status, header.member_id),
        version: status.version,
        db_size_bytes: status.db_size,
        db_size_in_use_bytes: status.db_size_in_use,
        revision: header.revision,
        raft_term: status.raft_term,
        raft_index: status.raft_index,
        leader: status.leader,
        member_id: header.member_id,
        cluster_id: header.cluster_id,
        errors: status.errors,
        members: members
            .into_iter()
            .map(|m| MemberDoc {
                id: m.id,
                name: m.name,
                client_urls: m.client_ur_ls,
                peer_urls: m.peer_ur_ls,
                is_learner: m.is_learner,
            })
            .collect(),
    }
}

fn status_table(doc: &StatusDoc) -> String {
    let list = |urls: &[String]| if urls.is_empty() { "-".to_string() } else { urls.join(",") };
    let mut out = fields(&[
        ("endpoint", doc.endpoint.clone()),
        ("version", doc.version.clone()),
        ("db_size_bytes", doc.db_size_bytes.to_string()),
        ("revision", doc.revision.to_string()),
        ("raft_term", doc.raft_term.to_string()),
        ("leader", format!("{:x}", doc.leader)),
        ("member_id", format!("{:x}", doc.member_id)),
        ("cluster_id", format!("{:x}", doc.cluster_id)),
        ("role", doc.role.to_string()),
        ("errors", if doc.errors.is_empty() { "none".to_string() } else { doc.errors.join("; ") }),
    ]);
    let mut members = Table::new(&["ID", "NAME", "CLIENT_URLS", "PEER_URLS", "LEARNER"]);
    for m in &doc.members {
        members.row(vec![
            format!("{:x}", m.id),
            m.name.clone(),
            list(&m.client_urls),
            list(&m.peer_urls),
            m.is_learner.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&members.render());
    out
}

/// Asks the node for its status and members.
async fn ask(origin: &tonic::codegen::http::Uri) -> Result<(StatusResponse, Vec<Member>), String> {
    let channel = Channel::connect(origin).await?;
    let status = MaintenanceClient::with_origin(channel.clone(), origin.clone())
        .status(StatusRequest {})
        .await
        .map_err(|e| format!("Status: {}", e.message()))?
        .into_inner();
    let members = ClusterClient::with_origin(channel, origin.clone())
        .member_list(MemberListRequest::default())
        .await
        .map_err(|e| format!("MemberList: {}", e.message()))?
        .into_inner()
        .members;
    Ok((status, members))
}

pub fn run(args: StatusArgs) -> ExitCode {
    match status(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("t4 status: error: {}: {message}", args.endpoint);
            ExitCode::FAILURE
        }
    }
}

fn status(args: &StatusArgs) -> Result<(), String> {
    let origin = origin(&args.endpoint)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let (status, members) = runtime
        .block_on(async { tokio::time::timeout(timeout, ask(&origin)).await })
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    let doc = status_doc(&args.endpoint, status, members);
    match args.output {
        Format::Json => print_json(&doc),
        Format::Table => print_text(&status_table(&doc)),
    }
    .map_err(|e| format!("cannot write the output: {e}"))
}
