//! A small append-only file of checksummed frames: the release log of a queue and the
//! metadata log of the store are both journals.
//!
//! A journal is replayed whole on open and compacted by [`Journal::rewrite`], which writes the
//! replacement to `<path>.tmp`, syncs it, renames it over `<path>` and syncs the directory, so a
//! crash leaves either the old or the new file, never a mix.
//!
//! # Invariants
//! - Replay returns the bodies of the valid frames in write order and truncates the file at
//!   the first torn or checksum-failing frame; a frame after it is never returned.
//! - `len` is the number of bytes known to hold whole frames.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::layout::{sync_dir, tmp_path};
use super::reader::{FrameReader, Next};

/// An open journal file.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// A journal and what replay found in it.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// The journal, positioned after its last valid frame.
    pub(crate) journal: Journal,
    /// Bodies of the valid frames, oldest first.
    pub(crate) bodies: Vec<Bytes>,
    /// Whether a torn or corrupt tail was cut off.
    pub(crate) truncated: bool,
}

impl Journal {
    /// Opens (creating if missing) and replays the journal at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Replayed> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            sync_parent(path)?;
        }
        let file_len = file.metadata()?.len();
        let mut bodies = Vec::new();
        let mut reader = FrameReader::new(&file, 0, file_len);
        let valid = loop {
            match reader.next_frame()? {
                Next::Frame { body, .. } => bodies.push(body),
                Next::End => break file_len,
                Next::Bad { at } => break at,
            }
        };
        let truncated = valid < file_len;
        if truncated {
            tracing::warn!(path = %path.display(), valid, file_len, "truncating torn journal tail");
            file.set_len(valid)?;
            file.sync_all()?;
        }
        let journal = Self {
            path: path.to_owned(),
            file: Arc::new(file),
            len: valid,
        };
        Ok(Replayed {
            journal,
            bodies,
            truncated,
        })
    }

    /// Appends already framed bytes with one write (no sync).
    pub(crate) fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        self.file.write_all_at(frames, self.len)?;
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Atomically replaces the whole journal with `frames` (synced before returning).
    pub(crate) fn rewrite(&mut self, frames: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(&self.path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all_at(frames, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        sync_parent(&self.path)?;
        self.file = Arc::new(file);
        self.len = frames.len() as u64;
        Ok(())
    }

    /// `fdatasync` of the journal file.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The open file, for a sync outside the owner's lock.
    pub(crate) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Bytes of whole frames in the journal.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::record::encode_frame;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode_frame(&mut out, &[body]);
        }
        out
    }

    #[test]
    fn replays_appends_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut journal = Journal::open(&path).unwrap().journal;
        journal.append(&frames(&[b"one", b"two"])).unwrap();
        journal.append(&frames(&[b"three"])).unwrap();
        drop(journal);
        let replayed = Journal::open(&path).unwrap();
        assert_eq!(replayed.bodies, vec![&b"one"[..], b"two", b"three"]);
        assert!(!replayed.truncated);
    }

    #[test]
    fn truncates_a_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut journal = Journal::open(&path).unwrap().journal;
        journal.append(&frames(&[b"kept"])).unwrap();
        let torn = frames(&[b"torn"]);
        journal.append(&torn[..torn.len() - 2]).unwrap();
        drop(journal);
        let mut replayed = Journal::open(&path).unwrap();
        assert_eq!(replayed.bodies, vec![&b"kept"[..]]);
        assert!(replayed.truncated);
        replayed.journal.append(&frames(&[b"next"])).unwrap();
        drop(replayed);
        assert_eq!(
            Journal::open(&path).unwrap().bodies,
            vec![&b"kept"[..], b"next"]
        );
    }

    #[test]
    fn rewrite_replaces_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut journal = Journal::open(&path).unwrap().journal;
        journal.append(&frames(&[b"a", b"b", b"c"])).unwrap();
        journal.rewrite(&frames(&[b"z"])).unwrap();
        journal.append(&frames(&[b"y"])).unwrap();
        drop(journal);
        assert_eq!(Journal::open(&path).unwrap().bodies, vec![&b"z"[..], b"y"]);
        assert!(!tmp_path(&path).exists());
    }
}
