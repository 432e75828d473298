//! The plain key-value ops (one put, one get) and the untimed writing of a key set.
//!
//! A get must find its key: every workload that reads draws from a set written before the timed
//! phase, so an empty answer is the server losing data, counted as an error.

use std::ops::Range;
use std::time::Instant;

use etcd_client::Client;
use tokio::time::timeout_at;

use crate::driver::{OpDone, OpFailure, OpResult};
use crate::workload::Plan;

/// One put.
pub(crate) async fn put(client: &mut Client, key: String, value: &[u8]) -> OpResult {
    match client.put(key, value, None).await {
        Ok(_) => Ok(OpDone::default()),
        Err(e) => Err(OpFailure::new(e.to_string())),
    }
}

/// One get of a key that must exist.
pub(crate) async fn get(client: &mut Client, key: String) -> OpResult {
    match client.get(key.as_bytes(), None).await {
        Ok(response) if response.kvs().is_empty() => Err(OpFailure::new(format!("key {key} not found"))),
        Ok(_) => Ok(OpDone::default()),
        Err(e) => Err(OpFailure::new(e.to_string())),
    }
}

/// The fewest writers of an untimed key set.
const WRITERS_MIN: u32 = 16;

/// Writes keys `keys` with `value` (untimed), `--clients` (at least `WRITERS_MIN`) at a time over
/// the connections.
pub(crate) async fn write_keys(plan: &Plan, pool: &[Client], keys: Range<u64>, value: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + plan.duration_max;
    // At least `WRITERS_MIN`, so a large set for a few clients does not take minutes.
    let writers = u64::from(plan.clients.max(WRITERS_MIN)).clamp(1, (keys.end.saturating_sub(keys.start)).max(1));
    let mut tasks = Vec::with_capacity(writers as usize);
    for w in 0..writers {
        let (mut client, plan, value) = (pool[w as usize % pool.len()].clone(), plan.clone(), value.to_vec());
        let mine = (keys.start + w..keys.end).step_by(writers as usize);
        tasks.push(tokio::spawn(async move {
            for i in mine {
                match timeout_at(deadline.into(), client.put(plan.key(i), value.clone(), None)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("write {}: {e}", plan.key(i))),
                    Err(_) => return Err("writing the keys ran past --duration-max-secs".to_string()),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("key writer failed: {e}"))??;
    }
    Ok(())
}
