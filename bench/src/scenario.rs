//! Scenarios: who publishes what, who receives it, and what counts as done.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::driver::{self, Protocol, PublishOptions};
use crate::report::{Latencies, RunResult};

/// The shape of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every subscriber receives every message.
    PubSub,
    /// One group: each message reaches one member.
    Queue,
    /// Sequential request/reply round trips.
    ReqRep,
}

impl FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "pubsub" => Self::PubSub,
            "queue" => Self::Queue,
            "reqrep" => Self::ReqRep,
            other => bail!("unknown scenario {other:?}"),
        })
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub protocol: Protocol,
    pub scenario: Scenario,
    pub size: usize,
    pub messages: u64,
    pub publishers: usize,
    pub subscribers: usize,
    pub rate: u64,
    /// Messages per publish command (NSQ `MPUB`).
    pub batch: usize,
    pub timeout: Duration,
}

/// Most latency samples kept per receiver; beyond it every n-th message is sampled.
const MAX_SAMPLES: u64 = 200_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A payload of `size` bytes starting with the send time.
fn stamped(size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u64(now_ns());
    buf.resize(size, b'x');
    buf.freeze()
}

fn latency_ns(payload: &[u8]) -> Option<u64> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(now_ns().saturating_sub(sent))
}

/// Runs the scenario against one broker.
pub async fn run(settings: &Settings, target: &str, addr: &str) -> anyhow::Result<RunResult> {
    epoch();
    let subject = format!("bench.{}", std::process::id());
    match settings.scenario {
        Scenario::PubSub => fan(settings, target, addr, &subject, None).await,
        Scenario::Queue => fan(settings, target, addr, &subject, Some("bench-workers")).await,
        Scenario::ReqRep => request_reply(settings, target, addr, &subject).await,
    }
}

/// Publishers → subscribers (plain or one group).
async fn fan(
    s: &Settings,
    target: &str,
    addr: &str,
    subject: &str,
    group: Option<&str>,
) -> anyhow::Result<RunResult> {
    let sent_total = s.messages * s.publishers as u64;
    // Plain subscribers each expect every message; group members share the total.
    let expected = match group {
        Some(_) => sent_total,
        None => sent_total * s.subscribers as u64,
    };
    let counted = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let mut receivers = JoinSet::new();
    for _ in 0..s.subscribers {
        let mut sub = driver::subscriber(s.protocol, addr, subject, group).await?;
        let every = (sent_total / MAX_SAMPLES).max(1);
        let (counted, done) = (counted.clone(), done.clone());
        receivers.spawn(async move {
            let mut lat = Latencies::default();
            let mut got = 0u64;
            let mut last = Instant::now();
            loop {
                let payload = tokio::select! {
                    () = done.cancelled() => break,
                    next = sub.next() => match next {
                        Ok(Some(payload)) => payload,
                        _ => break,
                    },
                };
                got += 1;
                last = Instant::now();
                if got % every == 0 {
                    if let Some(ns) = latency_ns(&payload) {
                        lat.push(ns);
                    }
                }
                if counted.fetch_add(1, Ordering::Relaxed) + 1 >= expected {
                    done.cancel();
                }
            }
            (got, lat, last)
        });
    }
    let options = PublishOptions {
        to_group: group.is_some(),
        batch: s.batch,
    };
    let mut connected = Vec::with_capacity(s.publishers);
    for _ in 0..s.publishers {
        connected.push(driver::publisher(s.protocol, addr, options).await?);
    }
    let start = Instant::now();
    let mut publishers = JoinSet::new();
    for mut publisher in connected {
        let (subject, size, count, rate) = (subject.to_owned(), s.size, s.messages, s.rate);
        publishers.spawn(async move {
            let pace = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
            let begun = Instant::now();
            for i in 0..count {
                if let Some(pace) = pace {
                    let due = begun + pace.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
                    tokio::time::sleep_until(due.into()).await;
                }
                publisher.publish(&subject, stamped(size)).await?;
            }
            publisher.flush().await
        });
    }
    while let Some(joined) = publishers.join_next().await {
        joined??;
    }
    // Wait for everything to arrive, or give up after the timeout (loss is reported, not hidden).
    let _ = tokio::time::timeout(s.timeout, done.cancelled()).await;
    done.cancel();
    let (mut received, mut latencies, mut finished) = (0, Latencies::default(), start);
    while let Some(joined) = receivers.join_next().await {
        let (got, lat, last) = joined?;
        received += got;
        latencies.merge(lat);
        finished = finished.max(last);
    }
    Ok(RunResult::new(
        target,
        s,
        sent_total,
        expected,
        received,
        finished - start,
        latencies,
    ))
}

/// Sequential round trips through an echo responder.
async fn request_reply(
    s: &Settings,
    target: &str,
    addr: &str,
    subject: &str,
) -> anyhow::Result<RunResult> {
    driver::responder(s.protocol, addr, subject).await?;
    let mut requester = driver::requester(s.protocol, addr).await?;
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let mut received = 0;
    for _ in 0..s.messages {
        let sent = Instant::now();
        let reply =
            tokio::time::timeout(s.timeout, requester.request(subject, stamped(s.size))).await??;
        if reply.len() == s.size {
            received += 1;
        }
        latencies.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(RunResult::new(
        target,
        s,
        s.messages,
        s.messages,
        received,
        start.elapsed(),
        latencies,
    ))
}
