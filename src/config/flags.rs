//! Parsers of the flags clap cannot read alone: listen addresses (IP or a name resolved at start),
//! the metrics address (also etcd's `http://` form) and advertised client URLs. Each refuses with a
//! message naming the form it expects.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `--listen`: an IP address and port, or a host name and port resolved now.
pub(super) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut resolved = text
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT (e.g. 127.0.0.1:3379 or localhost:3379): {e}"))?;
    resolved.next().ok_or_else(|| format!("{text} resolves to no address"))
}

/// Parses `--listen-metrics`: `HOST:PORT`, or etcd's form `http://HOST:PORT`.
pub(super) fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if text.starts_with("https://") {
        return Err(format!("{text}: the metrics port serves plain http (TLS is not built yet)"));
    }
    let addr = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
    parse_listen_addr(addr)
}

/// Parses one `--advertise-client-urls` entry: `http://` or `https://`, a host and a port.
pub(super) fn parse_client_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("{text}: expected a URL starting with http:// or https://"))?;
    let authority = rest.trim_end_matches('/');
    let port = authority.rsplit_once(':').map(|(_, port)| port);
    if authority.contains('/') || port.is_none_or(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{text}: expected http://HOST:PORT"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_urls_need_a_scheme_a_host_and_a_port() {
        assert_eq!(parse_client_url("http://db1:2379/").as_deref(), Ok("http://db1:2379"));
        assert_eq!(parse_client_url("https://[::1]:2379").as_deref(), Ok("https://[::1]:2379"));
        for bad in ["db1:2379", "http://db1", "http://db1:port", "http://db1:2379/path", "unix://x:1"] {
            assert!(parse_client_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn listen_resolves_names_and_takes_addresses() {
        assert_eq!(parse_listen_addr("127.0.0.1:0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert!(parse_listen_addr("localhost:3379").is_ok_and(|addr| addr.ip().is_loopback() && addr.port() == 3379));
        assert!(parse_listen_addr("3379").is_err());
    }
}
