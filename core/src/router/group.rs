//! Groups: NATS queue groups, MQTT `$share/G/F`, ZMQ PULL/REP peers.
//!
//! A group receives each matching message once and hands it to one member, starting the search
//! at a rotating position so load spreads evenly. Members are session outboxes or durable
//! queues (an MQTT persistent session keeps its share while offline). An outbox member with
//! room comes first; otherwise a durable member takes the message (it buffers, never drops);
//! otherwise the next outbox member in turn gets it and its overflow policy applies
//! (drop-and-count or slow-consumer disconnect).
//!
//! # Invariants
//! - Group identity is (filter, name): one group per pair, shared by every protocol.
//! - A group never puts into a durable member itself: it names the queue and the router puts
//!   the message there, waiting for the append when the publisher's ack depends on it.
//! - A group with no members is removed from the index by the router.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::envelope::Envelope;
use crate::outbox::{Delivery, Offer, Sink};
use crate::queue::DurableQueue;
use crate::subject::Filter;

use super::{Admission, SubscriptionId};

/// Where a group member receives its messages.
#[derive(Debug, Clone)]
pub(crate) enum MemberTarget {
    /// A session outbox (at most once).
    Sink(Sink),
    /// A durable queue (buffers while its session is away).
    Queue(Arc<DurableQueue>),
}

/// One member of a group.
#[derive(Debug, Clone)]
pub(crate) struct GroupMember {
    pub(crate) id: SubscriptionId,
    pub(crate) target: MemberTarget,
    pub(crate) admission: Admission,
}

/// How a group handed a message on.
#[derive(Debug, Clone)]
pub(crate) enum Handed {
    /// Offered to an outbox.
    Offered(Offer),
    /// A durable member was chosen: the caller puts the message into its queue.
    Queue(Arc<DurableQueue>),
}

/// A set of competing consumers on one filter.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) filter: Filter,
    pub(crate) name: Arc<str>,
    /// The group's own entry in the index.
    pub(crate) index_id: SubscriptionId,
    members: RwLock<Vec<GroupMember>>,
    next: AtomicUsize,
}

impl Group {
    pub(crate) fn new(filter: Filter, name: Arc<str>, index_id: SubscriptionId) -> Self {
        Self {
            filter,
            name,
            index_id,
            members: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn join(&self, member: GroupMember) {
        self.members.write().push(member);
    }

    /// Removes a member; returns how many remain.
    pub(crate) fn leave(&self, id: SubscriptionId) -> usize {
        let mut members = self.members.write();
        members.retain(|m| m.id != id);
        members.len()
    }

    /// Hands `msg` to one member. Returns `None` when no member may take it (all excluded).
    pub(crate) fn deliver(&self, msg: &Arc<Envelope>) -> Option<Handed> {
        let members = self.members.read();
        let count = members.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let rotation = members.iter().cycle().skip(start).take(count);
        let (mut durable, mut full) = (None, None);
        for member in rotation.filter(|m| m.admission.admits(msg)) {
            match &member.target {
                MemberTarget::Sink(sink) if sink.has_room() => {
                    return Some(Handed::Offered(sink.offer(delivery(msg, member.id))));
                }
                MemberTarget::Sink(sink) => {
                    full.get_or_insert((sink, member.id));
                }
                MemberTarget::Queue(queue) => {
                    durable.get_or_insert(queue);
                }
            }
        }
        if let Some(queue) = durable {
            return Some(Handed::Queue(queue.clone()));
        }
        full.map(|(sink, id)| Handed::Offered(sink.offer(delivery(msg, id))))
    }
}

fn delivery(msg: &Arc<Envelope>, sub: SubscriptionId) -> Delivery {
    Delivery {
        msg: msg.clone(),
        sub,
        attempts: 0,
    }
}
