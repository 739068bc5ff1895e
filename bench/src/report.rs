//! Run results as JSON lines, latency percentiles and side-by-side ratios.

use std::time::Duration;

use serde::Serialize;

use crate::driver::Protocol;
use crate::scenario::{Scenario, Settings};

/// Latency samples in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn push(&mut self, ns: u64) {
        self.0.push(ns);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// (p50, p90, p99, p99.9, max) in microseconds.
    fn percentiles(mut self) -> Percentiles {
        self.0.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.0.is_empty() {
                return 0.0;
            }
            let rank = ((self.0.len() - 1) as f64 * q).round() as usize;
            self.0[rank.min(self.0.len() - 1)] as f64 / 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One JSON line per run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub target: String,
    pub protocol: String,
    pub scenario: String,
    pub size: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Messages per publish command (NSQ `MPUB`).
    pub batch: usize,
    /// Per-publisher rate limit in messages per second (0 = unlimited).
    pub rate: u64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    /// True when every expected message arrived.
    pub complete: bool,
    pub duration_s: f64,
    /// Received messages per second.
    pub msgs_per_s: f64,
    /// Received payload megabytes per second.
    pub mb_per_s: f64,
    pub latency_us: Percentiles,
}

impl RunResult {
    pub fn new(
        target: &str,
        s: &Settings,
        sent: u64,
        expected: u64,
        received: u64,
        elapsed: Duration,
        latencies: Latencies,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            target: target.to_owned(),
            protocol: protocol_name(s.protocol).to_owned(),
            scenario: scenario_name(s.scenario).to_owned(),
            size: s.size,
            publishers: s.publishers,
            subscribers: s.subscribers,
            batch: s.batch,
            rate: s.rate,
            sent,
            expected,
            received,
            complete: received >= expected,
            duration_s: secs,
            msgs_per_s: received as f64 / secs,
            mb_per_s: received as f64 * s.size as f64 / secs / 1e6,
            latency_us: latencies.percentiles(),
        }
    }
}

/// How `other` compares with the baseline `base` (>1 means `base` is faster / lower).
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub ratio: String,
    pub throughput: f64,
    pub latency_p50: f64,
    pub latency_p99: f64,
}

pub fn ratio(base: &RunResult, other: &RunResult) -> Ratio {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ratio {
        ratio: format!("{}/{}", base.target, other.target),
        throughput: div(base.msgs_per_s, other.msgs_per_s),
        latency_p50: div(other.latency_us.p50, base.latency_us.p50),
        latency_p99: div(other.latency_us.p99, base.latency_us.p99),
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Nats => "nats",
        Protocol::Mqtt => "mqtt",
        Protocol::MqttQos1 => "mqtt-qos1",
        Protocol::Nsq => "nsq",
        Protocol::Zmtp => "zmtp",
    }
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::PubSub => "pubsub",
        Scenario::Queue => "queue",
        Scenario::ReqRep => "reqrep",
    }
}
