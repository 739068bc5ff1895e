//! `$SYS/broker/...`: mosquitto 2.0's status tree, with its names, payload formats, order
//! and flags.
//!
//! Every message is published retained at QoS 2 (so a subscriber gets the QoS it was
//! granted), with a Message Expiry Interval of 60 s, except `$SYS/broker/version`, published
//! once at start without expiry. Every `sys_interval_secs` the uptime is published, and each
//! other value only when it changed; a retained value left unchanged for a minute expires, as
//! in mosquitto. Load averages (`load/.../1min|5min|15min`, per minute, `%.2f`) are published
//! on the first update and then when they moved by at least 0.01.
//!
//! Leading wildcards never match `$` subjects, so `#` subscribers do not see these; a client
//! subscribes to `$SYS/#` explicitly.
//!
//! Not published: `heap/*` (mosquitto's allocator tracking), `store/messages/bytes` and
//! `shared_subscriptions/count`, which polymq does not track. `subscriptions/count` counts
//! the router's entries on every protocol (polymq is one broker for all of them).
//!
//! # Invariants
//! - The task ends when the listener's shutdown token is cancelled.
//! - [`Tree::update`] is a pure function of the previous state and a [`Counters`] snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use polymq_core::envelope::now_ns;
use polymq_core::subject::mqtt::topic_to_subject;
use polymq_core::{Envelope, Origin, Qos};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// The broker's version string, as in `$SYS/broker/version`.
pub const VERSION: &str = concat!("polymq version ", env!("CARGO_PKG_VERSION"));

/// Message Expiry Interval of every value but the version (mosquitto's 60 s).
const EXPIRY: Duration = Duration::from_secs(60);

/// Averaging windows of the load topics: name and length in seconds.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// Load topics under `$SYS/broker/load/`, in mosquitto's order.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// Publishes `$SYS` until `shutdown`.
pub async fn publish_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_secs(broker.config.sys_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    publish(&broker, "$SYS/broker/version", VERSION.to_owned(), None);
    let mut tree = Tree::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expires = now_ns().saturating_add(duration_ns(EXPIRY));
        for (topic, value) in tree.update(&Counters::read(&broker)) {
            publish(&broker, &topic, value, Some(expires));
        }
    }
}

/// One reading of everything the tree reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Seconds since the listener started.
    pub uptime: u64,
    /// Sessions known: connected clients and offline persistent sessions.
    pub total: u64,
    /// Connected clients.
    pub connected: u64,
    /// Sessions that expired.
    pub expired: u64,
    /// Messages held: retained ones and those in persistent sessions' queues.
    pub stored: u64,
    /// Router subscriptions.
    pub subscriptions: u64,
    /// Retained messages.
    pub retained: u64,
    /// `load` sources, in [`LOADS`] order: packets received and sent, PUBLISHes dropped,
    /// received and sent, bytes received and sent, sockets accepted, CONNECTs accepted.
    pub loads: [u64; 9],
    /// PUBLISH payload bytes received.
    pub pub_bytes_received: u64,
    /// PUBLISH payload bytes sent.
    pub pub_bytes_sent: u64,
}

impl Counters {
    /// Reads the broker's counters now.
    pub fn read(broker: &Broker) -> Self {
        let s = &broker.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let connected = load(&s.connected);
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let retained = count(broker.router.retained_count());
        Self {
            uptime: broker.started.elapsed().as_secs(),
            total: count(broker.session_count()).max(connected),
            connected,
            expired: load(&s.expired),
            stored: retained + count(broker.queued_messages()),
            subscriptions: count(broker.router.subscription_count()),
            retained,
            loads: [
                load(&s.msgs_received),
                load(&s.msgs_sent),
                load(&s.pub_dropped),
                load(&s.pub_received),
                load(&s.pub_sent),
                load(&s.bytes_received),
                load(&s.bytes_sent),
                load(&s.sockets),
                load(&s.connections),
            ],
            pub_bytes_received: load(&s.pub_bytes_received),
            pub_bytes_sent: load(&s.pub_bytes_sent),
        }
    }
}

/// What the tree last published: values for change detection, the client maximum and the
/// load averages.
#[derive(Debug, Default)]
pub struct Tree {
    last: HashMap<String, String>,
    client_max: u64,
    /// The previous reading, for the load rates; `None` before the first update.
    prev: Option<Counters>,
    /// Load averages per source and window.
    averages: [[f64; 3]; 9],
}

impl Tree {
    /// The `(topic, payload)` pairs to publish for a new reading, in mosquitto's order.
    pub fn update(&mut self, now: &Counters) -> Vec<(String, String)> {
        let mut out = vec![(
            "$SYS/broker/uptime".to_owned(),
            format!("{} seconds", now.uptime),
        )];
        self.changed(&mut out, "clients/total", now.total);
        if now.total > self.client_max {
            self.client_max = now.total;
            out.push((
                "$SYS/broker/clients/maximum".to_owned(),
                now.total.to_string(),
            ));
        }
        let disconnected = now.total.saturating_sub(now.connected);
        self.changed(&mut out, "clients/inactive", disconnected);
        self.changed(&mut out, "clients/disconnected", disconnected);
        self.changed(&mut out, "clients/active", now.connected);
        self.changed(&mut out, "clients/connected", now.connected);
        self.changed(&mut out, "clients/expired", now.expired);
        self.loads(&mut out, now);
        self.changed(&mut out, "messages/stored", now.stored);
        self.changed(&mut out, "store/messages/count", now.stored);
        self.changed(&mut out, "subscriptions/count", now.subscriptions);
        self.changed(&mut out, "retained messages/count", now.retained);
        let [received, sent, dropped, pub_received, pub_sent, bytes_in, bytes_out, ..] = now.loads;
        self.changed(&mut out, "messages/received", received);
        self.changed(&mut out, "messages/sent", sent);
        self.changed(&mut out, "publish/messages/dropped", dropped);
        self.changed(&mut out, "publish/messages/received", pub_received);
        self.changed(&mut out, "publish/messages/sent", pub_sent);
        self.changed(&mut out, "bytes/received", bytes_in);
        self.changed(&mut out, "bytes/sent", bytes_out);
        self.changed(&mut out, "publish/bytes/received", now.pub_bytes_received);
        self.changed(&mut out, "publish/bytes/sent", now.pub_bytes_sent);
        self.prev = Some(*now);
        out
    }

    /// Adds `$SYS/broker/<name>` when its value differs from the one last published.
    fn changed(&mut self, out: &mut Vec<(String, String)>, name: &str, value: u64) {
        let topic = format!("$SYS/broker/{name}");
        let value = value.to_string();
        if self.last.get(&topic) != Some(&value) {
            self.last.insert(topic.clone(), value.clone());
            out.push((topic, value));
        }
    }

    /// Exponentially damped per-minute rates, as mosquitto computes them: every average on
    /// the first update (all 0.00), then those that moved by at least 0.01.
    fn loads(&mut self, out: &mut Vec<(String, String)>, now: &Counters) {
        let prev = self.prev;
        for (w, (window, length)) in WINDOWS.iter().enumerate() {
            for (i, name) in LOADS.iter().enumerate() {
                let current = self.averages[i][w];
                let next = match prev {
                    None => current,
                    Some(prev) => {
                        let elapsed = now.uptime.saturating_sub(prev.uptime).max(1) as f64;
                        let delta = now.loads[i].saturating_sub(prev.loads[i]) as f64;
                        let rate = delta * 60.0 / elapsed;
                        let next = rate + (-elapsed / length).exp() * (current - rate);
                        if (next - current).abs() < 0.01 {
                            continue;
                        }
                        next
                    }
                };
                self.averages[i][w] = next;
                out.push((
                    format!("$SYS/broker/load/{name}/{window}"),
                    format!("{next:.2}"),
                ));
            }
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Publishes one retained QoS 2 value from the broker.
fn publish(broker: &Broker, topic: &str, value: String, expires_at_ns: Option<u64>) {
    let Ok(subject) = topic_to_subject(topic) else {
        return;
    };
    let mut env = Envelope::new(subject, Bytes::from(value), Origin::broker());
    env.retain = true;
    env.qos = Qos::ExactlyOnce;
    env.expires_at_ns = expires_at_ns;
    broker.router.publish(Arc::new(env));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(out: &[(String, String)]) -> Vec<&str> {
        out.iter()
            .map(|(t, _)| t.trim_start_matches("$SYS/broker/"))
            .collect()
    }

    fn reading() -> Counters {
        Counters {
            uptime: 5,
            total: 2,
            connected: 1,
            retained: 3,
            stored: 3,
            ..Counters::default()
        }
    }

    #[test]
    fn the_first_update_publishes_everything_in_mosquittos_order() {
        let mut tree = Tree::default();
        let out = tree.update(&reading());
        let names = topics(&out);
        assert_eq!(
            names[..8],
            [
                "uptime",
                "clients/total",
                "clients/maximum",
                "clients/inactive",
                "clients/disconnected",
                "clients/active",
                "clients/connected",
                "clients/expired",
            ]
        );
        assert_eq!(names[8], "load/messages/received/1min");
        assert_eq!(names[8 + 26], "load/connections/15min");
        assert_eq!(
            names[35..],
            [
                "messages/stored",
                "store/messages/count",
                "subscriptions/count",
                "retained messages/count",
                "messages/received",
                "messages/sent",
                "publish/messages/dropped",
                "publish/messages/received",
                "publish/messages/sent",
                "bytes/received",
                "bytes/sent",
                "publish/bytes/received",
                "publish/bytes/sent",
            ]
        );
        let value = |name: &str| {
            out.iter()
                .find(|(t, _)| t == &format!("$SYS/broker/{name}"))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("uptime"), Some("5 seconds"));
        assert_eq!(value("clients/disconnected"), Some("1"));
        assert_eq!(value("load/sockets/5min"), Some("0.00"));
        assert_eq!(value("retained messages/count"), Some("3"));
    }

    #[test]
    fn later_updates_publish_the_uptime_and_changes_only() {
        let mut tree = Tree::default();
        tree.update(&reading());
        let mut next = reading();
        next.uptime = 6;
        assert_eq!(topics(&tree.update(&next)), ["uptime"]);
        next.uptime = 7;
        next.connected = 2;
        next.total = 4;
        assert_eq!(
            topics(&tree.update(&next)),
            [
                "uptime",
                "clients/total",
                "clients/maximum",
                "clients/inactive",
                "clients/disconnected",
                "clients/active",
                "clients/connected",
            ]
        );
        // The maximum follows the session total and never goes down.
        next.uptime = 8;
        next.total = 1;
        next.connected = 1;
        let out = tree.update(&next);
        assert!(!topics(&out).contains(&"clients/maximum"));
    }

    #[test]
    fn loads_are_damped_rates_per_minute() {
        let mut tree = Tree::default();
        tree.update(&reading());
        let mut next = reading();
        next.uptime = 15;
        next.loads[0] = 100;
        let out = tree.update(&next);
        let one_min = out
            .iter()
            .find(|(t, _)| t == "$SYS/broker/load/messages/received/1min")
            .map(|(_, v)| v.as_str());
        // 100 in 10 s is 600 a minute; damped by exp(-10/60): 600 * (1 - 0.8465) = 92.11.
        assert_eq!(one_min, Some("92.11"));
        assert!(!topics(&out).contains(&"load/messages/sent/1min"));
    }
}
