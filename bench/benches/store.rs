//! Store micro-benchmarks: `append` (batches of 1 and 64 records of 16 B and 1 KiB) and `read`
//! (64 records) on the memory backend and the disk backend, the latter in a temporary
//! directory with `fsync = never` (the write path alone) and `fsync = always` (one
//! `fdatasync` per batch).
//!
//! Append loops remove the queue every [`RECORDS_PER_QUEUE`] records, outside the timed part,
//! so memory and disk use stay bounded however many iterations criterion picks.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polymq_core::{Offset, QueueName, Store};
use polymq_storage::{DiskConfig, DiskStore, FsyncPolicy, MemoryStore};

/// Records appended to one queue before it is removed (untimed) and started again.
const RECORDS_PER_QUEUE: usize = 32 * 1024;
/// Records in the queue the read benchmark reads from.
const READ_BACKLOG: u64 = 8 * 1024;
/// Records per read.
const READ_BATCH: usize = 64;

/// The store configurations measured.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    DiskNever,
    DiskAlways,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::Memory, Backend::DiskNever, Backend::DiskAlways];

    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::DiskNever => "disk-fsync-never",
            Backend::DiskAlways => "disk-fsync-always",
        }
    }

    fn open(self, dir: &Path) -> Arc<dyn Store> {
        let disk = |fsync| {
            let config = DiskConfig {
                fsync,
                ..DiskConfig::new(dir)
            };
            Arc::new(DiskStore::open(config).expect("open disk store")) as Arc<dyn Store>
        };
        match self {
            Backend::Memory => Arc::new(MemoryStore::new(u64::MAX)),
            Backend::DiskNever => disk(FsyncPolicy::Never),
            Backend::DiskAlways => disk(FsyncPolicy::Always),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn records(count: usize, size: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(vec![i as u8; size]))
        .collect()
}

/// Times `iters` appends of `batch`, removing the queue untimed when it gets long.
async fn timed_appends(store: Arc<dyn Store>, batch: Vec<Bytes>, iters: u64) -> Duration {
    let queue = QueueName::new("bench/append");
    let mut elapsed = Duration::ZERO;
    let mut held = 0;
    for _ in 0..iters {
        if held >= RECORDS_PER_QUEUE {
            store.remove_queue(&queue).await.expect("remove queue");
            held = 0;
        }
        let start = Instant::now();
        black_box(store.append(&queue, &batch).await.expect("append"));
        elapsed += start.elapsed();
        held += batch.len();
    }
    store.remove_queue(&queue).await.expect("remove queue");
    elapsed
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("store_append");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = backend.open(dir.path());
        for count in [1, 64] {
            for size in [16, 1024] {
                let batch = records(count, size);
                group.throughput(Throughput::Elements(count as u64));
                let id = BenchmarkId::new(backend.name(), format!("{count}x{size}B"));
                group.bench_with_input(id, &batch, |b, batch| {
                    b.to_async(&rt).iter_custom(|iters| {
                        timed_appends(Arc::clone(&store), batch.clone(), iters)
                    });
                });
            }
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("store_read");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(READ_BATCH as u64));
    let queue = QueueName::new("bench/read");
    for backend in [Backend::Memory, Backend::DiskNever] {
        for size in [16, 1024] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = backend.open(dir.path());
            rt.block_on(async {
                for chunk in records(READ_BACKLOG as usize, size).chunks(256) {
                    store.append(&queue, chunk).await.expect("prefill");
                }
            });
            let id = BenchmarkId::new(backend.name(), format!("{READ_BATCH}x{size}B"));
            let mut from = 0;
            group.bench_function(id, |b| {
                b.to_async(&rt).iter(|| {
                    from = (from + READ_BATCH as u64) % (READ_BACKLOG - READ_BATCH as u64);
                    let (store, queue) = (Arc::clone(&store), queue.clone());
                    let at = Offset(from);
                    async move {
                        let got = store.read(&queue, at, READ_BATCH).await.expect("read");
                        assert_eq!(got.len(), READ_BATCH);
                        black_box(got)
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
