//! Broker counters, per protocol, rendered as Prometheus text by the admin listener.
//!
//! Every counter is a relaxed atomic: updating one never takes a lock and never waits.
//!
//! # Invariants
//! - `connections` is a gauge: opened − closed, never negative in a consistent run.
//! - Labels are the protocol names of [`Protocol::label`]; every protocol is always rendered so
//!   dashboards see zeros rather than missing series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::envelope::Protocol;
use crate::router::Routed;

#[derive(Debug, Default)]
struct ProtocolCounters {
    connections: AtomicI64,
    connections_total: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    per_protocol: [ProtocolCounters; 5],
    routed_deliveries: AtomicU64,
    routed_dropped: AtomicU64,
    routed_queued: AtomicU64,
    unrouted: AtomicU64,
}

fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Nsq => 0,
        Protocol::Nats => 1,
        Protocol::Mqtt => 2,
        Protocol::Zmtp => 3,
        Protocol::Broker => 4,
    }
}

impl Metrics {
    fn of(&self, protocol: Protocol) -> &ProtocolCounters {
        &self.per_protocol[slot(protocol)]
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self, protocol: Protocol) {
        let c = self.of(protocol);
        c.connections.fetch_add(1, Ordering::Relaxed);
        c.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended.
    pub fn connection_closed(&self, protocol: Protocol) {
        self.of(protocol)
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// A message arrived from a client.
    pub fn message_in(&self, protocol: Protocol, bytes: usize) {
        self.messages_received(protocol, 1, bytes as u64);
    }

    /// A message was written to a client.
    pub fn message_out(&self, protocol: Protocol, bytes: usize) {
        self.messages_written(protocol, 1, bytes as u64);
    }

    /// `count` messages of `bytes` payload octets in all arrived from clients: one update for
    /// a whole batch (the counters are shared by every connection's thread, so an update per
    /// message contends).
    pub fn messages_received(&self, protocol: Protocol, count: u64, bytes: u64) {
        if count > 0 {
            let c = self.of(protocol);
            c.messages_in.fetch_add(count, Ordering::Relaxed);
            c.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// `count` messages of `bytes` payload octets in all were written to clients: one update
    /// for a whole batch.
    pub fn messages_written(&self, protocol: Protocol, count: u64, bytes: u64) {
        if count > 0 {
            let c = self.of(protocol);
            c.messages_out.fetch_add(count, Ordering::Relaxed);
            c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Messages dropped on the way to clients of `protocol` (full outbox, unrepresentable
    /// subject, expired).
    pub fn dropped(&self, protocol: Protocol, count: u64) {
        self.of(protocol)
            .dropped
            .fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn routed(&self, routed: &Routed) {
        // Shared counters are contended cache lines: touch only the ones that change.
        for (counter, n) in [
            (&self.routed_deliveries, routed.delivered),
            (&self.routed_dropped, routed.dropped),
            (&self.routed_queued, routed.queued),
        ] {
            if n > 0 {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        if routed.matched() == 0 {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current connections of `protocol`.
    pub fn connections(&self, protocol: Protocol) -> i64 {
        self.of(protocol).connections.load(Ordering::Relaxed)
    }

    /// Messages received from clients of `protocol`.
    pub fn messages_in(&self, protocol: Protocol) -> u64 {
        self.of(protocol).messages_in.load(Ordering::Relaxed)
    }

    /// Messages written to clients of `protocol`.
    pub fn messages_out(&self, protocol: Protocol) -> u64 {
        self.of(protocol).messages_out.load(Ordering::Relaxed)
    }

    /// Bytes received from clients of `protocol`.
    pub fn bytes_in(&self, protocol: Protocol) -> u64 {
        self.of(protocol).bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes written to clients of `protocol`.
    pub fn bytes_out(&self, protocol: Protocol) -> u64 {
        self.of(protocol).bytes_out.load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text exposition of every counter to `out`.
    pub fn render(&self, out: &mut String) {
        type Getter = fn(&ProtocolCounters) -> u64;
        let families: [(&str, &str, &str, Getter); 7] = [
            (
                "polymq_connections",
                "gauge",
                "Open client connections.",
                |c| c.connections.load(Ordering::Relaxed).max(0).unsigned_abs(),
            ),
            (
                "polymq_connections_total",
                "counter",
                "Client connections accepted.",
                |c| c.connections_total.load(Ordering::Relaxed),
            ),
            (
                "polymq_messages_in_total",
                "counter",
                "Messages received from clients.",
                |c| c.messages_in.load(Ordering::Relaxed),
            ),
            (
                "polymq_bytes_in_total",
                "counter",
                "Payload bytes received from clients.",
                |c| c.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "polymq_messages_out_total",
                "counter",
                "Messages written to clients.",
                |c| c.messages_out.load(Ordering::Relaxed),
            ),
            (
                "polymq_bytes_out_total",
                "counter",
                "Payload bytes written to clients.",
                |c| c.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "polymq_dropped_messages_total",
                "counter",
                "Messages dropped before a client.",
                |c| c.dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for protocol in Protocol::ALL {
                let value = get(self.of(protocol));
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {value}", protocol.label());
            }
        }
        let routed: [(&str, &str, &AtomicU64); 4] = [
            (
                "polymq_routed_deliveries_total",
                "Deliveries queued to session outboxes.",
                &self.routed_deliveries,
            ),
            (
                "polymq_routed_dropped_total",
                "Deliveries dropped by full outboxes.",
                &self.routed_dropped,
            ),
            (
                "polymq_routed_queued_total",
                "Messages taken by durable queues and topics.",
                &self.routed_queued,
            ),
            (
                "polymq_unrouted_total",
                "Publishes that matched nothing.",
                &self.unrouted,
            ),
        ];
        for (name, help, value) in routed {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_protocol_label() {
        let m = Metrics::default();
        m.connection_opened(Protocol::Nats);
        m.message_in(Protocol::Mqtt, 10);
        m.dropped(Protocol::Zmtp, 3);
        m.messages_written(Protocol::Zmtp, 4, 40);
        m.messages_written(Protocol::Zmtp, 0, 0);
        m.message_out(Protocol::Zmtp, 2);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("polymq_connections{protocol=\"nats\"} 1"));
        assert!(text.contains("polymq_messages_in_total{protocol=\"mqtt\"} 1"));
        assert!(text.contains("polymq_bytes_in_total{protocol=\"mqtt\"} 10"));
        assert!(text.contains("polymq_dropped_messages_total{protocol=\"zmtp\"} 3"));
        assert!(text.contains("polymq_connections{protocol=\"nsq\"} 0"));
        assert!(text.contains("polymq_messages_out_total{protocol=\"zmtp\"} 5"));
        assert!(text.contains("polymq_bytes_out_total{protocol=\"zmtp\"} 42"));
    }
}
