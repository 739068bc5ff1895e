//! polymq-storage: the implementations of [`polymq_core::Store`].
//!
//! # Layout
//! - [`memory`]: [`MemoryStore`], bounded and in-process; refuses a batch when full.
//! - [`disk`]: [`DiskStore`], a segmented, checksummed append-only log per queue with an
//!   fsync policy, release log, segment reclamation and torn-tail recovery.
//! - [`config`]: [`StorageConfig`], the `[storage]` configuration section.
//! - [`open`]: builds the configured backend.
//!
//! # Invariants
//! - Both backends give the same answers to the same calls (the disk backend is checked
//!   against the memory backend by a model test); only [`Store::is_durable`] and survival of a
//!   restart differ.
//! - Depends on `polymq-core` only; nothing but the broker binary depends on this crate.

pub mod config;
pub mod disk;
pub mod memory;

use std::sync::Arc;

use polymq_core::{Store, StoreError};

pub use config::{Backend, StorageConfig};
pub use disk::{DiskConfig, DiskStore, FsyncPolicy};
pub use memory::MemoryStore;

/// Opens the backend `config` selects. Blocks on file I/O for the disk backend (recovery).
pub fn open(config: &StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.backend {
        Backend::Memory => Arc::new(MemoryStore::new(config.memory_max_bytes)),
        Backend::Disk => Arc::new(DiskStore::open(config.disk_config())?),
    })
}

/// Helpers shared by the backends' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::future::Future;
    use std::time::Duration;

    /// Runs `f` on a fresh current-thread runtime, failing the test after 30 s.
    pub(crate) fn run<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .unwrap()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_the_configured_backend() {
        let memory = open(&StorageConfig::default()).unwrap();
        assert!(!memory.is_durable());
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            backend: Backend::Disk,
            data_dir: dir.path().join("data"),
            ..StorageConfig::default()
        };
        let disk = open(&config).unwrap();
        assert!(disk.is_durable());
        assert!(dir.path().join("data/queues").is_dir());
    }
}
