//! The memory backend: a bounded in-process [`Store`] for tests and edge deployments.
//!
//! Each queue is a `VecDeque<(Offset, Bytes)>` behind its own lock; the map of queues is
//! read-locked only to find a queue and write-locked only to add one, so appends to different
//! queues never contend. Records are `Bytes`, shared with the caller, never copied.
//!
//! # Policy when full
//! The bound is `max_bytes` of record payload across all queues (metadata is not counted).
//! A batch that would cross it is refused whole with [`StoreError::Full`]: nothing is evicted,
//! because a durable queue must never drop a record it accepted. The caller sees the error
//! before acknowledging the publisher, and space returns as records are released.
//!
//! # Invariants
//! - Offsets of a queue increase by one per record, from 0; a removed queue starts again at 0.
//! - Each queue's records are sorted by offset; released records are gone.
//! - The byte counter equals the payload bytes held by all queues.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use polymq_core::{Offset, PersistMode, QueueName, Store, StoreError};

/// One queue's records and next offset.
#[derive(Debug, Default)]
struct MemQueue {
    next: u64,
    records: VecDeque<(Offset, Bytes)>,
    bytes: u64,
}

/// A queue's slot: `None` until first used and after removal.
type QueueCell = Mutex<Option<MemQueue>>;

/// A bounded, non-durable [`Store`] held in memory.
pub struct MemoryStore {
    max_bytes: u64,
    used: AtomicU64,
    queues: RwLock<HashMap<QueueName, Arc<QueueCell>>>,
    meta: RwLock<BTreeMap<String, Bytes>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("used", &self.used.load(Ordering::Relaxed))
            .field("queues", &self.queues.read().len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store holding at most `max_bytes` of record payload.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            used: AtomicU64::new(0),
            queues: RwLock::new(HashMap::new()),
            meta: RwLock::new(BTreeMap::new()),
        }
    }

    /// Payload bytes currently held.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn find(&self, name: &QueueName) -> Option<Arc<QueueCell>> {
        self.queues.read().get(name).cloned()
    }

    fn find_or_add(&self, name: &QueueName) -> Arc<QueueCell> {
        if let Some(cell) = self.find(name) {
            return cell;
        }
        Arc::clone(self.queues.write().entry(name.clone()).or_default())
    }

    /// Takes `n` bytes of the budget, or refuses the whole batch.
    fn reserve(&self, n: u64) -> Result<(), StoreError> {
        let max = self.max_bytes;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= max)
            })
            .map(drop)
            .map_err(|used| {
                StoreError::Full(format!(
                    "memory store holds {used} of {max} bytes, batch needs {n}"
                ))
            })
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn is_durable(&self) -> bool {
        false
    }

    async fn append(&self, queue: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let size: u64 = batch.iter().map(|r| r.len() as u64).sum();
        self.reserve(size)?;
        let cell = self.find_or_add(queue);
        let mut slot = cell.lock();
        let q = slot.get_or_insert_with(MemQueue::default);
        let first = q.next;
        q.records
            .extend((first..).map(Offset).zip(batch.iter().cloned()));
        q.next += batch.len() as u64;
        q.bytes += size;
        Ok((first..q.next).map(Offset).collect())
    }

    async fn read(
        &self,
        queue: &QueueName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<(Offset, Bytes)>, StoreError> {
        let Some(cell) = self.find(queue) else {
            return Ok(Vec::new());
        };
        let slot = cell.lock();
        let Some(q) = slot.as_ref() else {
            return Ok(Vec::new());
        };
        let start = q.records.partition_point(|(offset, _)| *offset < from);
        Ok(q.records.range(start..).take(max).cloned().collect())
    }

    async fn release(&self, queue: &QueueName, acked: &[Offset]) -> Result<(), StoreError> {
        let Some(cell) = self.find(queue) else {
            return Ok(());
        };
        let mut slot = cell.lock();
        let Some(q) = slot.as_mut() else {
            return Ok(());
        };
        let mut freed = 0;
        for offset in acked {
            if let Ok(i) = q.records.binary_search_by_key(offset, |(o, _)| *o) {
                if let Some((_, payload)) = q.records.remove(i) {
                    freed += payload.len() as u64;
                }
            }
        }
        q.bytes -= freed;
        self.give_back(freed);
        Ok(())
    }

    async fn remove_queue(&self, queue: &QueueName) -> Result<(), StoreError> {
        let Some(cell) = self.find(queue) else {
            return Ok(());
        };
        if let Some(q) = cell.lock().take() {
            self.give_back(q.bytes);
        }
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<QueueName>, StoreError> {
        let cells: Vec<(QueueName, Arc<QueueCell>)> = self
            .queues
            .read()
            .iter()
            .map(|(n, c)| (n.clone(), Arc::clone(c)))
            .collect();
        let mut names: Vec<QueueName> = cells
            .into_iter()
            .filter(|(_, cell)| cell.lock().is_some())
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Ok(names)
    }

    async fn put_meta(&self, key: &str, value: Option<Bytes>) -> Result<(), StoreError> {
        let mut meta = self.meta.write();
        match value {
            Some(value) => meta.insert(key.to_owned(), value),
            None => meta.remove(key),
        };
        Ok(())
    }

    async fn load_meta(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        Ok(self
            .meta
            .read()
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    async fn persist(&self, _mode: PersistMode) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::testing::run;

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn offsets(store: &MemoryStore, q: &QueueName, from: u64) -> Vec<u64> {
        let got = store.read(q, Offset(from), usize::MAX).await.unwrap();
        got.iter().map(|r| r.0 .0).collect()
    }

    #[test]
    fn round_trip_with_increasing_offsets() {
        run(async {
            let store = MemoryStore::new(1 << 20);
            let q = QueueName::new("q");
            assert!(!store.is_durable());
            assert_eq!(
                store.append(&q, &[bytes("a"), bytes("b")]).await.unwrap(),
                [Offset(0), Offset(1)]
            );
            assert_eq!(store.append(&q, &[bytes("c")]).await.unwrap(), [Offset(2)]);
            let got = store.read(&q, Offset(1), 1).await.unwrap();
            assert_eq!(got, [(Offset(1), bytes("b"))]);
            assert_eq!(offsets(&store, &q, 0).await, [0, 1, 2]);
            assert_eq!(store.queues().await.unwrap(), [q]);
        });
    }

    #[test]
    fn released_records_are_skipped_and_free_space() {
        run(async {
            let store = MemoryStore::new(1 << 20);
            let q = QueueName::new("q");
            store
                .append(&q, &[bytes("aa"), bytes("bb"), bytes("cc")])
                .await
                .unwrap();
            assert_eq!(store.used_bytes(), 6);
            store
                .release(&q, &[Offset(1), Offset(1), Offset(7)])
                .await
                .unwrap();
            assert_eq!(offsets(&store, &q, 0).await, [0, 2]);
            assert_eq!(store.used_bytes(), 4);
            assert_eq!(store.append(&q, &[bytes("d")]).await.unwrap(), [Offset(3)]);
        });
    }

    #[test]
    fn a_full_store_refuses_the_whole_batch() {
        run(async {
            let store = MemoryStore::new(10);
            let q = QueueName::new("q");
            store.append(&q, &[bytes("12345678")]).await.unwrap();
            let err = store
                .append(&q, &[bytes("1"), bytes("234")])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Full(_)), "{err:?}");
            assert_eq!(offsets(&store, &q, 0).await, [0]);
            assert_eq!(store.used_bytes(), 8);
            store.release(&q, &[Offset(0)]).await.unwrap();
            assert_eq!(
                store.append(&q, &[bytes("1"), bytes("234")]).await.unwrap(),
                [Offset(1), Offset(2)]
            );
        });
    }

    #[test]
    fn remove_queue_frees_space_and_restarts_offsets() {
        run(async {
            let store = MemoryStore::new(100);
            let (a, b) = (QueueName::new("a"), QueueName::new("b"));
            store.append(&a, &[bytes("xyz")]).await.unwrap();
            store.append(&b, &[bytes("b")]).await.unwrap();
            store.remove_queue(&a).await.unwrap();
            assert_eq!(store.used_bytes(), 1);
            assert_eq!(store.queues().await.unwrap(), [b]);
            assert!(offsets(&store, &a, 0).await.is_empty());
            assert_eq!(
                store.append(&a, &[bytes("new")]).await.unwrap(),
                [Offset(0)]
            );
        });
    }

    #[test]
    fn metadata_by_prefix() {
        run(async {
            let store = MemoryStore::new(0);
            store.put_meta("retain/b", Some(bytes("2"))).await.unwrap();
            store.put_meta("retain/a", Some(bytes("1"))).await.unwrap();
            store.put_meta("retainer", Some(bytes("x"))).await.unwrap();
            store.put_meta("session/1", Some(bytes("s"))).await.unwrap();
            store.put_meta("retain/b", None).await.unwrap();
            let got = store.load_meta("retain/").await.unwrap();
            assert_eq!(got, [("retain/a".to_owned(), bytes("1"))]);
            assert_eq!(store.load_meta("").await.unwrap().len(), 3);
            store.persist(PersistMode::SyncAll).await.unwrap();
        });
    }

    #[test]
    fn concurrent_appends_get_distinct_offsets() {
        run(async {
            let store = Arc::new(MemoryStore::new(u64::MAX));
            let q = QueueName::new("q");
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (store, q) = (Arc::clone(&store), q.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..100 {
                        store.append(&q, &[bytes("m"), bytes("n")]).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(offsets(&store, &q, 0).await, (0..800).collect::<Vec<_>>());
        });
    }
}
