//! Durable queues: the engine behind NSQ channels, nsqd topic buffers and MQTT persistent
//! sessions.
//!
//! A [`DurableQueue`] keeps messages while no member is attached, hands each message to one
//! member with credit, tracks it in flight until [`Member::fin`], requeues it on timeout or
//! [`Member::requeue`] (with `attempts + 1` at the next delivery), and defers messages
//! ([`DurableQueue::put_deferred`], `REQ` with a delay).
//!
//! With a durable store each message is appended to the queue's log (in batches, by a writer
//! task) *before* it becomes deliverable and before `put` returns; `fin` releases its offset.
//!
//! # Invariants
//! - A member never has more than `credit` messages in flight (NSQ RDY is a level).
//! - All state lives behind one per-queue mutex that is never held across an `.await`;
//!   delivery is `try_send` into the member's outbox, so the queue never waits on a client.
//! - A message is in exactly one of: ready, deferred, in flight (or gone once finished).
//! - Messages of a detached member are requeued at the front, in delivery order.
//! - A timer task per queue (holding only a `Weak`) fires in-flight timeouts, deferred
//!   messages and retries; it ends when the queue is dropped or deleted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::envelope::{now_ns, Envelope, MessageId};
use crate::error::RouteError;
use crate::outbox::{Delivery, Sink};
use crate::record;
use crate::router::SubscriptionId;
use crate::store::{Offset, QueueName, Store};

/// Retry delay when a member had credit but its outbox was momentarily full.
const RETRY_DELAY: Duration = Duration::from_millis(5);
/// Most write commands the writer task folds into one store call.
const WRITE_BATCH: usize = 256;
/// Capacity of the writer's command channel.
const WRITER_CAPACITY: usize = 4096;
/// Delay before retrying a refill that failed to read the store.
const REFILL_RETRY: Duration = Duration::from_millis(500);
/// Fewest records a refill reads from the store at once.
const REFILL_MIN: usize = 64;

/// Limits and timeouts of durable queues.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Default in-flight timeout (nsqd `--msg-timeout`).
    pub msg_timeout: Duration,
    /// Cap on TOUCH extensions, from the first delivery (nsqd `--max-msg-timeout`).
    pub max_msg_timeout: Duration,
    /// Most ready messages a queue holds; beyond it `put` fails (ephemeral queues drop).
    pub max_depth: usize,
    /// Ready messages kept in memory per durable queue (nsqd `--mem-queue-size`); beyond it
    /// new messages stay only in the store until the queue drains. 0 keeps none in memory.
    pub mem_queue_size: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            msg_timeout: Duration::from_secs(60),
            max_msg_timeout: Duration::from_secs(15 * 60),
            max_depth: 1_000_000,
            mem_queue_size: 10_000,
        }
    }
}

/// Why FIN / REQ / TOUCH failed (NSQ's non-fatal errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No message with that id is in flight.
    #[error("ID not in flight")]
    NotInFlight,
    /// The message is in flight to another member.
    #[error("client does not own message")]
    NotOwner,
}

/// Counters of one queue, with nsqd's meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready messages, in memory and in the store (nsqd `depth`).
    pub depth: usize,
    /// Ready messages held only in the store (nsqd `backend_depth`).
    pub backend_depth: usize,
    /// Messages delivered and not yet finished.
    pub in_flight: usize,
    /// Messages waiting for their deferral to pass.
    pub deferred: usize,
    /// Messages ever put into the queue.
    pub message_count: u64,
    /// REQ count.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// Attached members.
    pub client_count: usize,
    /// Delivery paused.
    pub paused: bool,
}

#[derive(Debug, Clone)]
struct Ready {
    msg: Arc<Envelope>,
    attempts: u16,
    offset: Option<Offset>,
}

#[derive(Debug)]
struct InFlight {
    ready: Ready,
    member: u64,
    deadline: Instant,
    delivered_at: Instant,
    /// Delivery order, for requeueing a detached member's messages in order.
    seq: u64,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    sink: Sink,
    sub: SubscriptionId,
    credit: u32,
    in_flight: u32,
    msg_timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Ready>,
    in_flight: HashMap<MessageId, InFlight>,
    deadlines: BinaryHeap<Reverse<(Instant, MessageId)>>,
    deferred: BinaryHeap<Reverse<(Instant, u64)>>,
    deferred_msgs: HashMap<u64, Ready>,
    next_deferred: u64,
    next_delivery: u64,
    members: Vec<Slot>,
    next_member: usize,
    paused: bool,
    retry_at: Option<Instant>,
    /// Ready messages held only in the store, oldest first (durable queues past
    /// `mem_queue_size`).
    spilled: VecDeque<Offset>,
    /// A refill from the store is wanted or under way.
    refill: Refill,
}

/// Progress of reading spilled messages back from the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Refill {
    #[default]
    Idle,
    Wanted,
    Running,
}

impl State {
    fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        let deferred = self.deferred.peek().map(|Reverse((at, _))| *at);
        [deadline, deferred, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Index of the next member (round robin) that may take one more message.
    fn pick_member(&mut self) -> Option<usize> {
        let count = self.members.len();
        (0..count)
            .map(|i| (self.next_member + i) % count)
            .find(|&i| {
                let slot = &self.members[i];
                slot.in_flight < slot.credit && slot.sink.has_room()
            })
    }

    fn defer(&mut self, ready: Ready, at: Instant) {
        let seq = self.next_deferred;
        self.next_deferred += 1;
        self.deferred.push(Reverse((at, seq)));
        self.deferred_msgs.insert(seq, ready);
    }

    fn slot_mut(&mut self, member: u64) -> Option<&mut Slot> {
        self.members.iter_mut().find(|s| s.id == member)
    }
}

enum WriteCmd {
    Append {
        ready: Ready,
        defer_until: Option<Instant>,
        done: Option<oneshot::Sender<Result<(), RouteError>>>,
    },
    Release(Offset),
    /// Answered once every earlier command reached the store.
    Flush(oneshot::Sender<()>),
}

/// The store behind queues and topics, and their background writes: metadata goes through
/// one ordered queue (a later write to a key never lands before an earlier one), and every
/// background write is tracked so that shutdown can wait for it.
#[derive(Debug, Clone)]
pub struct Backing {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Background store writes in flight.
    pub background: TaskTracker,
    meta: Arc<Mutex<MetaWrites>>,
}

/// One metadata write and who waits for it.
type MetaWrite = (String, Option<Bytes>, Option<oneshot::Sender<()>>);

/// Metadata writes waiting for the drain task, in call order.
#[derive(Debug, Default)]
struct MetaWrites {
    pending: VecDeque<MetaWrite>,
    draining: bool,
}

impl Backing {
    /// Backing over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            background: TaskTracker::new(),
            meta: Arc::default(),
        }
    }

    /// Runs a one-shot store write in the background, tracked for shutdown.
    pub(crate) fn spawn<F>(&self, write: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(write);
    }

    /// Sets (`Some`) or deletes (`None`) a metadata key in the background, after every earlier
    /// metadata write. Does nothing for a non-durable store.
    pub(crate) fn put_meta(&self, key: String, value: Option<Bytes>) {
        self.put_meta_then(key, value, None);
    }

    /// As [`Backing::put_meta`]; `done` fires once the write reached the store (or failed).
    pub(crate) fn put_meta_then(
        &self,
        key: String,
        value: Option<Bytes>,
        done: Option<oneshot::Sender<()>>,
    ) {
        if !self.store.is_durable() {
            return;
        }
        let mut writes = self.meta.lock();
        writes.pending.push_back((key, value, done));
        if std::mem::replace(&mut writes.draining, true) {
            return;
        }
        let (meta, store) = (self.meta.clone(), self.store.clone());
        self.background.spawn(async move {
            loop {
                let next = {
                    let mut writes = meta.lock();
                    let next = writes.pending.pop_front();
                    writes.draining = next.is_some();
                    next
                };
                let Some((key, value, done)) = next else {
                    return;
                };
                if let Err(err) = store.put_meta(&key, value).await {
                    tracing::error!(%key, %err, "persisting metadata failed");
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        });
    }
}

/// Callback run when the last member of an ephemeral queue detaches.
pub(crate) type OnAbandoned = Box<dyn Fn() + Send + Sync>;

/// A durable queue. Create through the router (`Router::durable_queue`) or a topic.
pub struct DurableQueue {
    name: QueueName,
    ephemeral: bool,
    config: QueueConfig,
    store: Option<Arc<dyn Store>>,
    writer: Option<mpsc::Sender<WriteCmd>>,
    state: Mutex<State>,
    wake: Arc<Notify>,
    closed: CancellationToken,
    message_count: AtomicU64,
    requeue_count: AtomicU64,
    timeout_count: AtomicU64,
    next_member_id: AtomicU64,
    on_abandoned: Mutex<Option<OnAbandoned>>,
    /// Metadata key under which the pause flag is persisted (NSQ channels).
    meta_key: Mutex<Option<String>>,
    /// Most queued messages; beyond it new ones are dropped (MQTT offline queues).
    limit: AtomicUsize,
    /// Messages dropped by `limit`.
    dropped: AtomicU64,
    /// Background store writes, awaited by [`crate::Router::flush`] at shutdown.
    backing: Backing,
}

impl std::fmt::Debug for DurableQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableQueue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DurableQueue {
    /// Creates a queue and starts its timer (and, for a durable store, its writer) task.
    /// Must be called inside a tokio runtime.
    pub fn new(
        name: QueueName,
        backing: &Backing,
        config: QueueConfig,
        ephemeral: bool,
    ) -> Arc<Self> {
        let store = &backing.store;
        let durable = store.is_durable() && !ephemeral;
        let (writer, writer_rx) = if durable {
            let (tx, rx) = mpsc::channel(WRITER_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let queue = Arc::new(Self {
            name,
            ephemeral,
            config,
            store: durable.then(|| store.clone()),
            writer,
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            closed: CancellationToken::new(),
            message_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            timeout_count: AtomicU64::new(0),
            next_member_id: AtomicU64::new(1),
            on_abandoned: Mutex::new(None),
            meta_key: Mutex::new(None),
            limit: AtomicUsize::new(usize::MAX),
            dropped: AtomicU64::new(0),
            backing: backing.clone(),
        });
        tokio::spawn(timer_loop(
            Arc::downgrade(&queue),
            queue.wake.clone(),
            queue.closed.clone(),
        ));
        if let Some(rx) = writer_rx {
            tokio::spawn(writer_loop(
                Arc::downgrade(&queue),
                store.clone(),
                queue.name.clone(),
                rx,
            ));
        }
        queue
    }

    /// The queue's store name.
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// True for `#ephemeral` queues (memory only, overflow dropped).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// True when messages are written to a durable store.
    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    pub(crate) fn set_on_abandoned(&self, callback: OnAbandoned) {
        *self.on_abandoned.lock() = Some(callback);
    }

    /// Caps the messages waiting in the queue (ready, spilled and deferred); beyond the cap new
    /// messages are dropped and counted, as mosquitto's `max_queued_messages` does.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Messages dropped because the queue was at its limit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True (and counted) when a new message must be dropped for the queue's limit.
    fn at_limit(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == usize::MAX {
            return false;
        }
        let waiting = {
            let st = self.state.lock();
            st.ready.len() + st.spilled.len() + st.deferred_msgs.len()
        };
        let full = waiting >= limit;
        if full {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        full
    }

    /// Enqueues a message; returns once it is accepted (appended, for a durable store).
    pub async fn put(&self, msg: Arc<Envelope>) -> Result<(), RouteError> {
        self.put_with(msg, None).await
    }

    /// Enqueues a message without waiting; a durable append completes in the background.
    pub fn put_nowait(self: &Arc<Self>, msg: Arc<Envelope>) {
        if self.at_limit() {
            return;
        }
        let Some(writer) = &self.writer else {
            // Non-durable: errors are counted by the caller through `stats`, nothing to wait for.
            let _ = self.push_memory(msg, None);
            return;
        };
        let ready = Ready {
            msg,
            attempts: 0,
            offset: None,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = writer.try_send(WriteCmd::Append {
            ready,
            defer_until: None,
            done: None,
        }) {
            // A durable queue never drops: finish the hand-off off the caller's path.
            let writer = writer.clone();
            tokio::spawn(async move { writer.send(cmd).await });
        }
    }

    /// Waits until every append and release handed to the writer so far reached the store
    /// (shutdown: a message acknowledged before it must not come back after a restart).
    pub async fn flush_writes(&self) {
        let Some(writer) = &self.writer else { return };
        let (done, wait) = oneshot::channel();
        if writer.send(WriteCmd::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Enqueues a message that becomes deliverable after `delay` (DPUB, `?defer=`).
    pub async fn put_deferred(
        &self,
        msg: Arc<Envelope>,
        delay: Duration,
    ) -> Result<(), RouteError> {
        self.put_with(msg, Some(Instant::now() + delay)).await
    }

    async fn put_with(
        &self,
        msg: Arc<Envelope>,
        defer_until: Option<Instant>,
    ) -> Result<(), RouteError> {
        if self.at_limit() {
            return Ok(());
        }
        let Some(writer) = &self.writer else {
            return self.push_memory(msg, defer_until);
        };
        let (done, wait) = oneshot::channel();
        let ready = Ready {
            msg,
            attempts: 0,
            offset: None,
        };
        writer
            .send(WriteCmd::Append {
                ready,
                defer_until,
                done: Some(done),
            })
            .await
            .map_err(|_| RouteError::Closed)?;
        wait.await.map_err(|_| RouteError::Closed)?
    }

    fn push_memory(
        &self,
        msg: Arc<Envelope>,
        defer_until: Option<Instant>,
    ) -> Result<(), RouteError> {
        let mut st = self.state.lock();
        if self.ephemeral && defer_until.is_none() && st.ready.len() >= self.config.mem_queue_size {
            // nsqd: an ephemeral queue is its memory queue; overflow is silently dropped.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if st.ready.len() + st.deferred_msgs.len() >= self.config.max_depth {
            if self.ephemeral {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            return Err(RouteError::QueueFull(self.name.to_string()));
        }
        self.message_count.fetch_add(1, Ordering::Relaxed);
        self.enqueue(
            &mut st,
            Ready {
                msg,
                attempts: 0,
                offset: None,
            },
            defer_until,
        );
        Ok(())
    }

    fn enqueue(&self, st: &mut State, ready: Ready, defer_until: Option<Instant>) {
        match defer_until {
            Some(at) if at > Instant::now() => {
                let earlier = st.next_wake().is_none_or(|next| at < next);
                st.defer(ready, at);
                if earlier {
                    self.wake.notify_one();
                }
            }
            _ => {
                if let Some(offset) = self.spill_offset(st, &ready) {
                    st.spilled.push_back(offset);
                } else {
                    st.ready.push_back(ready);
                }
                self.dispatch(st);
            }
        }
    }

    /// The offset to keep instead of the message when it should live only in the store: a
    /// fresh durable message while memory is full or older messages are already spilled.
    fn spill_offset(&self, st: &State, ready: &Ready) -> Option<Offset> {
        let offset = ready.offset?;
        let full = st.ready.len() >= self.config.mem_queue_size || !st.spilled.is_empty();
        (self.store.is_some() && ready.attempts == 0 && full).then_some(offset)
    }

    /// Loads records read back from the store after a restart (ready, in order).
    pub(crate) fn restore(&self, records: Vec<(Offset, Bytes)>) {
        let mut st = self.state.lock();
        for (offset, bytes) in records {
            match record::decode(bytes) {
                Ok((msg, attempts)) => {
                    let ready = Ready {
                        msg: Arc::new(msg),
                        attempts,
                        offset: Some(offset),
                    };
                    match self.spill_offset(
                        &st,
                        &Ready {
                            attempts: 0,
                            ..ready.clone()
                        },
                    ) {
                        Some(offset) => st.spilled.push_back(offset),
                        None => st.ready.push_back(ready),
                    }
                    self.message_count.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::warn!(queue = %self.name, offset = offset.0, %err, "skipping undecodable record")
                }
            }
        }
        self.dispatch(&mut st);
    }

    /// Attaches a member with zero credit; deliveries go to `sink` tagged with `sub`.
    pub fn attach(self: &Arc<Self>, sink: Sink, sub: SubscriptionId) -> Member {
        let id = self.next_member_id.fetch_add(1, Ordering::Relaxed);
        self.state.lock().members.push(Slot {
            id,
            sink,
            sub,
            credit: 0,
            in_flight: 0,
            msg_timeout: self.config.msg_timeout,
        });
        Member {
            queue: self.clone(),
            id,
        }
    }

    /// Persists the pause flag under `key` from now on (a durable store only).
    pub(crate) fn set_meta_key(&self, key: String) {
        *self.meta_key.lock() = Some(key);
    }

    /// Stops delivery; messages keep queueing.
    pub fn pause(&self) {
        self.state.lock().paused = true;
        self.persist_paused(true);
    }

    /// Resumes delivery.
    pub fn unpause(&self) {
        {
            let mut st = self.state.lock();
            st.paused = false;
            self.dispatch(&mut st);
        }
        self.persist_paused(false);
    }

    /// Restores the pause flag read back from metadata, without writing it again.
    pub(crate) fn restore_paused(&self, paused: bool) {
        self.state.lock().paused = paused;
    }

    fn persist_paused(&self, paused: bool) {
        let Some(key) = self.meta_key.lock().clone() else {
            return;
        };
        let value = if paused {
            Bytes::from_static(b"paused")
        } else {
            Bytes::new()
        };
        if self.is_durable() {
            self.backing.put_meta(key, Some(value));
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.state.lock().paused
    }

    /// Drops every ready, deferred and in-flight message (nsqd `/channel/empty`).
    pub fn empty(&self) {
        let released: Vec<Offset> = {
            let mut st = self.state.lock();
            let mut offsets: Vec<Offset> = st.ready.drain(..).filter_map(|r| r.offset).collect();
            offsets.extend(st.deferred_msgs.drain().filter_map(|(_, r)| r.offset));
            offsets.extend(st.in_flight.drain().filter_map(|(_, f)| f.ready.offset));
            offsets.extend(st.spilled.drain(..));
            st.deferred.clear();
            st.deadlines.clear();
            for slot in &mut st.members {
                slot.in_flight = 0;
            }
            offsets
        };
        released.into_iter().for_each(|offset| self.release(offset));
    }

    /// A snapshot of the queue's counters.
    pub fn stats(&self) -> QueueStats {
        let st = self.state.lock();
        QueueStats {
            depth: st.ready.len() + st.spilled.len(),
            backend_depth: st.spilled.len(),
            in_flight: st.in_flight.len(),
            deferred: st.deferred_msgs.len(),
            message_count: self.message_count.load(Ordering::Relaxed),
            requeue_count: self.requeue_count.load(Ordering::Relaxed),
            timeout_count: self.timeout_count.load(Ordering::Relaxed),
            client_count: st.members.len(),
            paused: st.paused,
        }
    }

    /// Stops the queue's tasks; called when the queue is deleted.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Sends ready messages to members with credit, round robin. Called with the lock held.
    fn dispatch(&self, st: &mut State) {
        self.want_refill(st);
        if st.paused || st.members.is_empty() {
            return;
        }
        let now_wall = now_ns();
        while !st.ready.is_empty() {
            let Some(index) = st.pick_member() else { break };
            let Some(mut ready) = st.ready.pop_front() else {
                break;
            };
            if ready.msg.is_expired(now_wall) {
                if let Some(offset) = ready.offset {
                    self.release(offset);
                }
                continue;
            }
            ready.attempts = ready.attempts.saturating_add(1);
            let slot = &mut st.members[index];
            let delivery = Delivery {
                msg: ready.msg.clone(),
                sub: slot.sub,
                attempts: ready.attempts,
            };
            if slot.sink.try_offer(delivery).is_err() {
                ready.attempts -= 1;
                st.ready.push_front(ready);
                st.retry_at = Some(Instant::now() + RETRY_DELAY);
                self.wake.notify_one();
                break;
            }
            slot.in_flight += 1;
            let now = Instant::now();
            let deadline = now + slot.msg_timeout;
            let member = slot.id;
            st.next_member = (index + 1) % st.members.len();
            let was_idle = st.deadlines.is_empty();
            let id = ready.msg.id;
            st.deadlines.push(Reverse((deadline, id)));
            let seq = st.next_delivery;
            st.next_delivery += 1;
            let flight = InFlight {
                ready,
                member,
                deadline,
                delivered_at: now,
                seq,
            };
            st.in_flight.insert(id, flight);
            if was_idle {
                self.wake.notify_one();
            }
        }
    }

    /// Asks the timer task to read spilled messages back once memory is half empty.
    fn want_refill(&self, st: &mut State) {
        let low = self.config.mem_queue_size / 2;
        if st.refill == Refill::Idle && !st.spilled.is_empty() && st.ready.len() <= low {
            st.refill = Refill::Wanted;
            self.wake.notify_one();
        }
    }

    /// Starts a wanted refill: the store, the first spilled offset and how many to read.
    fn begin_refill(&self) -> Option<(Arc<dyn Store>, Offset, usize)> {
        let store = self.store.clone()?;
        let mut st = self.state.lock();
        let from = *st.spilled.front()?;
        if st.refill != Refill::Wanted {
            return None;
        }
        st.refill = Refill::Running;
        let room = self
            .config
            .mem_queue_size
            .saturating_sub(st.ready.len())
            .max(REFILL_MIN);
        Some((store, from, room.min(st.spilled.len())))
    }

    /// Moves records read back from the store into memory, in spill order.
    fn finish_refill(&self, records: Vec<(Offset, Bytes)>) {
        let mut st = self.state.lock();
        if records.is_empty() {
            // The store no longer has them (emptied meanwhile): nothing to wait for.
            tracing::warn!(queue = %self.name, lost = st.spilled.len(), "spilled records missing");
            st.spilled.clear();
        }
        for (offset, bytes) in records {
            while st.spilled.front().is_some_and(|&front| front < offset) {
                st.spilled.pop_front();
            }
            if st.spilled.front() != Some(&offset) {
                continue; // In memory already (deferred or requeued), not spilled.
            }
            st.spilled.pop_front();
            match record::decode(bytes) {
                Ok((msg, attempts)) => {
                    st.ready.push_back(Ready {
                        msg: Arc::new(msg),
                        attempts,
                        offset: Some(offset),
                    });
                }
                Err(err) => {
                    tracing::warn!(queue = %self.name, offset = offset.0, %err, "skipping undecodable record")
                }
            }
        }
        st.refill = Refill::Idle;
        self.dispatch(&mut st);
    }

    /// Fires in-flight timeouts and due deferred messages, then dispatches.
    fn on_timer(&self, now: Instant) {
        let mut st = self.state.lock();
        while let Some(Reverse((at, id))) = st.deadlines.peek().copied() {
            if at > now {
                break;
            }
            st.deadlines.pop();
            let live = st.in_flight.get(&id).is_some_and(|f| f.deadline == at);
            if !live {
                continue;
            }
            if let Some(flight) = st.in_flight.remove(&id) {
                if let Some(slot) = st.slot_mut(flight.member) {
                    slot.in_flight = slot.in_flight.saturating_sub(1);
                }
                self.timeout_count.fetch_add(1, Ordering::Relaxed);
                st.ready.push_back(flight.ready);
            }
        }
        while let Some(Reverse((at, seq))) = st.deferred.peek().copied() {
            if at > now {
                break;
            }
            st.deferred.pop();
            if let Some(ready) = st.deferred_msgs.remove(&seq) {
                st.ready.push_back(ready);
            }
        }
        if st.retry_at.is_some_and(|at| at <= now) {
            st.retry_at = None;
        }
        self.dispatch(&mut st);
    }

    fn take_in_flight(
        &self,
        st: &mut State,
        member: u64,
        id: &MessageId,
    ) -> Result<InFlight, AckError> {
        match st.in_flight.get(id) {
            None => return Err(AckError::NotInFlight),
            Some(flight) if flight.member != member => return Err(AckError::NotOwner),
            Some(_) => {}
        }
        let flight = st.in_flight.remove(id).ok_or(AckError::NotInFlight)?;
        if let Some(slot) = st.slot_mut(member) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        Ok(flight)
    }

    fn release(&self, offset: Offset) {
        let Some(writer) = &self.writer else { return };
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            writer.try_send(WriteCmd::Release(offset))
        {
            let writer = writer.clone();
            tokio::spawn(async move { writer.send(cmd).await });
        }
    }

    fn detach(&self, member: u64) {
        let abandoned = {
            let mut st = self.state.lock();
            st.members.retain(|s| s.id != member);
            let mut mine: Vec<InFlight> = Vec::new();
            let ids: Vec<MessageId> = st
                .in_flight
                .iter()
                .filter(|(_, f)| f.member == member)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(flight) = st.in_flight.remove(&id) {
                    mine.push(flight);
                }
            }
            mine.sort_by_key(|f| Reverse(f.seq));
            for flight in mine {
                st.ready.push_front(flight.ready);
            }
            self.dispatch(&mut st);
            self.ephemeral && st.members.is_empty()
        };
        if abandoned {
            if let Some(callback) = self.on_abandoned.lock().as_ref() {
                callback();
            }
        }
    }

    /// Applies a batch of appended records (writer task, after the store accepted them).
    fn accept_appended(&self, batch: Vec<(Ready, Option<Instant>)>) {
        let mut st = self.state.lock();
        for (ready, defer_until) in batch {
            self.message_count.fetch_add(1, Ordering::Relaxed);
            self.enqueue(&mut st, ready, defer_until);
        }
    }
}

impl Drop for DurableQueue {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// A member's handle on a queue: credit, acks. Dropping it detaches the member and requeues
/// its in-flight messages.
#[derive(Debug)]
pub struct Member {
    queue: Arc<DurableQueue>,
    id: u64,
}

impl Member {
    /// Sets the most messages this member may have in flight (NSQ RDY level, MQTT Receive
    /// Maximum).
    pub fn set_credit(&self, credit: u32) {
        let mut st = self.queue.state.lock();
        if let Some(slot) = st.slot_mut(self.id) {
            slot.credit = credit;
        }
        self.queue.dispatch(&mut st);
    }

    /// Sets this member's in-flight timeout (NSQ IDENTIFY `msg_timeout`).
    pub fn set_msg_timeout(&self, timeout: Duration) {
        if let Some(slot) = self.queue.state.lock().slot_mut(self.id) {
            slot.msg_timeout = timeout;
        }
    }

    /// Marks a message done.
    pub fn fin(&self, id: &MessageId) -> Result<(), AckError> {
        let offset = {
            let mut st = self.queue.state.lock();
            let flight = self.queue.take_in_flight(&mut st, self.id, id)?;
            self.queue.dispatch(&mut st);
            flight.ready.offset
        };
        if let Some(offset) = offset {
            self.queue.release(offset);
        }
        Ok(())
    }

    /// Puts a message back, ready now (`delay` zero) or after `delay`.
    pub fn requeue(&self, id: &MessageId, delay: Duration) -> Result<(), AckError> {
        let mut st = self.queue.state.lock();
        let flight = self.queue.take_in_flight(&mut st, self.id, id)?;
        self.queue.requeue_count.fetch_add(1, Ordering::Relaxed);
        let defer_until = (!delay.is_zero()).then(|| Instant::now() + delay);
        self.queue.enqueue(&mut st, flight.ready, defer_until);
        self.queue.dispatch(&mut st);
        Ok(())
    }

    /// Extends a message's in-flight deadline by this member's timeout, capped at the
    /// delivery time plus the queue's `max_msg_timeout`.
    pub fn touch(&self, id: &MessageId) -> Result<(), AckError> {
        let mut st = self.queue.state.lock();
        let timeout = st
            .slot_mut(self.id)
            .map_or(self.queue.config.msg_timeout, |s| s.msg_timeout);
        let flight = st.in_flight.get_mut(id).ok_or(AckError::NotInFlight)?;
        if flight.member != self.id {
            return Err(AckError::NotOwner);
        }
        let cap = flight.delivered_at + self.queue.config.max_msg_timeout;
        let deadline = (Instant::now() + timeout).min(cap);
        flight.deadline = deadline;
        st.deadlines.push(Reverse((deadline, *id)));
        Ok(())
    }

    /// Messages currently in flight to this member.
    pub fn in_flight(&self) -> usize {
        let st = self.queue.state.lock();
        st.members
            .iter()
            .find(|s| s.id == self.id)
            .map_or(0, |s| s.in_flight as usize)
    }

    /// The queue this member is attached to.
    pub fn queue(&self) -> &Arc<DurableQueue> {
        &self.queue
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.queue.detach(self.id);
    }
}

async fn timer_loop(queue: Weak<DurableQueue>, wake: Arc<Notify>, closed: CancellationToken) {
    loop {
        let next = match queue.upgrade() {
            Some(q) => q.state.lock().next_wake(),
            None => return,
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = closed.cancelled() => return,
            () = wake.notified() => {}
            () = sleep => {}
        }
        let Some(q) = queue.upgrade() else { return };
        q.on_timer(Instant::now());
        if let Some((store, from, max)) = q.begin_refill() {
            match store.read(&q.name, from, max).await {
                Ok(records) => q.finish_refill(records),
                Err(err) => {
                    tracing::error!(queue = %q.name, %err, "reading spilled messages failed");
                    let mut st = q.state.lock();
                    st.refill = Refill::Wanted;
                    st.retry_at = Some(Instant::now() + REFILL_RETRY);
                }
            }
        }
    }
}

async fn writer_loop(
    queue: Weak<DurableQueue>,
    store: Arc<dyn Store>,
    name: QueueName,
    mut rx: mpsc::Receiver<WriteCmd>,
) {
    let mut cmds = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut cmds, WRITE_BATCH).await > 0 {
        let mut appends = Vec::new();
        let mut releases = Vec::new();
        let mut flushed = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                WriteCmd::Append {
                    ready,
                    defer_until,
                    done,
                } => appends.push((ready, defer_until, done)),
                WriteCmd::Release(offset) => releases.push(offset),
                WriteCmd::Flush(done) => flushed.push(done),
            }
        }
        if !appends.is_empty() {
            let records: Vec<Bytes> = appends
                .iter()
                .map(|(r, _, _)| record::encode(&r.msg, r.attempts))
                .collect();
            match store.append(&name, &records).await {
                Ok(offsets) => {
                    let mut accepted = Vec::with_capacity(appends.len());
                    let mut waiters = Vec::new();
                    for ((mut ready, defer_until, done), offset) in appends.into_iter().zip(offsets)
                    {
                        ready.offset = Some(offset);
                        accepted.push((ready, defer_until));
                        waiters.extend(done);
                    }
                    if let Some(q) = queue.upgrade() {
                        q.accept_appended(accepted);
                    }
                    waiters.into_iter().for_each(|w| {
                        let _ = w.send(Ok(()));
                    });
                }
                Err(err) => {
                    tracing::error!(queue = %name, %err, "append failed");
                    let failure = RouteError::Store(err.to_string());
                    for (_, _, done) in appends {
                        if let Some(done) = done {
                            let _ = done.send(Err(failure.clone()));
                        }
                    }
                }
            }
        }
        if !releases.is_empty() {
            if let Err(err) = store.release(&name, &releases).await {
                tracing::error!(queue = %name, %err, "release failed");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
