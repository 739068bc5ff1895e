//! Per-broker NSQ state shared by the TCP listener, the HTTP API and the nsqlookupd link.
//!
//! The binary creates one [`Node`] per broker with [`Node::new`] and passes it to both `serve`
//! and `serve_http`, which meet here.
//!
//! The node keeps the registry of connected clients that `/stats` reports (nsqd's per-client
//! counters), the bound ports `/info` and nsqlookupd announce, and a `watch` that tells the
//! nsqlookupd link that topics or channels changed.
//!
//! # Invariants
//! - A client is registered for exactly the life of its session task.
//! - No lock here is held across an `.await`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;
use polymq_core::queue::Member;
use polymq_core::{ConnId, Router};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The nsqd version polymq speaks (the `version` reported by IDENTIFY, `/info`, `/stats`).
pub const NSQD_VERSION: &str = "1.3.0";

/// nsqd's client states, numbered as in `client_v2.go` (reported by `/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Connected, not subscribed: IDENTIFY, AUTH and SUB allowed.
    Init = 0,
    /// Subscribed to a channel.
    Subscribed = 3,
    /// CLS received.
    Closing = 4,
}

/// Client metadata that changes rarely (IDENTIFY, SUB, publishes).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// IDENTIFY `client_id` (initially the remote host).
    pub client_id: String,
    /// IDENTIFY `hostname` (initially the remote host).
    pub hostname: String,
    /// IDENTIFY `user_agent`.
    pub user_agent: String,
    /// IDENTIFY `topology_zone`.
    pub topology_zone: String,
    /// IDENTIFY `topology_region`.
    pub topology_region: String,
    /// IDENTIFY `sample_rate`.
    pub sample_rate: i32,
    /// AUTH succeeded.
    pub authed: bool,
    /// The stream is deflate-compressed.
    pub deflate: bool,
    /// The stream is snappy-compressed.
    pub snappy: bool,
    /// `(topic, channel)` after SUB.
    pub subscription: Option<(String, String)>,
    /// Messages published per topic.
    pub pub_counts: BTreeMap<String, u64>,
}

/// One connected client as `/stats` sees it.
#[derive(Debug)]
pub struct ClientInfo {
    /// Connection id.
    pub conn: ConnId,
    /// Remote address.
    pub remote: SocketAddr,
    /// Connect time, Unix seconds.
    pub connect_ts: i64,
    /// Metadata.
    pub meta: Mutex<ClientMeta>,
    /// [`ClientState`] as a number.
    pub state: AtomicU8,
    /// Current RDY.
    pub ready_count: AtomicI64,
    /// Messages sent.
    pub message_count: AtomicU64,
    /// FINs.
    pub finish_count: AtomicU64,
    /// REQs.
    pub requeue_count: AtomicU64,
    /// The channel membership, for the in-flight count.
    pub member: Mutex<Weak<Member>>,
    /// Cancelled to disconnect the client (its channel or topic was deleted).
    pub kick: CancellationToken,
}

impl ClientInfo {
    /// A freshly connected client.
    pub fn new(conn: ConnId, remote: SocketAddr) -> Self {
        let host = remote.ip().to_string();
        Self {
            conn,
            remote,
            connect_ts: unix_now(),
            meta: Mutex::new(ClientMeta {
                client_id: host.clone(),
                hostname: host,
                ..ClientMeta::default()
            }),
            state: AtomicU8::new(ClientState::Init as u8),
            ready_count: AtomicI64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            member: Mutex::new(Weak::new()),
            kick: CancellationToken::new(),
        }
    }

    /// Messages in flight to this client.
    pub fn in_flight(&self) -> usize {
        self.member.lock().upgrade().map_or(0, |m| m.in_flight())
    }

    /// True when subscribed to `topic` (and `channel`, when given).
    pub fn subscribed_to(&self, topic: &str, channel: Option<&str>) -> bool {
        self.meta
            .lock()
            .subscription
            .as_ref()
            .is_some_and(|(t, c)| t == topic && channel.is_none_or(|wanted| wanted == c))
    }
}

/// Shared NSQ state of one broker.
#[derive(Debug)]
pub struct Node {
    /// The routing core.
    pub router: Router,
    /// `[nsq]` settings.
    pub config: Arc<Config>,
    /// Connected TCP clients.
    pub clients: DashMap<ConnId, Arc<ClientInfo>>,
    /// Start time, Unix seconds.
    pub start_time: i64,
    /// Start time on the monotonic clock (`/stats` uptime).
    pub started: std::time::Instant,
    /// Bound TCP port (0 until listening).
    pub tcp_port: AtomicU16,
    /// Bound HTTP port (0 until listening).
    pub http_port: AtomicU16,
    /// Bumped whenever topics or channels may have changed (nsqlookupd registrations).
    pub topology: watch::Sender<u64>,
    /// This host's name.
    pub hostname: String,
}

impl Node {
    /// The NSQ state of one broker; the binary creates one and hands it to [`crate::serve`]
    /// and [`crate::serve_http`].
    pub fn new(router: Router, config: Arc<Config>) -> Arc<Node> {
        Arc::new(Node {
            router,
            config,
            clients: DashMap::new(),
            start_time: unix_now(),
            started: std::time::Instant::now(),
            tcp_port: AtomicU16::new(0),
            http_port: AtomicU16::new(0),
            topology: watch::channel(0).0,
            hostname: hostname(),
        })
    }

    /// The address announced to nsqlookupd and in `/info`.
    pub fn broadcast_address(&self) -> &str {
        if self.config.broadcast_address.is_empty() {
            &self.hostname
        } else {
            &self.config.broadcast_address
        }
    }

    /// Tells the nsqlookupd link to compare registrations.
    pub fn topology_changed(&self) {
        self.topology
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Disconnects every client subscribed to `topic` (and `channel`, when given), as nsqd
    /// closes the clients of a deleted topic or channel.
    pub fn kick_subscribers(&self, topic: &str, channel: Option<&str>) {
        for client in self.clients.iter() {
            if client.subscribed_to(topic, channel) {
                client.kick.cancel();
            }
        }
    }

    /// Snapshot of the connected clients, by connection order.
    pub fn client_list(&self) -> Vec<Arc<ClientInfo>> {
        let mut all: Vec<Arc<ClientInfo>> =
            self.clients.iter().map(|c| c.value().clone()).collect();
        all.sort_by_key(|c| c.conn);
        all
    }

    /// Records a port once its listener is bound.
    pub fn set_port(slot: &AtomicU16, port: u16) {
        slot.store(port, Ordering::Relaxed);
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The host name, as Go's `os.Hostname` reads it on Linux.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
