//! The list workloads: paged lists of a large prefix, counts of it, and whole lists while a few hot
//! keys are updated: the range reads kube-apiserver makes all day.
//!
//! A list walks the prefix in pages of `--page-size` keys: the first page at the current revision,
//! each next one from just past the last key returned, at the first page's revision, as
//! kube-apiserver's continue tokens do. Every walk is checked, not just timed: its keys rise
//! strictly, all belong to the run's key set, and a finished walk has seen every key of it once
//! (the workloads never create or delete keys while they list).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use etcd_client::{Client, GetOptions, GetResponse};
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use crate::driver::{OpDone, OpFailure, OpResult};
use crate::workload::{Plan, SplitMix64};

/// Where a paged walk of the prefix stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    /// The first key of the next page.
    next: Vec<u8>,
    /// The revision of the walk's first page, which the next pages read at.
    revision: i64,
    /// Keys returned so far.
    seen: u64,
    /// The last key returned, which the next page's keys must follow.
    last: Option<Vec<u8>>,
}

/// The end of the span of all keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Walk {
    fn start(plan: &Plan) -> Walk {
        Walk { next: plan.prefix.as_bytes().to_vec(), revision: 0, seen: 0, last: None }
    }

    /// Takes in one page's answer: `Ok(true)` when the walk is finished (and complete).
    fn take(&mut self, plan: &Plan, response: &GetResponse) -> Result<bool, String> {
        let revision = response.header().map_or(0, |h| h.revision());
        self.take_page(plan, revision, response.kvs().iter().map(|kv| kv.key()), response.more())
    }

    /// `take` for a page's parts: its revision, keys and whether there are more.
    fn take_page<'a>(
        &mut self,
        plan: &Plan,
        revision: i64,
        keys: impl IntoIterator<Item = &'a [u8]>,
        more: bool,
    ) -> Result<bool, String> {
        if self.revision == 0 {
            self.revision = revision;
        }
        for key in keys {
            if plan.key_index(key).is_none_or(|i| i >= plan.key_space) {
                return Err(format!("a key the run never wrote: {}", String::from_utf8_lossy(key)));
            }
            if self.last.as_deref().is_some_and(|last| key <= last) {
                return Err(format!("key {} out of order", String::from_utf8_lossy(key)));
            }
            self.last = Some(key.to_vec());
            self.seen += 1;
        }
        match (more, &self.last) {
            (true, Some(last)) => {
                self.next = last.iter().copied().chain([0]).collect();
                Ok(false)
            }
            (true, None) => Err("an empty page that says there is more".to_string()),
            (false, _) if self.seen != plan.key_space => Err(format!(
                "a whole list at revision {} has {} keys, not {}",
                self.revision, self.seen, plan.key_space
            )),
            (false, _) => Ok(true),
        }
    }

    /// The next page's request.
    fn options(&self, plan: &Plan) -> GetOptions {
        let options = GetOptions::new().with_range(prefix_end(plan.prefix.as_bytes())).with_limit(plan.page_size);
        if self.revision > 0 { options.with_revision(self.revision) } else { options }
    }
}

/// One page of a walk; the walk starts over once it is finished.
pub(crate) async fn page(client: &mut Client, plan: &Plan, walk: &mut Option<Walk>) -> OpResult {
    let current = walk.get_or_insert_with(|| Walk::start(plan));
    let response = client
        .get(current.next.clone(), Some(current.options(plan)))
        .await
        .map_err(|e| OpFailure::new(e.to_string()))?;
    let keys = response.kvs().len() as u64;
    match current.take(plan, &response) {
        Ok(finished) => {
            if finished {
                *walk = None;
            }
            Ok(OpDone { pages: 1, keys_read: keys, ..OpDone::default() })
        }
        Err(e) => {
            *walk = None;
            Err(OpFailure::new(e))
        }
    }
}

/// One whole paged list of the prefix.
pub(crate) async fn whole(client: &mut Client, plan: &Plan) -> OpResult {
    let mut walk = Walk::start(plan);
    let mut done = OpDone::default();
    // A bound on the pages: a server that always says "more" ends the op, not the run.
    let pages_max = plan.key_space / plan.page_size.max(1) as u64 + 2;
    for _ in 0..pages_max {
        let response =
            client.get(walk.next.clone(), Some(walk.options(plan))).await.map_err(|e| OpFailure::new(e.to_string()))?;
        done.pages += 1;
        done.keys_read += response.kvs().len() as u64;
        if walk.take(plan, &response).map_err(OpFailure::new)? {
            return Ok(done);
        }
    }
    Err(OpFailure::new(format!("the list did not end after {pages_max} pages")))
}

/// One count of the prefix's keys (`count_only`).
pub(crate) async fn count(client: &mut Client, plan: &Plan) -> OpResult {
    let options = GetOptions::new().with_prefix().with_count_only();
    let response =
        client.get(plan.prefix.as_bytes(), Some(options)).await.map_err(|e| OpFailure::new(e.to_string()))?;
    if response.count() as u64 != plan.key_space || !response.kvs().is_empty() {
        return Err(OpFailure::new(format!(
            "count_only gave {} (with {} key-values), not {}",
            response.count(),
            response.kvs().len(),
            plan.key_space
        )));
    }
    Ok(OpDone { pages: 1, ..OpDone::default() })
}

/// The hot keys' writers of list-hot, running until stopped.
pub(crate) struct HotWriters {
    stop: Arc<AtomicBool>,
    puts: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Option<String>>>,
}

impl HotWriters {
    /// Starts `--hot-writers` clients (over the connections of `pool`) putting random hot keys.
    pub(crate) fn start(plan: &Plan, pool: &[Client], value: &[u8]) -> HotWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let puts = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + plan.duration_max;
        let tasks = (0..plan.hot_writers)
            .map(|w| {
                let (mut client, plan, value) = (pool[w as usize % pool.len()].clone(), plan.clone(), value.to_vec());
                let (stop, puts) = (stop.clone(), puts.clone());
                tokio::spawn(async move {
                    let mut rng = SplitMix64(0x407 + u64::from(w));
                    while !stop.load(Ordering::Relaxed) {
                        let key = plan.key(rng.below(plan.hot_keys));
                        match timeout_at(deadline.into(), client.put(key.as_str(), value.clone(), None)).await {
                            Ok(Ok(_)) => puts.fetch_add(1, Ordering::Relaxed),
                            Ok(Err(e)) => return Some(format!("hot writer: put {key}: {e}")),
                            Err(_) => return Some("hot writer: ran past --duration-max-secs".to_string()),
                        };
                    }
                    None
                })
            })
            .collect();
        HotWriters { stop, puts, tasks }
    }

    /// Stops the writers: the puts they made and the first error of one that failed.
    pub(crate) async fn stop(self) -> (u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut error = None;
        for task in self.tasks {
            let failed = task.await.unwrap_or_else(|e| Some(format!("hot writer failed: {e}")));
            error = error.or(failed);
        }
        (self.puts.load(Ordering::Relaxed), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tests::plan;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"/bench/"), b"/bench0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    fn keys(p: &Plan, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        range.map(|i| p.key(i).into_bytes()).collect()
    }

    #[test]
    fn a_walk_pins_the_first_revision_and_continues_past_the_last_key() {
        let p = plan(); // ten keys
        let mut walk = Walk::start(&p);
        assert_eq!(walk.next, b"/bench/".to_vec());
        let page = keys(&p, 0..4);
        assert_eq!(walk.take_page(&p, 7, page.iter().map(Vec::as_slice), true), Ok(false));
        assert_eq!(walk.revision, 7);
        assert_eq!(walk.next, [p.key(3).as_bytes(), &[0]].concat());
        let page = keys(&p, 4..10);
        assert_eq!(walk.take_page(&p, 9, page.iter().map(Vec::as_slice), false), Ok(true));
        assert_eq!(walk.revision, 7, "later pages read at the first page's revision");
    }

    #[test]
    fn a_short_walk_fails() {
        let p = plan();
        let mut walk = Walk::start(&p);
        let page = keys(&p, 0..9);
        let e = walk.take_page(&p, 7, page.iter().map(Vec::as_slice), false).unwrap_err();
        assert!(e.contains("has 9 keys, not 10"), "{e}");
    }

    #[test]
    fn repeated_or_foreign_keys_fail() {
        let p = plan();
        let mut walk = Walk::start(&p);
        let page = keys(&p, 0..4);
        walk.take_page(&p, 7, page.iter().map(Vec::as_slice), true).unwrap();
        let again = keys(&p, 3..5);
        assert!(walk.take_page(&p, 7, again.iter().map(Vec::as_slice), true).unwrap_err().contains("out of order"));
        let mut walk = Walk::start(&p);
        let foreign = [p.key(10).into_bytes()];
        assert!(walk.take_page(&p, 7, foreign.iter().map(Vec::as_slice), true).unwrap_err().contains("never wrote"));
        let mut walk = Walk::start(&p);
        assert!(walk.take_page(&p, 7, [], true).unwrap_err().contains("empty page"));
    }
}
