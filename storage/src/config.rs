//! The `[storage]` section of the broker's configuration.
//!
//! ```toml
//! [storage]
//! backend = "memory"            # or "disk"
//! data_dir = "./data"
//! fsync = "interval"            # "always" | "interval" | "never" (disk only)
//! fsync_interval_ms = 2000      # period of "interval"
//! segment_bytes = 67108864      # 64 MiB
//! max_record_bytes = 33554432   # 32 MiB
//! memory_max_bytes = 1073741824 # 1 GiB
//! ```
//!
//! # Invariants
//! - Every field has a default, so an empty section (or none) is valid; unknown keys are
//!   rejected.
//! - `fsync` is a word without a period; [`StorageConfig::disk_config`] combines it with
//!   `fsync_interval_ms`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::disk::{DiskConfig, FsyncPolicy, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES};

/// Default bound of the memory backend: 1 GiB of record payload.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Which [`Store`](polymq_core::Store) implementation backs the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// [`MemoryStore`](crate::MemoryStore): bounded, lost on restart.
    #[default]
    Memory,
    /// [`DiskStore`](crate::DiskStore): segmented log under `data_dir`.
    Disk,
}

/// Storage settings (`[storage]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"memory"` (default) or `"disk"`.
    pub backend: Backend,
    /// Directory of the disk backend, created if missing. Default `./data`.
    pub data_dir: PathBuf,
    /// When the disk backend forces appends to stable storage: `"always"` (before every
    /// append returns; nothing acknowledged is lost even on power loss), `"interval"` (a
    /// background sync every `fsync_interval_ms`; survives `kill -9`, a power loss may lose one
    /// period) or `"never"`. Default `"interval"`, like nsqd's 2 s sync timeout.
    pub fsync: FsyncPolicy,
    /// Period of `fsync = "interval"`, in milliseconds. Default 2000.
    pub fsync_interval_ms: u64,
    /// Size at which the disk backend seals a segment and starts the next; a segment is
    /// deleted once all its records are released. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest record (or metadata key + value) the disk backend accepts. Default 32 MiB.
    pub max_record_bytes: usize,
    /// Bound of the memory backend in bytes of record payload; a batch that would cross it is
    /// refused (`StoreError::Full`), nothing is evicted. Default 1 GiB.
    pub memory_max_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            data_dir: PathBuf::from("./data"),
            fsync: FsyncPolicy::default(),
            fsync_interval_ms: 2000,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
        }
    }
}

impl StorageConfig {
    /// The disk backend's settings, with `fsync_interval_ms` applied to `"interval"`.
    pub fn disk_config(&self) -> DiskConfig {
        let fsync = match self.fsync {
            FsyncPolicy::Interval(_) => {
                FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms.max(1)))
            }
            other => other,
        };
        DiskConfig {
            dir: self.data_dir.clone(),
            fsync,
            segment_bytes: self.segment_bytes,
            max_record_bytes: self.max_record_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_takes_defaults() {
        let config: StorageConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, StorageConfig::default());
        assert_eq!(config.backend, Backend::Memory);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        let disk = config.disk_config();
        assert_eq!(disk.fsync, FsyncPolicy::Interval(Duration::from_secs(2)));
        assert_eq!(disk.segment_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn words_and_interval_combine() {
        let json =
            r#"{"backend":"disk","fsync":"interval","fsync_interval_ms":250,"data_dir":"/x"}"#;
        let config: StorageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.backend, Backend::Disk);
        let disk = config.disk_config();
        assert_eq!(
            disk.fsync,
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
        assert_eq!(disk.dir, PathBuf::from("/x"));
        let always: StorageConfig = serde_json::from_str(r#"{"fsync":"always"}"#).unwrap();
        assert_eq!(always.disk_config().fsync, FsyncPolicy::Always);
    }

    #[test]
    fn unknown_keys_and_words_are_rejected() {
        assert!(serde_json::from_str::<StorageConfig>(r#"{"fsynk":"always"}"#).is_err());
        assert!(serde_json::from_str::<StorageConfig>(r#"{"backend":"Disk"}"#).is_err());
        assert!(serde_json::from_str::<StorageConfig>(r#"{"fsync":"sometimes"}"#).is_err());
    }
}
