//! nsqd's HTTP API (port 4151) on axum, with nsqd's routes, status codes and bodies.
//!
//! | route | method | handler |
//! |---|---|---|
//! | `/ping` | GET | `OK` (plain text) |
//! | `/info` | GET | node info JSON |
//! | `/pub`, `/mpub` | POST | publish (`?topic=`, `&defer=`, `&binary=`) |
//! | `/stats` | GET | text or `format=json` |
//! | `/topic/{create,delete,empty,pause,unpause}` | POST | topic admin |
//! | `/channel/{create,delete,empty,pause,unpause}` | POST | channel admin |
//! | `/config/{opt}` | GET | one setting, JSON |
//!
//! Responses follow nsqd's `http_api.RespondV1`: a 200 carries the string as is, JSON, or
//! nothing; any other status carries `{"message":"<CODE>"}` with
//! `Content-Type: application/json; charset=utf-8`; every V1 response has
//! `X-NSQ-Content-Type: nsq; version=1.0`. An unknown path is 404 `NOT_FOUND`, a known path
//! with another method 405 `METHOD_NOT_ALLOWED`.
//!
//! # Invariants
//! - Request bodies are read with a bound (`max_msg_size` for `/pub`, `max_body_size`
//!   otherwise); a declared `Content-Length` over it is refused before reading.
//! - A publish answers `OK` only after the core accepted every message; `/mpub` validates
//!   every message before publishing any.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::frame::{decode_mpub_body, is_valid_name};
use crate::mapping;
use crate::node::{Node, NSQD_VERSION};
use crate::stats;

/// Serves the HTTP API until `shutdown`, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |req: Request| {
        let node = node.clone();
        async move { handle(&node, req).await }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// An HTTP API failure: status and nsqd's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub &'static str);

/// A successful V1 body.
enum Reply {
    Empty,
    Text(&'static str),
    Json(serde_json::Value),
    Raw(Vec<u8>),
}

type ApiResult = Result<Reply, ApiError>;

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const TOO_BIG: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;

/// Routes one request.
async fn handle(node: &Arc<Node>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let methods: &[Method] = match path.as_str() {
        "/ping" | "/info" | "/stats" => &[Method::GET],
        "/pub" | "/mpub" | "/topic/create" | "/topic/delete" | "/topic/empty" | "/topic/pause"
        | "/topic/unpause" | "/channel/create" | "/channel/delete" | "/channel/empty"
        | "/channel/pause" | "/channel/unpause" => &[Method::POST],
        p if p.starts_with("/config/") && p.len() > "/config/".len() => &[Method::GET, Method::PUT],
        _ => return respond(Err(ApiError(NOT_FOUND, "NOT_FOUND"))),
    };
    if !methods.contains(req.method()) {
        return respond(Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        )));
    }
    if path == "/ping" {
        return ping();
    }
    let query = match parse_query(req.uri().query().unwrap_or_default()) {
        Ok(query) => query,
        Err(BadQuery) if path == "/pub" || path == "/mpub" => Query::invalid(),
        Err(BadQuery) => return respond(Err(ApiError(BAD_REQUEST, "INVALID_REQUEST"))),
    };
    let result = match path.as_str() {
        "/info" => Ok(info(node)),
        "/pub" => publish_one(node, &query, req).await,
        "/mpub" => publish_many(node, &query, req).await,
        "/stats" => Ok(stats_reply(node, &query)),
        "/topic/create" => topic_create(node, &query),
        "/topic/delete" | "/topic/empty" | "/topic/pause" | "/topic/unpause" => {
            topic_admin(node, &query, &path)
        }
        "/channel/create" | "/channel/delete" | "/channel/empty" | "/channel/pause"
        | "/channel/unpause" => channel_admin(node, &query, &path),
        _ => config_option(node, &path, req.method()),
    };
    respond(result)
}

/// `/ping`: nsqd's plain-text health.
fn ping() -> Response {
    let mut response = Response::new(Body::from("OK"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Renders a V1 response.
fn respond(result: ApiResult) -> Response {
    let (status, body, json) = match result {
        Ok(Reply::Empty) => (StatusCode::OK, Vec::new(), false),
        Ok(Reply::Text(text)) => (StatusCode::OK, text.as_bytes().to_vec(), false),
        Ok(Reply::Raw(bytes)) => (StatusCode::OK, bytes, false),
        Ok(Reply::Json(value)) => (StatusCode::OK, value.to_string().into_bytes(), true),
        Err(ApiError(status, code)) => (
            status,
            serde_json::json!({ "message": code })
                .to_string()
                .into_bytes(),
            true,
        ),
    };
    let sniffed_text = !json && !body.is_empty();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if json {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    } else if sniffed_text {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    headers.insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    response
}

/// Query parameters parsed like Go's `url.ParseQuery` (first value of a key wins).
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
    invalid: bool,
}

impl Query {
    fn invalid() -> Self {
        Self {
            pairs: Vec::new(),
            invalid: true,
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A query string Go's `url.ParseQuery` rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid query string")]
pub struct BadQuery;

/// Go's `url.ParseQuery`: `&`-separated, `;` rejected, `+` is a space, `%XX` escapes.
pub fn parse_query(raw: &str) -> Result<Query, BadQuery> {
    let mut pairs = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        if piece.contains(';') {
            return Err(BadQuery);
        }
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((unescape(key)?, unescape(value)?));
    }
    Ok(Query {
        pairs,
        invalid: false,
    })
}

/// Go's `url.QueryUnescape`.
fn unescape(text: &str) -> Result<String, BadQuery> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes
                    .next()
                    .and_then(|c| char::from(c).to_digit(16))
                    .ok_or(BadQuery)?;
                let lo = bytes
                    .next()
                    .and_then(|c| char::from(c).to_digit(16))
                    .ok_or(BadQuery)?;
                out.push(u8::try_from(hi * 16 + lo).map_err(|_| BadQuery)?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| BadQuery)
}

fn info(node: &Node) -> Reply {
    let config = &node.config;
    Reply::Json(serde_json::json!({
        "version": NSQD_VERSION,
        "broadcast_address": node.broadcast_address(),
        "hostname": node.hostname,
        "http_port": node.http_port.load(std::sync::atomic::Ordering::Relaxed),
        "tcp_port": node.tcp_port.load(std::sync::atomic::Ordering::Relaxed),
        "start_time": node.start_time,
        "max_heartbeat_interval": nanos(config.max_heartbeat_interval_ms),
        "max_output_buffer_size": config.max_output_buffer_size,
        "max_output_buffer_timeout": nanos(config.max_output_buffer_timeout_ms),
        "max_deflate_level": 6,
        "topology_zone": "",
        "topology_region": "",
    }))
}

/// Go's `time.Duration` JSON: nanoseconds.
fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// The declared `Content-Length`, if any.
fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads at most `max` body bytes; `None` when the body is longer.
async fn read_body(req: Request, max: u64) -> Result<Option<Bytes>, ApiError> {
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match to_bytes(req.into_body(), limit).await {
        Ok(body) => Ok(Some(body)),
        Err(err) if is_length_limit(&err) => Ok(None),
        Err(_) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
        )),
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.to_string().contains("length limit exceeded") {
            return true;
        }
        source = current.source();
    }
    false
}

/// A topic or channel name argument: `missing` when absent, `invalid` when not a valid name
/// (nsqd's codes differ between endpoints).
fn name_arg<'q>(
    query: &'q Query,
    key: &str,
    missing: &'static str,
    invalid: &'static str,
) -> Result<&'q str, ApiError> {
    let name = query.get(key).ok_or(ApiError(BAD_REQUEST, missing))?;
    if !is_valid_name(name.as_bytes()) {
        return Err(ApiError(BAD_REQUEST, invalid));
    }
    Ok(name)
}

/// The topic of `/pub` and `/mpub`, created if needed (as nsqd's `GetTopic`).
fn query_topic(node: &Node, query: &Query) -> Result<String, ApiError> {
    if query.invalid {
        return Err(ApiError(BAD_REQUEST, "INVALID_REQUEST"));
    }
    let name = name_arg(query, "topic", "MISSING_ARG_TOPIC", "INVALID_TOPIC")?;
    if node.router.get_topic(name).is_none() {
        node.router
            .topic(name)
            .map_err(|_| ApiError(BAD_REQUEST, "INVALID_TOPIC"))?;
        node.topology_changed();
    }
    Ok(name.to_owned())
}

async fn publish_one(node: &Node, query: &Query, req: Request) -> ApiResult {
    let max = node.config.max_msg_size;
    if content_length(&req).is_some_and(|len| len > max) {
        return Err(ApiError(TOO_BIG, "MSG_TOO_BIG"));
    }
    let body = read_body(req, max)
        .await?
        .ok_or(ApiError(TOO_BIG, "MSG_TOO_BIG"))?;
    if body.is_empty() {
        return Err(ApiError(BAD_REQUEST, "MSG_EMPTY"));
    }
    let topic = query_topic(node, query)?;
    let delay = match query.get("defer") {
        None => None,
        Some(raw) => {
            let ms: i64 = raw
                .parse()
                .map_err(|_| ApiError(BAD_REQUEST, "INVALID_DEFER"))?;
            let max_ms = i64::try_from(node.config.max_req_timeout_ms).unwrap_or(i64::MAX);
            if !(0..=max_ms).contains(&ms) {
                return Err(ApiError(BAD_REQUEST, "INVALID_DEFER"));
            }
            Some(Duration::from_millis(ms.unsigned_abs()))
        }
    };
    publish(node, &topic, vec![body], delay).await
}

async fn publish_many(node: &Node, query: &Query, req: Request) -> ApiResult {
    let max = node.config.max_body_size;
    if content_length(&req).is_some_and(|len| len > max) {
        return Err(ApiError(TOO_BIG, "BODY_TOO_BIG"));
    }
    let topic = query_topic(node, query)?;
    // Text mode is the default; any value other than nsqd's booleans means binary.
    let binary = query
        .get("binary")
        .is_some_and(|v| !matches!(v, "false" | "0"));
    let body = read_body(req, max)
        .await?
        .ok_or(ApiError(TOO_BIG, "BODY_TOO_BIG"))?;
    let bodies = if binary {
        decode_mpub_body(&body, &node.config.limits())
            .map_err(|err| ApiError(TOO_BIG, err.code().trim_start_matches("E_")))?
    } else {
        split_lines(&body, node.config.max_msg_size)?
    };
    publish(node, &topic, bodies, None).await
}

/// `/mpub` text mode: one message per `\n`-terminated line, empty lines skipped.
fn split_lines(body: &Bytes, max_msg_size: u64) -> Result<Vec<Bytes>, ApiError> {
    let mut bodies = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = body
            .iter()
            .skip(start)
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| start + p);
        let line = body.slice(start..end);
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        if line.len() as u64 > max_msg_size {
            return Err(ApiError(TOO_BIG, "MSG_TOO_BIG"));
        }
        bodies.push(line);
    }
    Ok(bodies)
}

async fn publish(
    node: &Node,
    topic: &str,
    bodies: Vec<Bytes>,
    delay: Option<Duration>,
) -> ApiResult {
    let exiting = ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING");
    let conn = polymq_core::ConnId(0);
    let metrics = node.router.metrics().clone();
    for body in bodies {
        let size = body.len();
        let msg = mapping::envelope(topic, body, conn)
            .map_err(|_| ApiError(BAD_REQUEST, "INVALID_TOPIC"))?;
        match delay {
            Some(delay) => {
                let target = node.router.topic(topic).map_err(|_| exiting)?;
                target.put_deferred(msg, delay).await.map_err(|_| exiting)?;
            }
            None => {
                node.router
                    .publish_durable(msg)
                    .await
                    .map_err(|_| exiting)?;
            }
        }
        metrics.message_in(polymq_core::Protocol::Nsq, size);
    }
    Ok(Reply::Text("OK"))
}

fn stats_reply(node: &Node, query: &Query) -> Reply {
    let request = stats::Request::from_query(query);
    if query.get("format") == Some("json") {
        Reply::Json(stats::json(node, &request))
    } else {
        Reply::Raw(stats::text(node, &request).into_bytes())
    }
}

fn topic_create(node: &Node, query: &Query) -> ApiResult {
    query_topic(node, query).map(|_| Reply::Empty)
}

fn topic_admin(node: &Node, query: &Query, path: &str) -> ApiResult {
    let name = query
        .get("topic")
        .ok_or(ApiError(BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if path == "/topic/empty" && !is_valid_name(name.as_bytes()) {
        return Err(ApiError(BAD_REQUEST, "INVALID_TOPIC"));
    }
    let topic = node
        .router
        .get_topic(name)
        .ok_or(ApiError(NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    match path {
        "/topic/delete" => {
            node.kick_subscribers(name, None);
            node.router.delete_topic(name);
            node.topology_changed();
        }
        "/topic/empty" => topic.empty(),
        "/topic/pause" => topic.pause(),
        _ => topic.unpause(),
    }
    Ok(Reply::Empty)
}

fn channel_admin(node: &Node, query: &Query, path: &str) -> ApiResult {
    let topic_name = name_arg(query, "topic", "MISSING_ARG_TOPIC", "INVALID_ARG_TOPIC")?;
    let channel_name = name_arg(
        query,
        "channel",
        "MISSING_ARG_CHANNEL",
        "INVALID_ARG_CHANNEL",
    )?;
    let topic = node
        .router
        .get_topic(topic_name)
        .ok_or(ApiError(NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    if path == "/channel/create" {
        if topic.get_channel(channel_name).is_none() {
            topic.channel(channel_name);
            node.topology_changed();
        }
        return Ok(Reply::Empty);
    }
    let channel = topic
        .get_channel(channel_name)
        .ok_or(ApiError(NOT_FOUND, "CHANNEL_NOT_FOUND"))?;
    match path {
        "/channel/delete" => {
            node.kick_subscribers(topic_name, Some(channel_name));
            topic.delete_channel(channel_name);
            node.topology_changed();
        }
        "/channel/empty" => channel.empty(),
        "/channel/pause" => channel.pause(),
        _ => channel.unpause(),
    }
    Ok(Reply::Empty)
}

/// `/config/{opt}`: reads one setting under nsqd's option name. Settings are fixed at start,
/// so PUT is refused as for an unknown option.
fn config_option(node: &Node, path: &str, method: &Method) -> ApiResult {
    let invalid = ApiError(BAD_REQUEST, "INVALID_OPTION");
    if method == Method::PUT {
        return Err(invalid);
    }
    let config = &node.config;
    let value = match path.trim_start_matches("/config/") {
        "nsqlookupd_tcp_addresses" => serde_json::json!(config.lookupd_tcp_addresses),
        "broadcast_address" => serde_json::json!(node.broadcast_address()),
        "max_msg_size" => serde_json::json!(config.max_msg_size),
        "max_body_size" => serde_json::json!(config.max_body_size),
        "max_rdy_count" => serde_json::json!(config.max_rdy_count),
        "mem_queue_size" => serde_json::json!(config.mem_queue_size),
        "max_channel_consumers" => serde_json::json!(config.max_channel_consumers),
        "msg_timeout" => serde_json::json!(nanos(config.msg_timeout_ms)),
        "max_msg_timeout" => serde_json::json!(nanos(config.max_msg_timeout_ms)),
        "max_req_timeout" => serde_json::json!(nanos(config.max_req_timeout_ms)),
        "max_heartbeat_interval" => serde_json::json!(nanos(config.max_heartbeat_interval_ms)),
        _ => return Err(invalid),
    };
    Ok(Reply::Json(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_follows_go() {
        let q = parse_query("topic=a%2Eb&topic=x&defer=+1&empty").unwrap();
        assert_eq!(q.get("topic"), Some("a.b"));
        assert_eq!(q.get("defer"), Some(" 1"));
        assert_eq!(q.get("empty"), Some(""));
        assert!(parse_query("a=1;b=2").is_err());
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%4").is_err());
    }

    #[test]
    fn text_mpub_lines() {
        let body = Bytes::from_static(b"a\n\nbc\nd");
        assert_eq!(
            split_lines(&body, 10).unwrap(),
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"bc"),
                Bytes::from_static(b"d")
            ]
        );
        assert_eq!(
            split_lines(&body, 1).unwrap_err(),
            ApiError(TOO_BIG, "MSG_TOO_BIG")
        );
        assert!(split_lines(&Bytes::from_static(b"\n\n"), 10)
            .unwrap()
            .is_empty());
    }
}
