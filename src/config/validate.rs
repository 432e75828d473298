//! What a node refuses to start with (checked before anything is created, naming the flag), and the
//! values the node derives from its settings: cores, quota, auto-compaction, advertised URLs.
//! Invariant: `Config::validate` runs before the data directory is touched, so a mistake costs nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::Config;
use super::limits::{DEFAULT_MAX_TXN_OPS, DEFAULT_QUOTA_BACKEND_BYTES};
use crate::error::Error;

impl Config {
    /// The executor count: the configured one, or every CPU this process may run on.
    pub fn cores(&self) -> usize {
        self.cores.unwrap_or_else(cpus_available).max(1)
    }

    /// Refuses settings a node cannot run with, naming the flag: checked by [`crate::Node::open`]
    /// before anything is created, so a mistake costs nothing.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |setting: &'static str, reason: String| Err(Error::Setting { setting, reason });
        if self.max_request_bytes == 0 {
            return invalid("--max-request-bytes", "must be at least 1 (etcd's default is 1572864)".into());
        }
        if self.max_txn_ops == 0 {
            return invalid("--max-txn-ops", format!("must be at least 1 (etcd's default is {DEFAULT_MAX_TXN_OPS})"));
        }
        if let Err(reason) = self.auto_compaction() {
            return invalid("--auto-compaction-retention", reason.to_string());
        }
        match self.cores {
            Some(0) => return invalid("--cores", "must be at least 1".into()),
            Some(cores) if cores > cpus_available() => {
                let cpus = cpus_available();
                return invalid("--cores", format!("{cores} is more than the {cpus} CPUs this process may run on"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The space quota (`--quota-backend-bytes`): `None` for none.
    pub fn quota_bytes(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            quota if quota < 0 => None,
            quota => Some(quota as u64),
        }
    }

    /// What auto-compaction keeps (`None`: it is off), or why the flags do not say.
    pub fn auto_compaction(
        &self,
    ) -> Result<Option<crate::auto_compaction::Retention>, crate::auto_compaction::RetentionError> {
        let check = Duration::from_millis(self.auto_compaction_revision_check_ms.max(1));
        crate::auto_compaction::Retention::parse(&self.auto_compaction_mode, &self.auto_compaction_retention, check)
    }

    /// The client URLs MemberList reports for a node serving at `bound`: the configured ones, or
    /// the bound address with 127.0.0.1 (or ::1) standing in for an unspecified IP. Loopback is
    /// what etcd advertises by default (`http://localhost:2379`); a host name or interface address
    /// picked for the user could name the wrong network, so reaching the node from elsewhere
    /// through MemberList takes `--advertise-client-urls`, as with etcd.
    pub fn client_urls(&self, bound: Option<SocketAddr>) -> Vec<String> {
        if !self.advertise_client_urls.is_empty() {
            return self.advertise_client_urls.clone();
        }
        bound.map(|addr| vec![format!("http://{}", advertisable(addr))]).unwrap_or_default()
    }
}

/// The CPUs this process may run on (its affinity and cgroup limits included).
pub fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `addr` with the loopback address of its family in place of an unspecified IP.
fn advertisable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_advertised_as_loopback() {
        let config = Config::new("d");
        assert_eq!(config.client_urls(Some("0.0.0.0:2379".parse().unwrap())), ["http://127.0.0.1:2379"]);
        assert_eq!(config.client_urls(Some("[::]:2379".parse().unwrap())), ["http://[::1]:2379"]);
        assert_eq!(config.client_urls(Some("10.0.0.5:2379".parse().unwrap())), ["http://10.0.0.5:2379"]);
        assert_eq!(config.client_urls(None), Vec::<String>::new());
    }
    #[test]
    fn zero_limits_and_too_many_cores_are_refused() {
        let valid = Config::new("d");
        assert!(valid.validate().is_ok());
        let refused = |change: fn(&mut Config)| {
            let mut config = valid.clone();
            change(&mut config);
            match config.validate() {
                Err(Error::Setting { setting, .. }) => setting,
                other => panic!("accepted: {other:?}"),
            }
        };
        assert_eq!(refused(|c| c.max_request_bytes = 0), "--max-request-bytes");
        assert_eq!(refused(|c| c.max_txn_ops = 0), "--max-txn-ops");
        assert_eq!(refused(|c| c.cores = Some(0)), "--cores");
        assert_eq!(refused(|c| c.cores = Some(cpus_available() + 1)), "--cores");
    }
}
