//! SUBSCRIBE and UNSUBSCRIBE: subscription options, shared subscriptions, retained messages
//! on subscribe.
//!
//! # Invariants
//! - One SUBACK code per filter, in order; shared subscriptions never get retained messages.

use std::sync::Arc;

use polymq_core::envelope::now_ns;
use polymq_core::subject::mqtt::{filter_to_filter, parse_shared};
use polymq_core::SubscriptionSpec;

use super::connect::code_for;
use super::Connection;
use crate::broker::Sub;
use crate::frame::{
    reason, Packet, Properties, QoS, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::mapping::{from_core_qos, Outbound};

impl Connection {
    pub(super) fn on_subscribe(&mut self, subscribe: Subscribe) {
        let sub_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (filter, options) in subscribe.filters {
            match self.add_subscription(&filter, options, sub_id) {
                Ok((granted, existed)) => {
                    codes.push(granted as u8);
                    let send = match options.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    let shared = filter.starts_with("$share/");
                    if send && !shared && self.broker.config.retain_available {
                        retained.push((filter, granted));
                    }
                }
                Err(()) => codes.push(code_for(self.v, 0x80, reason::TOPIC_FILTER_INVALID)),
            }
        }
        let ack = SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            codes,
        };
        self.send(&Packet::SubAck(ack));
        for (filter, granted) in retained {
            self.send_retained(&filter, granted, sub_id);
        }
    }

    /// Adds or replaces a subscription; returns the granted QoS and whether it existed.
    fn add_subscription(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Result<(QoS, bool), ()> {
        let (share, inner) = match parse_shared(filter) {
            Ok(Some((name, inner))) => (Some(Arc::<str>::from(name)), inner),
            Ok(None) => (None, filter.to_owned()),
            Err(_) => return Err(()),
        };
        let canonical = filter_to_filter(&inner).map_err(|_| ())?;
        let existed = self.remove_subscription(filter);
        let spec = SubscriptionSpec {
            filter: canonical.clone(),
            group: share.clone(),
            origin: self.session.origin(),
            no_local: options.no_local,
            requests_only: false,
        };
        let router = &self.broker.router;
        // A persistent session receives through its durable queue, shares included, so it
        // keeps its share of a `$share` group's messages while offline.
        let router_id = match &self.session.queue {
            Some(queue) => router.subscribe_queue(spec, queue.clone()),
            None => router.subscribe(spec, self.outbox.sink()),
        };
        let sub = Sub {
            options,
            sub_id,
            filter: canonical,
            share,
            router_id: Some(router_id),
        };
        self.session.subs.insert(filter.to_owned(), sub);
        Ok((options.qos, existed))
    }

    /// Drops a subscription by its filter text; true if it existed.
    fn remove_subscription(&mut self, filter: &str) -> bool {
        let Some(mut sub) = self.session.subs.remove(filter) else {
            return false;
        };
        if let Some(id) = sub.router_id.take() {
            self.broker.router.unsubscribe(id);
        }
        true
    }

    fn send_retained(&mut self, filter: &str, granted: QoS, sub_id: Option<u32>) {
        let Some(sub) = self.session.subs.get(filter) else {
            return;
        };
        let now = now_ns();
        for msg in self.broker.router.retained(&sub.filter) {
            if msg.is_expired(now) {
                continue;
            }
            let out = Outbound {
                qos: granted.min(from_core_qos(msg.qos)),
                retain: true,
                subscription_identifiers: sub_id.into_iter().collect(),
                ..Outbound::default()
            };
            self.send_direct(&msg, out);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::new();
        for filter in &unsubscribe.filters {
            let existed = self.remove_subscription(filter);
            codes.push(if existed {
                0
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.broker.save_session(&self.session);
        if !self.v.is_v5() {
            codes.clear();
        }
        let ack = UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Properties::default(),
            codes,
        };
        self.send(&Packet::UnsubAck(ack));
    }
}
