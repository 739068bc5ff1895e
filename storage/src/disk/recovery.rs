//! Recovery on open: finds the queues of a store directory and rebuilds each queue's state.
//!
//! For one queue: sealed segments are taken as their names describe them (they are verified on
//! first read), the active (last) segment is scanned and cut at
//! its first torn, checksum-failing or out-of-sequence record, and the release log is replayed
//! over what is left. Leftovers of interrupted operations (`*.tmp` rewrites, `*.removed`
//! queues) are deleted.
//!
//! # Invariants
//! - Recovery never yields a record that failed its checksum: the last segment is truncated at
//!   the first invalid frame, and everything after it is discarded.
//! - A release of an offset at or past the recovered end (its record was lost with the torn
//!   tail) is dropped, and the release log is rewritten without it before the queue is used,
//!   so a future record reusing that offset is not born released.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use polymq_core::{QueueName, StoreError};

use super::journal::Journal;
use super::layout::{
    decode_name, parse_segment_file, sync_dir, QUEUE_SUFFIX, RELEASE_LOG, REMOVED_SUFFIX,
    TMP_SUFFIX,
};
use super::queue::{QueueLog, QueueParams};
use super::releases::{decode_ranges, ReleaseSet};
use super::segment::Segment;

/// The queues found in `queues_dir`, after deleting removed queues awaiting deletion.
pub(crate) fn find_queues(queues_dir: &Path) -> io::Result<Vec<(QueueName, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(queues_dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.ends_with(REMOVED_SUFFIX) {
            fs::remove_dir_all(entry.path())?;
        } else if let Some(encoded) = file_name.strip_suffix(QUEUE_SUFFIX) {
            match decode_name(encoded) {
                Some(name) => found.push((QueueName::new(&name), entry.path())),
                None => tracing::warn!(dir = file_name, "ignoring undecodable queue directory"),
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Rebuilds the queue stored in `dir`.
pub(crate) fn open_queue(
    dir: PathBuf,
    name: QueueName,
    params: QueueParams,
) -> Result<QueueLog, StoreError> {
    let files = segment_files(&dir)?;
    let Some(((last_base, last_end, last_path), sealed)) = files.split_last() else {
        // Crashed between creating the directory and its first segment: nothing was stored.
        remove_if_present(&dir.join(RELEASE_LOG))?;
        fs::remove_dir(&dir)?;
        return QueueLog::create(dir, name, params);
    };
    let corrupt = |offset: u64| StoreError::Corrupt {
        queue: name.to_string(),
        offset,
    };
    let mut segments = Vec::with_capacity(files.len() + 1);
    for (i, (base, end, path)) in sealed.iter().enumerate() {
        let next_base = files.get(i + 1).map_or(*last_base, |f| f.0);
        // A segment still under its active name was the last one when the next was created.
        let end = end.unwrap_or(next_base);
        if end < *base || end > next_base {
            return Err(corrupt(*base));
        }
        let len = fs::metadata(path)?.len();
        segments.push(Segment::sealed(path.clone(), *base, end, len));
    }
    match *last_end {
        // Crashed after sealing the last segment, before creating the next one.
        Some(end) if end >= *last_base => {
            let len = fs::metadata(last_path)?.len();
            segments.push(Segment::sealed(last_path.clone(), *last_base, end, len));
            segments.push(Segment::create(&dir, end)?);
            sync_dir(&dir)?;
        }
        Some(_) => return Err(corrupt(*last_base)),
        None => segments.push(Segment::recover(last_path.clone(), *last_base)?),
    }
    let next = segments.last().map_or(0, Segment::end);

    let replayed = Journal::open(&dir.join(RELEASE_LOG))?;
    let (releases, stale) = replay_releases(&segments, next, replayed.bodies)?;
    let mut log = QueueLog::from_parts(name, dir, segments, releases, replayed.journal, params);
    log.reclaim()?;
    if stale || replayed.truncated {
        log.compact()?;
    }
    Ok(log)
}

/// The segment files in `dir` as (base, end if sealed, path), by base; deletes staged
/// rewrites.
fn segment_files(dir: &Path) -> io::Result<Vec<(u64, Option<u64>, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.ends_with(TMP_SUFFIX) {
            fs::remove_file(entry.path())?;
        } else if let Some((base, end)) = parse_segment_file(file_name) {
            files.push((base, end, entry.path()));
        }
    }
    files.sort_unstable_by_key(|f| f.0);
    Ok(files)
}

/// Applies the release-log frames to the recovered segments; also says whether any release
/// pointed at or past `next`.
fn replay_releases(
    segments: &[Segment],
    next: u64,
    bodies: Vec<bytes::Bytes>,
) -> io::Result<(ReleaseSet, bool)> {
    let first = segments.first().map_or(next, Segment::base);
    let live = |offset: u64| {
        let i = segments.partition_point(|s| s.base() <= offset);
        i.checked_sub(1)
            .and_then(|i| segments.get(i))
            .is_some_and(|s| offset < s.end())
    };
    let mut set = ReleaseSet::below(first);
    let mut stale = false;
    for body in bodies {
        let ranges = decode_ranges(body).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "malformed release-log frame")
        })?;
        for (start, end) in ranges {
            stale |= end > next;
            let end = end.min(next);
            if start <= set.low() {
                set.raise(end);
            } else {
                for offset in (start..end).filter(|&o| live(o)) {
                    set.insert(offset);
                }
            }
        }
    }
    Ok((set, stale))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    use bytes::Bytes;
    use polymq_core::Offset;

    use super::*;
    use crate::disk::config::FsyncPolicy;
    use crate::disk::layout::segment_file;
    use crate::disk::poison::Poison;
    use crate::disk::record::RECORD_OVERHEAD;

    fn params(segment_bytes: u64) -> QueueParams {
        QueueParams {
            fsync: FsyncPolicy::Always,
            segment_bytes,
            poison: Poison::default(),
        }
    }

    fn payload(i: u64) -> Bytes {
        Bytes::from(format!("payload number {i}"))
    }

    fn reopen(dir: &Path) -> QueueLog {
        open_queue(dir.to_owned(), QueueName::new("q"), params(1 << 20)).unwrap()
    }

    fn offsets(log: &mut QueueLog) -> Vec<u64> {
        log.read(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.0 .0)
            .collect()
    }

    /// A queue of 5 records in one segment; returns its directory, segment path and the file
    /// position where the last record starts.
    fn five_records(root: &Path) -> (PathBuf, PathBuf, u64) {
        let dir = root.join("q.queue");
        let mut log = QueueLog::create(dir.clone(), QueueName::new("q"), params(1 << 20)).unwrap();
        log.append(&(0..5).map(payload).collect::<Vec<_>>())
            .unwrap();
        let segment = dir.join(segment_file(0));
        let last_start = (0..4)
            .map(|i| (RECORD_OVERHEAD + payload(i).len()) as u64)
            .sum();
        (dir, segment, last_start)
    }

    #[test]
    fn every_cut_of_the_last_record_recovers_the_intact_prefix() {
        let root = tempfile::tempdir().unwrap();
        let (dir, segment, last_start) = five_records(root.path());
        let whole = fs::read(&segment).unwrap();
        for cut in last_start..whole.len() as u64 {
            fs::write(&segment, &whole[..cut as usize]).unwrap();
            let mut log = reopen(&dir);
            assert_eq!(offsets(&mut log), [0, 1, 2, 3], "cut at {cut}");
            assert_eq!(
                fs::metadata(&segment).unwrap().len(),
                last_start,
                "cut at {cut}"
            );
            assert_eq!(
                log.append(&[payload(4)]).unwrap(),
                vec![Offset(4)],
                "cut at {cut}"
            );
            drop(log);
            assert_eq!(offsets(&mut reopen(&dir)), [0, 1, 2, 3, 4], "cut at {cut}");
        }
    }

    #[test]
    fn a_corrupt_byte_anywhere_in_the_last_record_drops_only_it() {
        let root = tempfile::tempdir().unwrap();
        let (dir, segment, last_start) = five_records(root.path());
        let whole = fs::read(&segment).unwrap();
        for at in last_start..whole.len() as u64 {
            fs::write(&segment, &whole).unwrap();
            let file = OpenOptions::new().write(true).open(&segment).unwrap();
            let byte = whole[at as usize] ^ 0x5a;
            file.write_all_at(&[byte], at).unwrap();
            let mut log = reopen(&dir);
            let got = log.read(0, usize::MAX).unwrap();
            let want: Vec<(Offset, Bytes)> = (0..4).map(|i| (Offset(i), payload(i))).collect();
            assert_eq!(got, want, "corrupt byte at {at}");
        }
    }

    #[test]
    fn a_corrupt_middle_record_cuts_the_tail_there() {
        let root = tempfile::tempdir().unwrap();
        let (dir, segment, _) = five_records(root.path());
        let second = (RECORD_OVERHEAD + payload(0).len()) as u64;
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.write_all_at(b"X", second + RECORD_OVERHEAD as u64)
            .unwrap();
        assert_eq!(offsets(&mut reopen(&dir)), [0]);
    }

    #[test]
    fn releases_survive_reopen_and_stale_ones_are_dropped() {
        let root = tempfile::tempdir().unwrap();
        let (dir, segment, last_start) = five_records(root.path());
        let mut log = reopen(&dir);
        log.release(&[Offset(1), Offset(4)]).unwrap();
        drop(log);
        assert_eq!(offsets(&mut reopen(&dir)), [0, 2, 3]);

        // Record 4 is lost with a torn tail; its release must not hit the next record 4.
        let whole = fs::read(&segment).unwrap();
        fs::write(&segment, &whole[..last_start as usize + 3]).unwrap();
        let mut log = reopen(&dir);
        assert_eq!(offsets(&mut log), [0, 2, 3]);
        assert_eq!(log.append(&[payload(40)]).unwrap(), vec![Offset(4)]);
        drop(log);
        assert_eq!(offsets(&mut reopen(&dir)), [0, 2, 3, 4]);
    }

    #[test]
    fn reclaimed_segments_stay_gone_and_offsets_continue() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("q.queue");
        let mut log = QueueLog::create(dir.clone(), QueueName::new("q"), params(100)).unwrap();
        for i in 0..30 {
            log.append(&[payload(i)]).unwrap();
        }
        let all: Vec<Offset> = (0..30).map(Offset).collect();
        log.release(&all).unwrap();
        drop(log);
        let reopened = |d: &Path| open_queue(d.to_owned(), QueueName::new("q"), params(100));
        let mut log = reopened(&dir).unwrap();
        assert!(offsets(&mut log).is_empty());
        assert_eq!(segment_files(&dir).unwrap().len(), 1);
        assert_eq!(log.append(&[payload(30)]).unwrap(), vec![Offset(30)]);
        drop(log);
        assert_eq!(offsets(&mut reopened(&dir).unwrap()), [30]);
    }

    #[test]
    fn finds_queues_and_deletes_removed_ones() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("nsq%2Forders.queue")).unwrap();
        fs::create_dir(root.path().join("old.1.removed")).unwrap();
        fs::create_dir(root.path().join("bad.name.queue")).unwrap();
        let found = find_queues(root.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, QueueName::new("nsq/orders"));
        assert!(!root.path().join("old.1.removed").exists());
    }
}
