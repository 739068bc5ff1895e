//! The directory layout of a disk store and the path-safe encoding of queue names.
//!
//! ```text
//! <dir>/meta.log                                  metadata log (see `meta`)
//! <dir>/queues/<name>.queue/<base:020>.seg         the active segment; <base> = its first offset
//! <dir>/queues/<name>.queue/<base:020>-<end:020>.seg   a sealed segment holding <base>..<end>
//! <dir>/queues/<name>.queue/releases.log           release log (see `releases`)
//! <dir>/queues/<name>.<n>.removed/                 a removed queue, deleted at the next open
//! *.tmp                                            an interrupted rewrite, deleted at the next open
//! ```
//!
//! `<name>` is the queue name with every byte outside `[A-Za-z0-9_-]` written as `%XX`
//! (upper-case hex), so `nsq/orders/billing` is stored as `nsq%2Forders%2Fbilling.queue`.
//!
//! # Invariants
//! - [`decode_name`] inverts [`encode_name`]; an encoded name never contains `.`, so the
//!   suffixes above cannot collide with a name.
//! - An encoded name is at most [`MAX_ENCODED_NAME`] bytes, within every common file system's
//!   255-byte limit once a suffix is added.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Name of the metadata log in the store's directory.
pub(crate) const META_LOG: &str = "meta.log";
/// Directory holding one directory per queue.
pub(crate) const QUEUES_DIR: &str = "queues";
/// Name of a queue's release log.
pub(crate) const RELEASE_LOG: &str = "releases.log";
/// Suffix of a live queue directory.
pub(crate) const QUEUE_SUFFIX: &str = ".queue";
/// Suffix of a removed queue directory awaiting deletion.
pub(crate) const REMOVED_SUFFIX: &str = ".removed";
/// Suffix of a file being rewritten.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a segment file.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Longest encoded queue name accepted.
pub(crate) const MAX_ENCODED_NAME: usize = 200;

/// Path-safe form of a queue name; `None` when it would exceed [`MAX_ENCODED_NAME`].
pub(crate) fn encode_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
        if out.len() > MAX_ENCODED_NAME {
            return None;
        }
    }
    Some(out)
}

/// The queue name an [`encode_name`] output stands for; `None` if it is not one.
pub(crate) fn decode_name(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let (hex, tail) = tail.split_first_chunk::<2>()?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail;
        } else if first.is_ascii_alphanumeric() || first == b'_' || first == b'-' {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// File name of the active segment whose first record has offset `base`.
pub(crate) fn segment_file(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// File name of the sealed segment holding offsets `base..end`.
pub(crate) fn sealed_segment_file(base: u64, end: u64) -> String {
    format!("{base:020}-{end:020}{SEGMENT_SUFFIX}")
}

/// The base offset, and for a sealed segment the end offset, a segment file name stands for.
pub(crate) fn parse_segment_file(name: &str) -> Option<(u64, Option<u64>)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    match stem.split_once('-') {
        None => Some((parse_offset(stem)?, None)),
        Some((base, end)) => Some((parse_offset(base)?, Some(parse_offset(end)?))),
    }
}

fn parse_offset(digits: &str) -> Option<u64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `path` with [`TMP_SUFFIX`] appended, where a rewrite is staged.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    PathBuf::from(tmp)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_separators_and_dots() {
        assert_eq!(
            encode_name("nsq/orders/billing").unwrap(),
            "nsq%2Forders%2Fbilling"
        );
        assert_eq!(encode_name("../x.y").unwrap(), "%2E%2E%2Fx%2Ey");
        assert_eq!(encode_name("").unwrap(), "");
    }

    #[test]
    fn rejects_overlong_names() {
        assert!(encode_name(&"a".repeat(MAX_ENCODED_NAME)).is_some());
        assert!(encode_name(&"a".repeat(MAX_ENCODED_NAME + 1)).is_none());
        assert!(encode_name(&"/".repeat(MAX_ENCODED_NAME / 3 + 1)).is_none());
    }

    #[test]
    fn rejects_foreign_directory_names() {
        assert_eq!(decode_name("a.b"), None);
        assert_eq!(decode_name("%2"), None);
        assert_eq!(decode_name("%zz"), None);
    }

    #[test]
    fn segment_names_sort_by_offset() {
        assert_eq!(segment_file(42), "00000000000000000042.seg");
        assert_eq!(
            sealed_segment_file(4, 8),
            "00000000000000000004-00000000000000000008.seg"
        );
        assert_eq!(
            parse_segment_file(&segment_file(u64::MAX)),
            Some((u64::MAX, None))
        );
        assert_eq!(
            parse_segment_file(&sealed_segment_file(4, 8)),
            Some((4, Some(8)))
        );
        assert_eq!(parse_segment_file("42.seg"), None);
        assert_eq!(parse_segment_file("00000000000000000004-8.seg"), None);
        assert!(segment_file(9) < segment_file(10));
        assert!(sealed_segment_file(9, 10) < segment_file(10));
    }

    proptest! {
        #[test]
        fn name_round_trip(name in "\\PC{0,40}") {
            if let Some(encoded) = encode_name(&name) {
                prop_assert!(!encoded.contains('.'));
                prop_assert_eq!(decode_name(&encoded), Some(name));
            }
        }
    }
}
