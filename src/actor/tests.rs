use std::time::{Duration, Instant};

use super::*;

/// A counter that answers what it has counted, stops on request, and fails on a negative number.
struct Counter {
    total: i64,
    /// Order in which messages were handled, to check that events come first.
    seen: Vec<i64>,
    accepting: bool,
    tick_at: Option<Instant>,
    ticks: usize,
    cleaned: flume::Sender<Vec<i64>>,
}

enum Count {
    Add(i64),
    Total(Reply<i64>),
    Stop,
}

impl Actor for Counter {
    type Message = Count;

    fn handle(&mut self, message: Count) -> Result<Flow> {
        match message {
            Count::Add(n) if n < 0 => return Err(RuntimeError::Broken(format!("negative count {n}")).into()),
            Count::Add(n) => {
                self.total += n;
                self.seen.push(n);
                // The 100s are events that open the mailbox again.
                if n == 100 {
                    self.accepting = true;
                }
            }
            Count::Total(reply) => reply.send(self.total),
            Count::Stop => return Ok(Flow::Stop),
        }
        Ok(Flow::Continue)
    }

    fn accepts(&self) -> bool {
        self.accepting
    }

    fn next_tick(&self) -> Option<Instant> {
        self.tick_at
    }

    fn tick(&mut self, now: Instant) -> Result<Flow> {
        self.ticks += 1;
        self.tick_at = if self.ticks < 3 { Some(now) } else { None };
        Ok(Flow::Continue)
    }

    fn cleanup(self) {
        let _ = self.cleaned.send(self.seen);
    }
}

fn counter(accepting: bool) -> (Counter, flume::Receiver<Vec<i64>>) {
    let (cleaned, seen) = flume::unbounded();
    (Counter { total: 0, seen: Vec::new(), accepting, tick_at: None, ticks: 0, cleaned }, seen)
}

#[test]
fn ask_answers_and_the_actor_cleans_up_when_its_mailbox_closes() {
    let (actor, seen) = counter(true);
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let supervisor = Supervisor::new();
    let thread = spawn("t4-counter", actor, Inbox::new(receiver), &supervisor).unwrap();
    mailbox.tell_blocking(Count::Add(2)).unwrap();
    mailbox.tell_blocking(Count::Add(3)).unwrap();
    assert_eq!(futures_lite::future::block_on(mailbox.ask(Count::Total)).unwrap(), 5);
    drop(mailbox);
    thread.join().unwrap();
    assert_eq!(seen.recv().unwrap(), vec![2, 3]);
    assert!(supervisor.fatal().is_none(), "a mailbox that closes is no failure");
}

#[test]
fn an_error_is_recorded_as_the_first_fatal_one_and_ends_the_actor() {
    let (actor, seen) = counter(true);
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let supervisor = Supervisor::new();
    let thread = spawn("t4-counter", actor, Inbox::new(receiver), &supervisor).unwrap();
    mailbox.tell_blocking(Count::Add(-1)).unwrap();
    thread.join().unwrap();
    let fatal = futures_lite::future::block_on(supervisor.failed());
    assert_eq!(fatal.actor, "counter");
    assert!(fatal.to_string().contains("negative count -1"), "{fatal}");
    assert_eq!(seen.recv().unwrap(), Vec::<i64>::new(), "cleanup ran after the failure");
    assert!(
        matches!(futures_lite::future::block_on(mailbox.ask(Count::Total)), Err(Error::Closed)),
        "the actor is gone"
    );
    supervisor.fail("other", Error::Timeout);
    assert_eq!(supervisor.fatal().unwrap().actor, "counter", "the first failure is kept");
}

#[test]
fn events_are_handled_before_mailbox_messages_and_while_the_mailbox_is_closed_to_the_actor() {
    let (actor, seen) = counter(false);
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let (events, event_source) = flume::unbounded();
    mailbox.tell_blocking(Count::Add(1)).unwrap();
    mailbox.tell_blocking(Count::Stop).unwrap();
    events.send(Count::Add(10)).unwrap();
    events.send(Count::Add(100)).unwrap();
    events.send(Count::Add(1000)).unwrap();
    let supervisor = Supervisor::new();
    run_blocking("counter", actor, Inbox::new(receiver).with_events(event_source), &supervisor);
    assert_eq!(seen.recv().unwrap(), vec![10, 100, 1000, 1], "queued events first, then the mailbox once accepted");
}

#[test]
fn ticks_run_when_due_and_an_async_runner_behaves_as_the_blocking_one() {
    let (mut actor, seen) = counter(true);
    actor.tick_at = Some(Instant::now());
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let supervisor = Supervisor::new();
    let runner = run("counter", actor, Inbox::new(receiver), &supervisor, |wait| async move {
        let until = Instant::now() + wait.min(Duration::from_millis(5));
        while Instant::now() < until {
            futures_lite::future::yield_now().await;
        }
    });
    mailbox.tell_blocking(Count::Add(7)).unwrap();
    drop(mailbox);
    futures_lite::future::block_on(runner);
    assert_eq!(seen.recv().unwrap(), vec![7]);
}

#[test]
fn a_full_mailbox_that_drops_loses_the_newest_and_never_blocks() {
    let (mailbox, receiver) = mailbox::<i64>(2, WhenFull::DropNewest);
    for n in 0..5 {
        mailbox.tell_blocking(n).unwrap();
    }
    assert_eq!(receiver.drain().collect::<Vec<_>>(), vec![0, 1]);
    drop(receiver);
    assert!(matches!(mailbox.tell_blocking(9), Err(Error::Closed)));
}

#[test]
fn an_actor_spawned_on_its_own_thread_that_fails_is_named_without_the_prefix() {
    let (actor, _seen) = counter(true);
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let supervisor = Supervisor::new();
    let thread = spawn("t4-test-counter", actor, Inbox::new(receiver), &supervisor).unwrap();
    mailbox.tell_blocking(Count::Add(-2)).unwrap();
    thread.join().unwrap();
    let error: Error = supervisor.fatal().expect("recorded").into();
    assert!(error.to_string().contains("test-counter failed: runtime: negative count -2"), "{error}");
}

#[test]
fn a_source_of_another_type_is_mapped_and_its_end_is_its_last_event() {
    let (actor, seen) = counter(true);
    let (mailbox, receiver) = mailbox(4, WhenFull::Wait);
    let (numbers, source) = flume::unbounded::<u8>();
    let supervisor = Supervisor::new();
    let inbox = Inbox::new(receiver).with_source(source, |n| Count::Add(i64::from(n) * 10), Some(|| Count::Stop));
    numbers.send(5).unwrap();
    mailbox.tell_blocking(Count::Add(1)).unwrap();
    let thread = std::thread::spawn({
        let supervisor = supervisor.clone();
        move || run_blocking("counter", actor, inbox, &supervisor)
    });
    assert_eq!(futures_lite::future::block_on(mailbox.ask(Count::Total)).unwrap(), 51);
    drop(numbers);
    thread.join().unwrap();
    assert_eq!(seen.recv().unwrap(), vec![50, 1], "mapped, read before the mailbox; its end stopped the actor");
    assert!(supervisor.fatal().is_none());
}

#[test]
fn a_cause_recorded_after_its_consequence_replaces_it_and_nothing_else_does() {
    let supervisor = Supervisor::new();
    supervisor.fail("shard 0", Error::InputEnded("committed groups stopped arriving"));
    supervisor.fail("shard 1", Error::InputEnded("committed groups stopped arriving"));
    assert_eq!(supervisor.fatal().unwrap().actor, "shard 0", "a consequence does not replace another");
    supervisor.fail("uploader", Error::Timeout);
    assert_eq!(supervisor.fatal().unwrap().actor, "uploader", "the cause replaces the consequence");
    supervisor.fail("committer", Error::Closed);
    assert_eq!(supervisor.fatal().unwrap().actor, "uploader", "the first cause is kept");
}
