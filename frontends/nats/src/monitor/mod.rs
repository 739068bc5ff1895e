//! The NATS monitoring registry and its HTTP routes (`/varz`, `/connz`, `/subsz`).
//!
//! This module holds the registry; `http` the routes and their JSON, `time` Go's text forms
//! of times and durations that the JSON uses.
//!
//! A [`Monitor`] is shared by the listener and the admin HTTP server. Each session registers
//! a [`ConnStats`] when it starts and deregisters it when it ends; the routes read the live
//! registry plus the totals of closed connections. The JSON field names are nats-server's
//! (`server/monitor.go`) for everything a dashboard or `nats server report` reads.
//!
//! # Invariants
//! - Counters are relaxed atomics written by one session each; no lock is held while a
//!   session runs, and the HTTP handlers never block a session longer than one map-shard read.
//! - Server-wide totals = totals of closed connections + the sum over live ones, so no
//!   counter is shared between sessions on the message path.
//! - `server_id` is generated once per `Monitor` and is what INFO advertises.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::config::Config;

mod http;
mod time;

pub use http::routes;
use time::unix_ns;
pub use time::{go_duration, rfc3339, uptime};

/// The nats-server release whose client protocol this frontend implements; clients gate
/// features on INFO `version`, so it is advertised as is.
pub const ADVERTISED_VERSION: &str = "2.11.0";
/// What INFO and `/varz` carry in nats-server's `go` field: this build.
pub const RUNTIME: &str = concat!("polymq-", env!("CARGO_PKG_VERSION"));

/// Listener settings the routes report, captured when the listener starts.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// INFO / varz `server_name`.
    pub server_name: String,
    /// Listener host.
    pub host: String,
    /// Listener port.
    pub port: u16,
    /// Whether clients must authenticate.
    pub auth_required: bool,
    /// Limits, as configured.
    pub max_payload: usize,
    /// Longest control line.
    pub max_control_line: usize,
    /// Server PING interval.
    pub ping_interval: Duration,
    /// Unanswered PINGs allowed.
    pub max_pings_out: u32,
    /// Slow-consumer threshold in bytes.
    pub max_pending: usize,
    /// CONNECT deadline when authenticating.
    pub auth_timeout: Duration,
    /// Write progress deadline.
    pub write_deadline: Duration,
    /// Connection limit.
    pub max_connections: usize,
}

impl Settings {
    /// The settings of `config` served on `local`; `server_id` names an unnamed server.
    pub fn new(config: &Config, local: SocketAddr, server_id: &str) -> Self {
        Self {
            server_name: config
                .server_name
                .clone()
                .unwrap_or_else(|| server_id.to_owned()),
            host: local.ip().to_string(),
            port: local.port(),
            auth_required: config.auth_required(),
            max_payload: config.max_payload,
            max_control_line: config.max_control_line,
            ping_interval: config.ping_interval(),
            max_pings_out: config.max_pings_out,
            max_pending: config.max_pending,
            auth_timeout: config.auth_timeout(),
            write_deadline: config.write_deadline(),
            max_connections: config.max_connections,
        }
    }
}

/// Message and byte counters of one direction pair.
#[derive(Debug, Default)]
struct Totals {
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    out_msgs: AtomicU64,
    out_bytes: AtomicU64,
}

/// Who the client says it is (CONNECT `name`, `lang`, `version`) and who it authenticated as.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// CONNECT `name`.
    pub name: String,
    /// CONNECT `lang`.
    pub lang: String,
    /// CONNECT `version`.
    pub version: String,
    /// The user from the users list it authenticated as.
    pub user: Option<String>,
}

/// One subscription as the monitor sees it; the session counts deliveries in `msgs`.
#[derive(Debug)]
pub struct SubMeta {
    /// Subject filter as sent.
    pub subject: String,
    /// Queue group, if any.
    pub queue: Option<String>,
    /// Messages delivered so far.
    pub msgs: AtomicU64,
    /// Auto-unsubscribe limit (0 = none).
    pub max: AtomicU64,
}

/// Live counters of one connection.
#[derive(Debug)]
pub struct ConnStats {
    /// Client id (also INFO `client_id`).
    pub cid: u64,
    peer: SocketAddr,
    start: SystemTime,
    last_activity_ns: AtomicU64,
    totals: Totals,
    pending: AtomicUsize,
    rtt_ns: AtomicU64,
    meta: RwLock<ClientMeta>,
    subs: Mutex<BTreeMap<String, Arc<SubMeta>>>,
}

impl ConnStats {
    fn new(cid: u64, peer: SocketAddr) -> Self {
        let start = SystemTime::now();
        Self {
            cid,
            peer,
            start,
            last_activity_ns: AtomicU64::new(unix_ns(start)),
            totals: Totals::default(),
            pending: AtomicUsize::new(0),
            rtt_ns: AtomicU64::new(0),
            meta: RwLock::new(ClientMeta::default()),
            subs: Mutex::new(BTreeMap::new()),
        }
    }

    /// `count` messages totalling `bytes` arrived from the client.
    pub fn messages_in(&self, count: u64, bytes: usize) {
        self.totals.in_msgs.fetch_add(count, Ordering::Relaxed);
        self.totals
            .in_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `count` messages totalling `bytes` went to the client.
    pub fn messages_out(&self, count: u64, bytes: usize) {
        self.totals.out_msgs.fetch_add(count, Ordering::Relaxed);
        self.totals
            .out_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Records activity now (nats-server's `last_activity`).
    pub fn touch(&self) {
        self.last_activity_ns
            .store(unix_ns(SystemTime::now()), Ordering::Relaxed);
    }

    /// Outbound bytes not yet written.
    pub fn set_pending(&self, bytes: usize) {
        self.pending.store(bytes, Ordering::Relaxed);
    }

    /// The last PING round trip.
    pub fn set_rtt(&self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.rtt_ns.store(ns, Ordering::Relaxed);
    }

    /// Replaces the client's self-description.
    pub fn set_meta(&self, meta: ClientMeta) {
        *self.meta.write() = meta;
    }

    /// Registers a subscription under its sid.
    pub fn add_sub(&self, sid: &str, sub: Arc<SubMeta>) {
        self.subs.lock().insert(sid.to_owned(), sub);
    }

    /// Forgets a subscription.
    pub fn remove_sub(&self, sid: &str) {
        self.subs.lock().remove(sid);
    }

    fn sub_count(&self) -> usize {
        self.subs.lock().len()
    }
}

/// Shared monitoring state: the connection registry and server-wide counters.
#[derive(Clone, Default)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("server_id", &self.inner.server_id)
            .finish()
    }
}

struct Inner {
    server_id: String,
    start: SystemTime,
    settings: RwLock<Settings>,
    /// Held for writing while a closing connection's counters move into `closed`, and for
    /// reading while a snapshot sums `closed` and the live connections, so a snapshot counts
    /// every connection exactly once.
    registry: RwLock<()>,
    conns: DashMap<u64, Arc<ConnStats>>,
    live: AtomicUsize,
    closed: Totals,
    total_connections: AtomicU64,
    slow_consumers: AtomicU64,
    stale_connections: AtomicU64,
    sub_inserts: AtomicU64,
    sub_removes: AtomicU64,
    requests: DashMap<&'static str, u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            server_id: generate_server_id(),
            start: SystemTime::now(),
            settings: RwLock::new(Settings::default()),
            registry: RwLock::new(()),
            conns: DashMap::new(),
            live: AtomicUsize::new(0),
            closed: Totals::default(),
            total_connections: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            stale_connections: AtomicU64::new(0),
            sub_inserts: AtomicU64::new(0),
            sub_removes: AtomicU64::new(0),
            requests: DashMap::new(),
        }
    }
}

/// A server id shaped like nats-server's (an nkey: `N` + 55 base32 characters).
fn generate_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    std::iter::once('N')
        .chain((0..55).map(|_| {
            let i = fastrand::usize(..ALPHABET.len());
            ALPHABET.get(i).map_or('A', |&b| char::from(b))
        }))
        .collect()
}

impl Monitor {
    /// The id INFO and every endpoint report.
    pub fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    /// Records the listener's settings (called once by `serve`).
    pub fn configure(&self, settings: Settings) {
        *self.inner.settings.write() = settings;
    }

    /// The recorded settings.
    pub fn settings(&self) -> Settings {
        self.inner.settings.read().clone()
    }

    /// Registers a connection unless `max` are already open.
    pub fn open_connection(
        &self,
        cid: u64,
        peer: SocketAddr,
        max: usize,
    ) -> Option<Arc<ConnStats>> {
        if self.inner.live.fetch_add(1, Ordering::AcqRel) >= max {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.inner.total_connections.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ConnStats::new(cid, peer));
        self.inner.conns.insert(cid, stats.clone());
        Some(stats)
    }

    /// Deregisters a connection, folding its counters into the closed totals.
    pub fn close_connection(&self, stats: &ConnStats) {
        let _registry = self.inner.registry.write();
        if self.inner.conns.remove(&stats.cid).is_none() {
            return;
        }
        let (from, to) = (&stats.totals, &self.inner.closed);
        for (src, dst) in [
            (&from.in_msgs, &to.in_msgs),
            (&from.in_bytes, &to.in_bytes),
            (&from.out_msgs, &to.out_msgs),
            (&from.out_bytes, &to.out_bytes),
        ] {
            dst.fetch_add(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.inner.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.conns.len()
    }

    /// A client was disconnected as a slow consumer.
    pub fn slow_consumer(&self) {
        self.inner.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// Slow consumers since start.
    pub fn slow_consumers(&self) -> u64 {
        self.inner.slow_consumers.load(Ordering::Relaxed)
    }

    /// A client was closed as stale (unanswered PINGs).
    pub fn stale_connection(&self) {
        self.inner.stale_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription was added.
    pub fn subscribed(&self) {
        self.inner.sub_inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription was removed.
    pub fn unsubscribed(&self) {
        self.inner.sub_removes.fetch_add(1, Ordering::Relaxed);
    }

    fn count_request(&self, path: &'static str) {
        *self.inner.requests.entry(path).or_insert(0) += 1;
    }

    fn live(&self) -> Vec<Arc<ConnStats>> {
        let mut conns: Vec<Arc<ConnStats>> =
            self.inner.conns.iter().map(|e| e.value().clone()).collect();
        conns.sort_by_key(|c| c.cid);
        conns
    }

    /// The live connections and the server-wide `[in_msgs, in_bytes, out_msgs, out_bytes]`,
    /// taken together so no connection is counted twice or missed.
    fn snapshot(&self) -> (Vec<Arc<ConnStats>>, [u64; 4]) {
        let _registry = self.inner.registry.read();
        let conns = self.live();
        let read = |t: &Totals| {
            [&t.in_msgs, &t.in_bytes, &t.out_msgs, &t.out_bytes].map(|a| a.load(Ordering::Relaxed))
        };
        let mut totals = read(&self.inner.closed);
        for conn in &conns {
            for (sum, value) in totals.iter_mut().zip(read(&conn.totals)) {
                *sum += value;
            }
        }
        (conns, totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_id_looks_like_an_nkey() {
        let id = generate_server_id();
        assert_eq!(id.len(), 56);
        assert!(id.starts_with('N'));
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(
            Monitor::default().server_id(),
            Monitor::default().server_id()
        );
    }

    #[test]
    fn registry_enforces_the_connection_limit_and_folds_totals() {
        let monitor = Monitor::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = monitor.open_connection(1, peer, 2).unwrap();
        let _b = monitor.open_connection(2, peer, 2).unwrap();
        assert!(monitor.open_connection(3, peer, 2).is_none());
        a.messages_in(1, 10);
        a.messages_out(2, 7);
        monitor.close_connection(&a);
        monitor.close_connection(&a);
        assert_eq!(monitor.connections(), 1);
        assert_eq!(monitor.snapshot().1, [1, 10, 2, 7]);
        assert!(monitor.open_connection(4, peer, 2).is_some());
    }
}
