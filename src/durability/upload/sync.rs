//! The sync uploader's driver: holds the groups the sequencer hands over, turns channel events and
//! time into [`SyncInput`]s for the [`SyncPlan`], and does its effects (upload tasks, the committer,
//! callers' timeouts, the store's health). It decides nothing itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sync_plan::{GroupId, GroupSpan, SyncEffect, SyncInput, SyncLimits, SyncPlan, SyncReport, UploadId};
use super::{UploadError, UploaderConfig, WalObject, store_object};
use crate::alarms::Alarms;
use crate::durability::health;
use crate::metrics::UploadStats;
use crate::mvcc::store::LogPosition;
use crate::object::ObjectStore;
use crate::sequencer::{PendingGroup, StoreHealthReporter};

/// Bytes of records one WAL object holds at most in sync mode (a bigger backlog leaves as several).
const SYNC_OBJECT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Reports of upload tasks queued for the driver at most. A failed attempt that finds the queue full
/// is dropped (a newer one says enough); `Stored` and `Conflict` wait for room (the driver always
/// reads them, and neither may be lost).
const UPLOAD_REPORTS_MAX: usize = 64;
/// Longest sleep when the plan needs no tick: a bound, not a timer.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(3600);

/// The sync uploader's connections: groups in from the sequencer, out to the committer, the outage
/// flag the sequencer reads, and the node's shutdown signal (after which a store that stays down makes
/// the uploader give up within `wait_max`).
pub struct SyncChannels {
    pub input: flume::Receiver<PendingGroup>,
    pub output: flume::Sender<PendingGroup>,
    pub outage: StoreHealthReporter,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A group the plan knows by its [`GroupId`], with its records encoded once on arrival.
struct HeldGroup {
    group: PendingGroup,
    frames: Vec<u8>,
    first: Option<LogPosition>,
}

/// The groups not yet passed on, in arrival order: the front one is `front_id`.
struct HeldGroups {
    groups: VecDeque<HeldGroup>,
    front_id: u64,
}

impl HeldGroups {
    fn get_mut(&mut self, id: GroupId) -> &mut HeldGroup {
        let index = id.0.checked_sub(self.front_id).expect("the plan names groups not passed on yet") as usize;
        &mut self.groups[index]
    }

    /// The object holding `span`'s records.
    fn object(&mut self, span: GroupSpan) -> WalObject {
        let mut object = WalObject::default();
        for id in span.ids() {
            let held = self.get_mut(id);
            if let Some(first) = held.first {
                object.first.get_or_insert(first);
                object.bytes.extend_from_slice(&held.frames);
            }
        }
        object
    }

    /// Removes `span` from the front, in order.
    fn take_front(&mut self, span: GroupSpan) -> impl Iterator<Item = PendingGroup> + '_ {
        assert_eq!(span.first.0, self.front_id, "groups are passed on in arrival order");
        self.front_id += span.count;
        self.groups.drain(..span.count as usize).map(|held| held.group)
    }
}

/// What woke the driver.
enum Woken {
    Input(SyncInput),
    Groups(Vec<PendingGroup>),
}

/// The sync-mode uploader: takes evaluated groups from `input`, passes them to `output` in order once
/// each is in an object in `store`. Ends when `input` closes and everything is passed on, or, if the
/// store stays down, `wait_max` after `input` closed or the node began to stop (the groups left were
/// never acknowledged). Fails if the committer stops taking groups. An outage, and a conflict (which
/// refuses writes until the node restarts: another writer uses this term), are standing errors in
/// `alarms` too.
pub async fn run_sync(
    store: Arc<dyn ObjectStore>,
    config: UploaderConfig,
    channels: SyncChannels,
    stats: Arc<UploadStats>,
    alarms: Alarms,
) -> Result<(), UploadError> {
    let SyncChannels { input, output, outage, mut shutdown } = channels;
    let mut plan = SyncPlan::new(SyncLimits {
        max_in_flight: config.max_in_flight,
        min_interval: config.min_interval,
        wait_max: config.wait_max,
        object_bytes_max: SYNC_OBJECT_BYTES_MAX,
    });
    let mut held = HeldGroups { groups: VecDeque::new(), front_id: 0 };
    let (reports_tx, reports) = flume::bounded::<SyncInput>(UPLOAD_REPORTS_MAX);
    let (mut input_open, mut stopping) = (true, false);
    loop {
        let wait = plan.next_deadline().map_or(IDLE_WAIT_MAX, |at| at.saturating_duration_since(Instant::now()));
        let woken = tokio::select! {
            biased;
            report = reports.recv_async() => Woken::Input(report.expect("the driver holds a sender")),
            group = input.recv_async(), if input_open => match group {
                Ok(group) => Woken::Groups(std::iter::once(group).chain(input.try_iter()).collect()),
                Err(_) => {
                    input_open = false;
                    Woken::Input(SyncInput::InputClosed)
                }
            },
            _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                Woken::Input(SyncInput::Shutdown)
            }
            _ = tokio::time::sleep(wait) => Woken::Input(SyncInput::Tick),
        };
        let input = match woken {
            Woken::Input(input) => input,
            Woken::Groups(groups) => {
                let mut sizes = Vec::with_capacity(groups.len());
                for group in groups {
                    let first = group.records().first().map(|r| r.position());
                    let frames: Vec<u8> = group.records().iter().flat_map(|r| r.encode()).collect();
                    sizes.push(frames.len());
                    held.groups.push_back(HeldGroup { group, frames, first });
                }
                SyncInput::Arrived(sizes)
            }
        };
        for effect in plan.step(Instant::now(), input) {
            match effect {
                SyncEffect::StartUpload { upload, groups } => {
                    let object = held.object(groups);
                    let key = object.key(config.term).expect("the plan uploads only groups with records");
                    spawn_upload(store.clone(), key, object.bytes, stats.clone(), upload, reports_tx.clone());
                }
                SyncEffect::PassOn(groups) => {
                    fail::fail_point!("upload-pass-on", |_| Err(UploadError::Injected("upload-pass-on")));
                    for group in held.take_front(groups) {
                        output.send(group).map_err(|_| UploadError::CommitterGone)?;
                    }
                }
                SyncEffect::TimeOut(groups) => {
                    for id in groups {
                        held.get_mut(id).group.fail_replies(|| crate::Error::Timeout);
                    }
                }
                SyncEffect::Outage(reason) => set_outage(&outage, &alarms, reason),
                SyncEffect::Report(report) => log(report),
                SyncEffect::Stop { abandoned } => {
                    if abandoned > 0 {
                        tracing::error!(
                            groups = abandoned,
                            "stopping with writes not stored in object storage (never acknowledged)"
                        );
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// Stores one object in a task of its own, reporting to the driver.
fn spawn_upload(
    store: Arc<dyn ObjectStore>,
    key: String,
    bytes: Vec<u8>,
    stats: Arc<UploadStats>,
    upload: UploadId,
    reports: flume::Sender<SyncInput>,
) {
    tokio::spawn(async move {
        let failed = |error| {
            let _ = reports.try_send(SyncInput::AttemptFailed { upload, error });
        };
        let result = store_object(store.as_ref(), &key, bytes, &stats, failed).await;
        let report = match result {
            Ok(()) => SyncInput::Stored(upload),
            Err(error) => SyncInput::Conflict { upload, error },
        };
        let _ = reports.send_async(report).await;
    });
}

/// Sets or clears the outage (the sequencer refuses writes while it is set), and the standing error
/// `Status.errors` shows for it.
fn set_outage(outage: &StoreHealthReporter, alarms: &Alarms, reason: Option<String>) {
    let standing = reason.as_ref().map(|reason| format!("{reason}; writes are refused"));
    alarms.set_error(health::WAL_UPLOADS, standing);
    let healthy = reason.is_none();
    if let Some(reason) = &reason
        && outage.set(Some(reason.clone()))
    {
        tracing::error!(reason, "object store unavailable: refusing writes until uploads succeed again");
    }
    if healthy {
        tracing::info!("object store reachable again: taking writes");
        outage.set(None);
    }
}

fn log(report: SyncReport) {
    match report {
        SyncReport::Failing { error } => tracing::warn!(error, "WAL upload failed; retrying"),
        SyncReport::Recovered { failing_for } => {
            tracing::info!(failing_ms = failing_for.as_millis() as u64, "WAL uploads succeed again");
        }
        SyncReport::Fenced { error } => {
            tracing::error!(error, "WAL upload conflict: refusing all writes until the node restarts");
        }
    }
}
