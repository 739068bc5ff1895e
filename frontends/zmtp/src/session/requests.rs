//! Request-reply bookkeeping: a REQ/DEALER requester's requests waiting for their reply, and
//! the requests a REP/ROUTER responder has been handed.
//!
//! A requester subscribes to its own inbox `_INBOX.zmtp<conn>x<random>.>`; request `n` carries
//! the reply-to `<inbox>.<n>`, so a reply names its request.
//!
//! # Invariants
//! - [`Requests::pending`] is in sequence order, which is also deadline order (every request
//!   gets the same timeout), and its size is capped by the session at `sndhwm`.
//! - [`Assignments`] never holds more than `sndhwm` entries: the oldest is forgotten first.
//! - An inbox is unguessable from another requester's inbox (a random part per connection).

use std::collections::BTreeMap;

use bytes::Bytes;
use polymq_core::{ConnId, Subject};
use tokio::time::Instant;

/// Error reply frames (after the requester's envelope): `$ERR`, status, description.
pub const ERROR_SUBJECT: &[u8] = b"$ERR";
/// Status of a request whose subject nobody subscribes to.
pub const NO_RESPONDERS: (&[u8], &[u8]) = (b"503", b"No Responders");
/// Status of a request that got no reply within `request_timeout_ms`.
pub const REQUEST_TIMEOUT: (&[u8], &[u8]) = (b"408", b"Request Timeout");
/// Status of a request whose subject frame is not a valid subject.
pub const BAD_REQUEST: (&[u8], &[u8]) = (b"400", b"Bad Request");

/// A request of a REQ/DEALER peer waiting for its reply.
#[derive(Debug)]
pub(super) struct PendingRequest {
    /// The frames up to and including the empty delimiter, echoed in the reply.
    pub(super) envelope: Vec<Bytes>,
    /// The request subject, frame 0 of the reply.
    pub(super) subject: Bytes,
    pub(super) deadline: Instant,
}

/// Requester state: an inbox subject and the requests in flight.
#[derive(Debug)]
pub(super) struct Requests {
    inbox: String,
    next_seq: u64,
    pub(super) pending: BTreeMap<u64, PendingRequest>,
}

impl Requests {
    pub(super) fn new(conn: ConnId) -> Self {
        let inbox = format!("_INBOX.zmtp{}x{:016x}", conn.0, fastrand::u64(..));
        Self {
            inbox,
            next_seq: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The filter text of every reply to this requester.
    pub(super) fn inbox_filter(&self) -> String {
        format!("{}.>", self.inbox)
    }

    /// Records a new request; returns the reply-to subject to publish it with.
    pub(super) fn insert(&mut self, pending: PendingRequest) -> Option<Subject> {
        self.next_seq += 1;
        let seq = self.next_seq;
        let reply_to = self.reply_subject(seq)?;
        self.pending.insert(seq, pending);
        Some(reply_to)
    }

    fn reply_subject(&self, seq: u64) -> Option<Subject> {
        Subject::new(&format!("{}.{seq}", self.inbox)).ok()
    }

    /// The sequence number of a reply delivered on the inbox.
    pub(super) fn seq_of(&self, subject: &Subject) -> Option<u64> {
        let rest = subject
            .as_str()
            .strip_prefix(self.inbox.as_str())?
            .strip_prefix('.')?;
        rest.parse().ok()
    }

    /// The request a reply on `subject` answers, removed from the pending ones.
    pub(super) fn take_answered(&mut self, subject: &Subject) -> Option<PendingRequest> {
        let seq = self.seq_of(subject)?;
        self.pending.remove(&seq)
    }

    /// The oldest request if its deadline has passed at `now`, removed.
    pub(super) fn take_expired(&mut self, now: Instant) -> Option<PendingRequest> {
        let (_, first) = self.pending.first_key_value()?;
        if first.deadline > now {
            return None;
        }
        self.pending.pop_first().map(|(_, pending)| pending)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.first_key_value().map(|(_, p)| p.deadline)
    }
}

/// Responder state: requests handed to the worker, by the request id the worker echoes.
#[derive(Debug, Default)]
pub(super) struct Assignments {
    next_id: u64,
    reply_to: BTreeMap<u64, Subject>,
}

impl Assignments {
    /// Records a request whose reply goes to `reply_to`; returns the request id frame. At
    /// `hwm` entries the oldest is forgotten: it is the likeliest to be abandoned.
    pub(super) fn assign(&mut self, reply_to: Subject, hwm: usize) -> Bytes {
        if self.reply_to.len() >= hwm.max(1) {
            self.reply_to.pop_first();
        }
        self.next_id += 1;
        self.reply_to.insert(self.next_id, reply_to);
        Bytes::copy_from_slice(&self.next_id.to_be_bytes())
    }

    /// Where the reply to the request with id frame `id` goes, removed (a second reply to the
    /// same request finds nothing).
    pub(super) fn take(&mut self, id: &[u8]) -> Option<Subject> {
        let id = <[u8; 8]>::try_from(id).ok().map(u64::from_be_bytes)?;
        self.reply_to.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(deadline: Instant) -> PendingRequest {
        PendingRequest {
            envelope: vec![Bytes::new()],
            subject: Bytes::from_static(b"svc"),
            deadline,
        }
    }

    #[test]
    fn inbox_replies_map_back_to_their_request() {
        let mut requests = Requests::new(ConnId(9));
        let reply_to = requests.insert(pending(Instant::now())).unwrap();
        assert!(reply_to.as_str().starts_with("_INBOX.zmtp9x"));
        assert_eq!(requests.seq_of(&reply_to), Some(1));
        let other = Subject::new(&format!("{}1.1", requests.inbox)).unwrap();
        assert_eq!(requests.seq_of(&other), None);
        assert_eq!(requests.seq_of(&Subject::new("_INBOX.x.1").unwrap()), None);
        assert!(requests.take_answered(&reply_to).is_some());
        assert!(
            requests.take_answered(&reply_to).is_none(),
            "one reply only"
        );
        // Another requester's inbox is unguessable from this one's.
        assert_ne!(Requests::new(ConnId(9)).inbox, requests.inbox);
    }

    #[test]
    fn requests_expire_oldest_first() {
        let mut requests = Requests::new(ConnId(1));
        let now = Instant::now();
        requests.insert(pending(now));
        requests.insert(pending(now + std::time::Duration::from_secs(1)));
        assert_eq!(requests.next_deadline(), Some(now));
        assert!(requests.take_expired(now).is_some());
        assert!(requests.take_expired(now).is_none());
        assert_eq!(requests.pending.len(), 1);
    }

    #[test]
    fn assignments_are_bounded_and_answered_once() {
        let mut assignments = Assignments::default();
        let subject = |s: &str| Subject::new(s).unwrap();
        let first = assignments.assign(subject("a"), 2);
        let second = assignments.assign(subject("b"), 2);
        let third = assignments.assign(subject("c"), 2);
        assert_eq!(assignments.take(&first), None, "the oldest was forgotten");
        assert_eq!(assignments.take(&third), Some(subject("c")));
        assert_eq!(assignments.take(&third), None);
        assert_eq!(assignments.take(&second), Some(subject("b")));
        assert_eq!(assignments.take(b"short"), None);
    }
}
