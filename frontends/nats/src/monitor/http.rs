//! The `/varz`, `/connz` and `/subsz` routes: nats-server's JSON field names
//! (`server/monitor.go`) over the registry.
//!
//! # Invariants
//! - A response reads one registry snapshot, so totals and the connection list agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Serialize;

use super::time::{go_duration, rfc3339, unix_ns, uptime};
use super::{ConnStats, Monitor, SubMeta, ADVERTISED_VERSION, RUNTIME};

/// nats-server's default page size for `/connz` and `/subsz`.
const DEFAULT_LIMIT: usize = 1024;

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

async fn varz(State(monitor): State<Monitor>, headers: HeaderMap) -> Json<Varz> {
    monitor.count_request("/varz");
    let (http_host, http_port) = monitor_address(&headers);
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
        http_host,
        http_port,
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

/// The monitoring listener's host and port (varz `http_host`, `http_port`), as the request's
/// `Host` header names them: the admin listener is configured outside this crate.
fn monitor_address(headers: &HeaderMap) -> (String, u16) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            (name.to_owned(), port.parse().unwrap_or(0))
        }
        _ => (host.to_owned(), 0),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_address_comes_from_the_host_header() {
        let with = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            monitor_address(&headers)
        };
        assert_eq!(with("127.0.0.1:8222"), ("127.0.0.1".into(), 8222));
        assert_eq!(with("[::1]:8222"), ("::1".into(), 8222));
        assert_eq!(with("[::1]"), ("[::1]".into(), 0));
        assert_eq!(with("example"), ("example".into(), 0));
        assert_eq!(monitor_address(&HeaderMap::new()), (String::new(), 0));
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
