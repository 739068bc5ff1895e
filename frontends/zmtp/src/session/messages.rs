//! What a peer's messages mean for its role, and the deliveries the session writes to it.
//!
//! | role | inbound message | outbound delivery |
//! |---|---|---|
//! | PUB/XPUB | `[subject][body…]` published | – |
//! | SUB/XSUB | parts `0x01`/`0x00` + prefix subscribe/cancel, the rest is discarded | `[subject][body…]` |
//! | PUSH | `[subject][body…]`, or `[body]` on its subject, published | – |
//! | PULL | dropped and counted | `[subject][body…]` (or `[body…]`) |
//! | REQ/DEALER | `[envelope…][""][subject][body…]` is a request (DEALER: else a publish) | `[envelope…][subject][reply…]` or an error reply |
//! | REP/ROUTER | `[request id][""][subject][reply…]` goes to the request's reply-to | `[request id][""][subject][body…]` |
//!
//! # Invariants
//! - A message is published whole or not at all; one with an invalid subject frame, or one
//!   for the broker's `$SYS` tree, is dropped and counted (ZMTP has no NACK); a request with
//!   an invalid subject frame gets the `400` error reply instead.
//! - Every delivery written counts in the `messages_out` metrics; every one not written counts
//!   as dropped. Messages in and out are tallied per read and per drain, and added to the
//!   shared metrics once for each.

use std::sync::Arc;

use bytes::Bytes;
use polymq_core::subject::zmtp::{frame_to_subject, subject_frame, TopicSyntax};
use polymq_core::{Delivery, Envelope, Protocol, Subject};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::frame::{put_message, Message};
use crate::mapping;

use super::requests::{PendingRequest, BAD_REQUEST, ERROR_SUBJECT, NO_RESPONDERS, REQUEST_TIMEOUT};
use super::{Session, State, MAX_BATCH, WRITE_HIGH_WATER};

/// Subjects peers may not publish to: the broker's status tree (mosquitto keeps clients out
/// of `$SYS` the same way).
const SYS_PREFIX: &str = "$SYS";

/// How a message of a single part is read.
#[derive(Debug)]
enum Lone {
    /// The part is the subject and the body is empty (PUB/XPUB).
    Subject,
    /// The part is the body for this subject; without one the message is dropped.
    Body(Option<Subject>),
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub(super) fn on_message(&mut self, message: Message) {
        if !matches!(self.state, State::Subscriber { .. }) {
            self.received.add(message.size());
        }
        let Message(mut parts) = message;
        match &self.state {
            State::Subscriber { .. } => self.on_subscription_parts(&mut parts),
            State::Publisher => self.publish_parts(&parts, Lone::Subject),
            State::Producer { subject } => {
                let lone = Lone::Body(subject.clone());
                self.publish_parts(&parts, lone);
            }
            State::Requester {
                dealer: true,
                subject,
                ..
            } if parts.first().is_some_and(|p| !p.is_empty()) => {
                let lone = Lone::Body(subject.clone());
                self.publish_parts(&parts, lone);
            }
            State::Requester { .. } => return self.on_request(parts),
            State::Responder { .. } => self.on_reply(&parts),
            State::Consumer => self.drop_message(),
        }
        self.framed.codec_mut().recycle(parts);
    }

    /// XPUB semantics: every part starting with `0x01`/`0x00` subscribes/cancels (libzmq's
    /// XPUB reads every part too, unless `ZMQ_ONLY_FIRST_SUBSCRIBE` is set); anything else
    /// from a SUB/XSUB peer is discarded.
    fn on_subscription_parts(&mut self, parts: &mut Vec<Bytes>) {
        for mut part in parts.drain(..) {
            match part.first() {
                Some(1) => self.subscribe(part.split_off(1)),
                Some(0) => self.cancel(part.get(1..).unwrap_or_default()),
                _ => {}
            }
        }
    }

    fn drop_message(&self) {
        self.listener.router.metrics().dropped(Protocol::Zmtp, 1);
    }

    /// Splits `[subject][body…]` into the subject, its frame and the body.
    fn split_subject<'p>(
        &mut self,
        parts: &'p [Bytes],
        lone: Lone,
    ) -> Option<(Subject, Bytes, &'p [Bytes])> {
        let syntax = self.listener.defaults.syntax;
        match (parts, lone) {
            ([only], Lone::Body(subject)) => {
                let subject = subject?;
                let frame = subject_frame(&subject);
                Some((subject, frame, std::slice::from_ref(only)))
            }
            ([topic, body @ ..], _) => self
                .last_topic
                .subject(topic, syntax)
                .map(|subject| (subject, topic.clone(), body)),
            ([], _) => None,
        }
    }

    /// Publishes `[subject][body…]`; an invalid subject, or one in the broker's `$SYS` tree,
    /// drops the message.
    fn publish_parts(&mut self, parts: &[Bytes], lone: Lone) {
        let split = self.split_subject(parts, lone);
        match split.filter(|(subject, _, _)| !subject.as_str().starts_with(SYS_PREFIX)) {
            Some((subject, _, body)) => {
                let env = mapping::envelope(subject, body, self.origin, self.read_at_ns);
                self.listener.router.publish(Arc::new(env));
            }
            None => self.drop_message(),
        }
    }

    /// A REQ/DEALER request: `[envelope…][""][subject][body…]`.
    fn on_request(&mut self, mut parts: Vec<Bytes>) {
        let Some(delimiter) = parts.iter().position(Bytes::is_empty) else {
            return self.drop_message();
        };
        let rest = parts.split_off(delimiter + 1);
        let envelope = parts;
        let State::Requester {
            subject: default,
            dealer,
            ..
        } = &self.state
        else {
            return;
        };
        let (lone, strict) = (Lone::Body(default.clone()), !*dealer);
        let Some((subject, subject_frame, body)) = self.split_subject(&rest, lone) else {
            return self.error_reply(&envelope, BAD_REQUEST);
        };
        let hwm = self.listener.config.sndhwm;
        let deadline = Instant::now() + self.request_timeout();
        let State::Requester { requests, .. } = &mut self.state else {
            return;
        };
        if strict {
            // A REQ that sends again has abandoned its previous request (ZMQ_REQ_RELAXED).
            requests.pending.clear();
        }
        if requests.pending.len() >= hwm {
            return self.drop_message();
        }
        let pending = PendingRequest {
            envelope,
            subject: subject_frame,
            deadline,
        };
        let Some(reply_to) = requests.insert(pending) else {
            return self.drop_message();
        };
        let mut env = mapping::envelope(subject, body, self.origin, self.read_at_ns);
        env.reply_to = Some(reply_to.clone());
        let routed = self.listener.router.publish(Arc::new(env));
        if routed.matched() == 0 {
            let State::Requester { requests, .. } = &mut self.state else {
                return;
            };
            if let Some(pending) = requests.take_answered(&reply_to) {
                self.error_reply(&pending.envelope, NO_RESPONDERS);
            }
        }
    }

    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.listener.config.request_timeout_ms)
    }

    /// Answers every request whose deadline has passed with the `408` error reply.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        while let State::Requester { requests, .. } = &mut self.state {
            let Some(pending) = requests.take_expired(now) else {
                break;
            };
            self.error_reply(&pending.envelope, REQUEST_TIMEOUT);
        }
    }

    /// Writes `[envelope…]["$ERR"][status][description]`.
    fn error_reply(&mut self, envelope: &[Bytes], (status, description): (&[u8], &[u8])) {
        let parts = envelope.iter().map(Bytes::as_ref);
        let error = [ERROR_SUBJECT, status, description];
        let parts: Vec<&[u8]> = parts.chain(error).collect();
        put_message(self.framed.write_buffer_mut(), parts.into_iter());
    }

    /// A REP/ROUTER reply: `[request id][""][subject][reply body…]` (a lone part after the
    /// delimiter is taken as the body).
    fn on_reply(&mut self, parts: &[Bytes]) {
        let State::Responder { assignments } = &mut self.state else {
            return;
        };
        let (Some(id), Some(delimiter)) = (parts.first(), parts.get(1)) else {
            return self.drop_message();
        };
        let reply_to = assignments.take(id);
        let Some(reply_to) = reply_to.filter(|_| delimiter.is_empty()) else {
            return self.drop_message();
        };
        let rest = parts.get(2..).unwrap_or_default();
        let body = match rest {
            [_subject, body @ ..] if !body.is_empty() => body,
            lone_or_none => lone_or_none,
        };
        let env = mapping::envelope(reply_to, body, self.origin, self.read_at_ns);
        self.listener.router.publish(Arc::new(env));
    }

    pub(super) fn on_deliveries(&mut self, first: Delivery) {
        self.deliver(&first);
        let mut batch = 1;
        while batch < MAX_BATCH && self.framed.write_buffer().len() < WRITE_HIGH_WATER {
            let Some(delivery) = self.outbox.try_recv() else {
                break;
            };
            self.deliver(&delivery);
            batch += 1;
        }
        let (count, bytes) = self.written.take();
        let metrics = self.listener.router.metrics();
        metrics.messages_written(Protocol::Zmtp, count, bytes);
        self.report_drops();
    }

    fn deliver(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        // The clock is read only for the rare message with an expiry (MQTT 5).
        if msg.expires_at_ns.is_some() && msg.is_expired(polymq_core::envelope::now_ns()) {
            return self.drop_message();
        }
        let hwm = self.listener.config.sndhwm;
        let dst = self.framed.write_buffer_mut();
        let written = match &mut self.state {
            State::Subscriber { .. } => {
                Some(mapping::put_delivery(dst, &[], Some(subject(msg)), msg))
            }
            State::Consumer => {
                let with_subject = self.listener.config.pull_subject_frame;
                let subject = with_subject.then_some(subject(msg));
                Some(mapping::put_delivery(dst, &[], subject, msg))
            }
            State::Responder { assignments } => msg.reply_to.clone().map(|reply_to| {
                // Towards a worker the broker is a DEALER: `[request id][""]` first.
                let prefix = [assignments.assign(reply_to, hwm), Bytes::new()];
                mapping::put_delivery(dst, &prefix, Some(subject(msg)), msg)
            }),
            State::Requester { requests, .. } => {
                requests.take_answered(&msg.subject).map(|pending| {
                    mapping::put_delivery(dst, &pending.envelope, Some(&pending.subject), msg)
                })
            }
            State::Publisher | State::Producer { .. } => None,
        };
        match written {
            Some(bytes) => self.written.add(bytes),
            None => self.drop_message(),
        }
    }
}

/// Messages and their payload octets, counted by the session until it adds them to the
/// shared metrics at the end of a batch.
#[derive(Debug, Default)]
pub(super) struct Tally {
    messages: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
    }

    /// The count and octets so far; starts again from zero.
    pub(super) fn take(&mut self) -> (u64, u64) {
        let Self { messages, bytes } = std::mem::take(self);
        (messages, bytes)
    }
}

/// The subject of the topic frame a peer sent last: a publisher usually sends the same one
/// again, and then neither validates nor allocates it anew.
#[derive(Debug, Default)]
pub(super) struct LastTopic(Option<(Box<[u8]>, Subject)>);

impl LastTopic {
    /// The subject of `topic` in `syntax` (the listener's, fixed for a session), or `None`
    /// when it is not a valid subject.
    fn subject(&mut self, topic: &[u8], syntax: TopicSyntax) -> Option<Subject> {
        if let Some((last, subject)) = &self.0 {
            if **last == *topic {
                return Some(subject.clone());
            }
        }
        let subject = frame_to_subject(topic, syntax).ok()?;
        self.0 = Some((topic.into(), subject.clone()));
        Some(subject)
    }
}

/// Frame 0 of a delivery: the joined canonical subject.
fn subject(msg: &Envelope) -> &[u8] {
    msg.subject.as_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_topic_is_reused_until_another_arrives() {
        let mut last = LastTopic::default();
        let first = last.subject(b"a.b", TopicSyntax::Nats).unwrap();
        let again = last.subject(b"a.b", TopicSyntax::Nats).unwrap();
        assert_eq!(first.as_str(), "a.b");
        assert!(
            std::ptr::eq(first.as_str(), again.as_str()),
            "the same topic shares its subject"
        );
        assert_eq!(
            last.subject(b"a/c", TopicSyntax::Mqtt).unwrap().as_str(),
            "a.c"
        );
        assert_eq!(last.subject(b"a..b", TopicSyntax::Nats), None);
        let kept = last.subject(b"a/c", TopicSyntax::Mqtt).unwrap();
        assert_eq!(kept.as_str(), "a.c", "an invalid topic leaves the last one");
    }
}
