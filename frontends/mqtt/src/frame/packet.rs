//! The fourteen MQTT control packets (fifteen with 5.0 AUTH): one struct each, decoded from
//! a complete body and encoded straight into the write buffer.
//!
//! Decoding applies mosquitto's per-packet checks (`handle__connect`, `handle__publish`,
//! `handle__subscribe`, …) that need no broker state; the answer to a failed check is the
//! [`FrameError`] kind (malformed → 0x81, protocol error → 0x82).
//!
//! # Invariants
//! - `Publish::packet_id` is 0 exactly when `qos` is [`QoS::AtMostOnce`].
//! - Every `*_len` function returns exactly the number of bytes the matching `encode` writes.

use bytes::{BufMut, Bytes};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{FrameError, ProtocolVersion, QoS};

/// mosquitto's `TOPIC_HIERARCHY_LIMIT`: at most this many `/` in a topic or filter.
pub const MAX_TOPIC_LEVELS: usize = 200;

/// CONNECT (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol: ProtocolVersion,
    /// 3.1.1 Clean Session / 5.0 Clean Start.
    pub clean_start: bool,
    /// Keep alive in seconds; 0 = off.
    pub keep_alive: u16,
    /// 5.0 CONNECT properties.
    pub properties: Properties,
    /// Client identifier; may be empty.
    pub client_id: String,
    /// The will, when the Will Flag is set.
    pub will: Option<Will>,
    /// User Name, when its flag is set.
    pub username: Option<String>,
    /// Password, when its flag is set.
    pub password: Option<Bytes>,
}

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic (a topic name, no wildcards).
    pub topic: String,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// 5.0 will properties (publish properties plus Will Delay Interval).
    pub properties: Properties,
}

/// CONNACK (server → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// 3.1.1 return code or 5.0 reason code.
    pub code: u8,
    /// 5.0 CONNACK properties.
    pub properties: Properties,
}

/// PUBLISH (both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this is a redelivery.
    pub dup: bool,
    /// QoS of this hop.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic name; empty only in 5.0 with a Topic Alias.
    pub topic: String,
    /// Packet identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// 5.0 PUBLISH properties.
    pub properties: Properties,
    /// Application payload, zero-copy from the read buffer.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier being acknowledged.
    pub packet_id: u16,
    /// 5.0 reason code (0 in 3.1.1).
    pub reason: u8,
    /// 5.0 properties (Reason String, User Property).
    pub properties: Properties,
}

impl Ack {
    /// A plain success acknowledgement.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason: 0,
            properties: Properties::default(),
        }
    }

    /// An acknowledgement with a reason code.
    pub fn with_reason(packet_id: u16, reason: u8) -> Self {
        Self {
            packet_id,
            reason,
            properties: Properties::default(),
        }
    }
}

/// Subscription options of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling: 0 send, 1 send if new, 2 never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    fn to_byte(self) -> u8 {
        self.qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling & 0x03) << 4
    }
}

/// SUBSCRIBE (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// 5.0 properties (Subscription Identifier, User Property).
    pub properties: Properties,
    /// Topic filters with their options, in order.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK (server → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// 5.0 properties.
    pub properties: Properties,
    /// One return/reason code per filter.
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// 5.0 properties.
    pub properties: Properties,
    /// Topic filters, in order.
    pub filters: Vec<String>,
}

/// UNSUBACK (server → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// 5.0 properties.
    pub properties: Properties,
    /// 5.0: one reason code per filter; empty in 3.1.1.
    pub codes: Vec<u8>,
}

/// DISCONNECT (client → server; both directions in 5.0) and AUTH (5.0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code.
    pub reason: u8,
    /// 5.0 properties.
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with only a reason code.
    pub fn with_reason(reason: u8) -> Self {
        Self {
            reason,
            properties: Properties::default(),
        }
    }
}

/// Reads the property block in 5.0; nothing in 3.x.
fn read_props(
    r: &mut Reader,
    v: ProtocolVersion,
    ctx: PropertyContext,
) -> Result<Properties, FrameError> {
    if v.is_v5() {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// Size of the property block in 5.0; 0 in 3.x.
fn props_len(props: &Properties, v: ProtocolVersion) -> usize {
    if v.is_v5() {
        props.encoded_len()
    } else {
        0
    }
}

fn put_props(out: &mut impl BufMut, props: &Properties, v: ProtocolVersion) {
    if v.is_v5() {
        props.encode(out);
    }
}

fn check_props(props: &Properties, v: ProtocolVersion) -> Result<(), FrameError> {
    if v.is_v5() {
        props.check()?;
    }
    Ok(())
}

/// mosquitto's `mosquitto_pub_topic_check` (plus the level limit).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.contains(['+', '#']) && topic.matches('/').count() <= MAX_TOPIC_LEVELS
}

/// mosquitto's `mosquitto_sub_topic_check`: `+` and `#` occupy whole levels, `#` is last.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.matches('/').count() > MAX_TOPIC_LEVELS {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match level {
            "#" => last,
            "+" => true,
            other => !other.contains(['+', '#']),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Checks `$share/{name}/{filter}`: a non-empty name without wildcards and a non-empty filter.
fn check_shared(filter: &str) -> Result<(), FrameError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(());
    };
    match rest.split_once('/') {
        Some((name, inner))
            if !name.is_empty() && !name.contains(['+', '#']) && !inner.is_empty() =>
        {
            Ok(())
        }
        _ => Err(FrameError::Protocol("invalid shared subscription")),
    }
}

impl Connect {
    /// Decodes a CONNECT body; `flags` are the fixed-header flag bits.
    pub fn decode(r: &mut Reader, flags: u8) -> Result<Self, FrameError> {
        let protocol = read_protocol(r, flags)?;
        let connect_flags = r.u8()?;
        if protocol != ProtocolVersion::V31 && connect_flags & 0x01 != 0 {
            return Err(FrameError::Protocol("reserved connect flag set"));
        }
        let will_flag = connect_flags & 0x04 != 0;
        let will_qos = QoS::try_from((connect_flags >> 3) & 0x03)
            .map_err(|_| FrameError::Protocol("will QoS 3"))?;
        let will_retain = connect_flags & 0x20 != 0;
        let password_flag = connect_flags & 0x40 != 0;
        let username_flag = connect_flags & 0x80 != 0;
        let keep_alive = r.u16()?;
        let properties = read_props(r, protocol, PropertyContext::Connect)?;
        let client_id = r.string()?;
        let will = if will_flag {
            Some(Will::decode(r, protocol, will_qos, will_retain)?)
        } else {
            if will_qos != QoS::AtMostOnce || will_retain {
                return Err(FrameError::Protocol("will QoS or retain without will flag"));
            }
            None
        };
        if password_flag && !username_flag && !protocol.is_v5() {
            return Err(FrameError::Protocol("password without user name"));
        }
        let username = username_flag.then(|| r.string()).transpose()?;
        let password = password_flag.then(|| r.binary()).transpose()?;
        if !r.is_empty() {
            return Err(FrameError::Protocol("surplus bytes after CONNECT payload"));
        }
        Ok(Self {
            protocol,
            clean_start: connect_flags & 0x02 != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = u8::from(self.clean_start) << 1;
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
        }
        flags | u8::from(self.password.is_some()) << 6 | u8::from(self.username.is_some()) << 7
    }

    fn name(&self) -> &'static [u8] {
        match self.protocol {
            ProtocolVersion::V31 => b"MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
        }
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self) -> usize {
        let v = self.protocol;
        let will = self.will.as_ref().map_or(0, |w| {
            props_len(&w.properties, v) + wire::field_len(w.topic.as_bytes()) + 2 + w.payload.len()
        });
        wire::field_len(self.name())
            + 4
            + props_len(&self.properties, v)
            + wire::field_len(self.client_id.as_bytes())
            + will
            + self
                .username
                .as_ref()
                .map_or(0, |u| wire::field_len(u.as_bytes()))
            + self.password.as_ref().map_or(0, |p| wire::field_len(p))
    }

    /// Checks lengths before encoding.
    pub fn check(&self) -> Result<(), FrameError> {
        let v = self.protocol;
        check_props(&self.properties, v)?;
        wire::check_len(self.client_id.as_bytes())?;
        if let Some(will) = &self.will {
            check_props(&will.properties, v)?;
            wire::check_len(will.topic.as_bytes())?;
            wire::check_len(&will.payload)?;
        }
        for field in [
            self.username.as_ref().map(String::as_bytes),
            self.password.as_deref(),
        ] {
            wire::check_len(field.unwrap_or_default())?;
        }
        Ok(())
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut) {
        let v = self.protocol;
        wire::put_binary(out, self.name());
        out.put_u8(v as u8);
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        put_props(out, &self.properties, v);
        wire::put_binary(out, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            put_props(out, &will.properties, v);
            wire::put_binary(out, will.topic.as_bytes());
            wire::put_binary(out, &will.payload);
        }
        if let Some(username) = &self.username {
            wire::put_binary(out, username.as_bytes());
        }
        if let Some(password) = &self.password {
            wire::put_binary(out, password);
        }
    }
}

/// Reads the protocol name and level (mosquitto's order of checks).
fn read_protocol(r: &mut Reader, flags: u8) -> Result<ProtocolVersion, FrameError> {
    let name_len = r.u16()?;
    if name_len != 4 && name_len != 6 {
        return Err(FrameError::Protocol("unknown protocol name"));
    }
    let name = r.bytes(usize::from(name_len))?;
    let level = r.u8()?;
    // Bit 7 of the level marks a mosquitto bridge; it changes nothing here.
    let protocol = match (&name[..], level & 0x7f) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) if level == 5 => ProtocolVersion::V5,
        (b"MQIsdp" | b"MQTT", _) => return Err(FrameError::UnsupportedProtocolVersion(level)),
        _ => return Err(FrameError::Protocol("unknown protocol name")),
    };
    if protocol != ProtocolVersion::V31 && flags != 0 {
        return Err(FrameError::Protocol("reserved flags set on CONNECT"));
    }
    Ok(protocol)
}

impl Will {
    fn decode(
        r: &mut Reader,
        v: ProtocolVersion,
        qos: QoS,
        retain: bool,
    ) -> Result<Self, FrameError> {
        let properties = read_props(r, v, PropertyContext::Will)?;
        let topic = r.string()?;
        if topic.is_empty() || !valid_topic_name(&topic) {
            return Err(FrameError::Protocol("invalid will topic"));
        }
        let payload = r.binary()?;
        Ok(Self {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    }
}

impl ConnAck {
    /// Decodes a CONNACK body.
    pub fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, FrameError> {
        let flags = r.u8()?;
        if flags & 0xfe != 0 {
            return Err(FrameError::Malformed("reserved CONNACK flags set"));
        }
        let code = r.u8()?;
        let properties = read_props(r, v, PropertyContext::ConnAck)?;
        Ok(Self {
            session_present: flags & 1 == 1,
            code,
            properties,
        })
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, v)
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code);
        put_props(out, &self.properties, v);
    }
}

impl Publish {
    /// Decodes a PUBLISH body; `flags` carry DUP, QoS and RETAIN.
    pub fn decode(r: &mut Reader, flags: u8, v: ProtocolVersion) -> Result<Self, FrameError> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::try_from((flags >> 1) & 0x03)
            .map_err(|_| FrameError::Malformed("PUBLISH with QoS 3"))?;
        if dup && qos == QoS::AtMostOnce {
            return Err(FrameError::Malformed("PUBLISH with QoS 0 and DUP set"));
        }
        let topic = r.string()?;
        if topic.is_empty() && !v.is_v5() {
            return Err(FrameError::Malformed("empty topic name"));
        }
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { r.u16()? };
        if qos != QoS::AtMostOnce && packet_id == 0 {
            return Err(FrameError::Protocol("packet identifier 0"));
        }
        let properties = read_props(r, v, PropertyContext::Publish)?;
        if !valid_topic_name(&topic) {
            return Err(FrameError::Protocol("invalid topic name"));
        }
        Ok(Self {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// Fixed-header flag bits.
    pub fn flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        let packet_id = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        wire::field_len(self.topic.as_bytes())
            + packet_id
            + props_len(&self.properties, v)
            + self.payload.len()
    }

    /// Checks lengths before encoding.
    pub fn check(&self, v: ProtocolVersion) -> Result<(), FrameError> {
        wire::check_len(self.topic.as_bytes())?;
        check_props(&self.properties, v)
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        wire::put_binary(out, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id);
        }
        put_props(out, &self.properties, v);
        out.put_slice(&self.payload);
    }
}

/// Which of the four acknowledgements an [`Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK (QoS 1).
    PubAck,
    /// PUBREC (QoS 2, step 1).
    PubRec,
    /// PUBREL (QoS 2, step 2).
    PubRel,
    /// PUBCOMP (QoS 2, step 3).
    PubComp,
}

impl AckKind {
    /// Reason codes mosquitto accepts in this acknowledgement (plus 0x10 No matching
    /// subscribers, which servers send in PUBACK/PUBREC).
    fn allows(self, reason: u8) -> bool {
        match self {
            Self::PubAck | Self::PubRec => {
                matches!(
                    reason,
                    0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                )
            }
            Self::PubRel | Self::PubComp => matches!(reason, 0x00 | 0x92),
        }
    }
}

impl Ack {
    /// Decodes a PUBACK/PUBREC/PUBREL/PUBCOMP body.
    pub fn decode(r: &mut Reader, kind: AckKind, v: ProtocolVersion) -> Result<Self, FrameError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(FrameError::Protocol("packet identifier 0"));
        }
        let mut ack = Self::new(packet_id);
        if v.is_v5() && !r.is_empty() {
            ack.reason = r.u8()?;
            if !kind.allows(ack.reason) {
                return Err(FrameError::Protocol(
                    "reason code not allowed in acknowledgement",
                ));
            }
            if !r.is_empty() {
                ack.properties = Properties::decode(r, PropertyContext::Ack)?;
            }
        }
        if !r.is_empty() {
            return Err(FrameError::Malformed("surplus bytes after acknowledgement"));
        }
        Ok(ack)
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        2 + reason_tail_len(self.reason, &self.properties, v)
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u16(self.packet_id);
        put_reason_tail(out, self.reason, &self.properties, v);
    }
}

/// Reads the topic filters filling the rest of a SUBSCRIBE or UNSUBSCRIBE, each checked and
/// then passed to `item` (which reads what follows it); at least one is required except in
/// MQTT 3.1, which does not demand one (mosquitto accepts an empty 3.1 list).
fn read_filters<T>(
    r: &mut Reader,
    v: ProtocolVersion,
    empty: &'static str,
    mut item: impl FnMut(String, &mut Reader) -> Result<T, FrameError>,
) -> Result<Vec<T>, FrameError> {
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if !valid_topic_filter(&filter) {
            return Err(FrameError::Malformed("invalid topic filter"));
        }
        filters.push(item(filter, r)?);
    }
    if filters.is_empty() && v != ProtocolVersion::V31 {
        return Err(FrameError::Malformed(empty));
    }
    Ok(filters)
}

impl Subscribe {
    /// Decodes a SUBSCRIBE body.
    pub fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, FrameError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(FrameError::Malformed("packet identifier 0"));
        }
        let properties = read_props(r, v, PropertyContext::Subscribe)?;
        let filters = read_filters(r, v, "SUBSCRIBE without topic filters", |filter, r| {
            let options = read_options(r.u8()?, v)?;
            if options.no_local && filter.starts_with("$share/") {
                return Err(FrameError::Protocol("No Local on a shared subscription"));
            }
            check_shared(&filter)?;
            Ok((filter, options))
        })?;
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, v)
            + self
                .filters
                .iter()
                .map(|(f, _)| wire::field_len(f.as_bytes()) + 1)
                .sum::<usize>()
    }

    /// Checks lengths before encoding.
    pub fn check(&self, v: ProtocolVersion) -> Result<(), FrameError> {
        check_props(&self.properties, v)?;
        self.filters
            .iter()
            .try_for_each(|(f, _)| wire::check_len(f.as_bytes()))
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u16(self.packet_id);
        put_props(out, &self.properties, v);
        for (filter, options) in &self.filters {
            wire::put_binary(out, filter.as_bytes());
            let byte = if v.is_v5() {
                options.to_byte()
            } else {
                options.qos as u8
            };
            out.put_u8(byte);
        }
    }
}

/// Parses a subscription options byte (3.x: the QoS byte).
fn read_options(byte: u8, v: ProtocolVersion) -> Result<SubscriptionOptions, FrameError> {
    if !v.is_v5() {
        let qos = QoS::try_from(byte).map_err(|_| FrameError::Malformed("invalid QoS"))?;
        return Ok(SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        });
    }
    let retain_handling = (byte >> 4) & 0x03;
    if byte & 0xc0 != 0 || retain_handling == 3 {
        return Err(FrameError::Malformed("invalid subscription options"));
    }
    Ok(SubscriptionOptions {
        qos: QoS::try_from(byte & 0x03).map_err(|_| FrameError::Malformed("invalid QoS"))?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

impl SubAck {
    /// Decodes a SUBACK body.
    pub fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, FrameError> {
        let packet_id = r.u16()?;
        let properties = read_props(r, v, PropertyContext::SubAck)?;
        Ok(Self {
            packet_id,
            properties,
            codes: r.rest().to_vec(),
        })
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, v) + self.codes.len()
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u16(self.packet_id);
        put_props(out, &self.properties, v);
        out.put_slice(&self.codes);
    }
}

impl Unsubscribe {
    /// Decodes an UNSUBSCRIBE body.
    pub fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, FrameError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(FrameError::Malformed("packet identifier 0"));
        }
        let properties = read_props(r, v, PropertyContext::Unsubscribe)?;
        let filters = read_filters(r, v, "UNSUBSCRIBE without topic filters", |filter, _| {
            Ok(filter)
        })?;
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, v)
            + self
                .filters
                .iter()
                .map(|f| wire::field_len(f.as_bytes()))
                .sum::<usize>()
    }

    /// Checks lengths before encoding.
    pub fn check(&self, v: ProtocolVersion) -> Result<(), FrameError> {
        check_props(&self.properties, v)?;
        self.filters
            .iter()
            .try_for_each(|f| wire::check_len(f.as_bytes()))
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u16(self.packet_id);
        put_props(out, &self.properties, v);
        for filter in &self.filters {
            wire::put_binary(out, filter.as_bytes());
        }
    }
}

impl UnsubAck {
    /// Decodes an UNSUBACK body.
    pub fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, FrameError> {
        let packet_id = r.u16()?;
        let properties = read_props(r, v, PropertyContext::SubAck)?;
        let codes = if v.is_v5() {
            r.rest().to_vec()
        } else {
            Vec::new()
        };
        if !r.is_empty() {
            return Err(FrameError::Malformed("surplus bytes after UNSUBACK"));
        }
        Ok(Self {
            packet_id,
            properties,
            codes,
        })
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        if v.is_v5() {
            2 + self.properties.encoded_len() + self.codes.len()
        } else {
            2
        }
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        out.put_u16(self.packet_id);
        if v.is_v5() {
            self.properties.encode(out);
            out.put_slice(&self.codes);
        }
    }
}

impl Disconnect {
    /// Decodes a DISCONNECT (or AUTH) body; `ctx` picks the allowed properties.
    pub fn decode(
        r: &mut Reader,
        v: ProtocolVersion,
        ctx: PropertyContext,
    ) -> Result<Self, FrameError> {
        let mut packet = Self::default();
        if v.is_v5() && !r.is_empty() {
            packet.reason = r.u8()?;
            if !r.is_empty() {
                packet.properties = Properties::decode(r, ctx)?;
            }
        }
        if !r.is_empty() {
            return Err(FrameError::Protocol("surplus bytes after DISCONNECT"));
        }
        if ctx == PropertyContext::Auth && !matches!(packet.reason, 0x00 | 0x18 | 0x19) {
            return Err(FrameError::Protocol("invalid AUTH reason code"));
        }
        Ok(packet)
    }

    /// Remaining length of the encoded packet.
    pub fn body_len(&self, v: ProtocolVersion) -> usize {
        reason_tail_len(self.reason, &self.properties, v)
    }

    /// Writes the body.
    pub fn encode(&self, out: &mut impl BufMut, v: ProtocolVersion) {
        put_reason_tail(out, self.reason, &self.properties, v);
    }
}

/// Acks, DISCONNECT and AUTH end in `reason code [properties]`, left out in 3.1.x and when
/// the code is 0 with no properties (and the properties alone when there are none).
fn reason_tail_len(reason: u8, properties: &Properties, v: ProtocolVersion) -> usize {
    if !v.is_v5() || (reason == 0 && properties.is_empty()) {
        0
    } else if properties.is_empty() {
        1
    } else {
        1 + properties.encoded_len()
    }
}

/// Writes the `reason code [properties]` tail sized by [`reason_tail_len`].
fn put_reason_tail(out: &mut impl BufMut, reason: u8, properties: &Properties, v: ProtocolVersion) {
    if reason_tail_len(reason, properties, v) == 0 {
        return;
    }
    out.put_u8(reason);
    if !properties.is_empty() {
        properties.encode(out);
    }
}
