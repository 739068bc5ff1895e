//! One queue's log: its segments, its released offsets and its release log.
//!
//! A [`QueueLog`] is only ever used under its queue's lock, from a blocking thread.
//!
//! # Invariants
//! - There is always at least one segment; the last one is the active segment appends go to,
//!   and it is never deleted, so the next offset survives a restart even when every record is
//!   released.
//! - Segments hold consecutive offsets; a gap between two segments is a reclaimed segment.
//! - A release is written to the release log before the segment it completes is deleted.
//! - A sealed segment was synced, and renamed to a name recording its end offset, before the
//!   next one was created, so only the active segment can have a torn tail after a crash.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use polymq_core::{Offset, QueueName, StoreError};

use super::config::FsyncPolicy;
use super::journal::Journal;
use super::layout::{sync_dir, RELEASE_LOG};
use super::poison::Poison;
use super::record::{encode_record, RECORD_OVERHEAD};
use super::releases::{coalesce, encode_ranges, ReleaseSet};
use super::segment::Segment;

/// Release-log size below which it is never compacted.
const COMPACT_MIN_BYTES: u64 = 64 * 1024;

/// What every queue of a store shares.
#[derive(Debug, Clone)]
pub(crate) struct QueueParams {
    /// When appends are synced.
    pub(crate) fsync: FsyncPolicy,
    /// Size at which the active segment is sealed.
    pub(crate) segment_bytes: u64,
    /// The store's poison flag.
    pub(crate) poison: Poison,
}

/// The on-disk log of one queue.
#[derive(Debug)]
pub(crate) struct QueueLog {
    name: QueueName,
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    releases: ReleaseSet,
    release_log: Journal,
    /// Written since the last sync.
    dirty: bool,
    params: QueueParams,
}

impl QueueLog {
    /// Creates the directory and first segment of a new, empty queue.
    pub(crate) fn create(
        dir: PathBuf,
        name: QueueName,
        params: QueueParams,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir)?;
        let segment = Segment::create(&dir, 0)?;
        let release_log = Journal::open(&dir.join(RELEASE_LOG))?.journal;
        sync_dir(&dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(Self::from_parts(
            name,
            dir,
            vec![segment],
            ReleaseSet::below(0),
            release_log,
            params,
        ))
    }

    /// Assembles a recovered queue; `segments` are in order and not empty.
    pub(crate) fn from_parts(
        name: QueueName,
        dir: PathBuf,
        segments: Vec<Segment>,
        releases: ReleaseSet,
        release_log: Journal,
        params: QueueParams,
    ) -> Self {
        let segments = segments.into_iter().map(|s| (s.base(), s)).collect();
        let mut log = Self {
            name,
            dir,
            segments,
            releases,
            release_log,
            dirty: false,
            params,
        };
        for segment in log.segments.values_mut() {
            segment.set_released(log.releases.count_in(segment.base(), segment.end()));
        }
        log.skip_gaps();
        log
    }

    /// The queue's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next appended record gets.
    pub(crate) fn next(&self) -> u64 {
        self.segments.last_key_value().map_or(0, |(_, s)| s.end())
    }

    /// Appends `batch` with one write; returns its offsets.
    pub(crate) fn append(&mut self, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        self.params.poison.check()?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.roll_if_full()?;
        let first = self.next();
        let total = batch.iter().map(|p| RECORD_OVERHEAD + p.len()).sum();
        let mut frames = Vec::with_capacity(total);
        let mut sizes = Vec::with_capacity(batch.len());
        for (offset, payload) in (first..).zip(batch) {
            encode_record(&mut frames, offset, payload);
            sizes.push(RECORD_OVERHEAD + payload.len());
        }
        let poison = self.params.poison.clone();
        let always = self.params.fsync == FsyncPolicy::Always;
        let active = self.active()?;
        poison.guard(active.append(&frames, &sizes))?;
        if always {
            poison.guard(active.sync())?;
        } else {
            self.dirty = true;
        }
        Ok((first..first + batch.len() as u64).map(Offset).collect())
    }

    /// Up to `max` unreleased records with offset ≥ `from`, in order.
    pub(crate) fn read(
        &mut self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(Offset, Bytes)>, StoreError> {
        let start = from.max(self.releases.low());
        let mut out = Vec::with_capacity(max.min(1024));
        for segment in self.segments.values_mut() {
            if out.len() >= max {
                break;
            }
            if segment.end() > start {
                segment.read(&self.name, start, max, &self.releases, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Marks `acked` released, logs that, and deletes sealed segments left fully released.
    pub(crate) fn release(&mut self, acked: &[Offset]) -> Result<(), StoreError> {
        self.params.poison.check()?;
        let mut offsets: Vec<u64> = acked.iter().map(|o| o.0).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut newly = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let Some((_, segment)) = self.segments.range_mut(..=offset).next_back() else {
                continue;
            };
            if offset < segment.end() && self.releases.insert(offset) {
                segment.note_released();
                newly.push(offset);
            }
        }
        if newly.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::new();
        encode_ranges(&mut frame, &coalesce(newly));
        self.params.poison.guard(self.release_log.append(&frame))?;
        self.dirty = true;
        self.reclaim()?;
        self.compact_if_large()
    }

    /// Files written since the last call, to be synced outside the queue's lock.
    pub(crate) fn take_dirty(&mut self) -> Vec<Arc<File>> {
        if !std::mem::take(&mut self.dirty) {
            return Vec::new();
        }
        let active = self.segments.last_key_value().and_then(|(_, s)| s.file());
        active
            .into_iter()
            .chain([self.release_log.file()])
            .collect()
    }

    /// Deletes the sealed segments whose records are all released.
    pub(crate) fn reclaim(&mut self) -> Result<(), StoreError> {
        let active = self.segments.last_key_value().map(|(&base, _)| base);
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&base, s)| Some(base) != active && s.fully_released())
            .map(|(&base, _)| base)
            .collect();
        for base in doomed {
            let Some(segment) = self.segments.remove(&base) else {
                continue;
            };
            self.params
                .poison
                .guard(remove_if_present(segment.path()))?;
            self.releases.forget(segment.base(), segment.end());
        }
        self.skip_gaps();
        Ok(())
    }

    /// Rewrites the release log from the in-memory set.
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        let frames = self.releases.encode();
        self.params.poison.guard(self.release_log.rewrite(&frames))
    }

    fn compact_if_large(&mut self) -> Result<(), StoreError> {
        let log = self.release_log.len();
        let estimate = 16 * (self.releases.len_above() as u64 + 1) + 8;
        if log > COMPACT_MIN_BYTES && log > 2 * estimate + COMPACT_MIN_BYTES {
            self.compact()?;
        }
        Ok(())
    }

    fn roll_if_full(&mut self) -> Result<(), StoreError> {
        let next = self.next();
        let segment_bytes = self.params.segment_bytes;
        let poison = self.params.poison.clone();
        let active = self.active()?;
        if active.len() < segment_bytes || active.end() == active.base() {
            return Ok(());
        }
        poison.guard(active.seal())?;
        let segment = poison.guard(Segment::create(&self.dir, next))?;
        poison.guard(sync_dir(&self.dir))?;
        self.segments.insert(next, segment);
        self.reclaim()
    }

    fn active(&mut self) -> Result<&mut Segment, StoreError> {
        self.segments
            .last_entry()
            .map(|entry| entry.into_mut())
            .ok_or_else(|| StoreError::Corrupt {
                queue: self.name.to_string(),
                offset: 0,
            })
    }

    /// Moves the watermark over reclaimed gaps, so reads start at a live record.
    fn skip_gaps(&mut self) {
        loop {
            let low = self.releases.low();
            if low >= self.next() {
                return;
            }
            if let Some((_, s)) = self.segments.range(..=low).next_back() {
                if low < s.end() {
                    return;
                }
            }
            match self.segments.range(low + 1..).next() {
                Some((&base, _)) => self.releases.raise(base),
                None => return,
            }
        }
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(segment_bytes: u64) -> QueueParams {
        QueueParams {
            fsync: FsyncPolicy::Never,
            segment_bytes,
            poison: Poison::default(),
        }
    }

    fn payloads(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("record-{i}"))).collect()
    }

    fn segment_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    }

    fn new_log(root: &Path, segment_bytes: u64) -> QueueLog {
        QueueLog::create(
            root.join("q.queue"),
            QueueName::new("q"),
            params(segment_bytes),
        )
        .unwrap()
    }

    #[test]
    fn offsets_increase_by_one_across_batches() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 1 << 20);
        assert_eq!(
            log.append(&payloads(3)).unwrap(),
            vec![Offset(0), Offset(1), Offset(2)]
        );
        assert_eq!(log.append(&payloads(1)).unwrap(), vec![Offset(3)]);
        assert!(log.append(&[]).unwrap().is_empty());
        assert_eq!(log.next(), 4);
    }

    #[test]
    fn rolls_segments_and_reads_across_them() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 64);
        for batch in payloads(20).chunks(3) {
            log.append(batch).unwrap();
        }
        assert!(segment_files(log.dir()) > 3);
        let got = log.read(0, usize::MAX).unwrap();
        assert_eq!(got.len(), 20);
        for (i, (offset, payload)) in got.iter().enumerate() {
            assert_eq!(*offset, Offset(i as u64));
            assert_eq!(payload, &Bytes::from(format!("record-{i}")));
        }
        assert_eq!(
            log.read(17, 2)
                .unwrap()
                .iter()
                .map(|r| r.0 .0)
                .collect::<Vec<_>>(),
            [17, 18]
        );
    }

    #[test]
    fn fully_released_sealed_segments_are_deleted() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 64);
        for batch in payloads(20).chunks(2) {
            log.append(batch).unwrap();
        }
        let before = segment_files(log.dir());
        assert!(before >= 5, "{before}");
        let all: Vec<Offset> = (0..20).map(Offset).collect();
        log.release(&all[10..]).unwrap();
        let middle_gone = segment_files(log.dir());
        assert!(middle_gone < before, "{middle_gone} < {before}");
        assert_eq!(log.read(0, usize::MAX).unwrap().len(), 10);
        log.release(&all[..10]).unwrap();
        assert_eq!(
            segment_files(log.dir()),
            1,
            "only the active segment is kept"
        );
        assert!(log.read(0, usize::MAX).unwrap().is_empty());
        assert_eq!(log.releases.low(), log.next(), "everything released");
        assert_eq!(log.append(&payloads(1)).unwrap(), vec![Offset(20)]);
    }

    #[test]
    fn released_records_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 1 << 20);
        log.append(&payloads(5)).unwrap();
        log.release(&[Offset(1), Offset(3), Offset(99)]).unwrap();
        let offsets: Vec<u64> = log.read(0, 10).unwrap().iter().map(|r| r.0 .0).collect();
        assert_eq!(offsets, [0, 2, 4]);
        log.release(&[Offset(0)]).unwrap();
        assert_eq!(log.releases.low(), 2);
    }

    #[test]
    fn a_poisoned_queue_refuses_writes_but_serves_reads() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 1 << 20);
        log.append(&payloads(2)).unwrap();
        let failed = log
            .params
            .poison
            .guard::<()>(Err(io::Error::other("disk gone")));
        assert!(matches!(failed, Err(StoreError::Io(_))));
        assert!(matches!(
            log.append(&payloads(1)),
            Err(StoreError::Poisoned)
        ));
        assert!(matches!(
            log.release(&[Offset(0)]),
            Err(StoreError::Poisoned)
        ));
        assert_eq!(log.read(0, 10).unwrap().len(), 2);
        assert_eq!(log.next(), 2);
    }

    #[test]
    fn release_log_is_compacted() {
        let root = tempfile::tempdir().unwrap();
        let mut log = new_log(root.path(), 1 << 30);
        log.append(&payloads(20_000)).unwrap();
        for offset in 0..20_000 {
            log.release(&[Offset(offset)]).unwrap();
        }
        assert!(
            log.release_log.len() <= COMPACT_MIN_BYTES + 4 * 1024,
            "{}",
            log.release_log.len()
        );
        assert!(log.read(0, 1).unwrap().is_empty());
    }
}
