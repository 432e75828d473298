//! The sequencer when the store fails: a group whose commit fails is never acknowledged, and every later
//! write is refused (the store may hold a partial journal write), while the actor keeps answering.

use std::sync::Arc;

use super::{Grouping, Sequencer, SequencerHandle, SpaceGuard};
use crate::actor::Supervisor;
use crate::alarms::{Alarm, Alarms};
use crate::error::{Error, Internal, SequencerError};
use crate::ids::Revision;
use crate::kv::{DeleteRange, Put};
use crate::mvcc::{Store, VersionReader};

fn put(key: &str) -> Put {
    Put { key: key.into(), value: b"v".to_vec(), ..Default::default() }
}

async fn revision_of(handle: &SequencerHandle, key: &str) -> crate::Result<i64> {
    Ok(handle.put(put(key)).await?.revision.get())
}

/// Runs a sequencer over `store` with `space` on a glommio executor and `body` against its handle,
/// then stops it. Holds the fault-point lock throughout: fault points are process-wide.
fn with_sequencer<F, Fut>(store: &Arc<Store>, space: SpaceGuard, body: F) -> Supervisor
where
    F: FnOnce(SequencerHandle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = SequencerHandle> + 'static,
{
    let scenario = fail::FailScenario::setup();
    let supervisor = Supervisor::new();
    let grouping = Grouping { proposals_max: 16, in_flight_max: 2 };
    let (sequencer, handle) =
        Sequencer::new(store.clone(), grouping, Vec::new(), None, space, Default::default(), supervisor.clone())
            .unwrap();
    let thread = sequencer.start().unwrap();
    futures_lite::future::block_on(async move { body(handle).await.stop().await });
    thread.join().unwrap();
    scenario.teardown();
    supervisor
}

#[test]
fn a_failed_commit_is_never_acknowledged_and_fences_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path()).unwrap();
    let space = SpaceGuard::new(Alarms::default(), 0, None);
    let supervisor = with_sequencer(&store, space, |handle| async move {
        assert_eq!(revision_of(&handle, "before").await.unwrap(), 2);
        fail::cfg("store-commit", "return").unwrap();
        let failed = revision_of(&handle, "failed").await;
        assert!(matches!(failed, Err(Error::Timeout)), "a failed commit's outcome is unknown: {failed:?}");
        fail::remove("store-commit");
        let later = revision_of(&handle, "after").await;
        let fenced = matches!(later, Err(Error::Internal(Internal::Sequencer(SequencerError::Fenced(_)))));
        assert!(fenced, "a failed store refuses later writes: {later:?}");
        handle
    });
    let fatal = supervisor.fatal().expect("the failed commit is the node's fatal error");
    assert_eq!(fatal.actor, "committer");
    assert!(fatal.to_string().contains("injected commit failure"), "{fatal}");
    let view = store.read_view().unwrap();
    assert_eq!(view.current_revision(), Revision(2), "nothing after the failure was committed");
    assert!(view.get(b"before").unwrap().is_some());
    assert!(view.get(b"failed").unwrap().is_none() && view.get(b"after").unwrap().is_none());
}

fn delete(key: &str) -> DeleteRange {
    DeleteRange { key: key.into(), ..Default::default() }
}

#[test]
fn writes_that_grow_the_store_are_refused_below_the_free_space_floor_and_raise_nospace() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path()).unwrap();
    let alarms = Alarms::default();
    // No file system has this much free: every growing write finds the disk short.
    let space = SpaceGuard::new(alarms.clone(), u64::MAX, None);
    with_sequencer(&store, space, |handle| async move {
        let refused = revision_of(&handle, "k").await;
        assert!(matches!(refused, Err(Error::NoSpace)), "{refused:?}");
        assert!(alarms.is_raised(Alarm::NoSpace));
        // A delete does not grow the store: it goes on (and takes the next revision).
        let deleted = handle.delete_range(delete("k")).await.expect("delete under NOSPACE");
        assert!(
            deleted.revision == Revision(1) && deleted.deleted == 0,
            "nothing to delete, and no refusal: {deleted:?}"
        );
        handle
    });
    let view = store.read_view().unwrap();
    assert!(view.get(b"k").unwrap().is_none(), "nothing of the refused put was written");
}

#[test]
fn a_raised_nospace_alarm_refuses_growing_writes_until_it_is_disarmed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path()).unwrap();
    let alarms = Alarms::default();
    let space = SpaceGuard::new(alarms.clone(), 0, None);
    with_sequencer(&store, space, |handle| async move {
        assert_eq!(revision_of(&handle, "a").await.unwrap(), 2);
        alarms.raise(Alarm::NoSpace);
        assert!(matches!(revision_of(&handle, "b").await, Err(Error::NoSpace)));
        alarms.disarm(Alarm::NoSpace);
        assert_eq!(revision_of(&handle, "c").await.unwrap(), 3, "the refused write took no revision");
        handle
    });
}

#[test]
fn the_quota_is_judged_on_estimates_far_from_it_and_on_a_measurement_near_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path()).unwrap();
    let alarms = Alarms::default();
    let quota = store.data_bytes() + 1000;
    let mut space = SpaceGuard::new(alarms.clone(), 0, Some(quota));
    assert!(!space.refuses(&store, 500));
    // The estimate (500 + 600 more) passes the quota, but nothing was written: measured, not refused.
    assert!(!space.refuses(&store, 600));
    assert!(!alarms.is_raised(Alarm::NoSpace));
    // More than the quota allows, measured: refused, and NOSPACE raised.
    assert!(space.refuses(&store, 2000));
    assert!(alarms.is_raised(Alarm::NoSpace));
}
