//! MQTT 5 properties (§2.2.2): one typed struct for every property, decoded with the
//! per-packet rules mosquitto applies (`property__read_all` + `mosquitto_property_check_all`).
//!
//! ```text
//! Property Length (Variable Byte Integer) then, repeated:
//!   identifier (Variable Byte Integer) + value (byte | u16 | u32 | varint | string | binary | pair)
//! ```
//!
//! # Invariants
//! - A decoded set only holds properties allowed in its packet; every identifier except User
//!   Property (and Subscription Identifier in PUBLISH) appears at most once.
//! - Encoding writes properties in identifier order, User Properties last in their own order,
//!   so `decode(encode(p)) == p`.

use bytes::{BufMut, Bytes};

use super::wire::{self, Reader};
use super::FrameError;

/// Property identifiers (§2.2.2.2).
pub mod id {
    /// Payload Format Indicator (byte).
    pub const PAYLOAD_FORMAT_INDICATOR: u32 = 0x01;
    /// Message Expiry Interval (u32).
    pub const MESSAGE_EXPIRY_INTERVAL: u32 = 0x02;
    /// Content Type (string).
    pub const CONTENT_TYPE: u32 = 0x03;
    /// Response Topic (string).
    pub const RESPONSE_TOPIC: u32 = 0x08;
    /// Correlation Data (binary).
    pub const CORRELATION_DATA: u32 = 0x09;
    /// Subscription Identifier (varint).
    pub const SUBSCRIPTION_IDENTIFIER: u32 = 0x0B;
    /// Session Expiry Interval (u32).
    pub const SESSION_EXPIRY_INTERVAL: u32 = 0x11;
    /// Assigned Client Identifier (string).
    pub const ASSIGNED_CLIENT_IDENTIFIER: u32 = 0x12;
    /// Server Keep Alive (u16).
    pub const SERVER_KEEP_ALIVE: u32 = 0x13;
    /// Authentication Method (string).
    pub const AUTHENTICATION_METHOD: u32 = 0x15;
    /// Authentication Data (binary).
    pub const AUTHENTICATION_DATA: u32 = 0x16;
    /// Request Problem Information (byte).
    pub const REQUEST_PROBLEM_INFORMATION: u32 = 0x17;
    /// Will Delay Interval (u32).
    pub const WILL_DELAY_INTERVAL: u32 = 0x18;
    /// Request Response Information (byte).
    pub const REQUEST_RESPONSE_INFORMATION: u32 = 0x19;
    /// Response Information (string).
    pub const RESPONSE_INFORMATION: u32 = 0x1A;
    /// Server Reference (string).
    pub const SERVER_REFERENCE: u32 = 0x1C;
    /// Reason String (string).
    pub const REASON_STRING: u32 = 0x1F;
    /// Receive Maximum (u16).
    pub const RECEIVE_MAXIMUM: u32 = 0x21;
    /// Topic Alias Maximum (u16).
    pub const TOPIC_ALIAS_MAXIMUM: u32 = 0x22;
    /// Topic Alias (u16).
    pub const TOPIC_ALIAS: u32 = 0x23;
    /// Maximum QoS (byte).
    pub const MAXIMUM_QOS: u32 = 0x24;
    /// Retain Available (byte).
    pub const RETAIN_AVAILABLE: u32 = 0x25;
    /// User Property (string pair).
    pub const USER_PROPERTY: u32 = 0x26;
    /// Maximum Packet Size (u32).
    pub const MAXIMUM_PACKET_SIZE: u32 = 0x27;
    /// Wildcard Subscription Available (byte).
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u32 = 0x28;
    /// Subscription Identifier Available (byte).
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u32 = 0x29;
    /// Shared Subscription Available (byte).
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u32 = 0x2A;
}

/// Which packet a property set belongs to; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The will properties inside CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK, UNSUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    /// mosquitto's `mosquitto_property_check_command`: is `property` allowed here? `None` for
    /// an identifier MQTT 5 does not define.
    fn allows(self, property: u32) -> Option<bool> {
        use PropertyContext as C;
        let allowed = match property {
            id::PAYLOAD_FORMAT_INDICATOR
            | id::MESSAGE_EXPIRY_INTERVAL
            | id::CONTENT_TYPE
            | id::RESPONSE_TOPIC
            | id::CORRELATION_DATA => matches!(self, C::Publish | C::Will),
            id::SUBSCRIPTION_IDENTIFIER => matches!(self, C::Publish | C::Subscribe),
            id::SESSION_EXPIRY_INTERVAL => matches!(self, C::Connect | C::ConnAck | C::Disconnect),
            id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => {
                matches!(self, C::Connect | C::ConnAck | C::Auth)
            }
            id::ASSIGNED_CLIENT_IDENTIFIER
            | id::SERVER_KEEP_ALIVE
            | id::RESPONSE_INFORMATION
            | id::MAXIMUM_QOS
            | id::RETAIN_AVAILABLE
            | id::WILDCARD_SUBSCRIPTION_AVAILABLE
            | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | id::SHARED_SUBSCRIPTION_AVAILABLE => self == C::ConnAck,
            id::WILL_DELAY_INTERVAL => self == C::Will,
            id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => {
                self == C::Connect
            }
            id::SERVER_REFERENCE => matches!(self, C::ConnAck | C::Disconnect),
            id::REASON_STRING => !matches!(
                self,
                C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe
            ),
            id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
                matches!(self, C::Connect | C::ConnAck)
            }
            id::TOPIC_ALIAS => self == C::Publish,
            id::USER_PROPERTY => true,
            _ => return None,
        };
        Some(allowed)
    }
}

/// Every MQTT 5 property; absent ones are `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01: 1 = the payload is UTF-8 text.
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME type of the payload.
    pub content_type: Option<String>,
    /// 0x08: topic for a response.
    pub response_topic: Option<String>,
    /// 0x09: opaque request/response correlation.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers (one in SUBSCRIBE, any number in PUBLISH).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: the client id the server made up.
    pub assigned_client_identifier: Option<String>,
    /// 0x13: keep alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// 0x15: enhanced authentication method.
    pub authentication_method: Option<String>,
    /// 0x16: enhanced authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17: 0 = send no reason strings or user properties on errors.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds to delay the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19: 1 = the client asks for Response Information.
    pub request_response_information: Option<u8>,
    /// 0x1A: basis for response topics.
    pub response_information: Option<String>,
    /// 0x1C: another server to use.
    pub server_reference: Option<String>,
    /// 0x1F: human-readable reason.
    pub reason_string: Option<String>,
    /// 0x21: how many unacknowledged QoS 1/2 PUBLISHes the sender accepts.
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias of this PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports.
    pub maximum_qos: Option<u8>,
    /// 0x25: 0 = retained messages are not supported.
    pub retain_available: Option<u8>,
    /// 0x26: user properties, in order, names may repeat.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: 0 = wildcard subscriptions are not supported.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: 0 = subscription identifiers are not supported.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: 0 = shared subscriptions are not supported.
    pub shared_subscription_available: Option<u8>,
}

/// Stores `value` in `slot`, rejecting a second occurrence (protocol error).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), FrameError> {
    if slot.is_some() {
        return Err(FrameError::Unanswered("duplicate property"));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader) -> Result<u8, FrameError> {
    let value = r.u8()?;
    if value > 1 {
        return Err(FrameError::Protocol("property value must be 0 or 1"));
    }
    Ok(value)
}

/// A u16 property that may not be 0 (Receive Maximum).
fn nonzero_u16(r: &mut Reader) -> Result<u16, FrameError> {
    match r.u16()? {
        0 => Err(FrameError::Protocol("property value must not be 0")),
        value => Ok(value),
    }
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads a property block (length + properties) allowed in `ctx`.
    pub fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, FrameError> {
        let (len, _) = r.varint()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > r.remaining() {
            return Err(FrameError::Malformed("property length exceeds packet"));
        }
        let mut block = Reader::new(r.bytes(len)?);
        let mut props = Self::default();
        while !block.is_empty() {
            let (property, _) = block.varint()?;
            match ctx.allows(property) {
                None => return Err(FrameError::Malformed("unknown property identifier")),
                Some(false) => {
                    return Err(FrameError::Malformed("property not allowed in this packet"))
                }
                Some(true) => {}
            }
            props.read_one(property, &mut block, ctx)?;
        }
        Ok(props)
    }

    fn read_one(
        &mut self,
        property: u32,
        r: &mut Reader,
        ctx: PropertyContext,
    ) -> Result<(), FrameError> {
        match property {
            id::PAYLOAD_FORMAT_INDICATOR => set_once(&mut self.payload_format_indicator, flag(r)?),
            id::MESSAGE_EXPIRY_INTERVAL => set_once(&mut self.message_expiry_interval, r.u32()?),
            id::CONTENT_TYPE => set_once(&mut self.content_type, r.string()?),
            id::RESPONSE_TOPIC => {
                let topic = r.string()?;
                if topic.is_empty() || topic.contains(['+', '#']) {
                    return Err(FrameError::Protocol("invalid response topic"));
                }
                set_once(&mut self.response_topic, topic)
            }
            id::CORRELATION_DATA => set_once(&mut self.correlation_data, r.binary()?),
            id::SUBSCRIPTION_IDENTIFIER => self.read_subscription_identifier(r, ctx),
            id::SESSION_EXPIRY_INTERVAL => set_once(&mut self.session_expiry_interval, r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => {
                set_once(&mut self.assigned_client_identifier, r.string()?)
            }
            id::SERVER_KEEP_ALIVE => set_once(&mut self.server_keep_alive, r.u16()?),
            id::AUTHENTICATION_METHOD => set_once(&mut self.authentication_method, r.string()?),
            id::AUTHENTICATION_DATA => set_once(&mut self.authentication_data, r.binary()?),
            id::REQUEST_PROBLEM_INFORMATION => {
                set_once(&mut self.request_problem_information, flag(r)?)
            }
            id::WILL_DELAY_INTERVAL => set_once(&mut self.will_delay_interval, r.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => {
                set_once(&mut self.request_response_information, flag(r)?)
            }
            id::RESPONSE_INFORMATION => set_once(&mut self.response_information, r.string()?),
            id::SERVER_REFERENCE => set_once(&mut self.server_reference, r.string()?),
            id::REASON_STRING => set_once(&mut self.reason_string, r.string()?),
            id::RECEIVE_MAXIMUM => set_once(&mut self.receive_maximum, nonzero_u16(r)?),
            id::TOPIC_ALIAS_MAXIMUM => set_once(&mut self.topic_alias_maximum, r.u16()?),
            // Alias 0 is the session's business: it answers with DISCONNECT 0x94.
            id::TOPIC_ALIAS => set_once(&mut self.topic_alias, r.u16()?),
            id::MAXIMUM_QOS => set_once(&mut self.maximum_qos, flag(r)?),
            id::RETAIN_AVAILABLE => set_once(&mut self.retain_available, flag(r)?),
            id::USER_PROPERTY => {
                let name = r.string()?;
                let value = r.string()?;
                self.user_properties.push((name, value));
                Ok(())
            }
            id::MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => Err(FrameError::Protocol("maximum packet size 0")),
                size => set_once(&mut self.maximum_packet_size, size),
            },
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                set_once(&mut self.wildcard_subscription_available, flag(r)?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                set_once(&mut self.subscription_identifier_available, flag(r)?)
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => {
                set_once(&mut self.shared_subscription_available, flag(r)?)
            }
            _ => Err(FrameError::Malformed("unknown property identifier")),
        }
    }

    fn read_subscription_identifier(
        &mut self,
        r: &mut Reader,
        ctx: PropertyContext,
    ) -> Result<(), FrameError> {
        let (value, _) = r.varint()?;
        if value == 0 {
            return Err(FrameError::Malformed("subscription identifier 0"));
        }
        if ctx == PropertyContext::Subscribe && !self.subscription_identifiers.is_empty() {
            return Err(FrameError::Unanswered("duplicate property"));
        }
        self.subscription_identifiers.push(value);
        Ok(())
    }

    /// Size of the property block without its length prefix.
    pub fn body_len(&self) -> usize {
        let byte = |v: &Option<u8>| v.map_or(0, |_| 2);
        let short = |v: &Option<u16>| v.map_or(0, |_| 3);
        let long = |v: &Option<u32>| v.map_or(0, |_| 5);
        let text = |v: &Option<String>| v.as_ref().map_or(0, |s| 1 + wire::field_len(s.as_bytes()));
        let bin = |v: &Option<Bytes>| v.as_ref().map_or(0, |b| 1 + wire::field_len(b));
        let sub_ids: usize = self
            .subscription_identifiers
            .iter()
            .map(|&sid| 1 + wire::varint_len(usize::try_from(sid).unwrap_or(usize::MAX)))
            .sum();
        let users: usize = self
            .user_properties
            .iter()
            .map(|(n, v)| 1 + wire::field_len(n.as_bytes()) + wire::field_len(v.as_bytes()))
            .sum();
        byte(&self.payload_format_indicator)
            + long(&self.message_expiry_interval)
            + text(&self.content_type)
            + text(&self.response_topic)
            + bin(&self.correlation_data)
            + sub_ids
            + long(&self.session_expiry_interval)
            + text(&self.assigned_client_identifier)
            + short(&self.server_keep_alive)
            + text(&self.authentication_method)
            + bin(&self.authentication_data)
            + byte(&self.request_problem_information)
            + long(&self.will_delay_interval)
            + byte(&self.request_response_information)
            + text(&self.response_information)
            + text(&self.server_reference)
            + text(&self.reason_string)
            + short(&self.receive_maximum)
            + short(&self.topic_alias_maximum)
            + short(&self.topic_alias)
            + byte(&self.maximum_qos)
            + byte(&self.retain_available)
            + users
            + long(&self.maximum_packet_size)
            + byte(&self.wildcard_subscription_available)
            + byte(&self.subscription_identifier_available)
            + byte(&self.shared_subscription_available)
    }

    /// Size of the property block including its length prefix.
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        wire::varint_len(body) + body
    }

    /// Checks every string and binary field fits its length prefix.
    pub fn check(&self) -> Result<(), FrameError> {
        let texts = [
            &self.content_type,
            &self.response_topic,
            &self.assigned_client_identifier,
            &self.authentication_method,
            &self.response_information,
            &self.server_reference,
            &self.reason_string,
        ];
        for text in texts.into_iter().flatten() {
            wire::check_len(text.as_bytes())?;
        }
        for bin in [&self.correlation_data, &self.authentication_data]
            .into_iter()
            .flatten()
        {
            wire::check_len(bin)?;
        }
        for (name, value) in &self.user_properties {
            wire::check_len(name.as_bytes())?;
            wire::check_len(value.as_bytes())?;
        }
        if self
            .subscription_identifiers
            .iter()
            .any(|&sid| sid == 0 || sid > wire::MAX_VARINT)
        {
            return Err(FrameError::Protocol("subscription identifier out of range"));
        }
        Ok(())
    }

    /// Writes the property block (length prefix + properties), after [`Properties::check`].
    pub fn encode(&self, out: &mut impl BufMut) {
        wire::put_varint(out, self.body_len());
        let mut w = PropWriter(out);
        w.byte(id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        w.long(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w.text(id::CONTENT_TYPE, self.content_type.as_deref());
        w.text(id::RESPONSE_TOPIC, self.response_topic.as_deref());
        w.bin(id::CORRELATION_DATA, self.correlation_data.as_deref());
        for &sid in &self.subscription_identifiers {
            w.id(id::SUBSCRIPTION_IDENTIFIER);
            wire::put_varint(w.0, usize::try_from(sid).unwrap_or(0));
        }
        w.long(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        // CONNACK properties in mosquitto's order.
        w.short(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w.short(id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        w.text(
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref(),
        );
        w.text(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        w.bin(id::AUTHENTICATION_DATA, self.authentication_data.as_deref());
        w.byte(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        w.long(id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        w.byte(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        w.text(
            id::RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        );
        w.text(id::SERVER_REFERENCE, self.server_reference.as_deref());
        w.text(id::REASON_STRING, self.reason_string.as_deref());
        w.byte(id::RETAIN_AVAILABLE, self.retain_available);
        w.long(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        w.short(id::RECEIVE_MAXIMUM, self.receive_maximum);
        w.byte(id::MAXIMUM_QOS, self.maximum_qos);
        w.short(id::TOPIC_ALIAS, self.topic_alias);
        for (name, value) in &self.user_properties {
            w.id(id::USER_PROPERTY);
            wire::put_binary(w.0, name.as_bytes());
            wire::put_binary(w.0, value.as_bytes());
        }
        w.byte(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        w.byte(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
        );
        w.byte(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
    }
}

/// Writes `identifier + value` for each present property.
struct PropWriter<'a, B>(&'a mut B);

impl<B: BufMut> PropWriter<'_, B> {
    fn id(&mut self, property: u32) {
        // Every identifier is below 0x80: one byte.
        self.0.put_u8(u8::try_from(property).unwrap_or(0));
    }
    fn byte(&mut self, property: u32, value: Option<u8>) {
        if let Some(v) = value {
            self.id(property);
            self.0.put_u8(v);
        }
    }
    fn short(&mut self, property: u32, value: Option<u16>) {
        if let Some(v) = value {
            self.id(property);
            self.0.put_u16(v);
        }
    }
    fn long(&mut self, property: u32, value: Option<u32>) {
        if let Some(v) = value {
            self.id(property);
            self.0.put_u32(v);
        }
    }
    fn text(&mut self, property: u32, value: Option<&str>) {
        self.bin(property, value.map(str::as_bytes));
    }
    fn bin(&mut self, property: u32, value: Option<&[u8]>) {
        if let Some(v) = value {
            self.id(property);
            wire::put_binary(self.0, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn decode(bytes: &'static [u8], ctx: PropertyContext) -> Result<Properties, FrameError> {
        Properties::decode(&mut Reader::new(Bytes::from_static(bytes)), ctx)
    }

    #[test]
    fn golden_publish_properties() {
        let props = decode(
            &[
                17, 0x01, 1, 0x02, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v', 0x23, 0, 7,
            ],
            PropertyContext::Publish,
        )
        .unwrap();
        assert_eq!(props.payload_format_indicator, Some(1));
        assert_eq!(props.message_expiry_interval, Some(60));
        assert_eq!(props.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(props.topic_alias, Some(7));
        let mut out = BytesMut::new();
        props.encode(&mut out);
        assert_eq!(out.len(), props.encoded_len());
        assert_eq!(
            Properties::decode(&mut Reader::new(out.freeze()), PropertyContext::Publish).unwrap(),
            props
        );
    }

    #[test]
    fn rejects_what_mosquitto_rejects() {
        use PropertyContext as C;
        // Session Expiry in PUBLISH: 0x81.
        assert!(matches!(
            decode(&[5, 0x11, 0, 0, 0, 1], C::Publish),
            Err(FrameError::Malformed(_))
        ));
        // Duplicate Message Expiry: closed without DISCONNECT.
        assert!(matches!(
            decode(&[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1], C::Publish),
            Err(FrameError::Unanswered(_))
        ));
        // Receive Maximum 0, Maximum Packet Size 0, flag 2.
        assert!(decode(&[3, 0x21, 0, 0], C::Connect).is_err());
        assert!(decode(&[5, 0x27, 0, 0, 0, 0], C::Connect).is_err());
        assert!(decode(&[2, 0x17, 2], C::Connect).is_err());
        // Unknown identifier, length past the end, subscription id 0.
        assert!(matches!(
            decode(&[2, 0x7f, 0], C::Publish),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[9, 0x01, 1], C::Publish),
            Err(FrameError::Malformed(_))
        ));
        assert!(decode(&[2, 0x0B, 0], C::Subscribe).is_err());
        // Two subscription ids: fine in PUBLISH, not in SUBSCRIBE.
        assert!(decode(&[4, 0x0B, 1, 0x0B, 2], C::Publish).is_ok());
        assert!(decode(&[4, 0x0B, 1, 0x0B, 2], C::Subscribe).is_err());
        // Wildcards in a response topic; Will Delay outside the will.
        assert!(decode(&[5, 0x08, 0, 2, b'a', b'#'], C::Publish).is_err());
        assert!(decode(&[5, 0x18, 0, 0, 0, 1], C::Connect).is_err());
        assert!(decode(&[5, 0x18, 0, 0, 0, 1], C::Will).is_ok());
        // Reason String is not allowed in CONNECT.
        assert!(decode(&[4, 0x1F, 0, 1, b'x'], C::Connect).is_err());
    }
}
