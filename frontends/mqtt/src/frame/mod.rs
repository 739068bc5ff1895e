//! Pure MQTT 3.1, 3.1.1 and 5.0 codec: no async, no broker types.
//!
//! ```text
//! fixed header   byte 1 = packet type << 4 | flags
//!                Remaining Length: Variable Byte Integer, 1..=4 bytes (≤ 268,435,455)
//! variable header + payload (per packet, see `packet.rs`; 5.0 adds properties, `properties.rs`)
//! ```
//!
//! The [`Codec`] learns the protocol version from the CONNECT it decodes, so packets a client
//! pipelines behind its CONNECT are decoded with the right rules.
//!
//! # Invariants
//! - Size limits are checked from the fixed header alone, before a packet is buffered: a
//!   declared size above the limit is an error while only the header has arrived.
//! - Before the version is known the only packet accepted is CONNECT (mosquitto rejects any
//!   other first byte at once).
//! - Decoding never panics on any input; PUBLISH payloads are zero-copy slices of the read
//!   buffer (`split_to(n).freeze()`).
//! - `decode(encode(p)) == p` for every packet valid in the codec's version.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod packet;
mod properties;
mod wire;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use packet::{
    valid_topic_filter, valid_topic_name, Ack, AckKind, ConnAck, Connect, Disconnect, Publish,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, MAX_TOPIC_LEVELS,
};
pub use properties::{Properties, PropertyContext};
pub use wire::{validate_text, MAX_PACKET_SIZE, MAX_STRING_LEN, MAX_VARINT};

use properties::PropertyContext as Ctx;
use wire::Reader;

/// mosquitto's fixed ceiling for a CONNECT body, checked before buffering.
pub const MAX_CONNECT_LEN: usize = 100_000;

/// Why bytes could not become (or be written as) an MQTT packet.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The packet breaks the wire format (5.0 reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet breaks a protocol rule (5.0 reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is broken in a way mosquitto answers by closing the connection without a
    /// DISCONNECT (a duplicate property, wrong fixed header flags on a packet other than
    /// SUBSCRIBE / UNSUBSCRIBE, a bad Remaining Length after CONNECT).
    #[error("malformed packet, closed without DISCONNECT: {0}")]
    Unanswered(&'static str),
    /// The declared packet size is above the limit (5.0 reason 0x95).
    #[error("packet too large: {size} > {max}")]
    TooLarge {
        /// Declared total size of the packet in bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// CONNECT named a protocol level this server does not speak (CONNACK 0x01).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A string or binary field is longer than 65,535 bytes (encoding only).
    #[error("field too long: {0} bytes")]
    FieldTooLong(usize),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The MQTT 5 reason code a server sends in DISCONNECT for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::Malformed(_) | Self::FieldTooLong(_) | Self::Unanswered(_) => {
                reason::MALFORMED_PACKET
            }
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            Self::UnsupportedProtocolVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            Self::Io(_) => reason::UNSPECIFIED_ERROR,
        }
    }
}

/// MQTT 5 reason codes (§2.4) the broker sends, named as in the specification.
pub mod reason {
    /// Success / Normal disconnection / Granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// Granted QoS 1.
    pub const GRANTED_QOS_1: u8 = 0x01;
    /// Granted QoS 2.
    pub const GRANTED_QOS_2: u8 = 0x02;
    /// Disconnect with Will Message.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// No matching subscribers.
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// No subscription existed.
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    /// Malformed Packet.
    pub const MALFORMED_PACKET: u8 = 0x81;
    /// Protocol Error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    /// Unsupported Protocol Version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// Client Identifier not valid.
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    /// Bad User Name or Password.
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    /// Keep Alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic Filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic Name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Packet Identifier in use.
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    /// Packet Identifier not found.
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    /// Receive Maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic Alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Administrative action.
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    /// Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    /// QoS not supported.
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    /// Shared Subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    /// Subscription Identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    /// Wildcard Subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes.
pub mod connack {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0;
    /// Unacceptable protocol version.
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    /// Identifier rejected.
    pub const IDENTIFIER_REJECTED: u8 = 2;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 3;
    /// Bad user name or password.
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 4;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// Quality of service of one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0.
    #[default]
    AtMostOnce = 0,
    /// QoS 1.
    AtLeastOnce = 1,
    /// QoS 2.
    ExactlyOnce = 2,
}

impl TryFrom<u8> for QoS {
    type Error = u8;
    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            other => Err(other),
        }
    }
}

/// The protocol a connection speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31 = 3,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311 = 4,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5 = 5,
}

impl ProtocolVersion {
    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Publish),
    /// PUBACK (4).
    PubAck(Ack),
    /// PUBREC (5).
    PubRec(Ack),
    /// PUBREL (6).
    PubRel(Ack),
    /// PUBCOMP (7).
    PubComp(Ack),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect),
    /// AUTH (15, 5.0 only).
    Auth(Disconnect),
}

impl Packet {
    /// The packet type nibble.
    pub fn packet_type(&self) -> u8 {
        match self {
            Self::Connect(_) => 1,
            Self::ConnAck(_) => 2,
            Self::Publish(_) => 3,
            Self::PubAck(_) => 4,
            Self::PubRec(_) => 5,
            Self::PubRel(_) => 6,
            Self::PubComp(_) => 7,
            Self::Subscribe(_) => 8,
            Self::SubAck(_) => 9,
            Self::Unsubscribe(_) => 10,
            Self::UnsubAck(_) => 11,
            Self::PingReq => 12,
            Self::PingResp => 13,
            Self::Disconnect(_) => 14,
            Self::Auth(_) => 15,
        }
    }

    /// The fixed-header flag bits.
    fn flags(&self) -> u8 {
        match self {
            Self::Publish(p) => p.flags(),
            Self::PubRel(_) | Self::Subscribe(_) | Self::Unsubscribe(_) => 0x02,
            _ => 0,
        }
    }

    /// Remaining length when encoded for `v`.
    fn body_len(&self, v: ProtocolVersion) -> usize {
        match self {
            Self::Connect(c) => c.body_len(),
            Self::ConnAck(c) => c.body_len(v),
            Self::Publish(p) => p.body_len(v),
            Self::PubAck(a) | Self::PubRec(a) | Self::PubRel(a) | Self::PubComp(a) => a.body_len(v),
            Self::Subscribe(s) => s.body_len(v),
            Self::SubAck(s) => s.body_len(v),
            Self::Unsubscribe(u) => u.body_len(v),
            Self::UnsubAck(u) => u.body_len(v),
            Self::PingReq | Self::PingResp => 0,
            Self::Disconnect(d) | Self::Auth(d) => d.body_len(v),
        }
    }

    /// Length checks that must pass before any byte is written.
    fn check(&self, v: ProtocolVersion) -> Result<(), FrameError> {
        match self {
            Self::Connect(c) => c.check(),
            Self::Publish(p) => p.check(v),
            Self::Subscribe(s) => s.check(v),
            Self::Unsubscribe(u) => u.check(v),
            Self::ConnAck(ConnAck { properties, .. })
            | Self::PubAck(Ack { properties, .. })
            | Self::PubRec(Ack { properties, .. })
            | Self::PubRel(Ack { properties, .. })
            | Self::PubComp(Ack { properties, .. })
            | Self::SubAck(SubAck { properties, .. })
            | Self::UnsubAck(UnsubAck { properties, .. })
            | Self::Disconnect(Disconnect { properties, .. })
            | Self::Auth(Disconnect { properties, .. }) => {
                if v.is_v5() {
                    properties.check()?;
                }
                Ok(())
            }
            Self::PingReq | Self::PingResp => Ok(()),
        }
    }

    /// Total encoded size (fixed header included) when encoded for `v`.
    pub fn encoded_len(&self, v: ProtocolVersion) -> usize {
        let body = self.body_len(v);
        1 + wire::varint_len(body) + body
    }

    /// Writes the whole packet for protocol `v`.
    pub fn encode(&self, out: &mut BytesMut, v: ProtocolVersion) -> Result<(), FrameError> {
        self.check(v)?;
        let body = self.body_len(v);
        let max = usize::try_from(MAX_VARINT).unwrap_or(usize::MAX);
        if body > max {
            return Err(FrameError::TooLarge { size: body, max });
        }
        out.reserve(1 + wire::varint_len(body) + body);
        out.put_u8(self.packet_type() << 4 | self.flags());
        wire::put_varint(out, body);
        match self {
            Self::Connect(c) => c.encode(out),
            Self::ConnAck(c) => c.encode(out, v),
            Self::Publish(p) => p.encode(out, v),
            Self::PubAck(a) | Self::PubRec(a) | Self::PubRel(a) | Self::PubComp(a) => {
                a.encode(out, v);
            }
            Self::Subscribe(s) => s.encode(out, v),
            Self::SubAck(s) => s.encode(out, v),
            Self::Unsubscribe(u) => u.encode(out, v),
            Self::UnsubAck(u) => u.encode(out, v),
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(d) | Self::Auth(d) => d.encode(out, v),
        }
        Ok(())
    }
}

/// tokio-util codec for one connection.
#[derive(Debug, Clone)]
pub struct Codec {
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
}

impl Codec {
    /// A server-side codec: the version comes from the first CONNECT; packets larger than
    /// `max_packet_size` bytes in total are rejected before they are buffered.
    pub fn new(max_packet_size: usize) -> Self {
        Self {
            version: None,
            max_packet_size,
        }
    }

    /// A codec for a connection whose version is already known (client side, tests).
    pub fn with_version(version: ProtocolVersion, max_packet_size: usize) -> Self {
        Self {
            version: Some(version),
            max_packet_size,
        }
    }

    /// The version learnt from CONNECT, if any.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The inbound size limit.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Checks the fixed header against the limits and mosquitto's per-type rules.
    fn check_header(&self, header: u8, remaining: usize, total: usize) -> Result<(), FrameError> {
        let packet_type = header >> 4;
        let Some(version) = self.version else {
            if packet_type != 1 {
                return Err(FrameError::Protocol("first packet is not CONNECT"));
            }
            if remaining > MAX_CONNECT_LEN {
                return Err(FrameError::Malformed("CONNECT too large"));
            }
            return self.check_size(total);
        };
        let exact = match packet_type {
            4..=7 if !version.is_v5() => Some(2),
            12 | 13 => Some(0),
            14 if !version.is_v5() => Some(0),
            _ => None,
        };
        if exact.is_some_and(|len| len != remaining) {
            return Err(FrameError::Malformed(
                "wrong remaining length for packet type",
            ));
        }
        self.check_size(total)
    }

    fn check_size(&self, total: usize) -> Result<(), FrameError> {
        if total > self.max_packet_size {
            return Err(FrameError::TooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        Ok(())
    }

    /// Decodes one complete packet body.
    fn decode_body(&mut self, header: u8, body: bytes::Bytes) -> Result<Packet, FrameError> {
        let flags = header & 0x0f;
        let packet_type = header >> 4;
        let mut r = Reader::new(body);
        let Some(v) = self.version else {
            let connect = Connect::decode(&mut r, flags)?;
            self.version = Some(connect.protocol);
            return Ok(Packet::Connect(Box::new(connect)));
        };
        let expected_flags = match packet_type {
            3 => flags,
            6 | 8 | 10 => 0x02,
            _ => 0,
        };
        // MQTT 3.1 had DUP, QoS and RETAIN bits on every packet (a resent PUBREL carries
        // DUP=1): its flags are not checked, as mosquitto does not.
        if flags != expected_flags && v != ProtocolVersion::V31 {
            return Err(if matches!(packet_type, 8 | 10) {
                FrameError::Malformed("invalid fixed header flags")
            } else {
                FrameError::Unanswered("invalid fixed header flags")
            });
        }
        let packet = match packet_type {
            1 => Packet::Connect(Box::new(Connect::decode(&mut r, flags)?)),
            2 => Packet::ConnAck(ConnAck::decode(&mut r, v)?),
            3 => Packet::Publish(Publish::decode(&mut r, flags, v)?),
            4 => Packet::PubAck(Ack::decode(&mut r, AckKind::PubAck, v)?),
            5 => Packet::PubRec(Ack::decode(&mut r, AckKind::PubRec, v)?),
            6 => Packet::PubRel(Ack::decode(&mut r, AckKind::PubRel, v)?),
            7 => Packet::PubComp(Ack::decode(&mut r, AckKind::PubComp, v)?),
            8 => Packet::Subscribe(Subscribe::decode(&mut r, v)?),
            9 => Packet::SubAck(SubAck::decode(&mut r, v)?),
            10 => Packet::Unsubscribe(Unsubscribe::decode(&mut r, v)?),
            11 => Packet::UnsubAck(UnsubAck::decode(&mut r, v)?),
            12 => Packet::PingReq,
            13 => Packet::PingResp,
            14 => Packet::Disconnect(Disconnect::decode(&mut r, v, Ctx::Disconnect)?),
            15 if v.is_v5() => Packet::Auth(Disconnect::decode(&mut r, v, Ctx::Auth)?),
            _ => return Err(FrameError::Protocol("invalid packet type")),
        };
        Ok(packet)
    }
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        let Some(&header) = src.first() else {
            return Ok(None);
        };
        if self.version.is_none() && header >> 4 != 1 {
            return Err(FrameError::Protocol("first packet is not CONNECT"));
        }
        let parsed = wire::parse_varint(src.get(1..).unwrap_or_default());
        let Some((remaining, len_bytes)) = parsed.map_err(|err| match self.version {
            Some(_) => FrameError::Unanswered("invalid remaining length"),
            None => err,
        })?
        else {
            return Ok(None);
        };
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        let total = 1 + len_bytes + remaining;
        self.check_header(header, remaining, total)?;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total).freeze();
        frame.advance(1 + len_bytes);
        self.decode_body(header, frame).map(Some)
    }
}

impl Encoder<Packet> for Codec {
    type Error = FrameError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), FrameError> {
        let v = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => self.version.unwrap_or(ProtocolVersion::V311),
        };
        packet.encode(dst, v)
    }
}

#[cfg(test)]
mod tests;
