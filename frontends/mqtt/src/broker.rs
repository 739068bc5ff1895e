//! Listener-wide MQTT state: the session registry (client id → session), session takeover,
//! offline sessions with their expiry timers and delayed wills, and the `$SYS` counters.
//!
//! ```text
//! sessions: DashMap<client id, Arc<Slot>>
//! Slot = Mutex { owner (the connected connection's token, if any)
//!               + stored (the persistent session while its client is offline, boxed)
//!               + timers (cancels the expiry timer and a delayed will on reconnect) }
//!        + released (Notify) + taken_over, taker_clean_start (set by the taker)
//! ```
//!
//! # Invariants
//! - At most one connection owns a client id. A new CONNECT kicks the owner and waits until it
//!   has released the slot (its session state is back in `stored`) before taking over.
//! - A takeover cancels the owner's own connection token after setting `taken_over`; the
//!   flags are reset only by the next owner, after the old one has released the slot.
//! - The timers token exists only once a timer of an offline session has been armed.
//! - A slot marked `dead` is out of the map; claimers that raced with its removal retry.
//! - The slot mutex is never held across an `.await`.
//! - An offline persistent session keeps its queue subscriptions in the router: messages keep
//!   arriving in its durable queue (`mqtt/<client-id>`) until it expires.
//! - A stored session record never claims a flow in flight that has completed since: it holds
//!   the full in-flight state only as written when the client detaches (or at shutdown), and
//!   while connected only what was restored and has not completed yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use polymq_core::queue::DurableQueue;
use polymq_core::subject::mqtt::{filter_to_filter, parse_shared};
use polymq_core::{
    ConnId, Filter, MessageId, Origin, Protocol, Router, StoreError, SubscriptionId,
    SubscriptionSpec,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::frame::SubscriptionOptions;
use crate::mapping::Message;
use crate::persist::{self, StoredFlight, StoredSession, StoredSub, SESSION_META};

/// How long a new connection waits for the connection it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Session Expiry Interval meaning "never" (3.1.1 CleanSession=0).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Sub {
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// 5.0 Subscription Identifier.
    pub sub_id: Option<u32>,
    /// The canonical filter (without `$share/G/`).
    pub filter: Filter,
    /// ShareName of a `$share/` subscription.
    pub share: Option<Arc<str>>,
    /// The router subscription, while registered.
    pub router_id: Option<SubscriptionId>,
}

/// Session state that outlives a connection (MQTT 5 §4.1).
#[derive(Debug)]
pub struct SessionState {
    /// Client identifier.
    pub client_id: String,
    /// Stable origin id of the session, so No Local holds across reconnects.
    pub conn: ConnId,
    /// Session Expiry Interval in seconds; [`NEVER_EXPIRES`] for ever.
    pub expiry: u32,
    /// Subscriptions by topic filter as the client wrote it.
    pub subs: BTreeMap<String, Sub>,
    /// The offline queue of a persistent session.
    pub queue: Option<Arc<DurableQueue>>,
    /// Packet ids of queued deliveries sent and not yet acknowledged (resent with DUP=1).
    pub out_ids: HashMap<MessageId, u16>,
    /// Outgoing QoS 2 packet ids acknowledged by PUBREC, waiting for PUBCOMP.
    pub pubrel: Vec<u16>,
    /// Incoming QoS 2 packet ids routed and waiting for PUBREL.
    pub inbound_qos2: HashSet<u16>,
    /// Next packet id to try.
    pub next_pid: u16,
    /// The flows in flight as the store holds them for this session.
    pub recorded: StoredFlight,
}

impl SessionState {
    /// A fresh session.
    pub fn new(client_id: &str, expiry: u32) -> Self {
        Self {
            client_id: client_id.to_owned(),
            conn: ConnId::next(),
            expiry,
            subs: BTreeMap::new(),
            queue: None,
            out_ids: HashMap::new(),
            pubrel: Vec::new(),
            inbound_qos2: HashSet::new(),
            next_pid: 1,
            recorded: StoredFlight::default(),
        }
    }

    /// A session read back from the store: its expiry and flows in flight (subscriptions are
    /// restored separately, into its queue).
    fn from_stored(client_id: &str, stored: &StoredSession) -> Self {
        let flight = &stored.flight;
        let mut session = Self::new(client_id, stored.expiry);
        session.out_ids = flight.outgoing.iter().copied().collect();
        session.pubrel.clone_from(&flight.pubrel);
        session.inbound_qos2 = flight.inbound.iter().copied().collect();
        session.next_pid = flight.next_pid.max(1);
        session.recorded = flight.clone();
        session
    }

    /// The flows in flight now.
    fn flight(&self) -> StoredFlight {
        let mut outgoing: Vec<(MessageId, u16)> =
            self.out_ids.iter().map(|(id, pid)| (*id, *pid)).collect();
        outgoing.sort_unstable_by_key(|(id, _)| *id);
        let mut inbound: Vec<u16> = self.inbound_qos2.iter().copied().collect();
        inbound.sort_unstable();
        StoredFlight {
            next_pid: self.next_pid,
            outgoing,
            pubrel: self.pubrel.clone(),
            inbound,
        }
    }

    /// Takes the flows in flight now as what the next record holds (the session detaches).
    pub fn record_flight(&mut self) {
        self.recorded = self.flight();
    }

    /// Forgets a completed inbound QoS 2 packet id from the record; true when it was there
    /// (the record must be rewritten).
    pub fn forget_inbound(&mut self, pid: u16) -> bool {
        forget(&mut self.recorded.inbound, pid)
    }

    /// Forgets a completed PUBREL from the record; true when it was there.
    pub fn forget_pubrel(&mut self, pid: u16) -> bool {
        forget(&mut self.recorded.pubrel, pid)
    }

    /// Forgets an acknowledged queued message from the record. Not worth a rewrite: a stale
    /// entry only reserves its packet id until the queue delivers past it.
    pub fn forget_outgoing(&mut self, id: &MessageId) {
        if !self.recorded.outgoing.is_empty() {
            self.recorded.outgoing.retain(|(stored, _)| stored != id);
        }
    }

    /// The origin of everything this session publishes.
    pub fn origin(&self) -> Origin {
        Origin {
            protocol: Protocol::Mqtt,
            conn: self.conn,
        }
    }

    /// The durable queue name of a persistent session.
    pub fn queue_name(client_id: &str) -> String {
        format!("mqtt/{client_id}")
    }

    /// Subscribes `filter` (shared or not) into the session's queue; `None` when the filter has
    /// no canonical form.
    fn restore_sub(&self, router: &Router, stored: &StoredSub) -> Option<Sub> {
        let (share, inner) = match parse_shared(&stored.filter).ok()? {
            Some((name, inner)) => (Some(Arc::<str>::from(name)), inner),
            None => (None, stored.filter.clone()),
        };
        let filter = filter_to_filter(&inner).ok()?;
        let router_id = match &self.queue {
            Some(queue) => {
                let spec = SubscriptionSpec {
                    filter: filter.clone(),
                    group: share.clone(),
                    origin: self.origin(),
                    no_local: stored.options.no_local,
                    requests_only: false,
                };
                Some(router.subscribe_queue(spec, queue.clone()))
            }
            None => None,
        };
        Some(Sub {
            options: stored.options,
            sub_id: stored.sub_id,
            filter,
            share,
            router_id,
        })
    }

    /// The stored form of this session.
    fn to_stored(&self) -> StoredSession {
        let subs = self
            .subs
            .iter()
            .map(|(filter, sub)| StoredSub {
                filter: filter.clone(),
                options: sub.options,
                sub_id: sub.sub_id,
            })
            .collect();
        StoredSession {
            expiry: self.expiry,
            subs,
            flight: self.recorded.clone(),
        }
    }

    /// Removes every router subscription and the offline queue.
    pub fn discard(&mut self, router: &Router) {
        for sub in self.subs.values_mut() {
            if let Some(id) = sub.router_id.take() {
                router.unsubscribe(id);
            }
        }
        self.subs.clear();
        if let Some(queue) = self.queue.take() {
            router.remove_queue(queue.name().as_str());
        }
    }
}

/// Removes `pid` from `pids`; true when it was there.
fn forget(pids: &mut Vec<u16>, pid: u16) -> bool {
    let before = pids.len();
    pids.retain(|&p| p != pid);
    pids.len() != before
}

/// A will waiting to be published, with its delay.
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// The will message.
    pub message: Message,
    /// 5.0 Will Delay Interval in seconds.
    pub delay: u32,
    /// Origin to publish it under.
    pub origin: Origin,
}

/// Counters behind `$SYS/broker/...`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connected clients now.
    pub connected: AtomicU64,
    /// Most clients connected at once.
    pub maximum: AtomicU64,
    /// Clients whose session has expired.
    pub expired: AtomicU64,
    /// MQTT packets received.
    pub msgs_received: AtomicU64,
    /// MQTT packets sent.
    pub msgs_sent: AtomicU64,
    /// PUBLISH packets received.
    pub pub_received: AtomicU64,
    /// PUBLISH packets sent.
    pub pub_sent: AtomicU64,
    /// PUBLISH deliveries dropped (queue limits, outbox full, too large).
    pub pub_dropped: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// Bytes sent.
    pub bytes_sent: AtomicU64,
    /// Payload bytes of PUBLISH packets received.
    pub pub_bytes_received: AtomicU64,
    /// Payload bytes of PUBLISH packets sent.
    pub pub_bytes_sent: AtomicU64,
    /// Connections accepted (`$SYS/broker/load/sockets`).
    pub sockets: AtomicU64,
    /// CONNECTs accepted (`$SYS/broker/load/connections`).
    pub connections: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn client_connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let now = self.connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.maximum.fetch_max(now, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct SlotInner {
    /// The owner's connection token: cancelled to kick it.
    owner: Option<CancellationToken>,
    stored: Option<Box<SessionState>>,
    /// Armed timers of the offline session.
    timers: Option<CancellationToken>,
    dead: bool,
}

impl SlotInner {
    /// The token of the offline session's timers, created when the first one is armed.
    fn timers(&mut self) -> CancellationToken {
        self.timers
            .get_or_insert_with(CancellationToken::new)
            .clone()
    }
}

/// One client id's entry in the registry.
#[derive(Debug, Default)]
pub struct Slot {
    inner: Mutex<SlotInner>,
    /// Notified when the owner lets go.
    released: Notify,
    /// Set when another connection takes over from the owner.
    taken_over: AtomicBool,
    /// Set by the connection that takes over: its Clean Start flag.
    taker_clean_start: AtomicBool,
}

impl Slot {
    /// True when the owner's token was cancelled by a takeover.
    pub fn taken_over(&self) -> bool {
        self.taken_over.load(Ordering::Relaxed)
    }

    /// The Clean Start flag of the connection that took this slot over.
    pub fn taker_clean_start(&self) -> bool {
        self.taker_clean_start.load(Ordering::Relaxed)
    }
}

/// What a connection gets when it owns a client id.
#[derive(Debug)]
pub struct Claim {
    /// The client id.
    pub client_id: String,
    /// The registry entry.
    pub slot: Arc<Slot>,
}

/// Listener-wide state shared by every MQTT connection.
#[derive(Debug)]
pub struct Broker {
    /// The routing core.
    pub router: Router,
    /// The `[mqtt]` settings.
    pub config: Config,
    /// `$SYS` counters.
    pub stats: Stats,
    /// When the listener started.
    pub started: Instant,
    sessions: DashMap<String, Arc<Slot>>,
}

impl Broker {
    /// New listener state. Session records go through the router's ordered state writes.
    pub fn new(router: Router, config: &Config) -> Self {
        Self {
            router,
            config: config.normalised(),
            stats: Stats::default(),
            started: Instant::now(),
            sessions: DashMap::new(),
        }
    }

    /// Loads the persistent sessions a durable store kept across a restart; they are offline
    /// until their clients reconnect, and expire as usual.
    pub async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        if !self.router.is_durable() {
            return Ok(());
        }
        for (key, value) in self.router.load_state(SESSION_META).await? {
            let client_id = key.trim_start_matches(SESSION_META).to_owned();
            let Some(stored) = persist::decode(value) else {
                tracing::warn!(%key, "skipping undecodable MQTT session");
                continue;
            };
            let mut session = SessionState::from_stored(&client_id, &stored);
            session.queue = Some(self.session_queue(&client_id));
            for sub in &stored.subs {
                if let Some(restored) = session.restore_sub(&self.router, sub) {
                    session.subs.insert(sub.filter.clone(), restored);
                }
            }
            let slot = Arc::new(Slot::default());
            let timers = {
                let mut inner = slot.inner.lock();
                inner.stored = Some(Box::new(session));
                inner.timers()
            };
            self.sessions.insert(client_id.clone(), slot.clone());
            if stored.expiry != NEVER_EXPIRES {
                self.expire_later(slot, client_id, stored.expiry, timers);
            }
        }
        Ok(())
    }

    /// Records a persistent session's subscriptions, expiry and recorded flows in flight
    /// (durable stores only).
    pub fn save_session(&self, session: &SessionState) {
        if session.queue.is_none() || session.expiry == 0 {
            return;
        }
        let key = format!("{SESSION_META}{}", session.client_id);
        let record = persist::encode(&session.to_stored());
        self.router.save_state(&key, Some(record));
    }

    /// The offline queue of a persistent session, capped at `max_queued_messages` waiting
    /// messages (newer ones are dropped while it is full, as mosquitto does).
    pub fn session_queue(&self, client_id: &str) -> Arc<DurableQueue> {
        let queue = self
            .router
            .durable_queue(&SessionState::queue_name(client_id));
        queue.set_limit(self.config.max_queued_messages);
        queue
    }

    /// Waits until every session record written so far reached the store.
    pub async fn flush_sessions(&self) {
        self.router.flush().await;
    }

    /// Ends a session for good: router subscriptions, queue and stored record.
    pub fn end_session(&self, session: &mut SessionState) {
        let persisted = session.queue.is_some();
        session.discard(&self.router);
        if persisted {
            self.router
                .save_state(&format!("{SESSION_META}{}", session.client_id), None);
        }
    }

    /// Sessions known (connected or offline persistent).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Messages held in persistent sessions' queues: ready, deferred and in flight.
    pub fn queued_messages(&self) -> usize {
        self.sessions
            .iter()
            .filter_map(|e| {
                self.router
                    .get_durable_queue(&SessionState::queue_name(e.key()))
            })
            .map(|q| {
                let stats = q.stats();
                stats.depth + stats.deferred + stats.in_flight
            })
            .sum()
    }

    /// Takes ownership of `client_id` for the connection whose token is `owner`, kicking (and
    /// waiting for) the current owner. Returns the claim and the session an earlier
    /// connection left, if any.
    pub async fn claim(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        owner: &CancellationToken,
    ) -> (Claim, Option<Box<SessionState>>) {
        loop {
            let slot = self
                .sessions
                .entry(client_id.to_owned())
                .or_default()
                .clone();
            let released = slot.released.notified();
            tokio::pin!(released);
            let kicked = {
                let mut inner = slot.inner.lock();
                if inner.dead {
                    false
                } else if let Some(kick) = &inner.owner {
                    slot.taker_clean_start.store(clean_start, Ordering::Relaxed);
                    slot.taken_over.store(true, Ordering::Relaxed);
                    kick.cancel();
                    // Registered under the lock: the owner's release cannot slip past.
                    released.as_mut().enable();
                    true
                } else {
                    if let Some(timers) = inner.timers.take() {
                        timers.cancel();
                    }
                    slot.taker_clean_start.store(false, Ordering::Relaxed);
                    slot.taken_over.store(false, Ordering::Relaxed);
                    inner.owner = Some(owner.clone());
                    let stored = inner.stored.take();
                    drop(inner);
                    self.stats.client_connected();
                    let claim = Claim {
                        client_id: client_id.to_owned(),
                        slot: slot.clone(),
                    };
                    return (claim, stored);
                }
            };
            if kicked {
                // A stuck owner must not block the client for ever.
                let _ = tokio::time::timeout(TAKEOVER_WAIT, released).await;
            } else {
                self.remove_dead(client_id, &slot);
            }
        }
    }

    fn remove_dead(&self, client_id: &str, slot: &Arc<Slot>) {
        self.sessions
            .remove_if(client_id, |_, current| Arc::ptr_eq(current, slot));
    }

    /// Lets go of a client id. A persistent `session` is kept (and expires after its interval);
    /// `None` ends the session. `will` is published now or after its delay.
    pub fn release(
        self: &Arc<Self>,
        claim: &Claim,
        session: Option<SessionState>,
        will: Option<PendingWill>,
    ) {
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        let (timers, expiry) = {
            let mut inner = claim.slot.inner.lock();
            let expiry = session.as_ref().map(|s| s.expiry);
            inner.stored = session.map(Box::new);
            inner.owner = None;
            if inner.stored.is_none() {
                inner.dead = true;
            }
            (inner.timers(), expiry)
        };
        claim.slot.released.notify_waiters();
        match expiry {
            None => self.remove_dead(&claim.client_id, &claim.slot),
            Some(NEVER_EXPIRES) => {}
            Some(secs) => {
                let id = claim.client_id.clone();
                self.expire_later(claim.slot.clone(), id, secs, timers.clone());
            }
        }
        if let Some(will) = will {
            let session_end = expiry.unwrap_or(0);
            self.publish_will_later(will, session_end, timers);
        }
    }

    fn expire_later(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        client_id: String,
        secs: u32,
        timers: CancellationToken,
    ) {
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = timers.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(u64::from(secs))) => {
                    let stored = {
                        let mut inner = slot.inner.lock();
                        if inner.owner.is_some() || timers.is_cancelled() {
                            return;
                        }
                        inner.dead = true;
                        inner.stored.take()
                    };
                    if let Some(mut session) = stored {
                        broker.end_session(&mut session);
                        Stats::add(&broker.stats.expired, 1);
                    }
                    broker.remove_dead(&client_id, &slot);
                }
            }
        });
    }

    /// Publishes `will` after min(will delay, session expiry), unless the client reconnects.
    fn publish_will_later(
        self: &Arc<Self>,
        will: PendingWill,
        session_end: u32,
        timers: CancellationToken,
    ) {
        let delay = will.delay.min(session_end);
        if delay == 0 {
            self.publish_will(&will);
            return;
        }
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = timers.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {
                    broker.publish_will(&will);
                }
            }
        });
    }

    /// Publishes a will now.
    pub fn publish_will(&self, will: &PendingWill) {
        match will.message.to_envelope(will.origin) {
            Ok(env) => {
                self.router.publish(Arc::new(env));
            }
            Err(err) => tracing::debug!(%err, "will topic has no canonical subject"),
        }
    }
}
