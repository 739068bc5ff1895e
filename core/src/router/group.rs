//! Volatile groups: NATS queue groups, MQTT `$share/G/F`, ZMQ PULL/REP peers.
//!
//! A group receives each matching message once and hands it to one member that has room in
//! its outbox, starting the search at a rotating position so load spreads evenly. When no
//! member has room the message goes to the next member in turn, whose overflow policy then
//! applies (drop-and-count or slow-consumer disconnect).
//!
//! # Invariants
//! - Group identity is (filter, name): one group per pair, shared by every protocol.
//! - A group with no members is removed from the index by the router.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::envelope::Envelope;
use crate::outbox::{Delivery, Offer, Sink};
use crate::subject::Filter;

use super::{Admission, SubscriptionId};

/// One member of a group.
#[derive(Debug, Clone)]
pub(crate) struct GroupMember {
    pub(crate) id: SubscriptionId,
    pub(crate) sink: Sink,
    pub(crate) admission: Admission,
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
    pub(crate) fn deliver(&self, msg: &Arc<Envelope>) -> Option<Offer> {
        let members = self.members.read();
        let count = members.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let rotation = members.iter().cycle().skip(start).take(count);
        let mut fallback = None;
        for member in rotation.filter(|m| m.admission.admits(msg)) {
            if member.sink.has_room() {
                return Some(member.sink.offer(delivery(msg, member.id)));
            }
            fallback.get_or_insert(member);
        }
        fallback.map(|m| m.sink.offer(delivery(msg, m.id)))
    }
}

fn delivery(msg: &Arc<Envelope>, sub: SubscriptionId) -> Delivery {
    Delivery {
        msg: msg.clone(),
        sub,
        attempts: 0,
    }
}
