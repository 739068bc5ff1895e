//! Model test: random sequences of append / release / read / reopen / remove on a
//! [`DiskStore`] (with tiny segments, so segments roll and are reclaimed constantly) give the
//! same answers as a [`MemoryStore`], which is simple enough to trust.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use polymq_core::{Offset, QueueName, Store};
use polymq_storage::{DiskConfig, DiskStore, FsyncPolicy, MemoryStore};
use proptest::prelude::*;

const QUEUES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of payload sizes to a queue.
    Append(usize, Vec<usize>),
    /// Release offsets picked (by index) among the queue's unreleased records, plus one
    /// offset that may be released already or not exist.
    Release(usize, Vec<prop::sample::Index>, u64),
    /// Read up to `max` records from `from`.
    Read(usize, u64, usize),
    /// Close and reopen the disk store.
    Reopen,
    /// Remove a queue.
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let queue = 0..QUEUES;
    prop_oneof![
        6 => (queue.clone(), prop::collection::vec(0usize..40, 1..6)).prop_map(|(q, b)| Op::Append(q, b)),
        4 => (queue.clone(), prop::collection::vec(any::<prop::sample::Index>(), 0..6), 0u64..40)
            .prop_map(|(q, i, o)| Op::Release(q, i, o)),
        2 => (queue.clone(), 0u64..40, 1usize..8).prop_map(|(q, f, m)| Op::Read(q, f, m)),
        2 => Just(Op::Reopen),
        1 => queue.prop_map(Op::Remove),
    ]
}

fn open_disk(dir: &Path) -> DiskStore {
    let config = DiskConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 128,
        ..DiskConfig::new(dir)
    };
    DiskStore::open(config).expect("open disk store")
}

fn queue(i: usize) -> QueueName {
    QueueName::new(&format!("model/q{i}"))
}

/// A payload that names its queue, size and position, so mixed-up records are caught.
fn payload(q: usize, size: usize, serial: u64) -> Bytes {
    let mut p = format!("{q}:{serial}:").into_bytes();
    p.resize(p.len() + size, b'a' + (serial % 26) as u8);
    Bytes::from(p)
}

async fn everything(store: &dyn Store, q: &QueueName) -> Vec<(Offset, Bytes)> {
    store
        .read(q, Offset(0), usize::MAX)
        .await
        .expect("read all")
}

async fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = MemoryStore::new(u64::MAX);
    let mut disk = open_disk(dir.path());
    let mut serial = 0;
    for op in ops {
        match op {
            Op::Append(q, sizes) => {
                let batch: Vec<Bytes> = sizes
                    .iter()
                    .map(|&size| {
                        serial += 1;
                        payload(q, size, serial)
                    })
                    .collect();
                let want = model.append(&queue(q), &batch).await.expect("model append");
                let got = disk.append(&queue(q), &batch).await.expect("disk append");
                prop_assert_eq!(got, want, "offsets of {:?}", batch);
            }
            Op::Release(q, picks, extra) => {
                let live = everything(&model, &queue(q)).await;
                let mut acked: Vec<Offset> = picks
                    .iter()
                    .filter(|_| !live.is_empty())
                    .map(|i| i.get(&live).0)
                    .collect();
                acked.push(Offset(extra));
                model
                    .release(&queue(q), &acked)
                    .await
                    .expect("model release");
                disk.release(&queue(q), &acked).await.expect("disk release");
            }
            Op::Read(q, from, max) => {
                let want = model
                    .read(&queue(q), Offset(from), max)
                    .await
                    .expect("model read");
                let got = disk
                    .read(&queue(q), Offset(from), max)
                    .await
                    .expect("disk read");
                prop_assert_eq!(got, want, "read {} from {} max {}", q, from, max);
            }
            Op::Reopen => {
                drop(disk);
                disk = open_disk(dir.path());
            }
            Op::Remove(q) => {
                model.remove_queue(&queue(q)).await.expect("model remove");
                disk.remove_queue(&queue(q)).await.expect("disk remove");
            }
        }
        for q in 0..QUEUES {
            let want = everything(&model, &queue(q)).await;
            prop_assert_eq!(everything(&disk, &queue(q)).await, want, "queue {}", q);
        }
        prop_assert_eq!(
            disk.queues().await.expect("queues"),
            model.queues().await.expect("queues")
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn disk_store_agrees_with_memory_store(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), check(ops)).await.expect("case timed out")
        })?;
    }
}
