//! MQTT PUBLISH (and will) ⇄ core [`Envelope`].
//!
//! | MQTT | Envelope |
//! |---|---|
//! | topic name | `subject` via `polymq_core::subject::mqtt::topic_to_subject` (DESIGN.md rules) |
//! | QoS | `qos` (0 → at-most-once, 1 → at-least-once, 2 → exactly-once) |
//! | RETAIN | `retain` |
//! | User Property (order kept, names repeat) | `headers` |
//! | Content Type / Correlation Data / Payload Format Indicator | typed fields |
//! | Response Topic | `reply_to` (converted like a topic) |
//! | Message Expiry Interval | `expires_at_ns` = publish time + interval |
//!
//! Outbound, a subject MQTT cannot express is not delivered (the caller counts it), the
//! Message Expiry Interval is what is left of the original, and an expired message is dropped.
//!
//! # Invariants
//! - An MQTT → Envelope → MQTT trip keeps topic, payload (zero-copy), user properties in
//!   order, content type, correlation data, payload format and response topic.

use std::sync::Arc;

use bytes::Bytes;
use polymq_core::envelope::now_ns;
use polymq_core::subject::mqtt::{subject_to_topic, topic_to_subject};
use polymq_core::{Envelope, Headers, Origin, Qos, SubjectError};

use crate::frame::{validate_text, Properties, Publish, QoS};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Core guarantee for an MQTT QoS.
pub fn to_core_qos(qos: QoS) -> Qos {
    match qos {
        QoS::AtMostOnce => Qos::AtMostOnce,
        QoS::AtLeastOnce => Qos::AtLeastOnce,
        QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

/// The QoS a message counts as towards MQTT subscribers (NSQ → 1, NATS/ZMQ → 0).
pub fn from_core_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The application parts of a PUBLISH or will, before it gets a topic and QoS on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS of the publisher.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// 5.0 properties (only the application ones are used).
    pub properties: Properties,
}

impl Message {
    /// The application parts of an inbound PUBLISH whose topic (alias) is resolved.
    pub fn from_publish(publish: &Publish, topic: String) -> Self {
        Self {
            topic,
            payload: publish.payload.clone(),
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties.clone(),
        }
    }

    /// Builds the envelope the core routes.
    pub fn to_envelope(&self, origin: Origin) -> Result<Envelope, SubjectError> {
        let subject = topic_to_subject(&self.topic)?;
        let mut env = Envelope::new(subject, self.payload.clone(), origin);
        env.qos = to_core_qos(self.qos);
        env.retain = self.retain;
        let props = &self.properties;
        if !props.user_properties.is_empty() {
            let mut headers = Headers::new();
            for (name, value) in &props.user_properties {
                headers.append(name.as_str(), value.as_str());
            }
            env.headers = headers;
        }
        env.content_type.clone_from(&props.content_type);
        env.correlation_data.clone_from(&props.correlation_data);
        env.payload_utf8 = props.payload_format_indicator == Some(1);
        env.reply_to = props
            .response_topic
            .as_deref()
            .and_then(|t| topic_to_subject(t).ok());
        env.expires_at_ns = props.message_expiry_interval.map(|secs| {
            env.timestamp_ns
                .saturating_add(u64::from(secs) * NANOS_PER_SEC)
        });
        Ok(env)
    }
}

/// What a delivery needs beyond the message itself.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// QoS of this hop.
    pub qos: QoS,
    /// RETAIN flag on the wire.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet identifier (0 for QoS 0).
    pub packet_id: u16,
    /// Subscription Identifiers of the matching subscriptions.
    pub subscription_identifiers: Vec<u32>,
}

/// Why an envelope is not sent to an MQTT client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// The subject has no MQTT spelling.
    NotRepresentable,
    /// The Message Expiry Interval ran out.
    Expired,
}

/// Builds the PUBLISH for `msg` (`v5` adds properties).
pub fn to_publish(msg: &Arc<Envelope>, out: Outbound, v5: bool) -> Result<Publish, Undeliverable> {
    let topic = subject_to_topic(&msg.subject).ok_or(Undeliverable::NotRepresentable)?;
    // The clock is read only for a message that can expire.
    let now = msg.expires_at_ns.map_or(0, |_| now_ns());
    let properties = if v5 {
        properties_of(msg, out.subscription_identifiers, now)?
    } else {
        if msg.is_expired(now) {
            return Err(Undeliverable::Expired);
        }
        Properties::default()
    };
    Ok(Publish {
        dup: out.dup,
        qos: out.qos,
        retain: out.retain,
        topic,
        packet_id: out.packet_id,
        properties,
        payload: msg.payload.clone(),
    })
}

/// The 5.0 PUBLISH properties of an envelope at time `now`.
fn properties_of(
    msg: &Envelope,
    subscription_identifiers: Vec<u32>,
    now: u64,
) -> Result<Properties, Undeliverable> {
    let message_expiry_interval = match msg.expires_at_ns {
        None => None,
        Some(at) if at <= now => return Err(Undeliverable::Expired),
        Some(at) => Some(u32::try_from((at - now).div_ceil(NANOS_PER_SEC)).unwrap_or(u32::MAX)),
    };
    let user_properties = msg
        .headers
        .iter()
        .filter(|(n, v)| validate_text(n).is_ok() && validate_text(v).is_ok())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Ok(Properties {
        payload_format_indicator: msg.payload_utf8.then_some(1),
        message_expiry_interval,
        content_type: msg.content_type.clone(),
        response_topic: msg.reply_to.as_ref().and_then(subject_to_topic),
        correlation_data: msg.correlation_data.clone(),
        subscription_identifiers,
        user_properties,
        ..Properties::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use polymq_core::{ConnId, Protocol};

    fn origin() -> Origin {
        Origin {
            protocol: Protocol::Mqtt,
            conn: ConnId(7),
        }
    }

    #[test]
    fn publish_round_trips_through_the_envelope() {
        let props = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to/me".into()),
            correlation_data: Some(Bytes::from_static(b"corr")),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        };
        let msg = Message {
            topic: "v1.2/x//y".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: props.clone(),
        };
        let env = Arc::new(msg.to_envelope(origin()).unwrap());
        assert_eq!(env.subject.as_str(), "v1//2.x./.y");
        assert_eq!(env.qos, Qos::ExactlyOnce);
        assert!(env.retain);
        assert_eq!(env.headers.len(), 2);
        let out = Outbound {
            qos: QoS::AtLeastOnce,
            packet_id: 9,
            subscription_identifiers: vec![3],
            ..Outbound::default()
        };
        let publish = to_publish(&env, out, true).unwrap();
        assert_eq!(publish.topic, "v1.2/x//y");
        assert_eq!(&publish.payload[..], b"hello");
        assert_eq!(
            (publish.qos, publish.packet_id, publish.retain),
            (QoS::AtLeastOnce, 9, false)
        );
        let p = publish.properties;
        assert_eq!(p.user_properties, props.user_properties);
        assert_eq!(p.content_type, props.content_type);
        assert_eq!(p.response_topic, props.response_topic);
        assert_eq!(p.correlation_data, props.correlation_data);
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.subscription_identifiers, vec![3]);
        assert!(matches!(p.message_expiry_interval, Some(59 | 60)));
        // 3.1.1 carries no properties.
        let v3 = to_publish(&env, Outbound::default(), false).unwrap();
        assert!(v3.properties.is_empty());
    }

    #[test]
    fn expired_and_unrepresentable_messages_are_not_sent() {
        let msg = Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                message_expiry_interval: Some(0),
                ..Properties::default()
            },
        };
        let env = Arc::new(msg.to_envelope(origin()).unwrap());
        assert_eq!(
            to_publish(&env, Outbound::default(), true),
            Err(Undeliverable::Expired)
        );
        let nats = Envelope::new(
            polymq_core::Subject::new("a/b.c").unwrap(),
            Bytes::new(),
            Origin::broker(),
        );
        assert_eq!(
            to_publish(&Arc::new(nats), Outbound::default(), true),
            Err(Undeliverable::NotRepresentable)
        );
    }

    #[test]
    fn invalid_topics_are_rejected() {
        let msg = Message {
            topic: "a/+".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        };
        assert!(msg.to_envelope(origin()).is_err());
    }
}
