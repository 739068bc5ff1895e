//! Outbound flow: deliveries from the outbox and the durable queue, the Receive Maximum
//! window, packet ids, topic aliases towards the client, and the acknowledgements
//! (PUBACK, PUBREC → PUBREL, PUBCOMP) that free the window.
//!
//! # Invariants
//! - QoS 1/2 PUBLISHes in flight never exceed the window.
//! - A queued QoS 2 message stays in flight in the durable queue until PUBCOMP: on resume
//!   the queue hands it back in its original place and it is resent as PUBREL, so PUBLISHes
//!   and PUBRELs go out again in the order they were first sent (mosquitto's in-flight list).

use std::sync::Arc;

use polymq_core::outbox::Delivery;
use polymq_core::{Envelope, MessageId, Protocol, Subject};

use super::{Connection, QUEUE_SUB, RECENT};
use crate::broker::Stats;
use crate::error::SessionError;
use crate::frame::{Ack, Packet, Publish, QoS};
use crate::mapping::{from_core_qos, to_publish, Outbound, Undeliverable};

/// A QoS 1/2 PUBLISH sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) enum Inflight {
    /// Taken from the durable queue: finish it on PUBACK / PUBREC.
    Queued { id: MessageId, qos: QoS },
    /// Sent straight from the outbox or as a retained message.
    Direct { qos: QoS },
}

/// A direct QoS 1/2 delivery waiting for room in the window.
#[derive(Debug)]
pub(super) struct Waiting {
    msg: Arc<Envelope>,
    out: Outbound,
}

impl Inflight {
    fn qos(self) -> QoS {
        match self {
            Self::Queued { qos, .. } | Self::Direct { qos } => qos,
        }
    }
}

impl Connection {
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        if delivery.sub == QUEUE_SUB {
            self.deliver_queued(&delivery);
        } else {
            self.deliver_direct(&delivery);
        }
    }

    /// Highest granted QoS, Subscription Identifiers and Retain As Published over the
    /// session's subscriptions that match `subject` (shared ones too when `with_shared`).
    fn match_options(&self, subject: &Subject, with_shared: bool) -> Option<(QoS, Vec<u32>, bool)> {
        let mut found: Option<(QoS, Vec<u32>, bool)> = None;
        for sub in self
            .session
            .subs
            .values()
            .filter(|s| with_shared || s.share.is_none())
        {
            if !sub.filter.matches(subject) {
                continue;
            }
            let entry = found.get_or_insert((QoS::AtMostOnce, Vec::new(), false));
            entry.0 = entry.0.max(sub.options.qos);
            entry.1.extend(sub.sub_id);
            entry.2 |= sub.options.retain_as_published;
        }
        found
    }

    fn retain_flag(&self, msg: &Envelope, as_published: bool) -> bool {
        self.v.is_v5() && as_published && msg.retain
    }

    fn deliver_queued(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        if let Some(pid) = self.released_pid(&msg.id) {
            // PUBREC'd before the client went away: PUBREL again, never the PUBLISH
            // [MQTT-4.3.3-6], whatever became of its subscription or expiry.
            self.send(&Packet::PubRel(Ack::new(pid)));
            return;
        }
        let Some((granted, sub_ids, rap)) = self.match_options(&msg.subject, true) else {
            self.finish_queued(&msg.id);
            return;
        };
        let qos = granted.min(from_core_qos(msg.qos));
        let reused = self.session.out_ids.get(&msg.id).copied();
        if reused.is_none() {
            self.end_replay();
        }
        if reused.is_none()
            && delivery.attempts <= 1
            && msg.timestamp_ns < self.connected_at_ns
            && !self.admit_offline(qos)
        {
            Stats::add(&self.broker.stats.pub_dropped, 1);
            self.finish_queued(&msg.id);
            return;
        }
        let mut out = Outbound {
            qos,
            retain: self.retain_flag(msg, rap),
            subscription_identifiers: sub_ids,
            ..Outbound::default()
        };
        if qos == QoS::AtMostOnce {
            self.write_publish(msg, out);
            self.finish_queued(&msg.id);
            return;
        }
        out.dup = reused.is_some() || delivery.attempts > 1;
        out.packet_id = reused.unwrap_or_else(|| self.next_packet_id());
        if self.write_publish(msg, out.clone()) {
            self.session.out_ids.insert(msg.id, out.packet_id);
            self.inflight
                .insert(out.packet_id, Inflight::Queued { id: msg.id, qos });
        } else {
            self.finish_queued(&msg.id);
        }
    }

    /// The queue delivers past the messages sent before: ids of messages it no longer holds
    /// (acknowledged after the session record was written, or expired) are forgotten.
    fn end_replay(&mut self) {
        if !std::mem::take(&mut self.replay) {
            return;
        }
        let inflight = &self.inflight;
        let session = &mut self.session;
        let pubrel = &session.pubrel;
        // Kept: sent and unacknowledged, or PUBREC'd and waiting for PUBCOMP in the queue.
        session
            .out_ids
            .retain(|_, pid| inflight.contains_key(pid) || pubrel.contains(pid));
        let out_ids = &session.out_ids;
        session
            .recorded
            .outgoing
            .retain(|(id, _)| out_ids.contains_key(id));
    }

    /// The offline-queue rules for a message queued before this connection: QoS 0 only with
    /// `queue_qos0`, and at most `max_queued_messages` of them.
    fn admit_offline(&mut self, qos: QoS) -> bool {
        let config = &self.broker.config;
        if qos == QoS::AtMostOnce && !config.queue_qos0 {
            return false;
        }
        self.offline_seen += 1;
        self.offline_seen <= config.max_queued_messages
    }

    fn deliver_direct(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        let Some(sub) = self
            .session
            .subs
            .values()
            .find(|s| s.router_id == Some(delivery.sub))
        else {
            return;
        };
        let (granted, sub_ids, rap) = if sub.share.is_some() {
            (
                sub.options.qos,
                sub.sub_id.into_iter().collect(),
                sub.options.retain_as_published,
            )
        } else {
            if self.recent.contains(&msg.id) {
                return;
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(msg.id);
            let Some(found) = self.match_options(&msg.subject, false) else {
                return;
            };
            found
        };
        let out = Outbound {
            qos: granted.min(from_core_qos(msg.qos)),
            retain: self.retain_flag(msg, rap),
            subscription_identifiers: sub_ids,
            ..Outbound::default()
        };
        self.send_direct(msg, out);
    }

    /// Sends now (QoS 0, or QoS 1/2 with room in the window) or waits for room.
    pub(super) fn send_direct(&mut self, msg: &Arc<Envelope>, mut out: Outbound) {
        if out.qos == QoS::AtMostOnce {
            self.write_publish(msg, out);
            return;
        }
        if self.in_window() >= self.window {
            if self.waiting.len() < self.broker.config.max_queued_messages {
                self.waiting.push_back(Waiting {
                    msg: msg.clone(),
                    out,
                });
            } else {
                Stats::add(&self.broker.stats.pub_dropped, 1);
                self.broker.router.metrics().dropped(Protocol::Mqtt, 1);
            }
            return;
        }
        out.packet_id = self.next_packet_id();
        let qos = out.qos;
        let pid = out.packet_id;
        if self.write_publish(msg, out) {
            self.inflight.insert(pid, Inflight::Direct { qos });
            self.refresh_credit();
        }
    }

    /// Encodes a PUBLISH unless the message expired, has no MQTT topic, or is larger than the
    /// client accepts (then it is dropped as if sent, [MQTT-3.1.2-25]). True when written.
    fn write_publish(&mut self, msg: &Arc<Envelope>, out: Outbound) -> bool {
        let mut publish = match to_publish(msg, out, self.v.is_v5()) {
            Ok(publish) => publish,
            Err(Undeliverable::Expired) => return false,
            Err(Undeliverable::NotRepresentable) => {
                self.broker.router.metrics().dropped(Protocol::Mqtt, 1);
                return false;
            }
        };
        let new_alias = self.apply_alias(&mut publish);
        let packet = Packet::Publish(publish);
        if packet.encoded_len(self.v) > self.client_max_packet {
            if let (Some(topic), Some(aliases)) = (new_alias, self.aliases.as_mut()) {
                // The client never sees this PUBLISH, so it never learns the alias.
                aliases.outbound.remove(&topic);
            }
            Stats::add(&self.broker.stats.pub_dropped, 1);
            return false;
        }
        let stats = &self.broker.stats;
        Stats::add(&stats.pub_sent, 1);
        Stats::add(&stats.pub_bytes_sent, msg.payload.len() as u64);
        self.broker
            .router
            .metrics()
            .message_out(Protocol::Mqtt, msg.payload.len());
        self.send(&packet);
        true
    }

    /// Replaces the topic with an alias when the client accepts aliases (5.0). Returns the
    /// topic when this PUBLISH is the one that introduces its alias.
    fn apply_alias(&mut self, publish: &mut Publish) -> Option<String> {
        if self.client_alias_max == 0 {
            return None;
        }
        let aliases = self.aliases.get_or_insert_with(Box::default);
        if let Some(&alias) = aliases.outbound.get(&publish.topic) {
            publish.topic.clear();
            publish.properties.topic_alias = Some(alias);
            return None;
        }
        let alias = u16::try_from(aliases.outbound.len() + 1).ok()?;
        if alias > self.client_alias_max {
            return None;
        }
        aliases.outbound.insert(publish.topic.clone(), alias);
        publish.properties.topic_alias = Some(alias);
        Some(publish.topic.clone())
    }

    /// A packet id not in use by an unacknowledged outbound PUBLISH or PUBREL.
    fn next_packet_id(&mut self) -> u16 {
        for _ in 0..=u16::MAX {
            let pid = self.session.next_pid.max(1);
            self.session.next_pid = pid.checked_add(1).unwrap_or(1);
            let busy = self.inflight.contains_key(&pid)
                || self.session.pubrel.contains(&pid)
                || (self.replay && self.session.out_ids.values().any(|&p| p == pid));
            if !busy {
                return pid;
            }
        }
        1
    }

    /// PUBACK: completes a QoS 1 delivery. An unknown packet id is ignored; the id of a QoS 2
    /// delivery is a protocol violation (mosquitto closes such a client too).
    pub(super) fn on_puback(&mut self, pid: u16) -> Result<(), SessionError> {
        match self.inflight.get(&pid).map(|f| f.qos()) {
            Some(QoS::AtLeastOnce) => {}
            Some(_) => return Err(SessionError::Violation("PUBACK for a QoS 2 message")),
            None if self.session.pubrel.contains(&pid) => {
                return Err(SessionError::Violation("PUBACK for a QoS 2 message"));
            }
            None => return Ok(()),
        }
        if let Some(Inflight::Queued { id, .. }) = self.inflight.remove(&pid) {
            self.finish_queued(&id);
        }
        self.after_ack();
        Ok(())
    }

    /// PUBREC: moves a QoS 2 delivery on to PUBREL (or ends it, for an error reason code).
    /// The id of a QoS 1 delivery is a protocol violation.
    pub(super) fn on_pubrec(&mut self, ack: &Ack) -> Result<(), SessionError> {
        let pid = ack.packet_id;
        let qos = self.inflight.get(&pid).map(|f| f.qos());
        if qos == Some(QoS::AtLeastOnce) {
            return Err(SessionError::Violation("PUBREC for a QoS 1 message"));
        }
        if qos == Some(QoS::ExactlyOnce) {
            let sent = self.inflight.remove(&pid);
            if ack.reason >= 0x80 {
                if let Some(Inflight::Queued { id, .. }) = sent {
                    self.finish_queued(&id);
                }
                self.after_ack();
                return Ok(());
            }
            // A queued message stays in flight in its queue until PUBCOMP.
            self.session.pubrel.push(pid);
        }
        // mosquitto answers PUBREL even for an unknown packet id.
        if ack.reason < 0x80 {
            self.send(&Packet::PubRel(Ack::new(pid)));
        }
        Ok(())
    }

    /// PUBCOMP: ends a QoS 2 delivery whose PUBREL was sent. An unknown packet id is
    /// ignored; the id of a delivery still waiting for PUBACK or PUBREC is a protocol
    /// violation.
    pub(super) fn on_pubcomp(&mut self, pid: u16) -> Result<(), SessionError> {
        if self.inflight.contains_key(&pid) {
            return Err(SessionError::Violation("PUBCOMP before PUBREC"));
        }
        let before = self.session.pubrel.len();
        self.session.pubrel.retain(|&p| p != pid);
        if self.session.pubrel.len() == before {
            return Ok(());
        }
        if self.session.forget_pubrel(pid) {
            self.broker.save_session(&self.session);
        }
        let queued = self
            .session
            .out_ids
            .iter()
            .find_map(|(id, &p)| (p == pid).then_some(*id));
        if let Some(id) = queued {
            self.finish_queued(&id);
        }
        self.after_ack();
        Ok(())
    }

    /// The packet id of a queued message that the client PUBREC'd and has not yet
    /// completed with PUBCOMP.
    fn released_pid(&self, id: &MessageId) -> Option<u16> {
        let pid = *self.session.out_ids.get(id)?;
        self.session.pubrel.contains(&pid).then_some(pid)
    }

    /// True when `pid` waits for PUBCOMP on a message its durable queue still holds.
    pub(super) fn is_queued_pubrel(&self, pid: u16) -> bool {
        self.session.out_ids.values().any(|&p| p == pid)
    }

    fn finish_queued(&mut self, id: &MessageId) {
        if self.session.out_ids.remove(id).is_some() {
            self.session.forget_outgoing(id);
        }
        if let Some(member) = &self.member {
            let _ = member.fin(id);
        }
    }

    /// A window slot came free: send waiting deliveries and give the queue its credit.
    fn after_ack(&mut self) {
        while self.in_window() < self.window {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.send_direct(&waiting.msg, waiting.out);
        }
        self.refresh_credit();
    }

    /// QoS 1/2 PUBLISHes the client has not completed.
    fn in_window(&self) -> usize {
        self.inflight.len() + self.session.pubrel.len()
    }

    /// Queue credit: the window less what direct deliveries and their QoS 2 completions
    /// hold (queued ones waiting for PUBCOMP are in flight in the queue already).
    pub(super) fn refresh_credit(&self) {
        let Some(member) = &self.member else { return };
        let direct = self
            .inflight
            .values()
            .filter(|f| matches!(f, Inflight::Direct { .. }))
            .count();
        let direct_pubrel = self
            .session
            .pubrel
            .iter()
            .filter(|&&pid| !self.is_queued_pubrel(pid))
            .count();
        let used = direct + direct_pubrel;
        let credit = self.window.saturating_sub(used);
        member.set_credit(u32::try_from(credit).unwrap_or(u32::MAX));
    }
}
