//! The storage interface the core's durable queues and retained messages are written through.
//!
//! `trait Store` is defined here and implemented in the `polymq-storage` crate (memory, disk).
//! Only the core calls it, per batch and per queue, never per subscriber; frontends never do.
//!
//! # Model
//! - A queue is an append-only sequence of opaque records addressed by [`Offset`]s that increase
//!   by one per record, starting at 0 for a new queue.
//! - [`Store::release`] marks records done (acked). A backend may reclaim a segment once every
//!   record in it is released. [`Store::read`] never returns a released record, except after a
//!   crash that happened before the release was persisted (at-least-once).
//! - The metadata space is a small key → value map (retained messages, session state,
//!   pause flags): [`Store::put_meta`] with `None` deletes.
//!
//! # Invariants
//! - `append` returns only after the batch is durable under the store's fsync policy; the caller
//!   acknowledges a publisher only after `append` returned `Ok`.
//! - `read` never returns a record whose checksum failed; recovery truncates a torn tail.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// Position of a record in one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Offset(pub u64);

/// Name of a durable queue in the store, e.g. `nsq/orders/billing`. Path-safe encoding is the
/// backend's business.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Wraps a queue name.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueName({})", &*self.0)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far [`Store::persist`] pushes buffered writes (fjall's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
    /// Flush user-space buffers to the OS; survives a process crash, not a power loss.
    Buffer,
    /// `fdatasync`: data survives a power loss.
    SyncData,
    /// `fsync`: data and metadata survive a power loss.
    SyncAll,
}

/// What went wrong in a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error from the operating system.
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A record failed its checksum or framing outside the recoverable tail.
    #[error("corrupt record in {queue} at offset {offset}")]
    Corrupt {
        /// The queue holding the record.
        queue: String,
        /// The record's offset.
        offset: u64,
    },
    /// The store is full under its configured limits.
    #[error("store full: {0}")]
    Full(String),
    /// A previous write or sync failed; no further writes are accepted.
    #[error("store poisoned by an earlier failed write")]
    Poisoned,
    /// A record or key is larger than the backend accepts.
    #[error("record too large: {size} > {max}")]
    TooLarge {
        /// Size of the record.
        size: usize,
        /// The backend's limit.
        max: usize,
    },
}

/// Durable storage for queues and metadata. Called per batch, never per subscriber.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// True when records survive a restart (disk); the core skips the store for queue bodies
    /// it already holds in memory when this is false.
    fn is_durable(&self) -> bool;

    /// Appends a batch to `queue` (created on first use); returns one offset per record.
    async fn append(&self, queue: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError>;

    /// Reads up to `max` unreleased records with offset ≥ `from`, in order.
    async fn read(
        &self,
        queue: &QueueName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<(Offset, Bytes)>, StoreError>;

    /// Marks records done; fully released segments may be reclaimed.
    async fn release(&self, queue: &QueueName, acked: &[Offset]) -> Result<(), StoreError>;

    /// Deletes a queue and all its records.
    async fn remove_queue(&self, queue: &QueueName) -> Result<(), StoreError>;

    /// Every queue that holds records or was created and not removed.
    async fn queues(&self) -> Result<Vec<QueueName>, StoreError>;

    /// Sets (`Some`) or deletes (`None`) one metadata key.
    async fn put_meta(&self, key: &str, value: Option<Bytes>) -> Result<(), StoreError>;

    /// Every metadata entry whose key starts with `prefix`, sorted by key.
    async fn load_meta(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError>;

    /// Pushes buffered writes down as far as `mode` says.
    async fn persist(&self, mode: PersistMode) -> Result<(), StoreError>;
}
