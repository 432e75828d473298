//! One shape for every actor: a cloneable, typed [`Mailbox`] that others `tell` and `ask`, bounded,
//! with what a full mailbox does written beside it ([`WhenFull`]); an [`Inbox`] the actor reads (its
//! mailbox, gated by [`Actor::accepts`], and its event sources, always read first); ticks; and a
//! runner that calls [`Actor::handle`], reports a fatal error to the [`Supervisor`], and always runs
//! [`Actor::cleanup`]. Invariants: an actor's state is owned by the actor alone; no error an actor
//! returns goes unrecorded; events queued before a mailbox message are handled before it.

mod supervisor;

use std::future::Future;
use std::time::{Duration, Instant};

pub use supervisor::Supervisor;

use crate::error::{Error, Result, RuntimeError};

/// What a sender meets when a mailbox is full. Chosen per mailbox, next to its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The sender waits for room (backpressure): nothing is lost, the sender slows down.
    Wait,
    /// The message is dropped and the sender goes on: for reports where a newer one says enough.
    DropNewest,
}

/// The sending side of an actor's mailbox. Cloneable and `Send`; every method fails with
/// [`Error::Closed`] once the actor is gone.
pub struct Mailbox<M> {
    sender: flume::Sender<M>,
    when_full: WhenFull,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox { sender: self.sender.clone(), when_full: self.when_full }
    }
}

/// A bounded mailbox of `capacity` messages and the receiver the actor reads.
pub fn mailbox<M>(capacity: usize, when_full: WhenFull) -> (Mailbox<M>, flume::Receiver<M>) {
    let (sender, receiver) = flume::bounded(capacity.max(1));
    (Mailbox { sender, when_full }, receiver)
}

impl<M> Mailbox<M> {
    /// Sends `message`, waiting for room if the mailbox says so.
    pub async fn tell(&self, message: M) -> Result<()> {
        match self.when_full {
            WhenFull::Wait => self.sender.send_async(message).await.map_err(|_| Error::Closed),
            WhenFull::DropNewest => self.try_tell(message),
        }
    }

    /// [`Mailbox::tell`] from a thread that may block.
    pub fn tell_blocking(&self, message: M) -> Result<()> {
        match self.when_full {
            WhenFull::Wait => self.sender.send(message).map_err(|_| Error::Closed),
            WhenFull::DropNewest => self.try_tell(message),
        }
    }

    /// Sends `message` without waiting; a full mailbox drops it (whatever the mailbox's choice).
    pub fn try_tell(&self, message: M) -> Result<()> {
        match self.sender.try_send(message) {
            Ok(()) | Err(flume::TrySendError::Full(_)) => Ok(()),
            Err(flume::TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// Sends the message `make` builds around a reply, and waits for the answer.
    pub async fn ask<R>(&self, make: impl FnOnce(Reply<R>) -> M) -> Result<R> {
        let (reply, answer) = flume::bounded(1);
        self.sender.send_async(make(Reply(reply))).await.map_err(|_| Error::Closed)?;
        answer.recv_async().await.map_err(|_| Error::Closed)
    }

    /// How many messages wait, read without keeping the mailbox open (for `/metrics`).
    pub fn depth_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static
    where
        M: Send + 'static,
    {
        let sender = self.sender.downgrade();
        move || sender.upgrade().map_or(0, |sender| sender.len())
    }
}

/// Where an actor sends one answer. Dropping it unanswered makes the asker's call fail with
/// [`Error::Closed`].
#[derive(Debug)]
pub struct Reply<R>(flume::Sender<R>);

impl<R> Reply<R> {
    /// Answers; an asker that stopped waiting needs nothing.
    pub fn send(self, answer: R) {
        let _ = self.0.send(answer);
    }
}

/// Whether an actor goes on after a message or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The actor's work is done: the runner calls [`Actor::cleanup`] and ends.
    Stop,
}

/// An actor's behaviour. The runner owns the loop; the actor only decides.
pub trait Actor {
    /// What the actor reads; it crosses threads and tasks, so it borrows nothing.
    type Message: 'static;

    /// Handles one message from the mailbox or an event source. An error is fatal: the runner
    /// records it with the supervisor (which stops the node) and ends the actor.
    fn handle(&mut self, message: Self::Message) -> Result<Flow>;

    /// Whether the actor takes mailbox messages now (it may wait for its own work first); event
    /// sources are read regardless.
    fn accepts(&self) -> bool {
        true
    }

    /// When [`Actor::tick`] is due next, if it is.
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// Called once [`Actor::next_tick`] has passed.
    fn tick(&mut self, _now: Instant) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Every sender of the mailbox is gone: what now.
    fn mailbox_closed(&mut self) -> Result<Flow> {
        Ok(Flow::Stop)
    }

    /// Runs once as the actor ends, whether it stopped or failed.
    fn cleanup(self);
}

/// What an actor reads: its mailbox, and event sources that are always read, and read first, in
/// the order they were added (replies of its own helpers, committed groups, signals). A source ends
/// when its senders are gone; its end is an event only if the source was given one
/// ([`Inbox::with_source`]), and then it is read no more.
pub struct Inbox<M> {
    pub mailbox: flume::Receiver<M>,
    events: Vec<Box<dyn EventSource<M> + Send>>,
}

impl<M: 'static> Inbox<M> {
    pub fn new(mailbox: flume::Receiver<M>) -> Inbox<M> {
        Inbox { mailbox, events: Vec::new() }
    }

    /// Adds an event source of the actor's own messages; its end is no event.
    pub fn with_events(self, events: flume::Receiver<M>) -> Inbox<M>
    where
        M: Send,
    {
        self.with_source(events, |message| message, None)
    }

    /// Adds an event source of another type: each item becomes a message through `map`, and the
    /// source's end, if `ended` is given, is one last message.
    pub fn with_source<T: Send + 'static>(
        mut self,
        events: flume::Receiver<T>,
        map: fn(T) -> M,
        ended: Option<fn() -> M>,
    ) -> Inbox<M> {
        self.events.push(Box::new(Mapped { receiver: events, map, ended }));
        self
    }

    /// An event already queued, if any (an ended source's last message included); drops sources
    /// that ended.
    fn queued_event(&mut self) -> Option<M> {
        let mut found = None;
        self.events.retain(|source| {
            if found.is_some() {
                return true;
            }
            match source.try_next() {
                Polled::Message(event) => {
                    found = Some(event);
                    true
                }
                Polled::Empty => true,
                Polled::Ended(last) => {
                    found = last;
                    false
                }
            }
        });
        found
    }
}

/// What an event source had.
enum Polled<M> {
    Message(M),
    Empty,
    /// The source ended, with its last message if it has one.
    Ended(Option<M>),
}

/// One source of events, whatever the type its channel carries.
trait EventSource<M> {
    fn try_next(&self) -> Polled<M>;

    /// The next message; `None` once the source ended.
    fn next(&self) -> std::pin::Pin<Box<dyn Future<Output = Option<M>> + '_>>;

    /// Adds the source to a blocking wait; `index` is its place in the inbox.
    fn select<'a>(&'a self, selector: flume::Selector<'a, Next<M>>, index: usize) -> flume::Selector<'a, Next<M>>;

    /// The message the source's end is, if it is one.
    fn ended(&self) -> Option<M>;
}

/// A channel of `T`, read as the actor's messages.
struct Mapped<T, M> {
    receiver: flume::Receiver<T>,
    map: fn(T) -> M,
    ended: Option<fn() -> M>,
}

impl<T: 'static, M: 'static> EventSource<M> for Mapped<T, M> {
    fn try_next(&self) -> Polled<M> {
        match self.receiver.try_recv() {
            Ok(item) => Polled::Message((self.map)(item)),
            Err(flume::TryRecvError::Empty) => Polled::Empty,
            Err(flume::TryRecvError::Disconnected) => Polled::Ended(self.ended()),
        }
    }

    fn next(&self) -> std::pin::Pin<Box<dyn Future<Output = Option<M>> + '_>> {
        Box::pin(async move { self.receiver.recv_async().await.ok().map(self.map) })
    }

    fn select<'a>(&'a self, selector: flume::Selector<'a, Next<M>>, index: usize) -> flume::Selector<'a, Next<M>> {
        let map = self.map;
        selector.recv(&self.receiver, move |item| {
            item.map_or(Next::EventSourceClosed(index), |item| Next::Message(map(item)))
        })
    }

    fn ended(&self) -> Option<M> {
        self.ended.map(|ended| ended())
    }
}

/// What the runner read next.
enum Next<M> {
    Message(M),
    MailboxClosed,
    EventSourceClosed(usize),
    Tick,
}

/// Longest wait when nothing at all can wake the actor (no tick, no source): a bound, not a timer.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(3600);

/// Runs `actor` on the current thread until it stops or fails; blocks. `name` says which actor
/// failed in the supervisor's report.
pub fn run_blocking<A: Actor>(name: &str, mut actor: A, mut inbox: Inbox<A::Message>, supervisor: &Supervisor) {
    let mut mailbox_open = true;
    let outcome: Result<()> = loop {
        let next = match inbox.queued_event() {
            Some(event) => Next::Message(event),
            None => {
                let deadline = actor.next_tick().unwrap_or_else(|| Instant::now() + IDLE_WAIT_MAX);
                let mut selector = flume::Selector::new();
                for (index, source) in inbox.events.iter().enumerate() {
                    selector = source.select(selector, index);
                }
                if mailbox_open && actor.accepts() {
                    selector = selector.recv(&inbox.mailbox, |r| r.map_or(Next::MailboxClosed, Next::Message));
                }
                selector.wait_deadline(deadline).unwrap_or(Next::Tick)
            }
        };
        match step(&mut actor, next, &mut inbox, &mut mailbox_open) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    end(name, actor, outcome, supervisor);
}

/// Runs `actor` on the current executor until it stops or fails. `sleep` is the executor's timer.
pub async fn run<A, S, F>(name: &str, mut actor: A, mut inbox: Inbox<A::Message>, supervisor: &Supervisor, sleep: S)
where
    A: Actor,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut mailbox_open = true;
    let outcome: Result<()> = loop {
        let next = match inbox.queued_event() {
            Some(event) => Next::Message(event),
            None => {
                let wait = actor
                    .next_tick()
                    .map_or(IDLE_WAIT_MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
                let accepting = mailbox_open && actor.accepts();
                // Biased: events, then the mailbox, then the timer (a due tick never starves messages).
                let mut next: std::pin::Pin<Box<dyn Future<Output = Next<A::Message>> + '_>> =
                    Box::pin(futures_lite::future::pending());
                for (index, source) in inbox.events.iter().enumerate().rev() {
                    let event =
                        async move { source.next().await.map_or(Next::EventSourceClosed(index), Next::Message) };
                    next = Box::pin(futures_lite::future::or(event, next));
                }
                if accepting {
                    let message = async { inbox.mailbox.recv_async().await.map_or(Next::MailboxClosed, Next::Message) };
                    next = Box::pin(futures_lite::future::or(next, message));
                }
                let next = futures_lite::future::or(next, async {
                    sleep(wait).await;
                    Next::Tick
                });
                next.await
            }
        };
        match step(&mut actor, next, &mut inbox, &mut mailbox_open) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    end(name, actor, outcome, supervisor);
}

/// Ends an actor: its error, if any, goes to the supervisor, then its cleanup runs. Recorded before
/// the cleanup: what the cleanup stops (a committer, the groups shards wait for) may fail in turn,
/// and the first cause must be the one kept.
fn end<A: Actor>(name: &str, actor: A, outcome: Result<()>, supervisor: &Supervisor) {
    if let Err(e) = outcome {
        supervisor.fail(name, e);
    }
    actor.cleanup();
}

fn step<A: Actor>(
    actor: &mut A,
    next: Next<A::Message>,
    inbox: &mut Inbox<A::Message>,
    mailbox_open: &mut bool,
) -> Result<Flow> {
    match next {
        Next::Message(message) => actor.handle(message),
        Next::MailboxClosed => {
            *mailbox_open = false;
            actor.mailbox_closed()
        }
        Next::EventSourceClosed(index) => match inbox.events.remove(index).ended() {
            Some(last) => actor.handle(last),
            None => Ok(Flow::Continue),
        },
        Next::Tick => {
            let now = Instant::now();
            match actor.next_tick() {
                Some(due) if due <= now => actor.tick(now),
                _ => Ok(Flow::Continue),
            }
        }
    }
}

/// Runs `actor` on a thread of its own named `name` (`t4-…`; the supervisor knows it without the prefix).
pub fn spawn<A>(
    name: &str,
    actor: A,
    inbox: Inbox<A::Message>,
    supervisor: &Supervisor,
) -> Result<std::thread::JoinHandle<()>>
where
    A: Actor + Send + 'static,
    A::Message: Send + 'static,
{
    let supervisor = supervisor.clone();
    let actor_name = name.trim_start_matches("t4-").to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || run_blocking(&actor_name, actor, inbox, &supervisor))
        .map_err(|e| RuntimeError::start(format!("thread {name}"))(e).into())
}

#[cfg(test)]
mod tests;
