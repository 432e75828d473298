//! The sequencer when the store fails: a group whose commit fails is never acknowledged, and every later
//! write is refused (the store may hold a partial journal write), while the actor keeps answering.

use std::sync::Arc;

use super::{Limits, Outcome, Proposal, Sequencer, SequencerHandle};
use crate::error::Error;
use crate::mvcc::{Store, VersionReader};
use crate::proto::etcdserverpb::PutRequest;

fn put(key: &str) -> Proposal {
    Proposal::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() })
}

async fn revision_of(handle: &SequencerHandle, key: &str) -> crate::Result<i64> {
    match handle.propose(put(key)).await? {
        Outcome::Put(resp) => Ok(resp.header.expect("header").revision),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_failed_commit_is_never_acknowledged_and_fences_later_writes() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path()).unwrap();
    let limits = Limits { max_request_bytes: 1 << 20, max_txn_ops: 128 };
    let (sequencer, handle) = Sequencer::new(store.clone(), limits, 16, 2, Vec::new(), None).unwrap();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let actor = glommio::spawn_local(sequencer.run());
            assert_eq!(revision_of(&handle, "before").await.unwrap(), 2);
            fail::cfg("store-commit", "return").unwrap();
            assert!(matches!(revision_of(&handle, "failed").await, Err(Error::Storage(_))));
            fail::remove("store-commit");
            let later = revision_of(&handle, "after").await;
            assert!(matches!(later, Err(Error::Storage(_))), "a failed store refuses later writes: {later:?}");
            handle.stop().await;
            actor.await;
        })
        .unwrap()
        .join()
        .unwrap();
    let view = store.read_view().unwrap();
    assert_eq!(view.current_revision(), 2, "nothing after the failure was committed");
    assert!(view.get(b"before").unwrap().is_some());
    assert!(view.get(b"failed").unwrap().is_none() && view.get(b"after").unwrap().is_none());
    scenario.teardown();
}
