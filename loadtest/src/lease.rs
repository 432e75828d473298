//! The lease-churn workload: the life of a short-lived lease, as a lock or a session would use it.
//!
//! One op grants a lease (TTL `--lease-ttl-secs`, far longer than the op, so only the revoke ends
//! it), puts a distinct key attached to it, and revokes it; that sequence is the op's latency.
//! Then, untimed, a get checks that the key went with the lease: a key that outlives its
//! lease's revoke is an error. A lease whose put fails is revoked all the same (best effort), so
//! failures do not pile up leases until their TTL.

use std::time::Instant;

use etcd_client::{Client, PutOptions};

use crate::driver::{OpDone, OpFailure, OpResult};
use crate::workload::Plan;

/// Grant, put with the lease, revoke; then check the key is gone.
pub(crate) async fn churn(client: &mut Client, plan: &Plan, key: String, value: &[u8]) -> OpResult {
    let began = Instant::now();
    let grant = client.lease_grant(plan.lease_ttl_secs, None).await.map_err(|e| failure("grant", &key, e))?;
    if !grant.error().is_empty() {
        return Err(OpFailure::new(format!("grant for {key}: {}", grant.error())));
    }
    let lease = grant.id();
    if let Err(e) = client.put(key.as_bytes(), value, Some(PutOptions::new().with_lease(lease))).await {
        let _ = client.lease_revoke(lease).await;
        return Err(failure("put", &key, e));
    }
    client.lease_revoke(lease).await.map_err(|e| failure("revoke", &key, e))?;
    let latency = began.elapsed();

    let left = client.get(key.as_bytes(), None).await.map_err(|e| failure("check", &key, e))?;
    if !left.kvs().is_empty() {
        return Err(OpFailure::new(format!("{key} is still there after its lease {lease:x} was revoked")));
    }
    Ok(OpDone { latency: Some(latency), ..OpDone::default() })
}

fn failure(step: &str, key: &str, e: etcd_client::Error) -> OpFailure {
    OpFailure::new(format!("lease {step} for {key}: {e}"))
}
