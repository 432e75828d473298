//! gRPC calls counted as go-grpc-prometheus (which etcd uses) counts them: by service, method and
//! code, and how long each took. Invariant: a call counts once, with the last code it was given,
//! or as `Canceled` if it never got one (its client went away).

use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use tonic::Code;

use super::Metrics;
use super::encode::{Encoded, encode_histogram};
use super::histogram::{GRPC_SECONDS, HistogramTotal, NANOS_PER_SECOND};

/// The gRPC methods counted, as (service, method, type): etcd's services and the health checks.
pub(super) const GRPC_METHODS: [(&str, &str, &str); 49] = [
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];
/// gRPC status codes 0 (OK) through 16 (Unauthenticated).
pub(super) const GRPC_CODES: usize = 17;

impl Metrics {
    /// The index of a gRPC request path (`/package.Service/Method`) among the counted methods.
    pub fn grpc_method(path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS.iter().position(|(s, m, _)| *s == service && *m == method)
    }

    /// Counts a call of method `method` answered with `code` after `took`, on the calling core.
    pub fn grpc_handled(&self, method: usize, code: Code, took: std::time::Duration) {
        let core = self.core();
        core.handled[method][(code as usize).min(GRPC_CODES - 1)].fetch_add(1, Ordering::Relaxed);
        core.handling[method].observe_duration(took);
    }
}

/// One call being served, counted once: with the code it was given when it ends, or as `Canceled`
/// if it is dropped first (the client went away).
pub struct CallRecord {
    metrics: Metrics,
    method: usize,
    started: std::time::Instant,
    code: Option<Code>,
}

impl CallRecord {
    /// Starts timing a call of `method` (an index from [`Metrics::grpc_method`]).
    pub fn start(metrics: &Metrics, method: usize) -> CallRecord {
        CallRecord { metrics: metrics.clone(), method, started: std::time::Instant::now(), code: None }
    }

    /// Sets the code the call ends with (the last one set counts).
    pub fn set_code(&mut self, code: Code) {
        self.code = Some(code);
    }

    /// Whether a code is set.
    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.metrics.grpc_handled(self.method, code, self.started.elapsed());
    }
}

fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; GRPC_CODES] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES[code]
}

impl Metrics {
    /// grpc_server_handled_total and grpc_server_handling_seconds, as go-grpc-prometheus (which etcd
    /// uses) names and labels them.
    pub(super) fn encode_grpc(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let cores = &self.inner.cores;
        let mut handled = encoder.encode_descriptor(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            None,
            MetricType::Counter,
        )?;
        for (m, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            for code in 0..GRPC_CODES {
                let total: u64 = cores.iter().map(|c| c.handled[m][code].load(Ordering::Relaxed)).sum();
                if total == 0 {
                    continue;
                }
                let labels = [
                    ("grpc_code", code_name(code)),
                    ("grpc_method", method),
                    ("grpc_service", service),
                    ("grpc_type", kind),
                ];
                ConstCounter::new(total).encode(handled.encode_family(&labels)?)?;
            }
        }
        let mut handling = encoder.encode_descriptor(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            None,
            MetricType::Histogram,
        )?;
        for (m, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            let mut total = HistogramTotal::new(GRPC_SECONDS);
            for core in cores.iter() {
                core.handling[m].add_to(&mut total);
            }
            if total.count() == 0 {
                continue;
            }
            let labels = [("grpc_method", *method), ("grpc_service", *service), ("grpc_type", *kind)];
            encode_histogram(&mut handling.encode_family(&labels)?, &total, NANOS_PER_SECOND)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::Alarms;

    fn handled(metrics: &Metrics, method: usize, code: Code) -> u64 {
        metrics.inner.cores.iter().map(|core| core.handled[method][code as usize].load(Ordering::Relaxed)).sum()
    }

    #[test]
    fn a_call_counts_once_with_its_last_code_or_as_canceled_if_it_never_got_one() {
        let metrics = Metrics::new(2, Alarms::default());
        let put = Metrics::grpc_method("/etcdserverpb.KV/Put").expect("Put is counted");
        assert_eq!(Metrics::grpc_method("/etcdserverpb.KV/Nothing"), None);
        let mut answered = CallRecord::start(&metrics, put);
        answered.set_code(Code::Unknown);
        answered.set_code(Code::Ok);
        drop(answered);
        drop(CallRecord::start(&metrics, put));
        assert_eq!(handled(&metrics, put, Code::Ok), 1);
        assert_eq!(handled(&metrics, put, Code::Cancelled), 1);
        assert_eq!(handled(&metrics, put, Code::Unknown), 0);
        let timed: u64 = metrics.inner.cores.iter().map(|core| core.handling[put].total().count()).sum();
        assert_eq!(timed, 2);
    }
}
