//! The one message type every frontend builds at ingress and every delivery shares.
//!
//! An [`Envelope`] is built once, wrapped in an `Arc`, and handed by reference to every
//! subscriber; the payload is a `Bytes` split from the read buffer and never copied per
//! subscriber.
//!
//! # Invariants
//! - `id` is assigned once at ingress and reused on every leg (NSQ FIN/REQ, dedupe).
//! - `payload` is the whole body. A ZMQ body of other than one frame keeps its frame
//!   boundaries in `frames` (lengths summing to `payload.len()`; `Some(vec![])` for a message
//!   with no body frame), so ZMQ receivers get the same frames back and other protocols see
//!   them joined.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::subject::Subject;

/// 16-byte message id in nsqd's format: lowercase ASCII hex of a 64-bit GUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

/// Ids handed out so far, past the process's base (`start millis << 22`, nsqd's timestamp
/// position). Threads reserve blocks of [`ID_BLOCK`] so the hot path touches no shared cache
/// line; ids stay unique and, per thread, increasing. A restart starts above every earlier id
/// unless a run issued more than 4 million ids per millisecond on average.
static ISSUED: AtomicU64 = AtomicU64::new(0);
/// Ids a thread reserves at once.
const ID_BLOCK: u64 = 1024;

fn id_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (now_ns() / 1_000_000) << 22)
}

thread_local! {
    /// This thread's reserved id range: (next, end).
    static ID_RANGE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl MessageId {
    /// Allocates the next id: unique within the process and across restarts.
    pub fn next() -> Self {
        ID_RANGE.with(|range| {
            let (mut next, mut end) = range.get();
            if next == end {
                next = id_base() + ISSUED.fetch_add(ID_BLOCK, Ordering::Relaxed);
                end = next + ID_BLOCK;
            }
            range.set((next + 1, end));
            Self::from_u64(next)
        })
    }

    /// Hex-encodes a 64-bit GUID.
    pub fn from_u64(guid: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, byte) in guid.to_be_bytes().iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        Self(out)
    }

    /// Parses the 16 ASCII bytes a client sent back (NSQ FIN/REQ/TOUCH).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }

    /// The id as text (always ASCII hex for ids this broker made).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("????????????????")
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({})", self.as_str())
    }
}

/// Nanoseconds since the Unix epoch, wall clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The wire protocol a message or subscription came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// nsqd TCP protocol V2 or its HTTP API.
    Nsq,
    /// NATS client protocol.
    Nats,
    /// MQTT 3.1.1 or 5.0.
    Mqtt,
    /// ZMTP 3.x (ZeroMQ).
    Zmtp,
    /// Published by the broker itself (`$SYS`, wills, …).
    Broker,
}

impl Protocol {
    /// Every protocol, in a stable order (metrics labels).
    pub const ALL: [Protocol; 5] = [
        Protocol::Nsq,
        Protocol::Nats,
        Protocol::Mqtt,
        Protocol::Zmtp,
        Protocol::Broker,
    ];

    /// Lowercase label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Nsq => "nsq",
            Self::Nats => "nats",
            Self::Mqtt => "mqtt",
            Self::Zmtp => "zmtp",
            Self::Broker => "broker",
        }
    }
}

/// Identifies one client connection across the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl ConnId {
    /// Allocates a process-unique connection id.
    pub fn next() -> Self {
        Self(NEXT_CONN.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where a message came from: used for NATS `echo:false` and MQTT No Local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The ingress protocol.
    pub protocol: Protocol,
    /// The publishing connection.
    pub conn: ConnId,
}

impl Origin {
    /// An origin for messages the broker makes itself.
    pub fn broker() -> Self {
        Self {
            protocol: Protocol::Broker,
            conn: ConnId(0),
        }
    }
}

/// Delivery guarantee of one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Qos {
    /// Fire and forget (NATS, ZMTP, MQTT QoS 0).
    #[default]
    AtMostOnce,
    /// Acknowledged, may repeat (NSQ, MQTT QoS 1).
    AtLeastOnce,
    /// MQTT QoS 2 on one hop.
    ExactlyOnce,
}

/// Ordered header multimap (NATS headers ⇔ MQTT 5 user properties). Empty costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty header set.
    pub fn new() -> Self {
        Self(Vec::new())
    }
    /// Appends one header, keeping earlier values of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }
    /// The first value of `name` (case-insensitive, as NATS header lookups are).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Number of header entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// One message as the core routes it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// nsqd-format id, assigned at ingress.
    pub id: MessageId,
    /// Canonical subject.
    pub subject: Subject,
    /// Where replies go (NATS reply-to, MQTT 5 response topic, ZMQ REQ inbox).
    pub reply_to: Option<Subject>,
    /// The body, shared by every delivery.
    pub payload: Bytes,
    /// Frame lengths of a ZMQ body that is not exactly one frame; `None` when the payload is
    /// one frame (every other protocol).
    pub frames: Option<Vec<usize>>,
    /// Application headers, in order.
    pub headers: Headers,
    /// The header block exactly as a NATS publisher sent it, kept only when `headers` would
    /// not render back to the same bytes (spacing, empty blocks), so NATS subscribers get it
    /// byte for byte. Other protocols read `headers`.
    pub header_block: Option<Bytes>,
    /// Publish time, nanoseconds since the epoch.
    pub timestamp_ns: u64,
    /// Ingress protocol and connection.
    pub origin: Origin,
    /// Guarantee the publisher asked for.
    pub qos: Qos,
    /// MQTT retain flag.
    pub retain: bool,
    /// Absolute expiry (ns since epoch), from MQTT 5 Message Expiry Interval.
    pub expires_at_ns: Option<u64>,
    /// MQTT 5 Content Type.
    pub content_type: Option<String>,
    /// MQTT 5 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 Payload Format Indicator (true = UTF-8 text).
    pub payload_utf8: bool,
}

impl Envelope {
    /// A new at-most-once envelope with a fresh id and the current time.
    pub fn new(subject: Subject, payload: Bytes, origin: Origin) -> Self {
        Self::stamped(subject, payload, origin, now_ns())
    }

    /// As [`Envelope::new`] with a publish time the caller read once for a whole batch of
    /// messages decoded from one read (a clock read per message is measurable).
    pub fn stamped(subject: Subject, payload: Bytes, origin: Origin, timestamp_ns: u64) -> Self {
        Self {
            id: MessageId::next(),
            subject,
            reply_to: None,
            payload,
            frames: None,
            headers: Headers::new(),
            header_block: None,
            timestamp_ns,
            origin,
            qos: Qos::AtMostOnce,
            retain: false,
            expires_at_ns: None,
            content_type: None,
            correlation_data: None,
            payload_utf8: false,
        }
    }

    /// True when the message has an expiry that has passed.
    pub fn is_expired(&self, now_ns: u64) -> bool {
        self.expires_at_ns.is_some_and(|at| at <= now_ns)
    }

    /// The body split back into its frames (the payload as one frame when `frames` is
    /// `None`). Zero-copy.
    pub fn body_frames(&self) -> Vec<Bytes> {
        let Some(frames) = &self.frames else {
            return vec![self.payload.clone()];
        };
        let mut out = Vec::with_capacity(frames.len());
        let mut start = 0;
        for &len in frames {
            let end = (start + len).min(self.payload.len());
            out.push(self.payload.slice(start..end));
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_hex_and_increasing() {
        let a = MessageId::next();
        let b = MessageId::next();
        assert!(a < b);
        assert!(a
            .0
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(
            MessageId::from_u64(0x0123_4567_89ab_cdef).as_str(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn message_ids_are_unique_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..5000).map(|_| MessageId::next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id:?}");
            }
        }
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn body_frames_split_without_copy() {
        let mut env = Envelope::new(
            Subject::new("a").unwrap(),
            Bytes::from_static(b"helloworld"),
            Origin::broker(),
        );
        assert_eq!(env.body_frames(), vec![Bytes::from_static(b"helloworld")]);
        env.frames = Some(vec![5, 0, 5]);
        assert_eq!(
            env.body_frames(),
            vec![
                Bytes::from_static(b"hello"),
                Bytes::new(),
                Bytes::from_static(b"world")
            ]
        );
        env.frames = Some(Vec::new());
        assert!(env.body_frames().is_empty(), "a message with no body frame");
    }
}
