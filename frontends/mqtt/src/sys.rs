//! `$SYS/broker/...`: mosquitto's status topics, published retained at QoS 0 every
//! `sys_interval_secs`, each only when its value changed (the version once).
//!
//! Leading wildcards never match `$` subjects, so `#` subscribers do not see these; a client
//! subscribes to `$SYS/#` explicitly.
//!
//! # Invariants
//! - The task ends when the listener's shutdown token is cancelled.
//! - mosquitto's `$SYS/broker/retained messages/count` is not published: canonical subjects
//!   cannot hold a space.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use polymq_core::subject::mqtt::topic_to_subject;
use polymq_core::{Envelope, Origin};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// The broker's version string, as in `$SYS/broker/version`.
pub const VERSION: &str = concat!("polymq version ", env!("CARGO_PKG_VERSION"));

/// Publishes `$SYS` until `shutdown`.
pub async fn publish_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_secs(broker.config.sys_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    let mut last: HashMap<&'static str, String> = HashMap::new();
    publish(&broker, "$SYS/broker/version", VERSION.to_owned());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (topic, value) in snapshot(&broker) {
            if last.get(topic) != Some(&value) {
                publish(&broker, topic, value.clone());
                last.insert(topic, value);
            }
        }
    }
}

/// Current values of every `$SYS` topic except the version.
pub fn snapshot(broker: &Broker) -> Vec<(&'static str, String)> {
    let s = &broker.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
    let connected = s.connected.load(Ordering::Relaxed);
    let total = u64::try_from(broker.session_count())
        .unwrap_or(u64::MAX)
        .max(connected);
    vec![
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("$SYS/broker/clients/connected", connected.to_string()),
        ("$SYS/broker/clients/active", connected.to_string()),
        (
            "$SYS/broker/clients/disconnected",
            (total - connected).to_string(),
        ),
        (
            "$SYS/broker/clients/inactive",
            (total - connected).to_string(),
        ),
        ("$SYS/broker/clients/total", total.to_string()),
        ("$SYS/broker/clients/maximum", load(&s.maximum)),
        ("$SYS/broker/clients/expired", load(&s.expired)),
        ("$SYS/broker/messages/received", load(&s.msgs_received)),
        ("$SYS/broker/messages/sent", load(&s.msgs_sent)),
        (
            "$SYS/broker/publish/messages/received",
            load(&s.pub_received),
        ),
        ("$SYS/broker/publish/messages/sent", load(&s.pub_sent)),
        ("$SYS/broker/publish/messages/dropped", load(&s.pub_dropped)),
        (
            "$SYS/broker/publish/bytes/received",
            load(&s.pub_bytes_received),
        ),
        ("$SYS/broker/publish/bytes/sent", load(&s.pub_bytes_sent)),
        ("$SYS/broker/bytes/received", load(&s.bytes_received)),
        ("$SYS/broker/bytes/sent", load(&s.bytes_sent)),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.subscription_count().to_string(),
        ),
    ]
}

fn publish(broker: &Broker, topic: &str, value: String) {
    let Ok(subject) = topic_to_subject(topic) else {
        return;
    };
    let mut env = Envelope::new(subject, Bytes::from(value), Origin::broker());
    env.retain = true;
    broker.router.publish(Arc::new(env));
}
