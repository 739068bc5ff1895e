//! `polymq-bench`: the side-by-side load runner.
//!
//! Runs one scenario against one or more brokers over a protocol, verifies that every message
//! arrived, and prints one JSON line per run (rates and latency percentiles), then one ratio
//! line per extra target relative to the first:
//!
//! ```text
//! polymq-bench --protocol nats --scenario pubsub --size 16 --messages 100000 \
//!   --target polymq=127.0.0.1:4222 --target nats-server=127.0.0.1:4223
//! ```
//!
//! Scenarios: `pubsub` (P publishers → S subscribers, every subscriber gets every message:
//! 1:1, fan-out 1→8, fan-in 8→1), `queue` (P publishers → S members of one group, each message
//! once), `reqrep` (sequential request/reply round trips: latency).
//!
//! Protocols: `nats`, `mqtt` (QoS 0), `mqtt-qos1`, `nsq` (`--batch N` publishes with `MPUB`),
//! `zmtp` (a target may name two ports, `host:port1,port2`: senders use the first, receivers
//! the second, as with a libzmq proxy's frontend and backend). `reqrep` runs over NATS and ZMTP.
//!
//! # Invariants
//! - Every loop is bounded by `--messages` and by `--timeout-secs`.
//! - Latency is measured from a send timestamp carried in the first 8 payload bytes
//!   (nanoseconds since the run's start), so payloads are at least 8 bytes.

mod driver;
mod report;
mod scenario;

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;

use crate::driver::Protocol;
use crate::scenario::{Scenario, Settings};

/// Command line of the load runner.
#[derive(Debug, Parser)]
#[command(name = "polymq-bench", about = "Side-by-side broker load runner")]
struct Cli {
    /// Wire protocol: nats | mqtt | mqtt-qos1 | nsq | zmtp.
    #[arg(long, default_value = "nats")]
    protocol: Protocol,
    /// Scenario: pubsub | queue | reqrep.
    #[arg(long, default_value = "pubsub")]
    scenario: Scenario,
    /// Payload size in bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages per publisher (round trips for reqrep).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Publisher count.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber (or group member) count.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Per-publisher rate limit in messages per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages per publish command: NSQ sends `MPUB` of this many (1 = `PUB`); the other
    /// protocols publish one at a time.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Give up waiting for messages after this long.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// A broker to run against, `name=host:port`; the first is the baseline of the ratios.
    /// For zmtp, `name=host:port1,port2` splits senders (PUB, PUSH, REQ: port1) from
    /// receivers (SUB, PULL, REP: port2), as a libzmq proxy's frontend and backend.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.size < 8 {
        bail!("--size must be at least 8 (the latency timestamp)");
    }
    let settings = Settings {
        protocol: cli.protocol,
        scenario: cli.scenario,
        size: cli.size,
        messages: cli.messages,
        publishers: cli.publishers.max(1),
        subscribers: cli.subscribers.max(1),
        rate: cli.rate,
        batch: cli.batch.max(1),
        timeout: Duration::from_secs(cli.timeout_secs),
    };
    let mut results = Vec::new();
    for target in &cli.targets {
        let (name, addr) = target
            .split_once('=')
            .context("--target wants name=host:port")?;
        let result = scenario::run(&settings, name, addr)
            .await
            .with_context(|| format!("running against {name} at {addr}"))?;
        println!("{}", serde_json::to_string(&result)?);
        results.push(result);
    }
    if let Some((base, others)) = results.split_first() {
        for other in others {
            println!("{}", serde_json::to_string(&report::ratio(base, other))?);
        }
    }
    Ok(())
}
