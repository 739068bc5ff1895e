//! The metadata space of a disk store: an in-memory sorted map backed by one
//! [journal](super::journal), `meta.log`.
//!
//! ```text
//! body = op u8 (1 = put, 0 = delete) | key_len u32 LE | key (UTF-8) | value (rest of body)
//! ```
//!
//! Every `put_meta` appends one frame; the log is rewritten from the map when it grows past
//! twice the size of the live entries.
//!
//! # Invariants
//! - The map equals the replay of the log, in order.
//! - A frame that passed its checksum but does not parse fails the open (it is not a torn tail,
//!   it is a bug or tampering, and guessing would lose metadata).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};

use super::journal::Journal;
use super::record::{encode_frame, FRAME_HEADER};

const PUT: u8 = 1;
const DELETE: u8 = 0;
/// Log size below which it is never compacted.
const COMPACT_MIN_BYTES: u64 = 64 * 1024;

/// The metadata map and its log.
#[derive(Debug)]
pub(crate) struct MetaLog {
    journal: Journal,
    entries: BTreeMap<String, Bytes>,
    /// Bytes a compacted log would take.
    live_bytes: u64,
    /// Written since the last sync.
    dirty: bool,
}

impl MetaLog {
    /// Opens and replays the log at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let replayed = Journal::open(path)?;
        let mut log = Self {
            journal: replayed.journal,
            entries: BTreeMap::new(),
            live_bytes: 0,
            dirty: false,
        };
        for body in replayed.bodies {
            let (key, value) = decode(body).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "malformed meta frame")
            })?;
            log.apply(key, value);
        }
        Ok(log)
    }

    /// Logs and applies one put (`Some`) or delete (`None`); syncs when `sync`.
    pub(crate) fn put(&mut self, key: &str, value: Option<Bytes>, sync: bool) -> io::Result<()> {
        let mut frame = Vec::new();
        encode(&mut frame, key, value.as_ref());
        self.journal.append(&frame)?;
        if sync {
            self.journal.sync()?;
        } else {
            self.dirty = true;
        }
        self.apply(key.to_owned(), value);
        let log = self.journal.len();
        if log > COMPACT_MIN_BYTES && log > 2 * self.live_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Entries whose key starts with `prefix`, sorted by key.
    pub(crate) fn load(&self, prefix: &str) -> Vec<(String, Bytes)> {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// The log file if it was written since the last call.
    pub(crate) fn take_dirty(&mut self) -> Option<Arc<File>> {
        std::mem::take(&mut self.dirty).then(|| self.journal.file())
    }

    fn apply(&mut self, key: String, value: Option<Bytes>) {
        if let Some(old) = self.entries.remove(&key) {
            self.live_bytes -= entry_bytes(&key, &old);
        }
        if let Some(value) = value {
            self.live_bytes += entry_bytes(&key, &value);
            self.entries.insert(key, value);
        }
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut frames = Vec::with_capacity(usize::try_from(self.live_bytes).unwrap_or(0));
        for (key, value) in &self.entries {
            encode(&mut frames, key, Some(value));
        }
        self.journal.rewrite(&frames)
    }
}

fn entry_bytes(key: &str, value: &Bytes) -> u64 {
    (FRAME_HEADER + 5 + key.len() + value.len()) as u64
}

fn encode(out: &mut Vec<u8>, key: &str, value: Option<&Bytes>) {
    let op = [if value.is_some() { PUT } else { DELETE }];
    let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes();
    let value: &[u8] = value.map_or(&[], |v| v);
    encode_frame(out, &[&op, &key_len, key.as_bytes(), value]);
}

fn decode(mut body: Bytes) -> Option<(String, Option<Bytes>)> {
    if body.remaining() < 5 {
        return None;
    }
    let op = body.get_u8();
    let key_len = body.get_u32_le() as usize;
    if body.remaining() < key_len {
        return None;
    }
    let key = String::from_utf8(body.split_to(key_len).to_vec()).ok()?;
    match op {
        PUT => Some((key, Some(body))),
        DELETE if body.is_empty() => Some((key, None)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_deletes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.log");
        let mut log = MetaLog::open(&path).unwrap();
        log.put("retain/a", Some(Bytes::from_static(b"1")), false)
            .unwrap();
        log.put("retain/b", Some(Bytes::from_static(b"2")), true)
            .unwrap();
        log.put("session/x", Some(Bytes::from_static(b"s")), false)
            .unwrap();
        log.put("retain/a", None, false).unwrap();
        log.put("retain/b", Some(Bytes::new()), false).unwrap();
        drop(log);
        let log = MetaLog::open(&path).unwrap();
        assert_eq!(
            log.load("retain/"),
            vec![("retain/b".to_owned(), Bytes::new())]
        );
        assert_eq!(log.load("").len(), 2);
        assert!(log.load("zzz").is_empty());
    }

    #[test]
    fn overwrites_compact_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.log");
        let mut log = MetaLog::open(&path).unwrap();
        for i in 0..10_000u32 {
            log.put("k", Some(Bytes::from(i.to_le_bytes().to_vec())), false)
                .unwrap();
        }
        assert!(log.journal.len() <= COMPACT_MIN_BYTES + 64);
        drop(log);
        let value = 9_999u32.to_le_bytes().to_vec();
        assert_eq!(
            MetaLog::open(&path).unwrap().load("k"),
            vec![("k".to_owned(), value.into())]
        );
    }

    #[test]
    fn malformed_bodies_do_not_decode() {
        assert_eq!(decode(Bytes::from_static(&[1, 9, 0, 0, 0, b'a'])), None);
        assert_eq!(
            decode(Bytes::from_static(&[0, 1, 0, 0, 0, b'a', b'v'])),
            None
        );
        assert_eq!(decode(Bytes::from_static(&[7, 0, 0, 0, 0])), None);
        assert_eq!(
            decode(Bytes::from_static(&[0, 1, 0, 0, 0, b'a'])),
            Some(("a".into(), None))
        );
    }
}
