//! The disk backend: a segmented, checksummed, append-only log per queue plus a metadata log.
//!
//! # Layout
//! - [`config`]: [`DiskConfig`] and [`FsyncPolicy`].
//! - `layout`: the directory tree and the path-safe encoding of queue names.
//! - `record`: the frame format shared by every file (`[len][crc32][body]`).
//! - `reader`: sequential positioned reads of frames.
//! - `segment`: one segment file with its sparse index.
//! - `releases`: the released-offset set and the release-log format.
//! - `journal`: small append-only logs (release log, metadata log) with atomic rewrite.
//! - `queue`: one queue's segments and releases: append, read, release, reclaim.
//! - `recovery`: rebuilding queues on open, truncating torn tails.
//! - `meta`: the metadata map.
//! - `poison`: the store-wide "a write failed" flag.
//! - `syncer`: the background thread of [`FsyncPolicy::Interval`].
//!
//! # Durability
//! - `append` writes the whole batch with one `write`. Under [`FsyncPolicy::Always`] it
//!   `fdatasync`s before returning, so an acknowledged record survives `kill -9` and power
//!   loss. Under `Interval` a background thread syncs dirty files every period; under `Never`
//!   only sealing a segment syncs it. Every record reaches the kernel before `append`
//!   returns, so with any policy a process crash alone loses nothing acknowledged.
//! - `release` appends the newly released offsets to the queue's release log (one `write`,
//!   synced with the next interval sync, `persist` or compaction): a clean restart or a process
//!   crash never returns them again; a power loss may, which at-least-once delivery allows.
//! - `put_meta` appends to `meta.log`, synced like appends.
//! - If a write or sync fails, the store is poisoned (see `poison` for why) and every later
//!   write returns [`StoreError::Poisoned`]; reopening recovers from what is on disk.
//!
//! # Concurrency
//! Each queue has its own lock; the map of queues is read-locked only to find a queue and
//! write-locked only to add one, never across I/O. Appends, reads and releases of one queue
//! serialize on its lock; different queues proceed in parallel. Every call that takes a queue
//! or metadata lock (which may be held across I/O) runs on tokio's blocking pool
//! (`spawn_blocking`), so the async runtime never waits on the disk. Lock order: queue map,
//! then one queue (never two queues), or the metadata lock alone.
//!
//! # Invariants
//! - Offsets of a queue increase by one per record, from 0, and are never reused while the
//!   queue exists, even after every record is released and the store reopened.
//! - `read` returns only unreleased, checksum-valid records, in offset order.
//! - Opening the store never yields a record past a torn or corrupt frame: recovery cuts the
//!   last segment there.
//! - Only one process may open a directory at a time (not enforced: no lock file).

mod config;
mod journal;
mod layout;
mod meta;
mod poison;
mod queue;
mod reader;
mod record;
mod recovery;
mod releases;
mod segment;
mod syncer;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use polymq_core::{Offset, PersistMode, QueueName, Store, StoreError};

pub use config::{
    DiskConfig, FsyncPolicy, DEFAULT_FSYNC_INTERVAL, DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SEGMENT_BYTES,
};

use layout::{encode_name, sync_dir, MAX_ENCODED_NAME, META_LOG, QUEUES_DIR, QUEUE_SUFFIX};
use meta::MetaLog;
use poison::Poison;
use queue::{QueueLog, QueueParams};
use recovery::{find_queues, open_queue};
use syncer::Syncer;

/// One queue's state: `None` until the queue is created on disk (or after it is removed).
type QueueCell = Mutex<Option<QueueLog>>;

/// A durable [`Store`] on the local file system.
pub struct DiskStore {
    shared: Arc<Shared>,
    /// Stops (and joins) the interval sync thread when the store is dropped.
    _syncer: Option<Syncer>,
}

/// What the store's methods and the sync thread share.
struct Shared {
    config: DiskConfig,
    queues_dir: PathBuf,
    queues: RwLock<HashMap<QueueName, Arc<QueueCell>>>,
    meta: Mutex<MetaLog>,
    params: QueueParams,
    /// Numbers removed-queue directories apart.
    removals: AtomicU64,
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.shared.config.dir)
            .field("fsync", &self.shared.config.fsync)
            .field("queues", &self.shared.queues.read().len())
            .finish_non_exhaustive()
    }
}

impl DiskStore {
    /// Opens (creating if missing) the store in `config.dir` and recovers every queue.
    ///
    /// Blocks on file I/O: call it at startup, or from a blocking context.
    pub fn open(config: DiskConfig) -> Result<Self, StoreError> {
        let queues_dir = config.dir.join(QUEUES_DIR);
        fs::create_dir_all(&queues_dir)?;
        sync_dir(&config.dir)?;
        let params = QueueParams {
            fsync: config.fsync,
            segment_bytes: config.segment_bytes,
            poison: Poison::default(),
        };
        let mut queues = HashMap::new();
        for (name, dir) in find_queues(&queues_dir)? {
            let log = open_queue(dir, name.clone(), params.clone())?;
            queues.insert(name, Arc::new(Mutex::new(Some(log))));
        }
        let meta = MetaLog::open(&config.dir.join(META_LOG))?;
        let shared = Arc::new(Shared {
            config,
            queues_dir,
            queues: RwLock::new(queues),
            meta: Mutex::new(meta),
            params,
            removals: AtomicU64::new(0),
        });
        let syncer = match shared.config.fsync {
            FsyncPolicy::Interval(period) => {
                let shared = Arc::clone(&shared);
                // A failure is logged and poisons the store where it happens.
                Some(Syncer::start(period, move || {
                    drop(shared.sync_dirty(false))
                })?)
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Self {
            shared,
            _syncer: syncer,
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &DiskConfig {
        &self.shared.config
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || f(&shared)).await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(StoreError::Io(io::Error::other(err))),
        }
    }

    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        let max = self.shared.config.max_record_bytes;
        if size > max {
            return Err(StoreError::TooLarge { size, max });
        }
        Ok(())
    }
}

impl Shared {
    /// The queue's cell, if the queue was ever used.
    fn find(&self, name: &QueueName) -> Option<Arc<QueueCell>> {
        self.queues.read().get(name).cloned()
    }

    /// The queue's cell, added (not yet created on disk) if missing.
    fn find_or_add(&self, name: &QueueName) -> Arc<QueueCell> {
        if let Some(cell) = self.find(name) {
            return cell;
        }
        Arc::clone(self.queues.write().entry(name.clone()).or_default())
    }

    fn queue_dir(&self, name: &QueueName) -> Result<PathBuf, StoreError> {
        let encoded = encode_name(name.as_str()).ok_or(StoreError::TooLarge {
            size: name.as_str().len(),
            max: MAX_ENCODED_NAME,
        })?;
        Ok(self.queues_dir.join(format!("{encoded}{QUEUE_SUFFIX}")))
    }

    fn append(&self, name: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        let cell = self.find_or_add(name);
        let mut slot = cell.lock();
        let log = match slot.as_mut() {
            Some(log) => log,
            None => {
                let dir = self.queue_dir(name)?;
                slot.insert(QueueLog::create(dir, name.clone(), self.params.clone())?)
            }
        };
        log.append(batch)
    }

    fn with_queue<T: Default>(
        &self,
        name: &QueueName,
        f: impl FnOnce(&mut QueueLog) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(cell) = self.find(name) else {
            return Ok(T::default());
        };
        let mut slot = cell.lock();
        match slot.as_mut() {
            Some(log) => f(log),
            None => Ok(T::default()),
        }
    }

    fn remove_queue(&self, name: &QueueName) -> Result<(), StoreError> {
        self.params.poison.check()?;
        let Some(cell) = self.find(name) else {
            return Ok(());
        };
        let removed = {
            let mut slot = cell.lock();
            let Some(log) = slot.take() else {
                return Ok(());
            };
            let n = self.removals.fetch_add(1, Ordering::Relaxed);
            let encoded = encode_name(name.as_str()).unwrap_or_default();
            let removed = self
                .queues_dir
                .join(format!("{encoded}.{n}{}", layout::REMOVED_SUFFIX));
            if let Err(err) = fs::rename(log.dir(), &removed) {
                *slot = Some(log);
                return Err(err.into());
            }
            self.params.poison.guard(sync_dir(&self.queues_dir))?;
            removed
        };
        fs::remove_dir_all(removed)?;
        Ok(())
    }

    fn queue_names(&self) -> Vec<QueueName> {
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
        names
    }

    /// Syncs every file written since the last sync (`sync_all` and directories when `all`).
    fn sync_dirty(&self, all: bool) -> Result<(), StoreError> {
        let poison = &self.params.poison;
        poison.check()?;
        let cells: Vec<Arc<QueueCell>> = self.queues.read().values().cloned().collect();
        let mut files = Vec::new();
        for cell in cells {
            if let Some(log) = cell.lock().as_mut() {
                files.extend(log.take_dirty());
            }
        }
        files.extend(self.meta.lock().take_dirty());
        for file in files {
            poison.guard(if all {
                file.sync_all()
            } else {
                file.sync_data()
            })?;
        }
        if all {
            poison.guard(sync_dir(&self.queues_dir))?;
            poison.guard(sync_dir(&self.config.dir))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for DiskStore {
    fn is_durable(&self) -> bool {
        true
    }

    async fn append(&self, queue: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        self.shared.params.poison.check()?;
        for record in batch {
            self.check_size(record.len())?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (queue, batch) = (queue.clone(), batch.to_vec());
        self.blocking(move |shared| shared.append(&queue, &batch))
            .await
    }

    async fn read(
        &self,
        queue: &QueueName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<(Offset, Bytes)>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let queue = queue.clone();
        self.blocking(move |shared| shared.with_queue(&queue, |log| log.read(from.0, max)))
            .await
    }

    async fn release(&self, queue: &QueueName, acked: &[Offset]) -> Result<(), StoreError> {
        self.shared.params.poison.check()?;
        if acked.is_empty() {
            return Ok(());
        }
        let (queue, acked) = (queue.clone(), acked.to_vec());
        self.blocking(move |shared| shared.with_queue(&queue, |log| log.release(&acked)))
            .await
    }

    async fn remove_queue(&self, queue: &QueueName) -> Result<(), StoreError> {
        let queue = queue.clone();
        self.blocking(move |shared| shared.remove_queue(&queue))
            .await
    }

    async fn queues(&self) -> Result<Vec<QueueName>, StoreError> {
        self.blocking(|shared| Ok(shared.queue_names())).await
    }

    async fn put_meta(&self, key: &str, value: Option<Bytes>) -> Result<(), StoreError> {
        self.shared.params.poison.check()?;
        self.check_size(key.len() + value.as_ref().map_or(0, Bytes::len))?;
        let key = key.to_owned();
        self.blocking(move |shared| {
            let sync = shared.config.fsync == FsyncPolicy::Always;
            shared
                .params
                .poison
                .guard(shared.meta.lock().put(&key, value, sync))
        })
        .await
    }

    async fn load_meta(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |shared| Ok(shared.meta.lock().load(&prefix)))
            .await
    }

    async fn persist(&self, mode: PersistMode) -> Result<(), StoreError> {
        match mode {
            PersistMode::Buffer => self.shared.params.poison.check(),
            PersistMode::SyncData => self.blocking(|shared| shared.sync_dirty(false)).await,
            PersistMode::SyncAll => self.blocking(|shared| shared.sync_dirty(true)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::testing::run;

    fn config(dir: &Path, fsync: FsyncPolicy) -> DiskConfig {
        DiskConfig {
            fsync,
            segment_bytes: 256,
            ..DiskConfig::new(dir)
        }
    }

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueName::new("nsq/orders/billing");
        run(async {
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
            assert!(store.is_durable());
            let offsets = store.append(&q, &[bytes("a"), bytes("b")]).await.unwrap();
            assert_eq!(offsets, [Offset(0), Offset(1)]);
            assert_eq!(store.append(&q, &[bytes("c")]).await.unwrap(), [Offset(2)]);
            store.release(&q, &[Offset(1)]).await.unwrap();
            drop(store);

            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
            assert_eq!(store.queues().await.unwrap(), std::slice::from_ref(&q));
            let got = store.read(&q, Offset(0), 10).await.unwrap();
            assert_eq!(got, [(Offset(0), bytes("a")), (Offset(2), bytes("c"))]);
            assert_eq!(
                store.read(&q, Offset(1), 1).await.unwrap(),
                [(Offset(2), bytes("c"))]
            );
            assert_eq!(store.append(&q, &[bytes("d")]).await.unwrap(), [Offset(3)]);
        });
        assert!(dir
            .path()
            .join("queues/nsq%2Forders%2Fbilling.queue")
            .is_dir());
    }

    #[test]
    fn unknown_queues_read_empty_and_are_not_created() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
            let q = QueueName::new("nobody");
            assert!(store.read(&q, Offset(0), 10).await.unwrap().is_empty());
            store.release(&q, &[Offset(0)]).await.unwrap();
            store.remove_queue(&q).await.unwrap();
            assert!(store.queues().await.unwrap().is_empty());
        });
    }

    #[test]
    fn removed_queue_restarts_at_zero_and_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (QueueName::new("a"), QueueName::new("b"));
        run(async {
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
            store.append(&a, &[bytes("1"), bytes("2")]).await.unwrap();
            store.append(&b, &[bytes("x")]).await.unwrap();
            store.remove_queue(&a).await.unwrap();
            assert_eq!(store.queues().await.unwrap(), std::slice::from_ref(&b));
            assert!(store.read(&a, Offset(0), 10).await.unwrap().is_empty());
            drop(store);
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
            assert_eq!(store.queues().await.unwrap(), std::slice::from_ref(&b));
            assert_eq!(
                store.append(&a, &[bytes("new")]).await.unwrap(),
                [Offset(0)]
            );
            assert_eq!(
                store.read(&a, Offset(0), 10).await.unwrap(),
                [(Offset(0), bytes("new"))]
            );
        });
    }

    #[test]
    fn metadata_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
            store.put_meta("retain/b", Some(bytes("2"))).await.unwrap();
            store.put_meta("retain/a", Some(bytes("1"))).await.unwrap();
            store.put_meta("session/s", Some(bytes("s"))).await.unwrap();
            store.put_meta("retain/b", None).await.unwrap();
            drop(store);
            let store = DiskStore::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
            let retained = store.load_meta("retain/").await.unwrap();
            assert_eq!(retained, [("retain/a".to_owned(), bytes("1"))]);
            assert_eq!(store.load_meta("").await.unwrap().len(), 2);
        });
    }

    #[test]
    fn oversized_records_and_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let cfg = DiskConfig {
                max_record_bytes: 4,
                ..config(dir.path(), FsyncPolicy::Never)
            };
            let store = DiskStore::open(cfg).unwrap();
            let q = QueueName::new("q");
            let err = store
                .append(&q, &[bytes("1234"), bytes("12345")])
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::TooLarge { size: 5, max: 4 }),
                "{err:?}"
            );
            assert!(
                store.read(&q, Offset(0), 10).await.unwrap().is_empty(),
                "batch is atomic"
            );
            let err = store.put_meta("key", Some(bytes("vv"))).await.unwrap_err();
            assert!(
                matches!(err, StoreError::TooLarge { size: 5, max: 4 }),
                "{err:?}"
            );
            let long = QueueName::new(&"/".repeat(100));
            let err = store.append(&long, &[bytes("x")]).await.unwrap_err();
            assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
            assert!(store.queues().await.unwrap().is_empty());
        });
    }

    #[test]
    fn persist_and_interval_sync_run() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let policy = FsyncPolicy::Interval(Duration::from_millis(5));
            let store = DiskStore::open(config(dir.path(), policy)).unwrap();
            let q = QueueName::new("q");
            store.append(&q, &[bytes("x")]).await.unwrap();
            store.put_meta("k", Some(bytes("v"))).await.unwrap();
            for mode in [
                PersistMode::Buffer,
                PersistMode::SyncData,
                PersistMode::SyncAll,
            ] {
                store.persist(mode).await.unwrap();
            }
            assert!(format!("{store:?}").contains("Interval"));
        });
    }

    #[test]
    fn queues_on_separate_locks_append_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = Arc::new(DiskStore::open(config(dir.path(), FsyncPolicy::Never)).unwrap());
            let mut tasks = Vec::new();
            for t in 0..8 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let q = QueueName::new(&format!("q{}", t % 4));
                    for i in 0..50 {
                        store
                            .append(&q, &[bytes(&format!("{t}-{i}"))])
                            .await
                            .unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            for q in 0..4 {
                let got = store
                    .read(&QueueName::new(&format!("q{q}")), Offset(0), 1000)
                    .await;
                let offsets: Vec<u64> = got.unwrap().iter().map(|r| r.0 .0).collect();
                assert_eq!(offsets, (0..100).collect::<Vec<_>>());
            }
        });
    }
}
