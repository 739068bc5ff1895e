//! Router micro-benchmarks: matching with 1 k and 100 k subscriptions (exact and
//! wildcard-heavy), fan-out 1→N, and durable queue throughput.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use polymq_core::queue::QueueConfig;
use polymq_core::{
    outbox, ConnId, Envelope, Filter, Origin, Outbox, Overflow, Protocol, Router, RouterConfig,
    Store, Subject, SubscriptionSpec,
};
use polymq_storage::MemoryStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(u64::MAX))
}

fn origin() -> Origin {
    Origin {
        protocol: Protocol::Nats,
        conn: ConnId(1),
    }
}

fn message(subject: &Subject) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        subject.clone(),
        Bytes::from_static(b"0123456789abcdef"),
        origin(),
    ))
}

/// A router with `n` subscriptions; `wildcard` makes every other one a `*`/`>` pattern.
fn populated(n: usize, wildcard: bool) -> (Router, Vec<Outbox>) {
    let router = Router::new(RouterConfig::default(), store());
    let mut outboxes = Vec::new();
    for i in 0..n {
        let pattern = match (wildcard, i % 4) {
            (true, 1) => format!("dev.{}.*", i % 1000),
            (true, 3) => format!("dev.{}.>", i % 1000),
            _ => format!("dev.{}.{}", i % 1000, i),
        };
        let (sink, out) = outbox(1 << 16, Overflow::Drop);
        router.subscribe(
            SubscriptionSpec::new(Filter::new(&pattern).expect("filter"), origin()),
            sink,
        );
        outboxes.push(out);
    }
    (router, outboxes)
}

/// Publishes `subjects` round robin for `iters` messages, then empties the outboxes (outside
/// the measured time) so every publish pays for a real delivery, never for a full outbox.
fn publish_measured(
    router: &Router,
    subjects: &[Subject],
    outs: &mut [Outbox],
    iters: u64,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut k = 0usize;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(4096);
        let start = std::time::Instant::now();
        for _ in 0..batch {
            k = (k + 1) % subjects.len();
            router.publish(message(&subjects[k]));
        }
        elapsed += start.elapsed();
        for out in outs.iter_mut() {
            while out.try_recv().is_some() {}
        }
        left -= batch;
    }
    elapsed
}

fn matching(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("router_match");
    group.throughput(Throughput::Elements(1));
    for &n in &[1_000usize, 100_000] {
        for wildcard in [false, true] {
            let (router, mut outs) = populated(n, wildcard);
            let label = if wildcard { "wildcard" } else { "exact" };
            // 256 hot subjects stay in the match cache; 20 000 distinct ones miss it.
            for (variant, distinct) in [("cached", 256usize), ("uncached", 20_000)] {
                let subjects: Vec<Subject> = (0..distinct)
                    .map(|i| Subject::new(&format!("dev.{}.{}", i % 1000, i)).expect("subject"))
                    .collect();
                let id = BenchmarkId::new(format!("{label}_{variant}"), n);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| publish_measured(&router, &subjects, &mut outs, iters));
                });
            }
        }
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("router_fanout");
    for &n in &[1usize, 10, 100] {
        let router = Router::new(RouterConfig::default(), store());
        let mut outs: Vec<Outbox> = (0..n)
            .map(|_| {
                let (sink, out) = outbox(1 << 20, Overflow::Drop);
                router.subscribe(
                    SubscriptionSpec::new(Filter::new("fan.out").expect("f"), origin()),
                    sink,
                );
                out
            })
            .collect();
        let subject = Subject::new("fan.out").expect("subject");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    router.publish(message(&subject));
                }
                let elapsed = start.elapsed();
                for out in &mut outs {
                    while out.try_recv().is_some() {}
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn durable_queue(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("durable_queue");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("put_deliver_fin_1000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let router = Router::new(
                    RouterConfig {
                        queue: QueueConfig {
                            msg_timeout: Duration::from_secs(60),
                            ..QueueConfig::default()
                        },
                        cache_size: 64,
                    },
                    store(),
                );
                let topic = router.topic("bench").expect("topic");
                let channel = topic.channel("c");
                let (sink, mut out) = outbox(4096, Overflow::Drop);
                let member = channel.attach(sink, polymq_core::SubscriptionId(1));
                member.set_credit(2500);
                let subject = Subject::new("bench").expect("subject");
                for _ in 0..1000 {
                    router
                        .publish_durable(message(&subject))
                        .await
                        .expect("put");
                    while let Some(d) = out.try_recv() {
                        member.fin(&d.msg.id).expect("fin");
                    }
                }
            });
        });
    });
    group.finish();
}

criterion_group!(benches, matching, fan_out, durable_queue);
criterion_main!(benches);
