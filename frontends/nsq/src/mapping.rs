//! NSQ messages to and from the core's [`Envelope`].
//!
//! | NSQ | Envelope |
//! |---|---|
//! | topic name | `subject` via `subject::nsq::topic_to_subject` (`a..b` → `a./.b`) |
//! | body | `payload` (the decoder's `Bytes`, not copied) |
//! | 16-byte id | `id` (assigned at ingress, reused for FIN/REQ/TOUCH) |
//! | timestamp (ns) | `timestamp_ns` |
//! | attempts | `Delivery::attempts` (counted by the channel's durable queue) |
//!
//! NSQ ingress is at-least-once: envelopes carry [`Qos::AtLeastOnce`].
//!
//! # Invariants
//! - A message frame carries the envelope's own id and timestamp on every delivery and every
//!   channel, as nsqd's copies share them.

use std::sync::Arc;

use bytes::Bytes;
use polymq_core::subject::nsq;
use polymq_core::{ConnId, Delivery, Envelope, Origin, Protocol, Qos, SubjectError};

use crate::frame::MessageFrame;

/// The envelope for one message published to NSQ topic `topic` by connection `conn`.
pub fn envelope(topic: &str, body: Bytes, conn: ConnId) -> Result<Arc<Envelope>, SubjectError> {
    let subject = nsq::topic_to_subject(topic)?;
    let mut msg = Envelope::new(
        subject,
        body,
        Origin {
            protocol: Protocol::Nsq,
            conn,
        },
    );
    msg.qos = Qos::AtLeastOnce;
    Ok(Arc::new(msg))
}

/// The message frame for one delivery.
pub fn message_frame(delivery: &Delivery) -> MessageFrame {
    let msg = &delivery.msg;
    MessageFrame {
        timestamp_ns: i64::try_from(msg.timestamp_ns).unwrap_or(i64::MAX),
        attempts: delivery.attempts,
        id: msg.id.0,
        body: msg.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polymq_core::SubscriptionId;

    #[test]
    fn envelope_maps_topic_and_body() {
        let body = Bytes::from_static(b"hello");
        let msg = envelope("a..b", body.clone(), ConnId(7)).unwrap();
        assert_eq!(msg.subject.as_str(), "a./.b");
        assert_eq!(msg.payload, body);
        assert_eq!(msg.qos, Qos::AtLeastOnce);
        assert_eq!(msg.origin.protocol, Protocol::Nsq);
        assert_eq!(msg.origin.conn, ConnId(7));
        assert!(envelope("bad topic", body, ConnId(7)).is_err());
    }

    #[test]
    fn frame_carries_id_timestamp_and_attempts() {
        let msg = envelope("t", Bytes::from_static(b"x"), ConnId(1)).unwrap();
        let delivery = Delivery {
            msg: msg.clone(),
            sub: SubscriptionId(1),
            attempts: 3,
        };
        let frame = message_frame(&delivery);
        assert_eq!(frame.id, msg.id.0);
        assert_eq!(frame.attempts, 3);
        assert_eq!(frame.timestamp_ns, i64::try_from(msg.timestamp_ns).unwrap());
        assert_eq!(frame.body, Bytes::from_static(b"x"));
    }
}
