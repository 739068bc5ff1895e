//! Inbound PUBLISH and its QoS 1/2 acknowledgements (PUBACK, PUBREC, PUBREL → PUBCOMP), topic
//! aliases from the client.
//!
//! # Invariants
//! - A QoS 2 message is routed once per packet id until PUBREL.

use std::sync::Arc;

use polymq_core::{Protocol, RouteError};

use super::connect::code_for;
use super::Connection;
use crate::broker::Stats;
use crate::error::SessionError;
use crate::frame::{reason, Ack, Packet, Publish, QoS};
use crate::mapping::Message;

/// Whether clients are kept from publishing to `topic`, as mosquitto's built-in check on `$`
/// topics does: everything starting with `$SYS` except a bridge's
/// `$SYS/broker/connection/{name}/state` notice, and everything starting with `$share`
/// (a shared subscription is a filter, never a topic).
fn publish_denied(topic: &str) -> bool {
    if topic.starts_with("$share") {
        return true;
    }
    if !topic.starts_with("$SYS") {
        return false;
    }
    let mut levels = topic.split('/');
    let bridge_state = levels.next() == Some("$SYS")
        && levels.next() == Some("broker")
        && levels.next() == Some("connection")
        && levels.next().is_some()
        && levels.next() == Some("state")
        && levels.next().is_none();
    !bridge_state
}

impl Connection {
    /// Resolves the 5.0 Topic Alias of an inbound PUBLISH.
    fn resolve_topic(&mut self, publish: &mut Publish) -> Result<String, SessionError> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            if publish.topic.is_empty() {
                return Err(SessionError::Protocol("empty topic without topic alias"));
            }
            return Ok(std::mem::take(&mut publish.topic));
        };
        if alias == 0 || alias > self.broker.config.topic_alias_maximum {
            return Err(SessionError::TopicAliasInvalid);
        }
        if publish.topic.is_empty() {
            return self
                .aliases
                .as_ref()
                .and_then(|aliases| aliases.inbound.get(&alias))
                .cloned()
                .ok_or(SessionError::Protocol("unknown topic alias"));
        }
        let aliases = self.aliases.get_or_insert_with(Box::default);
        aliases.inbound.insert(alias, publish.topic.clone());
        Ok(std::mem::take(&mut publish.topic))
    }

    pub(super) async fn on_publish(&mut self, mut publish: Publish) -> Result<(), SessionError> {
        let stats = &self.broker.stats;
        Stats::add(&stats.pub_received, 1);
        Stats::add(&stats.pub_bytes_received, publish.payload.len() as u64);
        self.broker
            .router
            .metrics()
            .message_in(Protocol::Mqtt, publish.payload.len());
        if publish.retain && !self.broker.config.retain_available {
            return Err(SessionError::RetainNotSupported);
        }
        let topic = self.resolve_topic(&mut publish)?;
        let pid = publish.packet_id;
        if publish_denied(&topic) {
            // Not routed; a 5.0 client is told "not authorized", as by mosquitto.
            self.ack_publish(
                publish.qos,
                pid,
                code_for(self.v, 0, reason::NOT_AUTHORIZED),
            );
            return Ok(());
        }
        if publish.qos == QoS::ExactlyOnce {
            if self.session.inbound_qos2.contains(&pid) {
                self.send(&Packet::PubRec(Ack::new(pid)));
                return Ok(());
            }
            if self.v.is_v5()
                && self.session.inbound_qos2.len()
                    >= usize::from(self.broker.config.receive_maximum)
            {
                return Err(SessionError::ReceiveMaximumExceeded);
            }
        }
        let message = Message::from_publish(&publish, topic);
        let code = self.route(&message).await?;
        self.ack_publish(publish.qos, pid, code);
        Ok(())
    }

    /// Answers an inbound PUBLISH: PUBACK for QoS 1, PUBREC for QoS 2 (remembering the packet
    /// id until PUBREL unless the code is an error), nothing for QoS 0.
    fn ack_publish(&mut self, qos: QoS, pid: u16, code: u8) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::with_reason(pid, code))),
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    self.session.inbound_qos2.insert(pid);
                }
                // mosquitto never reports "no matching subscribers" in PUBREC.
                let code = if code == reason::NO_MATCHING_SUBSCRIBERS {
                    0
                } else {
                    code
                };
                self.send(&Packet::PubRec(Ack::with_reason(pid, code)));
            }
        }
    }

    /// Routes a message; returns the PUBACK/PUBREC reason code (always 0 for 3.1.x).
    async fn route(&mut self, message: &Message) -> Result<u8, SessionError> {
        let env = match message.to_envelope(self.session.origin()) {
            Ok(env) => Arc::new(env),
            Err(err) => {
                tracing::debug!(%err, topic = %message.topic, "topic has no canonical subject");
                return Ok(code_for(self.v, 0, reason::TOPIC_NAME_INVALID));
            }
        };
        let routed = if message.qos == QoS::AtMostOnce {
            self.broker.router.publish(env)
        } else {
            match self.broker.router.publish_durable(env).await {
                Ok(routed) => routed,
                // A 5.0 client is told and may retry; a 3.1.x one can only reconnect and resend.
                Err(RouteError::QueueFull(_)) if self.v.is_v5() => {
                    return Ok(reason::QUOTA_EXCEEDED)
                }
                Err(_) if self.v.is_v5() => return Ok(reason::UNSPECIFIED_ERROR),
                Err(err) => return Err(err.into()),
            }
        };
        // A match declined by the publisher's own No Local subscription still counts
        // (mosquitto answers 0x00, not 0x10, then).
        let unmatched = routed.matched() == 0 && routed.own == 0;
        Ok(if self.v.is_v5() && unmatched {
            reason::NO_MATCHING_SUBSCRIBERS
        } else {
            0
        })
    }

    pub(super) fn on_pubrel(&mut self, pid: u16) {
        let known = self.session.inbound_qos2.remove(&pid);
        if known && self.session.forget_inbound(pid) {
            // A stored id that completed must not outlive a crash: the client may reuse it.
            self.broker.save_session(&self.session);
        }
        let code = if known || !self.v.is_v5() {
            0
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(&Packet::PubComp(Ack::with_reason(pid, code)));
    }
}

#[cfg(test)]
mod tests {
    use super::publish_denied;

    #[test]
    fn dollar_topics_denied_as_mosquitto_denies_them() {
        for denied in [
            "$SYS",
            "$SYS/broker/uptime",
            "$SYSX",
            "$SYS/broker/connection/me",
            "$SYS/broker/connection/me/state/x",
            "$share/g/t",
            "$shared",
        ] {
            assert!(publish_denied(denied), "{denied}");
        }
        for allowed in [
            "$SYS/broker/connection/me/state",
            "$SYS/broker/connection//state",
            "$foo/x",
            "a/$SYS",
            "share",
        ] {
            assert!(!publish_denied(allowed), "{allowed}");
        }
    }
}
