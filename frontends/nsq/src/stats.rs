//! `/stats`: nsqd's statistics, as JSON (`format=json`, read by nsqadmin) or nsqd's text.
//!
//! Field names, order and null-versus-empty choices follow nsqd's `stats.go` and
//! `client_v2.go` (`ClientV2Stats`). Values polymq has no equivalent for are reported as nsqd
//! reports them when the feature is unused: `e2e_processing_latency`
//! `{"count":0,"percentiles":null}`, TLS fields empty. `backend_depth` counts the messages a
//! queue holds only in the store (past `mem_queue_size`, disk backend).
//!
//! # Invariants
//! - Topics and channels are sorted by name; clients by connection order.
//! - `topic=`/`channel=` filters behave as nsqd's (an unknown topic gives `topics: null`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use polymq_core::gotime::{go_duration, rfc3339};
use polymq_core::topic::Topic;
use serde_json::{json, Map, Value};

use crate::http::Query;
use crate::node::{unix_now, ClientInfo, Node, NSQD_VERSION};

/// What `/stats` was asked for.
#[derive(Debug, Default)]
pub struct Request {
    topic: String,
    channel: String,
    include_clients: bool,
    include_mem: bool,
}

impl Request {
    /// Reads nsqd's parameters; unrecognised booleans mean true, as in nsqd.
    pub fn from_query(query: &Query) -> Self {
        let flag = |key| !matches!(query.get(key), Some("false" | "0"));
        Self {
            topic: query.get("topic").unwrap_or_default().to_owned(),
            channel: query.get("channel").unwrap_or_default().to_owned(),
            include_clients: flag("include_clients"),
            include_mem: flag("include_mem"),
        }
    }
}

/// The topics the request selects; `None` when a named topic does not exist.
fn selected_topics(node: &Node, request: &Request) -> Option<Vec<Arc<Topic>>> {
    if request.topic.is_empty() {
        return Some(node.router.topics());
    }
    node.router.get_topic(&request.topic).map(|t| vec![t])
}

fn latency() -> Value {
    json!({ "count": 0, "percentiles": null })
}

/// The JSON document.
pub fn json(node: &Node, request: &Request) -> Value {
    let clients = node.client_list();
    let topics = selected_topics(node, request).map(|topics| {
        topics
            .iter()
            .filter_map(|topic| topic_json(topic, &clients, request))
            .collect::<Vec<_>>()
    });
    let producers: Vec<Value> = if request.include_clients {
        clients
            .iter()
            .filter(|c| !c.meta.lock().pub_counts.is_empty())
            .map(|c| client_json(c, &request.topic))
            .collect()
    } else {
        Vec::new()
    };
    let mut doc = Map::new();
    doc.insert("version".into(), json!(NSQD_VERSION));
    doc.insert("health".into(), json!("OK"));
    doc.insert("start_time".into(), json!(node.start_time));
    doc.insert("topics".into(), topics.map_or(Value::Null, Value::from));
    if request.include_mem {
        doc.insert("memory".into(), memory_json());
    }
    let producers = if producers.is_empty() {
        Value::Null
    } else {
        Value::from(producers)
    };
    doc.insert("producers".into(), producers);
    Value::Object(doc)
}

fn topic_json(topic: &Topic, clients: &[Arc<ClientInfo>], request: &Request) -> Option<Value> {
    let stats = topic.stats();
    let channels: Vec<Value> = stats
        .channels
        .iter()
        .filter(|(name, _)| request.channel.is_empty() || *name == request.channel)
        .map(|(name, c)| {
            let members: Vec<Value> = clients
                .iter()
                .filter(|cl| cl.subscribed_to(topic.name(), Some(name)))
                .map(|cl| client_json(cl, &request.topic))
                .collect();
            json!({
                "channel_name": name,
                "depth": c.depth,
                "backend_depth": c.backend_depth,
                "in_flight_count": c.in_flight,
                "deferred_count": c.deferred,
                "message_count": c.message_count,
                "requeue_count": c.requeue_count,
                "timeout_count": c.timeout_count,
                "client_count": c.client_count,
                "clients": if request.include_clients { Value::from(members) } else { Value::Null },
                "paused": c.paused,
                "e2e_processing_latency": latency(),
            })
        })
        .collect();
    if !request.channel.is_empty() && channels.is_empty() {
        return None;
    }
    Some(json!({
        "topic_name": stats.name,
        "channels": channels,
        "depth": stats.depth,
        "backend_depth": stats.backend_depth,
        "message_count": stats.message_count,
        "message_bytes": stats.message_bytes,
        "paused": stats.paused,
        "e2e_processing_latency": latency(),
    }))
}

fn client_json(client: &ClientInfo, topic_filter: &str) -> Value {
    let meta = client.meta.lock().clone();
    let mut out = Map::new();
    out.insert("client_id".into(), json!(meta.client_id));
    out.insert("hostname".into(), json!(meta.hostname));
    out.insert("version".into(), json!("V2"));
    out.insert("remote_address".into(), json!(client.remote.to_string()));
    out.insert("state".into(), json!(client.state.load(Ordering::Relaxed)));
    out.insert(
        "ready_count".into(),
        json!(client.ready_count.load(Ordering::Relaxed)),
    );
    out.insert("in_flight_count".into(), json!(client.in_flight()));
    out.insert(
        "message_count".into(),
        json!(client.message_count.load(Ordering::Relaxed)),
    );
    out.insert(
        "finish_count".into(),
        json!(client.finish_count.load(Ordering::Relaxed)),
    );
    out.insert(
        "requeue_count".into(),
        json!(client.requeue_count.load(Ordering::Relaxed)),
    );
    out.insert("connect_ts".into(), json!(client.connect_ts));
    out.insert("sample_rate".into(), json!(meta.sample_rate));
    out.insert("deflate".into(), json!(meta.deflate));
    out.insert("snappy".into(), json!(meta.snappy));
    out.insert("user_agent".into(), json!(meta.user_agent));
    if meta.authed {
        out.insert("authed".into(), json!(true));
    }
    out.insert("topology_zone".into(), json!(meta.topology_zone));
    out.insert("topology_region".into(), json!(meta.topology_region));
    let pub_counts: Vec<Value> = meta
        .pub_counts
        .iter()
        .filter(|(topic, _)| topic_filter.is_empty() || topic.as_str() == topic_filter)
        .map(|(topic, count)| json!({ "topic": topic, "count": count }))
        .collect();
    if !pub_counts.is_empty() {
        out.insert("pub_counts".into(), Value::from(pub_counts));
    }
    out.insert("tls".into(), json!(false));
    out.insert("tls_cipher_suite".into(), json!(""));
    out.insert("tls_version".into(), json!(""));
    out.insert("tls_negotiated_protocol".into(), json!(""));
    out.insert("tls_negotiated_protocol_is_mutual".into(), json!(false));
    Value::Object(out)
}

/// Memory figures in nsqd's shape and order; polymq reports its resident set as heap in
/// use and zero for the Go runtime's figures.
fn memory() -> [(&'static str, u64); 9] {
    [
        ("heap_objects", 0),
        ("heap_idle_bytes", 0),
        ("heap_in_use_bytes", resident_bytes()),
        ("heap_released_bytes", 0),
        ("gc_pause_usec_100", 0),
        ("gc_pause_usec_99", 0),
        ("gc_pause_usec_95", 0),
        ("next_gc_bytes", 0),
        ("gc_total_runs", 0),
    ]
}

fn memory_json() -> Value {
    Value::Object(
        memory()
            .into_iter()
            .map(|(key, value)| (key.to_owned(), json!(value)))
            .collect(),
    )
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// nsqd's text rendering.
pub fn text(node: &Node, request: &Request) -> String {
    let mut w = String::new();
    let uptime = node.started.elapsed();
    let _ = writeln!(w, "nsqd v{NSQD_VERSION} (built w/polymq)");
    let start = UNIX_EPOCH + Duration::from_secs(u64::try_from(node.start_time).unwrap_or(0));
    let _ = writeln!(w, "start_time {}", rfc3339(start));
    let _ = writeln!(w, "uptime {}", go_duration(uptime));
    let _ = writeln!(w, "\nHealth: OK");
    if request.include_mem {
        let _ = writeln!(w, "\nMemory:");
        for (key, value) in memory() {
            let _ = writeln!(w, "   {key:<25}\t{value}");
        }
    }
    let clients = node.client_list();
    let topics = selected_topics(node, request).unwrap_or_default();
    if topics.is_empty() {
        let _ = writeln!(w, "\nTopics: None");
    } else {
        let _ = write!(w, "\nTopics:");
    }
    for topic in &topics {
        write_topic(&mut w, topic, &clients, request);
    }
    let producers: Vec<&Arc<ClientInfo>> = clients
        .iter()
        .filter(|c| !c.meta.lock().pub_counts.is_empty())
        .collect();
    if producers.is_empty() || !request.include_clients {
        let _ = writeln!(w, "\nProducers: None");
    } else {
        let _ = writeln!(w, "\nProducers:");
        for producer in producers {
            let _ = writeln!(w, "   {}", client_line(producer));
        }
    }
    w
}

fn write_topic(w: &mut String, topic: &Topic, clients: &[Arc<ClientInfo>], request: &Request) {
    let stats = topic.stats();
    let paused = if stats.paused { "*P " } else { "   " };
    let _ = writeln!(
        w,
        "\n{paused}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: ",
        stats.name, stats.depth, stats.backend_depth, stats.message_count
    );
    for (name, c) in &stats.channels {
        if !request.channel.is_empty() && *name != request.channel {
            continue;
        }
        let paused = if c.paused { "   *P " } else { "      " };
        let _ = writeln!(
            w,
            "{paused}[{name:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: ",
            c.depth, c.backend_depth, c.in_flight, c.deferred, c.requeue_count, c.timeout_count, c.message_count
        );
        if request.include_clients {
            for client in clients
                .iter()
                .filter(|cl| cl.subscribed_to(topic.name(), Some(name)))
            {
                let _ = writeln!(w, "        {}", client_line(client));
            }
        }
    }
}

/// nsqd's `ClientV2Stats.String()`.
fn client_line(client: &ClientInfo) -> String {
    let meta = client.meta.lock().clone();
    let connected = go_duration(Duration::from_secs(
        unix_now().saturating_sub(client.connect_ts).unsigned_abs(),
    ));
    let id = format!(
        "{}:{} {}",
        meta.hostname,
        client.remote.port(),
        meta.user_agent
    );
    if !meta.pub_counts.is_empty() {
        let total: u64 = meta.pub_counts.values().sum();
        let topics: Vec<String> = meta
            .pub_counts
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        return format!(
            "[V2 {id:<21}] msgs: {total:<8} topics: {} connected: {connected}",
            topics.join(",")
        );
    }
    format!(
        "[V2 {id:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {connected}",
        client.state.load(Ordering::Relaxed),
        client.in_flight(),
        client.ready_count.load(Ordering::Relaxed),
        client.finish_count.load(Ordering::Relaxed),
        client.requeue_count.load(Ordering::Relaxed),
        client.message_count.load(Ordering::Relaxed),
    )
}
