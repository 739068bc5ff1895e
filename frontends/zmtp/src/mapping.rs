//! ZMTP peers and messages onto the core: socket types to roles, frames to envelopes and back.
//!
//! | peer Socket-Type | broker announces | role |
//! |---|---|---|
//! | PUB, XPUB | XSUB | [`Role::Publisher`]: the broker subscribes to `""`, frame 0 is the subject |
//! | SUB, XSUB | XPUB | [`Role::Subscriber`]: SUBSCRIBE/CANCEL prefixes, receives `[subject][body…]` |
//! | PUSH | PULL | [`Role::Producer`]: every message is a publish |
//! | PULL | PUSH | [`Role::Consumer`]: a member of a group, receives `[subject][body…]` |
//! | REQ | ROUTER | [`Role::Requester`]: request-reply through an inbox |
//! | DEALER | ROUTER | [`Role::Dealer`]: a request when frame 0 is empty, else a publish |
//! | REP, ROUTER | DEALER | [`Role::Responder`]: a group member that receives requests |
//!
//! Message layout (DESIGN.md "ZMTP message conventions"): frame 0 is the subject and the
//! remaining frames are the body. One body frame is the payload as is; several (or none) are
//! joined and their lengths kept in `Envelope::frames`, so ZMTP receivers get the same frames
//! back (a subject-only message stays subject-only).
//!
//! # Invariants
//! - Socket types are compared exactly (libzmq compares them case-sensitively).
//! - A single-frame body becomes the payload without a copy.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use polymq_core::subject::mqtt;
use polymq_core::subject::zmtp::{self, TopicSyntax};
use polymq_core::{Envelope, Filter, Origin, Subject, SubjectError};

use crate::config::Config;
use crate::frame::{put_part, Metadata, FRAME_HEADER_MAX};

/// Metadata property naming the subject (or filter) of a peer.
pub const X_SUBJECT: &str = "X-Subject";
/// Metadata property naming the group of a consumer or responder.
pub const X_GROUP: &str = "X-Group";
/// ZMTP 3.1 Resource property, read after `X-Subject` / `X-Group`.
pub const RESOURCE: &str = "Resource";

/// What a peer does on the broker, decided by its Socket-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PUB/XPUB: publishes `[subject][body…]`.
    Publisher,
    /// SUB/XSUB: subscribes to byte prefixes.
    Subscriber,
    /// PUSH: publishes `[subject][body…]`, or `[body]` on its default subject.
    Producer,
    /// PULL: competes with the other members of its group.
    Consumer,
    /// REQ: one request at a time, always answered exactly once.
    Requester,
    /// DEALER: requests behind an empty delimiter, anything else is published.
    Dealer,
    /// REP/ROUTER: answers requests for its subject.
    Responder,
}

impl Role {
    /// The role for a peer's Socket-Type and the Socket-Type the broker announces to it.
    pub fn for_socket_type(socket_type: &[u8]) -> Option<(Role, &'static str)> {
        let served = match socket_type {
            b"PUB" | b"XPUB" => (Self::Publisher, "XSUB"),
            b"SUB" | b"XSUB" => (Self::Subscriber, "XPUB"),
            b"PUSH" => (Self::Producer, "PULL"),
            b"PULL" => (Self::Consumer, "PUSH"),
            b"REQ" => (Self::Requester, "ROUTER"),
            b"DEALER" => (Self::Dealer, "ROUTER"),
            b"REP" | b"ROUTER" => (Self::Responder, "DEALER"),
            _ => return None,
        };
        Some(served)
    }

    /// True for roles that receive messages from a core subscription of their own.
    pub fn consumes(self) -> bool {
        matches!(self, Self::Consumer | Self::Responder)
    }
}

/// The broker's READY (or PLAIN READY) metadata for a peer: the announced Socket-Type, plus
/// an empty Identity when announcing ROUTER or DEALER, as libzmq does.
pub fn broker_metadata(announce: &'static str) -> Metadata {
    let mut metadata = Metadata::default();
    metadata.push("Socket-Type", announce.as_bytes());
    if matches!(announce, "ROUTER" | "DEALER") {
        metadata.push("Identity", Bytes::new());
    }
    metadata
}

/// A listener's defaults, validated once when it starts.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// How frame 0 and `X-Subject` are read.
    pub syntax: TopicSyntax,
    /// Publish subject for single-part messages, when `default_subject` is a literal subject.
    pub subject: Option<Subject>,
    /// Filter for consumers and responders that name none.
    pub filter: Filter,
    /// Group for consumers that name none.
    pub group: Arc<str>,
    /// Group for responders that name none.
    pub responder_group: Arc<str>,
}

impl Defaults {
    /// Validates the config's defaults (`default_subject` is canonical text whatever the
    /// listener's `topic_syntax`: the config speaks the broker's own language).
    pub fn new(config: &Config) -> Result<Self, SubjectError> {
        let text = config.default_subject.as_str();
        Ok(Self {
            syntax: config.topic_syntax,
            subject: Subject::new(text).ok(),
            filter: Filter::new(text)?,
            group: Arc::from(config.default_group.as_str()),
            responder_group: Arc::from(config.default_responder_group()),
        })
    }
}

/// What a peer's READY metadata asks for, resolved against the listener defaults.
#[derive(Debug, Clone)]
pub struct PeerTarget {
    /// Publish subject for single-part messages (producers, requesters).
    pub subject: Option<Subject>,
    /// Subscription filter (consumers, responders).
    pub filter: Filter,
    /// Group (consumers, responders).
    pub group: Arc<str>,
}

/// A metadata property the broker could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {0} property")]
pub struct InvalidProperty(pub &'static str);

impl PeerTarget {
    /// Resolves `X-Subject` (else `Resource`, else the default) and `X-Group` (else, for
    /// consumers, `Resource`, else the default).
    pub fn resolve(
        metadata: &Metadata,
        role: Role,
        defaults: &Defaults,
    ) -> Result<Self, InvalidProperty> {
        let named = metadata.get(X_SUBJECT).map(|v| (X_SUBJECT, v));
        let named = named.or_else(|| metadata.get(RESOURCE).map(|v| (RESOURCE, v)));
        let (subject, filter) = match named {
            None => (defaults.subject.clone(), defaults.filter.clone()),
            Some((property, text)) if role.consumes() => {
                let filter = parse_filter(text, defaults.syntax);
                (None, filter.map_err(|_| InvalidProperty(property))?)
            }
            Some((property, text)) => {
                let subject = zmtp::frame_to_subject(text, defaults.syntax);
                let subject = subject.map_err(|_| InvalidProperty(property))?;
                (Some(subject.clone()), Filter::exact(&subject))
            }
        };
        let named_group = match (metadata.get(X_GROUP), role) {
            (Some(name), _) => Some((X_GROUP, name)),
            (None, Role::Consumer) => metadata.get(RESOURCE).map(|name| (RESOURCE, name)),
            (None, _) => None,
        };
        let group = match named_group {
            Some((property, name)) => group_name(name).ok_or(InvalidProperty(property))?,
            None if role == Role::Responder => defaults.responder_group.clone(),
            None => defaults.group.clone(),
        };
        Ok(Self {
            subject,
            filter,
            group,
        })
    }
}

/// A group name: non-empty UTF-8.
fn group_name(raw: &[u8]) -> Option<Arc<str>> {
    std::str::from_utf8(raw)
        .ok()
        .filter(|name| !name.is_empty())
        .map(Arc::from)
}

/// Reads a subscription filter in the listener's syntax (`*`/`>` or MQTT `+`/`#`).
fn parse_filter(text: &[u8], syntax: TopicSyntax) -> Result<Filter, SubjectError> {
    let text =
        std::str::from_utf8(text).map_err(|_| SubjectError::Invalid("filter is not UTF-8"))?;
    match syntax {
        TopicSyntax::Nats => Filter::new(text),
        TopicSyntax::Mqtt => mqtt::filter_to_filter(text),
    }
}

/// Builds the envelope for `[subject][body…]` parts already split, published at
/// `timestamp_ns` (read once per batch of messages).
pub fn envelope(subject: Subject, body: &[Bytes], origin: Origin, timestamp_ns: u64) -> Envelope {
    let frames = (body.len() != 1).then(|| body.iter().map(Bytes::len).collect());
    Envelope {
        frames,
        ..Envelope::stamped(subject, join(body), origin, timestamp_ns)
    }
}

/// One payload from body frames; a single frame is shared, not copied.
fn join(body: &[Bytes]) -> Bytes {
    match body {
        [] => Bytes::new(),
        [only] => only.clone(),
        parts => {
            let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                joined.extend_from_slice(part);
            }
            joined.freeze()
        }
    }
}

/// Writes `[prefix…][subject][body…]` (no subject frame when `subject` is `None`) for a
/// delivery; returns the number of octets of payload. Allocates nothing but `dst`'s growth.
pub fn put_delivery(
    dst: &mut BytesMut,
    prefix: &[Bytes],
    subject: Option<&[u8]>,
    msg: &Envelope,
) -> usize {
    let payload = &msg.payload[..];
    let whole = [payload.len()];
    let lengths = msg.frames.as_deref().unwrap_or(&whole);
    let mut start: usize = 0;
    let body = lengths.iter().map(|&len| {
        let end = start.saturating_add(len).min(payload.len());
        let frame = payload.get(start..end).unwrap_or_default();
        start = end;
        frame
    });
    let count = prefix.len() + usize::from(subject.is_some()) + lengths.len();
    let head_len: usize = prefix
        .iter()
        .map(Bytes::len)
        .chain(subject.map(<[u8]>::len))
        .sum();
    dst.reserve(head_len + payload.len() + count * FRAME_HEADER_MAX);
    let parts = prefix.iter().map(Bytes::as_ref).chain(subject).chain(body);
    let last = count.saturating_sub(1);
    for (i, part) in parts.enumerate() {
        put_part(dst, part, i < last);
    }
    payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use polymq_core::{ConnId, Protocol};

    fn origin() -> Origin {
        Origin {
            protocol: Protocol::Zmtp,
            conn: ConnId(7),
        }
    }

    fn metadata(props: &[(&'static str, &'static str)]) -> Metadata {
        let mut meta = Metadata::default();
        for (name, value) in props {
            meta.push(name, value.as_bytes());
        }
        meta
    }

    #[test]
    fn socket_types_get_a_compatible_peer() {
        let cases: [(&[u8], Role, &str); 10] = [
            (b"PUB", Role::Publisher, "XSUB"),
            (b"XPUB", Role::Publisher, "XSUB"),
            (b"SUB", Role::Subscriber, "XPUB"),
            (b"XSUB", Role::Subscriber, "XPUB"),
            (b"PUSH", Role::Producer, "PULL"),
            (b"PULL", Role::Consumer, "PUSH"),
            (b"REQ", Role::Requester, "ROUTER"),
            (b"DEALER", Role::Dealer, "ROUTER"),
            (b"REP", Role::Responder, "DEALER"),
            (b"ROUTER", Role::Responder, "DEALER"),
        ];
        for (peer, role, announce) in cases {
            assert_eq!(Role::for_socket_type(peer), Some((role, announce)));
        }
        for unsupported in [&b"PAIR"[..], b"CLIENT", b"DISH", b"sub", b""] {
            assert_eq!(Role::for_socket_type(unsupported), None);
        }
    }

    #[test]
    fn broker_metadata_follows_libzmq() {
        let meta = broker_metadata("ROUTER");
        assert_eq!(
            meta.get("Socket-Type").map(|v| &v[..]),
            Some(&b"ROUTER"[..])
        );
        assert_eq!(meta.get("Identity").map(|v| v.len()), Some(0));
        assert_eq!(broker_metadata("XPUB").get("Identity"), None);
    }

    #[test]
    fn targets_resolve_metadata_then_defaults() {
        let config = Config {
            default_subject: "jobs".into(),
            ..Config::default()
        };
        let defaults = Defaults::new(&config).unwrap();
        let plain = PeerTarget::resolve(&Metadata::default(), Role::Producer, &defaults).unwrap();
        assert_eq!(plain.subject.unwrap().as_str(), "jobs");
        let pull = PeerTarget::resolve(&Metadata::default(), Role::Consumer, &defaults).unwrap();
        assert_eq!(pull.filter, Filter::new("jobs").unwrap());
        assert_eq!(&*pull.group, "zmtp");
        let rep = PeerTarget::resolve(&Metadata::default(), Role::Responder, &defaults).unwrap();
        assert_eq!(&*rep.group, "zmtp.rep");

        let named = metadata(&[("x-subject", "a.>"), ("X-Group", "w")]);
        let pull = PeerTarget::resolve(&named, Role::Consumer, &defaults).unwrap();
        assert_eq!(pull.filter, Filter::new("a.>").unwrap());
        assert_eq!(&*pull.group, "w");
        assert_eq!(
            PeerTarget::resolve(&named, Role::Producer, &defaults).unwrap_err(),
            InvalidProperty(X_SUBJECT)
        );
        let resource = metadata(&[("Resource", "svc.echo")]);
        let push = PeerTarget::resolve(&resource, Role::Producer, &defaults).unwrap();
        assert_eq!(push.subject.unwrap().as_str(), "svc.echo");
        // A PULL's Resource names its group too (PROTOCOLS.md §4.6); X-Group wins over it.
        let pull = PeerTarget::resolve(&resource, Role::Consumer, &defaults).unwrap();
        assert_eq!(
            (pull.filter, &*pull.group),
            (Filter::new("svc.echo").unwrap(), "svc.echo")
        );
        let both = metadata(&[("Resource", "svc.echo"), ("X-Group", "w")]);
        let pull = PeerTarget::resolve(&both, Role::Consumer, &defaults).unwrap();
        assert_eq!(&*pull.group, "w");
        let rep = PeerTarget::resolve(&resource, Role::Responder, &defaults).unwrap();
        assert_eq!(&*rep.group, "zmtp.rep");
        let bad_group = metadata(&[("X-Group", "")]);
        assert!(PeerTarget::resolve(&bad_group, Role::Consumer, &defaults).is_err());
    }

    #[test]
    fn wildcard_default_has_no_publish_subject() {
        let defaults = Defaults::new(&Config::default()).unwrap();
        assert_eq!(defaults.subject, None);
        assert_eq!(defaults.filter, Filter::new(">").unwrap());
        let bad = Config {
            default_subject: "a..b".into(),
            ..Config::default()
        };
        assert!(Defaults::new(&bad).is_err());
    }

    #[test]
    fn mqtt_syntax_applies_to_metadata() {
        let config = Config {
            topic_syntax: TopicSyntax::Mqtt,
            ..Config::default()
        };
        let defaults = Defaults::new(&config).unwrap();
        let named = metadata(&[("X-Subject", "a/+/c")]);
        let pull = PeerTarget::resolve(&named, Role::Consumer, &defaults).unwrap();
        assert_eq!(pull.filter, Filter::new("a.*.c").unwrap());
    }

    #[test]
    fn body_frames_survive_the_envelope() {
        let subject = Subject::new("a").unwrap();
        let one = envelope(subject.clone(), &[Bytes::from_static(b"x")], origin(), 1);
        assert!(one.frames.is_none());
        let none = envelope(subject.clone(), &[], origin(), 1);
        assert!(
            none.body_frames().is_empty(),
            "a subject-only message stays subject-only"
        );
        let parts = [
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ];
        let many = envelope(subject, &parts, origin(), 1);
        assert_eq!(&many.payload[..], b"abc");
        assert_eq!(many.body_frames(), parts.to_vec());
        let mut wire = BytesMut::new();
        put_delivery(&mut wire, &[Bytes::new()], Some(b"a"), &many);
        assert_eq!(&wire[..], b"\x01\x00\x01\x01a\x01\x02ab\x01\x00\x00\x01c");
        wire.clear();
        put_delivery(&mut wire, &[], None, &one);
        assert_eq!(&wire[..], b"\x00\x01x");
    }
}
