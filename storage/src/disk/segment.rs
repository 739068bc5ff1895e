//! One segment file of a queue's log: a run of consecutive records starting at `base`.
//!
//! A segment keeps a sparse in-memory index (one `(offset, position)` entry per
//! [`INDEX_STRIDE`] bytes) so a read seeks close to its first record and scans forward. The
//! active segment's index is built as it is appended to; a sealed segment found on open is
//! indexed lazily, by one verifying scan, on its first read.
//!
//! # Invariants
//! - Records in `[0, len)` of the file are whole, checksum-valid and numbered `base..end`
//!   without gaps; bytes past `len` (a failed write) are never read.
//! - A read never returns a record that fails its checksum: it returns
//!   [`StoreError::Corrupt`] instead.
//! - `released` counts the released offsets in `base..end`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use polymq_core::{Offset, QueueName, StoreError};

use super::layout::{sealed_segment_file, segment_file};
use super::reader::{FrameReader, Next};
use super::record::split_record;
use super::releases::ReleaseSet;

/// Bytes between two entries of the sparse index.
const INDEX_STRIDE: u64 = 4096;

/// Sparse map from offsets to file positions.
#[derive(Debug, Default)]
struct SparseIndex {
    entries: Vec<(u64, u64)>,
}

impl SparseIndex {
    fn note(&mut self, offset: u64, pos: u64) {
        match self.entries.last() {
            Some(&(_, last)) if pos < last + INDEX_STRIDE => {}
            _ => self.entries.push((offset, pos)),
        }
    }

    /// The last entry at or before `offset`, if any.
    fn seek(&self, offset: u64) -> Option<(u64, u64)> {
        let after = self.entries.partition_point(|&(o, _)| o <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied()
    }
}

/// What a verifying scan of a segment found.
#[derive(Debug)]
struct Scan {
    index: SparseIndex,
    /// Offset after the last valid record.
    end: u64,
    /// Bytes of valid records.
    valid: u64,
}

/// Scans the records of `file` in `[0, len)` that follow on from `base`.
fn scan(file: &File, base: u64, len: u64) -> io::Result<Scan> {
    let mut index = SparseIndex::default();
    let mut reader = FrameReader::new(file, 0, len);
    let mut end = base;
    let valid = loop {
        match reader.next_frame()? {
            Next::Frame { at, body } => match split_record(body) {
                Some((offset, _)) if offset == end => {
                    index.note(offset, at);
                    end += 1;
                }
                _ => break at,
            },
            Next::End => break len,
            Next::Bad { at } => break at,
        }
    };
    Ok(Scan { index, end, valid })
}

/// One segment of a queue's log.
#[derive(Debug)]
pub(crate) struct Segment {
    base: u64,
    end: u64,
    len: u64,
    released: u64,
    path: PathBuf,
    file: Option<Arc<File>>,
    index: Option<SparseIndex>,
}

impl Segment {
    /// Creates the empty segment starting at `base` in `dir`.
    pub(crate) fn create(dir: &Path, base: u64) -> io::Result<Self> {
        let path = dir.join(segment_file(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self {
            base,
            end: base,
            len: 0,
            released: 0,
            path,
            file: Some(Arc::new(file)),
            index: Some(SparseIndex::default()),
        })
    }

    /// A sealed segment holding `base..end` in `len` bytes, opened and indexed on first read.
    pub(crate) fn sealed(path: PathBuf, base: u64, end: u64, len: u64) -> Self {
        Self {
            base,
            end,
            len,
            released: 0,
            path,
            file: None,
            index: None,
        }
    }

    /// Opens the last segment of a queue, truncating a torn or corrupt tail.
    pub(crate) fn recover(path: PathBuf, base: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let scan = scan(&file, base, file_len)?;
        if scan.valid < file_len {
            tracing::warn!(
                segment = %path.display(),
                valid = scan.valid,
                file_len,
                "truncating torn segment tail"
            );
            file.set_len(scan.valid)?;
            file.sync_all()?;
        }
        Ok(Self {
            base,
            end: scan.end,
            len: scan.valid,
            released: 0,
            path,
            file: Some(Arc::new(file)),
            index: Some(scan.index),
        })
    }

    /// Offset of the first record.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Offset after the last record.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of records in the file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sets how many of this segment's offsets are released.
    pub(crate) fn set_released(&mut self, released: u64) {
        self.released = released;
    }

    /// Counts one more released offset.
    pub(crate) fn note_released(&mut self) {
        self.released += 1;
    }

    /// Whether every record in the segment is released.
    pub(crate) fn fully_released(&self) -> bool {
        self.released >= self.end - self.base
    }

    /// The open file, for a sync outside the queue's lock.
    pub(crate) fn file(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    /// Writes `frames` (holding records `end..end + sizes.len()`, of the given encoded sizes)
    /// after the last record with one write. On error nothing is counted as written.
    pub(crate) fn append(&mut self, frames: &[u8], sizes: &[usize]) -> io::Result<()> {
        let file = self.open()?;
        file.write_all_at(frames, self.len)?;
        let mut pos = self.len;
        for (i, size) in sizes.iter().enumerate() {
            if let Some(index) = self.index.as_mut() {
                index.note(self.end + i as u64, pos);
            }
            pos += *size as u64;
        }
        self.end += sizes.len() as u64;
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Syncs the segment and renames it to its sealed name, which records its end offset (so
    /// it stays known after the segments around it are reclaimed).
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        self.sync()?;
        let sealed = self
            .path
            .with_file_name(sealed_segment_file(self.base, self.end));
        fs::rename(&self.path, &sealed)?;
        self.path = sealed;
        Ok(())
    }

    /// `fdatasync` of the segment file.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.open()?.sync_data()
    }

    /// Appends to `out` up to `max - out.len()` records with offset ≥ `start` that `released`
    /// does not hold, in order.
    pub(crate) fn read(
        &mut self,
        queue: &QueueName,
        start: u64,
        max: usize,
        released: &ReleaseSet,
        out: &mut Vec<(Offset, Bytes)>,
    ) -> Result<(), StoreError> {
        let corrupt = |offset: u64| StoreError::Corrupt {
            queue: queue.to_string(),
            offset,
        };
        let start = start.max(self.base);
        if start >= self.end || out.len() >= max {
            return Ok(());
        }
        self.ensure_index(queue)?;
        let (mut expected, pos) = self
            .index
            .as_ref()
            .and_then(|index| index.seek(start))
            .ok_or_else(|| corrupt(start))?;
        let file = self.open()?;
        let mut reader = FrameReader::new(&file, pos, self.len);
        while expected < self.end && out.len() < max {
            let Next::Frame { body, .. } = reader.next_frame()? else {
                return Err(corrupt(expected));
            };
            let (offset, payload) = split_record(body).ok_or_else(|| corrupt(expected))?;
            if offset != expected {
                return Err(corrupt(expected));
            }
            if offset >= start && !released.contains(offset) {
                out.push((Offset(offset), payload));
            }
            expected += 1;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<Arc<File>> {
        if let Some(file) = &self.file {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        self.file = Some(Arc::clone(&file));
        Ok(file)
    }

    fn ensure_index(&mut self, queue: &QueueName) -> Result<(), StoreError> {
        if self.index.is_some() {
            return Ok(());
        }
        let file = self.open()?;
        let scan = scan(&file, self.base, self.len)?;
        if scan.valid != self.len || scan.end != self.end {
            return Err(StoreError::Corrupt {
                queue: queue.to_string(),
                offset: scan.end,
            });
        }
        self.index = Some(scan.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::record::{encode_record, RECORD_OVERHEAD};

    fn append(segment: &mut Segment, payloads: &[&[u8]]) {
        let mut frames = Vec::new();
        let mut sizes = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            encode_record(&mut frames, segment.end() + i as u64, payload);
            sizes.push(RECORD_OVERHEAD + payload.len());
        }
        segment.append(&frames, &sizes).unwrap();
    }

    fn read_all(segment: &mut Segment, start: u64, released: &ReleaseSet) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        segment
            .read(&QueueName::new("q"), start, usize::MAX, released, &mut out)
            .unwrap();
        out.into_iter().map(|(o, b)| (o.0, b)).collect()
    }

    #[test]
    fn reads_from_any_start_across_index_strides() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 10).unwrap();
        let payload = vec![7u8; 1000];
        for _ in 0..20 {
            append(&mut segment, &[&payload, &payload]);
        }
        assert_eq!(segment.end(), 50);
        for start in [0, 10, 11, 29, 49] {
            let got = read_all(&mut segment, start, &ReleaseSet::default());
            let want: Vec<u64> = (start.max(10)..50).collect();
            assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), want);
        }
        assert!(read_all(&mut segment, 50, &ReleaseSet::default()).is_empty());
    }

    #[test]
    fn skips_released_records_and_honours_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        append(&mut segment, &[b"a", b"b", b"c", b"d"]);
        let mut released = ReleaseSet::default();
        released.insert(0);
        released.insert(2);
        let got = read_all(&mut segment, 0, &released);
        assert_eq!(
            got,
            vec![(1, Bytes::from_static(b"b")), (3, Bytes::from_static(b"d"))]
        );
        let mut out = Vec::new();
        segment
            .read(&QueueName::new("q"), 0, 1, &released, &mut out)
            .unwrap();
        assert_eq!(out, vec![(Offset(1), Bytes::from_static(b"b"))]);
    }

    #[test]
    fn sealed_segment_is_verified_on_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 5).unwrap();
        append(&mut segment, &[b"one", b"two"]);
        let (path, len) = (segment.path().to_owned(), segment.len());
        drop(segment);
        let mut sealed = Segment::sealed(path.clone(), 5, 7, len);
        assert_eq!(read_all(&mut sealed, 0, &ReleaseSet::default()).len(), 2);
        sealed.seal().unwrap();
        assert!(!path.exists());
        let path = dir
            .path()
            .join("00000000000000000005-00000000000000000007.seg");
        assert_eq!(sealed.path(), path);

        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let mut sealed = Segment::sealed(path, 5, 7, len);
        let mut out = Vec::new();
        let err = sealed.read(
            &QueueName::new("q"),
            0,
            10,
            &ReleaseSet::default(),
            &mut out,
        );
        assert!(
            matches!(err, Err(StoreError::Corrupt { offset: 6, .. })),
            "{err:?}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn recovery_rejects_a_record_out_of_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        append(&mut segment, &[b"zero"]);
        let mut stray = Vec::new();
        encode_record(&mut stray, 5, b"stray");
        segment.append(&stray, &[stray.len()]).unwrap();
        let path = segment.path().to_owned();
        drop(segment);
        let recovered = Segment::recover(path, 0).unwrap();
        assert_eq!(recovered.end(), 1);
        assert_eq!(recovered.len(), (RECORD_OVERHEAD + 4) as u64);
    }
}
