//! The NATS monitoring registry and its HTTP routes (`/varz`, `/connz`, `/subsz`).
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::config::Config;

/// The nats-server release whose client protocol this frontend implements; clients gate
/// features on INFO `version`, so it is advertised as is.
pub const ADVERTISED_VERSION: &str = "2.11.0";
/// What INFO and `/varz` carry in nats-server's `go` field: this build.
pub const RUNTIME: &str = concat!("polymq-", env!("CARGO_PKG_VERSION"));
/// nats-server's default page size for `/connz` and `/subsz`.
const DEFAULT_LIMIT: usize = 1024;

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

    /// A message arrived from the client.
    pub fn message_in(&self, bytes: usize) {
        self.totals.in_msgs.fetch_add(1, Ordering::Relaxed);
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

/// The `/varz`, `/connz` and `/subsz` routes over `monitor`.
pub fn routes(monitor: Monitor) -> axum::Router {
    axum::Router::new()
        .route("/varz", get(varz))
        .route("/connz", get(connz))
        .route("/subsz", get(subsz))
        .with_state(monitor)
}

type Params = Query<HashMap<String, String>>;

/// nats-server's `/varz` (the fields that have a meaning here).
#[derive(Debug, Serialize)]
struct Varz {
    server_id: String,
    server_name: String,
    version: &'static str,
    proto: u8,
    go: &'static str,
    host: String,
    port: u16,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    max_connections: usize,
    ping_interval: u128,
    ping_max: u32,
    http_host: String,
    http_port: u16,
    http_base_path: String,
    https_port: u16,
    auth_timeout: f64,
    max_control_line: usize,
    max_payload: usize,
    max_pending: usize,
    tls_timeout: f64,
    write_deadline: u128,
    start: String,
    now: String,
    uptime: String,
    mem: u64,
    cores: usize,
    gomaxprocs: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    routes: u32,
    remotes: u32,
    leafnodes: u32,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    in_client_msgs: u64,
    in_client_bytes: u64,
    out_client_msgs: u64,
    out_client_bytes: u64,
    slow_consumers: u64,
    stale_connections: u64,
    subscriptions: usize,
    cluster: Empty,
    gateway: Empty,
    leaf: Empty,
    mqtt: Empty,
    websocket: Empty,
    jetstream: Empty,
    http_req_stats: BTreeMap<&'static str, u64>,
    config_load_time: String,
    slow_consumer_stats: SlowConsumerStats,
}

/// The listener blocks nats-server always includes, empty when not configured.
#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct SlowConsumerStats {
    clients: u64,
    routes: u64,
    gateways: u64,
    leafs: u64,
}

async fn varz(State(monitor): State<Monitor>) -> Json<Varz> {
    monitor.count_request("/varz");
    let settings = monitor.settings();
    let (conns, [in_msgs, in_bytes, out_msgs, out_bytes]) = monitor.snapshot();
    let now = SystemTime::now();
    let inner = &monitor.inner;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Json(Varz {
        server_id: inner.server_id.clone(),
        server_name: settings.server_name,
        version: ADVERTISED_VERSION,
        proto: 1,
        go: RUNTIME,
        host: settings.host,
        port: settings.port,
        auth_required: settings.auth_required,
        max_connections: settings.max_connections,
        ping_interval: settings.ping_interval.as_nanos(),
        ping_max: settings.max_pings_out,
        http_host: String::new(),
        http_port: 0,
        http_base_path: String::new(),
        https_port: 0,
        auth_timeout: settings.auth_timeout.as_secs_f64(),
        max_control_line: settings.max_control_line,
        max_payload: settings.max_payload,
        max_pending: settings.max_pending,
        tls_timeout: 2.0,
        write_deadline: settings.write_deadline.as_nanos(),
        start: rfc3339(inner.start),
        now: rfc3339(now),
        uptime: uptime(now.duration_since(inner.start).unwrap_or_default()),
        mem: resident_memory(),
        cores,
        gomaxprocs: cores,
        cpu: 0.0,
        connections: conns.len(),
        total_connections: inner.total_connections.load(Ordering::Relaxed),
        routes: 0,
        remotes: 0,
        leafnodes: 0,
        in_msgs,
        out_msgs,
        in_bytes,
        out_bytes,
        in_client_msgs: in_msgs,
        in_client_bytes: in_bytes,
        out_client_msgs: out_msgs,
        out_client_bytes: out_bytes,
        slow_consumers: inner.slow_consumers.load(Ordering::Relaxed),
        stale_connections: inner.stale_connections.load(Ordering::Relaxed),
        subscriptions: conns.iter().map(|c| c.sub_count()).sum(),
        cluster: Empty {},
        gateway: Empty {},
        leaf: Empty {},
        mqtt: Empty {},
        websocket: Empty {},
        jetstream: Empty {},
        http_req_stats: inner
            .requests
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect(),
        config_load_time: rfc3339(inner.start),
        slow_consumer_stats: SlowConsumerStats {
            clients: inner.slow_consumers.load(Ordering::Relaxed),
            routes: 0,
            gateways: 0,
            leafs: 0,
        },
    })
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// nats-server's `/connz` envelope.
#[derive(Debug, Serialize)]
struct Connz {
    server_id: String,
    now: String,
    num_connections: usize,
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<ConnInfo>,
}

/// nats-server's `ConnInfo`.
#[derive(Debug, Serialize)]
struct ConnInfo {
    cid: u64,
    kind: &'static str,
    #[serde(rename = "type")]
    kind_type: &'static str,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    rtt: String,
    uptime: String,
    idle: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list_detail: Option<Vec<SubDetail>>,
    #[serde(skip)]
    rtt_ns: u64,
    #[serde(skip)]
    last_ns: u64,
    #[serde(skip)]
    start_ns: u64,
}

/// nats-server's `SubDetail`.
#[derive(Debug, Serialize)]
struct SubDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'static str>,
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    qgroup: Option<String>,
    sid: String,
    msgs: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max: u64,
    cid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which subscription details a request asked for (`subs=true` or `subs=detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubsWanted {
    None,
    List,
    Detail,
}

fn subs_wanted(params: &HashMap<String, String>) -> Result<SubsWanted, String> {
    match params.get("subs").map(|s| s.to_ascii_lowercase()) {
        None => Ok(SubsWanted::None),
        Some(s) if s == "detail" => Ok(SubsWanted::Detail),
        Some(s) => match parse_bool(&s) {
            Some(true) => Ok(SubsWanted::List),
            Some(false) => Ok(SubsWanted::None),
            None => Err(format!(
                "Error decoding boolean for 'subs': invalid syntax {s:?}"
            )),
        },
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<usize>, String> {
    params
        .get(name)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("Error decoding {name}: {s:?}"))
        })
        .transpose()
}

fn bad_request(text: String) -> Response {
    (StatusCode::BAD_REQUEST, text).into_response()
}

async fn connz(State(monitor): State<Monitor>, Query(params): Params) -> Response {
    monitor.count_request("/connz");
    let wanted = match subs_wanted(&params) {
        Ok(w) => w,
        Err(e) => return bad_request(e),
    };
    let (offset, limit, cid) = match (
        number(&params, "offset"),
        number(&params, "limit"),
        number(&params, "cid"),
    ) {
        (Ok(o), Ok(l), Ok(c)) => (o.unwrap_or(0), l.unwrap_or(DEFAULT_LIMIT), c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_request(e),
    };
    let auth = match params
        .get("auth")
        .filter(|s| !s.is_empty())
        .map(|s| parse_bool(s))
    {
        None => false,
        Some(Some(auth)) => auth,
        Some(None) => return bad_request("Error decoding boolean for 'auth'".into()),
    };
    let sort = params.get("sort").map_or("cid", String::as_str);
    let now = SystemTime::now();
    let mut infos: Vec<ConnInfo> = monitor
        .live()
        .iter()
        .filter(|c| cid.is_none_or(|want| c.cid == want as u64))
        .map(|c| conn_info(c, now, wanted, auth))
        .collect();
    if let Err(e) = sort_conns(&mut infos, sort) {
        return bad_request(e);
    }
    let total = infos.len();
    let connections: Vec<ConnInfo> = infos.into_iter().skip(offset).take(limit).collect();
    Json(Connz {
        server_id: monitor.inner.server_id.clone(),
        now: rfc3339(now),
        num_connections: connections.len(),
        total,
        offset,
        limit,
        connections,
    })
    .into_response()
}

/// One `/connz` entry; `auth` adds `authorized_user` (nats-server's `auth=true`).
fn conn_info(c: &ConnStats, now: SystemTime, wanted: SubsWanted, auth: bool) -> ConnInfo {
    let meta = c.meta.read().clone();
    let last_ns = c.last_activity_ns.load(Ordering::Relaxed);
    let last = UNIX_EPOCH + Duration::from_nanos(last_ns);
    let rtt_ns = c.rtt_ns.load(Ordering::Relaxed);
    let subs: Vec<(String, Arc<SubMeta>)> = c
        .subs
        .lock()
        .iter()
        .map(|(sid, s)| (sid.clone(), s.clone()))
        .collect();
    let (list, detail) = match wanted {
        _ if subs.is_empty() => (None, None),
        SubsWanted::None => (None, None),
        SubsWanted::List => (
            Some(subs.iter().map(|(_, s)| s.subject.clone()).collect()),
            None,
        ),
        SubsWanted::Detail => (
            None,
            Some(
                subs.iter()
                    .map(|(sid, s)| sub_detail(c.cid, sid, s, None))
                    .collect(),
            ),
        ),
    };
    let t = &c.totals;
    ConnInfo {
        cid: c.cid,
        kind: "Client",
        kind_type: "nats",
        ip: c.peer.ip().to_string(),
        port: c.peer.port(),
        start: rfc3339(c.start),
        last_activity: rfc3339(last),
        rtt: go_duration(Duration::from_nanos(rtt_ns)),
        uptime: uptime(now.duration_since(c.start).unwrap_or_default()),
        idle: uptime(now.duration_since(last).unwrap_or_default()),
        pending_bytes: c.pending.load(Ordering::Relaxed),
        in_msgs: t.in_msgs.load(Ordering::Relaxed),
        out_msgs: t.out_msgs.load(Ordering::Relaxed),
        in_bytes: t.in_bytes.load(Ordering::Relaxed),
        out_bytes: t.out_bytes.load(Ordering::Relaxed),
        subscriptions: subs.len(),
        name: meta.name,
        lang: meta.lang,
        version: meta.version,
        authorized_user: meta.user.filter(|_| auth),
        subscriptions_list: list,
        subscriptions_list_detail: detail,
        rtt_ns,
        last_ns,
        start_ns: unix_ns(c.start),
    }
}

/// One subscription's detail; `account` is named in `/subsz`, not under a connection.
fn sub_detail(cid: u64, sid: &str, sub: &SubMeta, account: Option<&'static str>) -> SubDetail {
    SubDetail {
        account,
        subject: sub.subject.clone(),
        qgroup: sub.queue.clone(),
        sid: sid.to_owned(),
        msgs: sub.msgs.load(Ordering::Relaxed),
        max: sub.max.load(Ordering::Relaxed),
        cid,
    }
}

/// nats-server's `/connz?sort=` options (descending except `cid` and `start`).
fn sort_conns(infos: &mut [ConnInfo], sort: &str) -> Result<(), String> {
    let desc = |key: fn(&ConnInfo) -> u64| {
        move |a: &ConnInfo, b: &ConnInfo| key(b).cmp(&key(a)).then(a.cid.cmp(&b.cid))
    };
    match sort {
        "" | "cid" => infos.sort_by_key(|c| c.cid),
        "start" => infos.sort_by_key(|c| (c.start_ns, c.cid)),
        "subs" => infos.sort_by(desc(|c| c.subscriptions as u64)),
        "pending" => infos.sort_by(desc(|c| c.pending_bytes as u64)),
        "msgs_to" => infos.sort_by(desc(|c| c.out_msgs)),
        "msgs_from" => infos.sort_by(desc(|c| c.in_msgs)),
        "bytes_to" => infos.sort_by(desc(|c| c.out_bytes)),
        "bytes_from" => infos.sort_by(desc(|c| c.in_bytes)),
        "last" => infos.sort_by(desc(|c| c.last_ns)),
        "idle" => infos.sort_by(desc(|c| u64::MAX - c.last_ns)),
        "uptime" => infos.sort_by(desc(|c| u64::MAX - c.start_ns)),
        "rtt" => infos.sort_by(desc(|c| c.rtt_ns)),
        other => return Err(format!("Invalid sorting option: {other}")),
    }
    Ok(())
}

/// nats-server's `/subsz` (sublist statistics of this listener's subscriptions).
#[derive(Debug, Serialize)]
struct Subsz {
    server_id: String,
    now: String,
    num_subscriptions: usize,
    num_cache: usize,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: u32,
    avg_fanout: f64,
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<SubDetail>>,
}

async fn subsz(State(monitor): State<Monitor>, Query(params): Params) -> Response {
    monitor.count_request("/subsz");
    let wanted = match subs_wanted(&params) {
        Ok(w) => w,
        Err(e) => return bad_request(e),
    };
    let (offset, limit) = match (number(&params, "offset"), number(&params, "limit")) {
        (Ok(o), Ok(l)) => (o.unwrap_or(0), l.unwrap_or(DEFAULT_LIMIT)),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    // Every publish is one match against the subscription index.
    let (conns, [in_msgs, ..]) = monitor.snapshot();
    let details: Vec<SubDetail> = conns
        .iter()
        .flat_map(|c| {
            let subs = c.subs.lock();
            subs.iter()
                .map(|(sid, s)| sub_detail(c.cid, sid, s, Some("$G")))
                .collect::<Vec<_>>()
        })
        .collect();
    let total = details.len();
    let inner = &monitor.inner;
    let list = (wanted != SubsWanted::None).then(|| {
        details
            .into_iter()
            .skip(offset)
            .take(limit)
            .collect::<Vec<_>>()
    });
    Json(Subsz {
        server_id: inner.server_id.clone(),
        now: rfc3339(SystemTime::now()),
        num_subscriptions: total,
        num_cache: 0,
        num_inserts: inner.sub_inserts.load(Ordering::Relaxed),
        num_removes: inner.sub_removes.load(Ordering::Relaxed),
        num_matches: in_msgs,
        cache_hit_rate: 0.0,
        max_fanout: 0,
        avg_fanout: 0.0,
        total,
        offset,
        limit,
        subscriptions_list: list,
    })
    .into_response()
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Go's `time.Time` JSON form in UTC: RFC 3339 with trailing zeros of the fraction trimmed.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// nats-server's `myUptime`: `1y2d3h4m5s`, leading zero units omitted.
pub fn uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    if years > 0 {
        format!(
            "{years}y{}d{}h{}m{}s",
            days % 365,
            hours % 24,
            mins % 60,
            secs % 60
        )
    } else if days > 0 {
        format!("{days}d{}h{}m{}s", hours % 24, mins % 60, secs % 60)
    } else if hours > 0 {
        format!("{hours}h{}m{}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Go's `time.Duration.String` (`1.5ms`, `2m3.5s`, `0s`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, scale: u128, unit: &str| {
        let (whole, rest) = (value / scale, value % scale);
        if rest == 0 {
            return format!("{whole}{unit}");
        }
        let width = scale.ilog10() as usize;
        let frac = format!("{rest:0width$}");
        format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return fraction(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return fraction(nanos, 1_000_000, "ms");
    }
    let secs = nanos / 1_000_000_000;
    let (hours, mins) = (secs / 3600, secs / 60 % 60);
    let sub_minute = nanos - (hours * 3600 + mins * 60) * 1_000_000_000;
    let seconds = fraction(sub_minute, 1_000_000_000, "s");
    match (hours, mins) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_go() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(uptime(Duration::from_secs(5)), "5s");
        assert_eq!(uptime(Duration::from_secs(65)), "1m5s");
        assert_eq!(uptime(Duration::from_secs(3_725)), "1h2m5s");
        assert_eq!(uptime(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(uptime(Duration::from_secs(366 * 86_400)), "1y1d0h0m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1_234_567)), "1.234567ms");
        assert_eq!(go_duration(Duration::from_micros(12)), "12µs");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(go_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

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
        a.message_in(10);
        a.messages_out(2, 7);
        monitor.close_connection(&a);
        monitor.close_connection(&a);
        assert_eq!(monitor.connections(), 1);
        assert_eq!(monitor.snapshot().1, [1, 10, 2, 7]);
        assert!(monitor.open_connection(4, peer, 2).is_some());
    }

    #[test]
    fn subs_parameter_follows_nats_server() {
        let params = |v: &str| HashMap::from([("subs".to_owned(), v.to_owned())]);
        assert_eq!(subs_wanted(&HashMap::new()), Ok(SubsWanted::None));
        assert_eq!(subs_wanted(&params("1")), Ok(SubsWanted::List));
        assert_eq!(subs_wanted(&params("true")), Ok(SubsWanted::List));
        assert_eq!(subs_wanted(&params("DETAIL")), Ok(SubsWanted::Detail));
        assert_eq!(subs_wanted(&params("0")), Ok(SubsWanted::None));
        assert!(subs_wanted(&params("maybe")).is_err());
    }
}
