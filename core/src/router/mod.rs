//! The router: subscribe, unsubscribe and publish across every protocol.
//!
//! A [`Router`] is a cheap handle (`Arc` inside). Publishing looks the subject up in a match
//! cache (a sharded `DashMap`); on a miss it reads the subscription [`index`] under a
//! `parking_lot::RwLock` and caches the deduplicated target list. Fan-out is synchronous:
//! plain subscriptions and volatile groups get a `try_send` into their session's outbox, durable
//! queues and nsqd topics take the message into their own state.
//!
//! # Invariants
//! - The router never awaits a subscriber; [`Router::publish`] is a plain function.
//!   [`Router::publish_durable`] awaits only durable queues accepting the message (store append).
//! - The cache is invalidated on every subscription change for exactly the subjects the changed
//!   filter matches; an entry computed concurrently with a change is dropped (generation check).
//! - A target appears once per message: plain subscriptions once per subscription (NATS
//!   semantics), groups, queues and topics once per message.
//! - Lock order: index `RwLock` → group member lock. The cache is never locked while the index
//!   lock is held for writing.

mod group;
mod index;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use foldhash::fast::RandomState;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::envelope::{Envelope, Origin};
use crate::error::RouteError;
use crate::metrics::Metrics;
use crate::outbox::{Delivery, Offer, Sink};
use crate::queue::{Backing, DurableQueue, QueueConfig};
use crate::record;
use crate::store::{Offset, QueueName, Store, StoreError};
use crate::subject::{Filter, Subject, SubjectError};
use crate::topic::{Topic, CHANNEL_META, TOPIC_META};

use group::{Group, GroupMember, Handed, MemberTarget};
use index::{Entry, Index};

/// Records read from the store at a time while recovering a queue.
const RECOVERY_CHUNK: usize = 4096;
/// Metadata key prefix of retained messages.
const RETAINED_META: &str = "retained/";
/// Metadata key prefix of frontend state records ([`Router::save_state`]).
const STATE_META: &str = "state/";

/// Identifies one subscription (or one router-internal target) for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// What a subscriber asks for.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// What to match.
    pub filter: Filter,
    /// Group name: one member of the group gets each message.
    pub group: Option<Arc<str>>,
    /// The subscribing connection.
    pub origin: Origin,
    /// Skip messages published by the same connection (NATS `echo:false`, MQTT No Local).
    pub no_local: bool,
    /// Take only requests (messages with a reply-to): ZMQ REP/ROUTER workers.
    pub requests_only: bool,
}

impl SubscriptionSpec {
    /// A plain subscription on `filter` for `origin`.
    pub fn new(filter: Filter, origin: Origin) -> Self {
        Self {
            filter,
            group: None,
            origin,
            no_local: false,
            requests_only: false,
        }
    }

    fn admission(&self) -> Admission {
        Admission {
            origin: self.origin,
            no_local: self.no_local,
            requests_only: self.requests_only,
        }
    }
}

/// Which messages a subscription takes, beyond its filter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    origin: Origin,
    no_local: bool,
    requests_only: bool,
}

impl Admission {
    /// False for the subscriber's own messages under `no_local`, and for non-requests under
    /// `requests_only`.
    pub(crate) fn admits(&self, msg: &Envelope) -> bool {
        let not_a_request = self.requests_only && msg.reply_to.is_none();
        !(self.declines_own(msg) || not_a_request)
    }

    /// True when the message is the subscriber's own and `no_local` keeps it out.
    fn declines_own(&self, msg: &Envelope) -> bool {
        self.no_local && msg.origin.conn == self.origin.conn
    }

    /// Whether `msg` passes; counts it in `routed.own` when `no_local` declined it.
    fn admit(&self, msg: &Envelope, routed: &mut Routed) -> bool {
        if self.admits(msg) {
            return true;
        }
        if self.declines_own(msg) {
            routed.own += 1;
        }
        false
    }
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    /// Deliveries queued to session outboxes.
    pub delivered: usize,
    /// Deliveries dropped by a full outbox.
    pub dropped: usize,
    /// Durable queues and topics that took the message.
    pub queued: usize,
    /// Subscriptions of the publishing connection that matched but declined the message
    /// under `no_local` (not in [`Routed::matched`]; MQTT still reports such a publish as
    /// matched, as mosquitto does).
    pub own: usize,
}

impl Routed {
    /// Number of targets the message matched.
    pub fn matched(&self) -> usize {
        self.delivered + self.dropped + self.queued
    }
}

/// Settings of the routing core.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Durable queue timeouts and limits.
    pub queue: QueueConfig,
    /// Most subjects kept in the match cache.
    pub cache_size: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            cache_size: 4096,
        }
    }
}

/// Where a matched message goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sink {
        sink: Sink,
        admission: Admission,
    },
    Group(Arc<Group>),
    Queue {
        queue: Arc<DurableQueue>,
        admission: Admission,
    },
    Topic(Arc<Topic>),
}

impl Target {
    /// Identity for deduplication: groups, queues and topics receive a message once.
    fn shared_key(&self) -> Option<usize> {
        match self {
            Self::Sink { .. } => None,
            Self::Group(g) => Some(Arc::as_ptr(g) as usize),
            Self::Queue { queue, .. } => Some(Arc::as_ptr(queue) as usize),
            Self::Topic(t) => Some(Arc::as_ptr(t) as usize),
        }
    }
}

#[derive(Debug)]
enum SubKind {
    Plain,
    Member(Arc<Group>),
    Queue,
}

#[derive(Debug)]
struct SubRecord {
    filter: Filter,
    kind: SubKind,
}

#[derive(Debug, Default)]
struct State {
    index: Index,
    subs: HashMap<SubscriptionId, SubRecord>,
    groups: HashMap<(Filter, Arc<str>), Arc<Group>>,
}

type Matches = Arc<[(SubscriptionId, Target)]>;

/// Shared state behind a [`Router`] handle.
pub(crate) struct RouterInner {
    config: RouterConfig,
    state: RwLock<State>,
    generation: AtomicU64,
    cache: DashMap<Subject, Matches, RandomState>,
    next_id: AtomicU64,
    topics: DashMap<String, Arc<Topic>>,
    queues: DashMap<String, Arc<DurableQueue>>,
    retained: DashMap<Subject, Arc<Envelope>>,
    backing: Backing,
    metrics: Arc<Metrics>,
}

/// The routing core. Clone freely.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `store` with nothing recovered. Must be called inside a tokio runtime.
    pub fn new(config: RouterConfig, store: Arc<dyn Store>) -> Self {
        let inner = RouterInner {
            config,
            state: RwLock::new(State::default()),
            generation: AtomicU64::new(0),
            cache: DashMap::with_hasher(RandomState::default()),
            next_id: AtomicU64::new(1),
            topics: DashMap::new(),
            queues: DashMap::new(),
            retained: DashMap::new(),
            backing: Backing::new(store),
            metrics: Arc::new(Metrics::default()),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A router that first recovers topics, channels, durable queues and retained messages
    /// from `store`.
    pub async fn open(config: RouterConfig, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let router = Self::new(config, store);
        router.recover().await?;
        Ok(router)
    }

    /// Counters for the admin listener.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The storage backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.backing.store
    }

    /// True when the store keeps state across restarts.
    pub fn is_durable(&self) -> bool {
        self.inner.backing.store.is_durable()
    }

    /// Saves (`Some`) or deletes (`None`) a frontend's state record, e.g. an MQTT persistent
    /// session's subscriptions, under `key`. Written in the background after every earlier
    /// metadata write; nothing happens with a non-durable store.
    pub fn save_state(&self, key: &str, value: Option<Bytes>) {
        self.inner
            .backing
            .put_meta(format!("{STATE_META}{key}"), value);
    }

    /// Every state record whose key starts with `prefix`, sorted by key (keys as saved).
    pub async fn load_state(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        let stored = self
            .inner
            .backing
            .store
            .load_meta(&format!("{STATE_META}{prefix}"))
            .await?;
        let strip = |key: String| {
            key.strip_prefix(STATE_META)
                .map(str::to_owned)
                .unwrap_or(key)
        };
        Ok(stored
            .into_iter()
            .map(|(key, value)| (strip(key), value))
            .collect())
    }

    /// Waits for background store writes (metadata, retained messages, queue removals, and
    /// the appends and releases queues have handed to their writers) to finish; call before
    /// persisting at shutdown.
    pub async fn flush(&self) {
        let background = &self.inner.backing.background;
        background.close();
        background.wait().await;
        background.reopen();
        let mut queues: Vec<Arc<DurableQueue>> = self
            .inner
            .queues
            .iter()
            .map(|q| q.value().clone())
            .collect();
        for topic in self.inner.topics.iter() {
            queues.push(topic.buffer().clone());
            queues.extend(topic.channels().into_iter().map(|(_, channel)| channel));
        }
        for queue in queues {
            queue.flush_writes().await;
        }
    }

    /// Subscribes a session outbox: a plain subscription, or a member of `spec.group`.
    pub fn subscribe(&self, spec: SubscriptionSpec, sink: Sink) -> SubscriptionId {
        match spec.group.clone() {
            Some(name) => self.join_group(&spec, name, MemberTarget::Sink(sink)),
            None => {
                let target = Target::Sink {
                    sink,
                    admission: spec.admission(),
                };
                self.insert(&spec.filter, target, SubKind::Plain)
            }
        }
    }

    /// Routes messages matching `spec.filter` into a durable queue (MQTT persistent session,
    /// durable group); with `spec.group`, the queue is a member of that group and keeps its
    /// share of the group's messages while its session is away. The queue's members receive
    /// them with acks.
    pub fn subscribe_queue(
        &self,
        spec: SubscriptionSpec,
        queue: Arc<DurableQueue>,
    ) -> SubscriptionId {
        match spec.group.clone() {
            Some(name) => self.join_group(&spec, name, MemberTarget::Queue(queue)),
            None => {
                let target = Target::Queue {
                    queue,
                    admission: spec.admission(),
                };
                self.insert(&spec.filter, target, SubKind::Queue)
            }
        }
    }

    /// Registers a plain target in the index.
    fn insert(&self, filter: &Filter, target: Target, kind: SubKind) -> SubscriptionId {
        let id = self.inner.next_id();
        let mut state = self.inner.state.write();
        state.index.insert(filter, Entry { id, target });
        state.subs.insert(
            id,
            SubRecord {
                filter: filter.clone(),
                kind,
            },
        );
        drop(state);
        self.inner.invalidate(filter);
        id
    }

    /// Adds a member to the group (filter, name), creating and indexing the group if new.
    fn join_group(
        &self,
        spec: &SubscriptionSpec,
        name: Arc<str>,
        target: MemberTarget,
    ) -> SubscriptionId {
        let id = self.inner.next_id();
        let mut state = self.inner.state.write();
        let key = (spec.filter.clone(), name.clone());
        let group = match state.groups.get(&key) {
            Some(group) => group.clone(),
            None => {
                let entry_id = self.inner.next_id();
                let group = Arc::new(Group::new(spec.filter.clone(), name, entry_id));
                let entry = Entry {
                    id: entry_id,
                    target: Target::Group(group.clone()),
                };
                state.index.insert(&spec.filter, entry);
                state.groups.insert(key, group.clone());
                group
            }
        };
        group.join(GroupMember {
            id,
            target,
            admission: spec.admission(),
        });
        let record = SubRecord {
            filter: spec.filter.clone(),
            kind: SubKind::Member(group),
        };
        state.subs.insert(id, record);
        drop(state);
        self.inner.invalidate(&spec.filter);
        id
    }

    /// Removes a subscription; unknown ids are ignored.
    pub fn unsubscribe(&self, id: SubscriptionId) {
        let mut state = self.inner.state.write();
        let Some(record) = state.subs.remove(&id) else {
            return;
        };
        if let SubKind::Member(group) = &record.kind {
            if group.leave(id) == 0 {
                let key = (group.filter.clone(), group.name.clone());
                state.groups.remove(&key);
                state.index.remove(&record.filter, group.index_id);
            }
        } else {
            state.index.remove(&record.filter, id);
        }
        drop(state);
        self.inner.invalidate(&record.filter);
    }

    /// Routes a message to every match without waiting (at-most-once ingress). Durable targets
    /// take it in the background.
    pub fn publish(&self, msg: Arc<Envelope>) -> Routed {
        self.inner.update_retained(&msg);
        let matches = self.inner.lookup(&msg.subject);
        let mut routed = Routed::default();
        for (id, target) in matches.iter() {
            match target {
                Target::Queue { queue, admission } => {
                    if admission.admit(&msg, &mut routed) {
                        queue.put_nowait(msg.clone());
                        routed.queued += 1;
                    }
                }
                Target::Topic(topic) => {
                    topic.put_nowait(&msg);
                    routed.queued += 1;
                }
                other => {
                    if let Some(queue) = deliver_now(*id, other, &msg, &mut routed) {
                        queue.put_nowait(msg.clone());
                        routed.queued += 1;
                    }
                }
            }
        }
        self.inner.metrics.routed(&routed);
        routed
    }

    /// Routes a message and returns once every matched durable queue and topic accepted it
    /// under the store's durability (NSQ `OK`, MQTT PUBACK/PUBREC); a group's durable member
    /// counts as matched when the group picks it.
    pub async fn publish_durable(&self, msg: Arc<Envelope>) -> Result<Routed, RouteError> {
        if let Some(stored) = self.inner.update_retained(&msg) {
            // A retained set or clear is part of what the publisher's ack promises.
            stored.await.map_err(|_| RouteError::Closed)?;
        }
        let matches = self.inner.lookup(&msg.subject);
        let mut routed = Routed::default();
        for (id, target) in matches.iter() {
            match target {
                Target::Queue { queue, admission } => {
                    if admission.admit(&msg, &mut routed) {
                        queue.put(msg.clone()).await?;
                        routed.queued += 1;
                    }
                }
                Target::Topic(topic) => {
                    topic.put(msg.clone()).await?;
                    routed.queued += 1;
                }
                other => {
                    // A `$share` whose chosen member is a durable queue (an offline MQTT
                    // session) is acknowledged only once that queue accepted the message.
                    if let Some(queue) = deliver_now(*id, other, &msg, &mut routed) {
                        queue.put(msg.clone()).await?;
                        routed.queued += 1;
                    }
                }
            }
        }
        self.inner.metrics.routed(&routed);
        Ok(routed)
    }

    /// True when a publish to `subject` would reach at least one target.
    pub fn has_subscribers(&self, subject: &Subject) -> bool {
        !self.inner.lookup(subject).is_empty()
    }

    /// Retained messages whose subject matches `filter`, sorted by subject.
    pub fn retained(&self, filter: &Filter) -> Vec<Arc<Envelope>> {
        let mut found: Vec<Arc<Envelope>> = self
            .inner
            .retained
            .iter()
            .filter(|e| filter.matches(e.key()))
            .map(|e| e.value().clone())
            .collect();
        found.sort_by(|a, b| a.subject.cmp(&b.subject));
        found
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.inner.retained.len()
    }

    /// Number of index entries (subscriptions, groups, topics, queues).
    pub fn subscription_count(&self) -> usize {
        self.inner.state.read().index.len()
    }

    /// The nsqd topic `name`, created (and registered on its subject) if missing.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, SubjectError> {
        self.inner.topic(name)
    }

    /// The nsqd topic `name`, if it exists.
    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.get(name).map(|t| t.clone())
    }

    /// Deletes a topic with its channels and messages.
    pub fn delete_topic(&self, name: &str) -> bool {
        self.inner.delete_topic(name)
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<Arc<Topic>> = self.inner.topics.iter().map(|t| t.clone()).collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// The durable queue `name` (MQTT session `mqtt/<client-id>`, durable group), created if
    /// missing.
    pub fn durable_queue(&self, name: &str) -> Arc<DurableQueue> {
        self.inner.durable_queue(name)
    }

    /// The durable queue `name`, if it exists.
    pub fn get_durable_queue(&self, name: &str) -> Option<Arc<DurableQueue>> {
        self.inner.queues.get(name).map(|q| q.clone())
    }

    /// Deletes a durable queue and its stored records.
    pub fn remove_queue(&self, name: &str) {
        if let Some((_, queue)) = self.inner.queues.remove(name) {
            queue.empty();
            queue.close();
            if queue.is_durable() {
                let store = self.inner.backing.store.clone();
                let queue_name = queue.name().clone();
                self.inner.backing.spawn(async move {
                    if let Err(err) = store.remove_queue(&queue_name).await {
                        tracing::error!(queue = %queue_name, %err, "removing a stored queue failed");
                    }
                });
            }
        }
    }

    async fn recover(&self) -> Result<(), StoreError> {
        let store = self.inner.backing.store.clone();
        if !store.is_durable() {
            return Ok(());
        }
        for (key, value) in store.load_meta(RETAINED_META).await? {
            if let Ok((msg, _)) = record::decode(value) {
                self.inner
                    .retained
                    .insert(msg.subject.clone(), Arc::new(msg));
            } else {
                tracing::warn!(%key, "skipping undecodable retained message");
            }
        }
        for (key, value) in store.load_meta(TOPIC_META).await? {
            let name = key.trim_start_matches(TOPIC_META);
            if let Ok(topic) = self.inner.topic(name) {
                topic.restore_paused(value.as_ref() == b"paused");
            }
        }
        for (key, value) in store.load_meta(CHANNEL_META).await? {
            if let Some((topic, channel)) = key.trim_start_matches(CHANNEL_META).split_once('/') {
                if let Ok(topic) = self.inner.topic(topic) {
                    topic
                        .channel(channel)
                        .restore_paused(value.as_ref() == b"paused");
                }
            }
        }
        for queue in store.queues().await? {
            let Some(target) = self.queue_for(&queue)? else {
                continue;
            };
            // In chunks: past mem_queue_size a queue keeps only offsets, so a large backlog
            // never has to fit in memory at once.
            let mut from = Offset(0);
            loop {
                let records = store.read(&queue, from, RECOVERY_CHUNK).await?;
                let Some(&(last, _)) = records.last() else {
                    break;
                };
                target.restore(records);
                from = Offset(last.0 + 1);
            }
        }
        // A crash between "first channel created" and "buffer handed over" leaves messages in
        // the buffer of a topic that has channels: hand them over now.
        for topic in self.inner.topics.iter() {
            topic.flush_buffer();
        }
        Ok(())
    }

    /// Maps a stored queue name back onto its live queue.
    fn queue_for(&self, queue: &QueueName) -> Result<Option<Arc<DurableQueue>>, StoreError> {
        let Some(rest) = queue.as_str().strip_prefix("nsq/") else {
            return Ok(Some(self.inner.durable_queue(queue.as_str())));
        };
        let found = match rest.split_once('/') {
            None => self.inner.topic(rest).ok().map(|t| t.buffer().clone()),
            Some((topic, channel)) => self.inner.topic(topic).ok().map(|t| t.channel(channel)),
        };
        Ok(found)
    }
}

/// Offers `msg` to an outbox or a group. Returns the durable queue a group chose instead,
/// for the caller to put the message into (and count it).
fn deliver_now(
    id: SubscriptionId,
    target: &Target,
    msg: &Arc<Envelope>,
    routed: &mut Routed,
) -> Option<Arc<DurableQueue>> {
    let offer = match target {
        Target::Sink { sink, admission } => {
            if !admission.admit(msg, routed) {
                return None;
            }
            sink.offer(Delivery {
                msg: msg.clone(),
                sub: id,
                attempts: 0,
            })
        }
        Target::Group(group) => match group.deliver(msg) {
            Some(Handed::Offered(offer)) => offer,
            Some(Handed::Queue(queue)) => return Some(queue),
            None => return None,
        },
        Target::Queue { .. } | Target::Topic(_) => return None,
    };
    match offer {
        Offer::Queued => routed.delivered += 1,
        Offer::Dropped => routed.dropped += 1,
        Offer::Closed => {}
    }
    None
}

impl RouterInner {
    fn next_id(&self) -> SubscriptionId {
        SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The deduplicated targets for `subject`, from the cache or the index.
    fn lookup(&self, subject: &Subject) -> Matches {
        if let Some(hit) = self.cache.get(subject) {
            return hit.clone();
        }
        let (matches, generation) = {
            let state = self.state.read();
            let mut entries = Vec::new();
            state.index.collect(subject, &mut entries);
            (dedupe(entries), self.generation.load(Ordering::Acquire))
        };
        if self.cache.len() >= self.config.cache_size {
            self.evict_some();
        }
        self.cache.insert(subject.clone(), matches.clone());
        if self.generation.load(Ordering::Acquire) != generation {
            // The index changed while we computed: the entry may be stale.
            self.cache.remove(subject);
        }
        matches
    }

    fn evict_some(&self) {
        let mut budget = self.config.cache_size / 8 + 1;
        self.cache.retain(|_, _| {
            if budget == 0 {
                return true;
            }
            budget -= 1;
            false
        });
    }

    /// Drops cached results that `filter` could change.
    fn invalidate(&self, filter: &Filter) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.retain(|subject, _| !filter.matches(subject));
    }

    /// Sets or clears the retained message of `msg.subject`; the returned receiver fires once
    /// the change reached a durable store (`None` when there is nothing to wait for).
    fn update_retained(&self, msg: &Arc<Envelope>) -> Option<oneshot::Receiver<()>> {
        if !msg.retain {
            return None;
        }
        let key = format!("{RETAINED_META}{}", msg.subject);
        let value = if msg.payload.is_empty() {
            self.retained.remove(&msg.subject);
            None
        } else {
            self.retained.insert(msg.subject.clone(), msg.clone());
            Some(record::encode(msg, 0))
        };
        if !self.backing.store.is_durable() {
            return None;
        }
        let (done, stored) = oneshot::channel();
        self.backing.put_meta_then(key, value, Some(done));
        Some(stored)
    }

    fn topic(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>, SubjectError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(topic.clone());
        }
        let id = self.next_id();
        let fresh = Topic::new(
            name,
            &self.backing,
            self.config.queue.clone(),
            Arc::downgrade(self),
            id,
        )?;
        let topic = match self.topics.entry(name.to_owned()) {
            dashmap::Entry::Occupied(existing) => return Ok(existing.get().clone()),
            dashmap::Entry::Vacant(slot) => slot.insert(Arc::new(fresh)).clone(),
        };
        topic.start_pump();
        let filter = Filter::exact(topic.subject());
        self.state.write().index.insert(
            &filter,
            Entry {
                id,
                target: Target::Topic(topic.clone()),
            },
        );
        self.invalidate(&filter);
        topic.persist_topic_meta();
        Ok(topic)
    }

    pub(crate) fn delete_topic(&self, name: &str) -> bool {
        let Some((_, topic)) = self.topics.remove(name) else {
            return false;
        };
        let filter = Filter::exact(topic.subject());
        self.state.write().index.remove(&filter, topic.index_id());
        self.invalidate(&filter);
        topic.destroy();
        true
    }

    fn durable_queue(&self, name: &str) -> Arc<DurableQueue> {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| {
                DurableQueue::new(
                    QueueName::new(name),
                    &self.backing,
                    self.config.queue.clone(),
                    false,
                )
            })
            .clone()
    }
}

/// Keeps the first occurrence of each shared target; plain subscriptions stay one per entry.
fn dedupe(entries: Vec<Entry>) -> Matches {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|e| e.target.shared_key().is_none_or(|key| seen.insert(key)))
        .map(|e| (e.id, e.target))
        .collect()
}
