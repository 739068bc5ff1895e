//! Settings of a [`DiskStore`](super::DiskStore): directory, fsync policy, segment and record
//! sizes.
//!
//! # Invariants
//! - [`FsyncPolicy`] (de)serializes as the lowercase words `"always"`, `"interval"` and
//!   `"never"`. The word carries no duration: `"interval"` deserializes to
//!   [`DEFAULT_FSYNC_INTERVAL`], and a configuration that wants another period sets it in a
//!   separate field (`StorageConfig::fsync_interval_ms`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Period of [`FsyncPolicy::Interval`] when none is given: nsqd's `--sync-timeout` (2 s).
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Default size at which a segment is sealed and a new one started: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Default largest record (or metadata key + value) accepted: 32 MiB, above every protocol's
/// default message limit (MQTT's 16 MiB packet being the largest) plus envelope overhead.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 32 * 1024 * 1024;

/// When appended data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before every `append` and `put_meta` returns: an acknowledged record
    /// survives `kill -9` and power loss.
    Always,
    /// A background thread syncs dirty files every period. Survives `kill -9` (the data is in
    /// the page cache); a power loss may lose up to one period of acknowledged records.
    Interval(Duration),
    /// Never sync (except when a segment is sealed); the operating system decides.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::Interval(DEFAULT_FSYNC_INTERVAL)
    }
}

/// The configuration words of [`FsyncPolicy`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FsyncWord {
    Always,
    Interval,
    Never,
}

impl Serialize for FsyncPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Always => FsyncWord::Always,
            Self::Interval(_) => FsyncWord::Interval,
            Self::Never => FsyncWord::Never,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match FsyncWord::deserialize(deserializer)? {
            FsyncWord::Always => Self::Always,
            FsyncWord::Interval => Self::Interval(DEFAULT_FSYNC_INTERVAL),
            FsyncWord::Never => Self::Never,
        })
    }
}

/// Settings of a disk store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Directory holding the store (created if missing).
    pub dir: PathBuf,
    /// When appends reach stable storage.
    pub fsync: FsyncPolicy,
    /// Size at which the active segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// Largest record, or metadata key + value, accepted ([`StoreError::TooLarge`] above).
    ///
    /// [`StoreError::TooLarge`]: polymq_core::StoreError::TooLarge
    pub max_record_bytes: usize,
}

impl DiskConfig {
    /// Defaults (fsync every 2 s, 64 MiB segments, 32 MiB records) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_words() {
        let parse = |s: &str| serde_json::from_str::<FsyncPolicy>(s).unwrap();
        assert_eq!(parse("\"always\""), FsyncPolicy::Always);
        assert_eq!(
            parse("\"interval\""),
            FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL)
        );
        assert_eq!(parse("\"never\""), FsyncPolicy::Never);
        assert!(serde_json::from_str::<FsyncPolicy>("\"Always\"").is_err());
        let word = serde_json::to_string(&FsyncPolicy::Interval(Duration::from_millis(5))).unwrap();
        assert_eq!(word, "\"interval\"");
    }
}
