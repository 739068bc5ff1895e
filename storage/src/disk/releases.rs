//! Which offsets of a queue are released, in memory and in the queue's release log.
//!
//! In memory a [`ReleaseSet`] is a low watermark (every offset below it is released) plus the
//! released offsets above it, so in-order acks cost nothing and out-of-order acks cost one set
//! entry until the gap below them closes.
//!
//! On disk the release log is a [journal](super::journal) whose frame bodies are lists of
//! half-open ranges:
//!
//! ```text
//! body = (start u64 LE | end u64 LE)*      each range releases the offsets start..end
//! ```
//!
//! A `release` call appends one frame with the offsets it newly released; compaction rewrites
//! the log as `0..low` plus the ranges of the set above `low`.
//!
//! # Invariants
//! - `above` only holds offsets greater than `low`; `low` itself is never released.
//! - Replaying a log built from a set yields the same set (ranges may arrive in any order).

use std::collections::BTreeSet;

use bytes::{Buf, Bytes};

use super::record::encode_frame;

/// Most ranges written in one frame by compaction.
const RANGES_PER_FRAME: usize = 4096;

/// Released offsets of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReleaseSet {
    /// Every offset below this is released (or reclaimed).
    low: u64,
    /// Released offsets above `low`.
    above: BTreeSet<u64>,
}

impl ReleaseSet {
    /// A set where exactly the offsets below `low` are released.
    pub(crate) fn below(low: u64) -> Self {
        Self {
            low,
            above: BTreeSet::new(),
        }
    }

    /// The lowest offset not known to be released.
    pub(crate) fn low(&self) -> u64 {
        self.low
    }

    /// Whether `offset` is released.
    pub(crate) fn contains(&self, offset: u64) -> bool {
        offset < self.low || self.above.contains(&offset)
    }

    /// How many released offsets sit above the watermark.
    pub(crate) fn len_above(&self) -> usize {
        self.above.len()
    }

    /// Releases `offset`; false if it already was.
    pub(crate) fn insert(&mut self, offset: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        if offset == self.low {
            self.low += 1;
            self.pull();
        } else {
            self.above.insert(offset);
        }
        true
    }

    /// Releases everything below `low` (a range starting at or below the watermark).
    pub(crate) fn raise(&mut self, low: u64) {
        if low > self.low {
            self.low = low;
            self.above = self.above.split_off(&low);
            self.pull();
        }
    }

    /// Forgets the offsets in `start..end` (their segment was reclaimed).
    pub(crate) fn forget(&mut self, start: u64, end: u64) {
        let mut upper = self.above.split_off(&start);
        let mut rest = upper.split_off(&end);
        self.above.append(&mut rest);
    }

    /// How many offsets in `start..end` are released.
    pub(crate) fn count_in(&self, start: u64, end: u64) -> u64 {
        let below = self.low.min(end).saturating_sub(start);
        let from = start.max(self.low);
        let above = if from < end {
            self.above.range(from..end).count() as u64
        } else {
            0
        };
        below + above
    }

    /// The whole set as release-log frames (compaction).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut ranges = Vec::with_capacity(1 + self.above.len().min(RANGES_PER_FRAME));
        if self.low > 0 {
            ranges.push((0, self.low));
        }
        ranges.extend(coalesce(self.above.iter().copied()));
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_FRAME) {
            encode_ranges(&mut out, chunk);
        }
        out
    }

    fn pull(&mut self) {
        while self.above.remove(&self.low) {
            self.low += 1;
        }
    }
}

/// Half-open ranges covering a sorted, deduplicated sequence of offsets.
pub(crate) fn coalesce(sorted: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for offset in sorted {
        match ranges.last_mut() {
            Some((_, end)) if *end == offset => *end += 1,
            _ => ranges.push((offset, offset + 1)),
        }
    }
    ranges
}

/// Appends one release-log frame holding `ranges`.
pub(crate) fn encode_ranges(out: &mut Vec<u8>, ranges: &[(u64, u64)]) {
    let mut body = Vec::with_capacity(ranges.len() * 16);
    for (start, end) in ranges {
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&end.to_le_bytes());
    }
    encode_frame(out, &[&body]);
}

/// The ranges of one release-log frame body; `None` if it is not a whole number of
/// well-formed ranges.
pub(crate) fn decode_ranges(mut body: Bytes) -> Option<Vec<(u64, u64)>> {
    if body.len() % 16 != 0 {
        return None;
    }
    let mut ranges = Vec::with_capacity(body.len() / 16);
    while body.has_remaining() {
        let (start, end) = (body.get_u64_le(), body.get_u64_le());
        if start >= end {
            return None;
        }
        ranges.push((start, end));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::record::{check_frame, frame_body, FrameCheck};
    use proptest::prelude::*;

    fn replay(bytes: &[u8]) -> ReleaseSet {
        let mut set = ReleaseSet::default();
        let mut rest = Bytes::copy_from_slice(bytes);
        while !rest.is_empty() {
            let FrameCheck::Complete(n) = check_frame(&rest) else {
                panic!("bad frame")
            };
            for (start, end) in decode_ranges(frame_body(rest.split_to(n))).unwrap() {
                if start <= set.low() {
                    set.raise(end);
                } else {
                    (start..end).for_each(|o| {
                        set.insert(o);
                    });
                }
            }
        }
        set
    }

    #[test]
    fn in_order_releases_only_move_the_watermark() {
        let mut set = ReleaseSet::default();
        for o in 0..100 {
            assert!(set.insert(o));
        }
        assert_eq!(set, ReleaseSet::below(100));
        assert!(!set.insert(50));
    }

    #[test]
    fn out_of_order_releases_close_the_gap() {
        let mut set = ReleaseSet::default();
        assert!(set.insert(2));
        assert!(set.insert(1));
        assert_eq!(set.low(), 0);
        assert!(set.contains(2) && !set.contains(0) && !set.contains(3));
        assert!(set.insert(0));
        assert_eq!(set, ReleaseSet::below(3));
    }

    #[test]
    fn counts_and_forgets_ranges() {
        let mut set = ReleaseSet::below(5);
        for o in [7, 8, 12] {
            set.insert(o);
        }
        assert_eq!(set.count_in(0, 10), 7);
        assert_eq!(set.count_in(6, 13), 3);
        assert_eq!(set.count_in(10, 12), 0);
        set.forget(6, 10);
        assert_eq!(set.count_in(6, 13), 1);
        set.raise(20);
        assert_eq!(set, ReleaseSet::below(20));
    }

    #[test]
    fn coalesces_runs() {
        assert_eq!(coalesce([1, 2, 3, 5, 7, 8]), vec![(1, 4), (5, 6), (7, 9)]);
        assert_eq!(coalesce([]), vec![]);
    }

    #[test]
    fn rejects_malformed_bodies() {
        assert_eq!(decode_ranges(Bytes::from_static(&[0; 15])), None);
        let mut empty_range = 4u64.to_le_bytes().to_vec();
        empty_range.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(decode_ranges(Bytes::from(empty_range)), None);
    }

    proptest! {
        #[test]
        fn compaction_round_trip(offsets in proptest::collection::vec(0u64..300, 0..200)) {
            let mut set = ReleaseSet::default();
            for o in offsets {
                set.insert(o);
            }
            prop_assert_eq!(replay(&set.encode()), set);
        }
    }
}
