//! Sequential frame reader over a byte range of a file, with positioned reads.
//!
//! Reads in chunks into one buffer and splits whole frames off it, so payloads handed out are
//! slices of that buffer (no copy per record).
//!
//! # Invariants
//! - Never reads at or past `end`: a frame that would cross `end` is reported as
//!   [`Next::Bad`], never as a frame.
//! - [`Next::Bad`] carries the file position of the first byte that is not part of a valid
//!   frame, which is where recovery truncates.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

use super::record::{check_frame, frame_body, FrameCheck};

/// Bytes read from the file at a time (at least; a larger frame is read whole).
const CHUNK: u64 = 64 * 1024;

/// The next item of a [`FrameReader`].
#[derive(Debug)]
pub(crate) enum Next {
    /// A valid frame starting at file position `at`.
    Frame {
        /// File position of the frame's first byte.
        at: u64,
        /// The frame's body.
        body: Bytes,
    },
    /// The range ended exactly at a frame boundary.
    End,
    /// Torn or checksum-failing bytes start at `at`.
    Bad {
        /// File position of the first invalid byte.
        at: u64,
    },
}

/// Reads the frames of `file` in `[pos, end)`.
#[derive(Debug)]
pub(crate) struct FrameReader<'f> {
    file: &'f File,
    /// File position of `buf[0]`.
    pos: u64,
    end: u64,
    buf: BytesMut,
}

impl<'f> FrameReader<'f> {
    /// A reader of `file` from `pos` up to (not including) `end`.
    pub(crate) fn new(file: &'f File, pos: u64, end: u64) -> Self {
        Self {
            file,
            pos,
            end,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, the end of the range, or where the valid frames stop.
    pub(crate) fn next_frame(&mut self) -> io::Result<Next> {
        loop {
            match check_frame(&self.buf) {
                FrameCheck::Complete(n) => {
                    let at = self.pos;
                    let body = frame_body(self.buf.split_to(n).freeze());
                    self.pos += n as u64;
                    return Ok(Next::Frame { at, body });
                }
                FrameCheck::Invalid => return Ok(Next::Bad { at: self.pos }),
                FrameCheck::Incomplete(needed) => {
                    if self.buf.is_empty() && self.pos == self.end {
                        return Ok(Next::End);
                    }
                    if !self.fill(needed)? {
                        return Ok(Next::Bad { at: self.pos });
                    }
                }
            }
        }
    }

    /// Reads until the buffer holds `needed` bytes; false if the range is too short.
    fn fill(&mut self, needed: usize) -> io::Result<bool> {
        let held = self.buf.len() as u64;
        let available = self.end.saturating_sub(self.pos + held);
        let missing = (needed as u64).saturating_sub(held);
        if missing > available {
            return Ok(false);
        }
        let want = missing.max(CHUNK).min(available);
        let start = self.buf.len();
        let want = usize::try_from(want).map_err(io::Error::other)?;
        self.buf.resize(start + want, 0);
        let dest = self.buf.get_mut(start..).unwrap_or_default();
        self.file.read_exact_at(dest, self.pos + held)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::disk::record::encode_record;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn reads_frames_then_end() {
        let mut bytes = Vec::new();
        for i in 0..1000u64 {
            encode_record(&mut bytes, i, &vec![i as u8; (i % 300) as usize]);
        }
        let file = file_with(&bytes);
        let mut reader = FrameReader::new(&file, 0, bytes.len() as u64);
        for i in 0..1000u64 {
            match reader.next_frame().unwrap() {
                Next::Frame { body, .. } => {
                    let (offset, payload) = crate::disk::record::split_record(body).unwrap();
                    assert_eq!(offset, i);
                    assert_eq!(payload.len(), (i % 300) as usize);
                }
                other => panic!("record {i}: {other:?}"),
            }
        }
        assert!(matches!(reader.next_frame().unwrap(), Next::End));
    }

    #[test]
    fn stops_at_a_torn_frame() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 0, b"whole");
        let whole = bytes.len() as u64;
        encode_record(&mut bytes, 1, b"torn");
        bytes.truncate(bytes.len() - 1);
        let file = file_with(&bytes);
        let mut reader = FrameReader::new(&file, 0, bytes.len() as u64);
        assert!(matches!(
            reader.next_frame().unwrap(),
            Next::Frame { at: 0, .. }
        ));
        assert!(matches!(reader.next_frame().unwrap(), Next::Bad { at } if at == whole));
    }

    #[test]
    fn never_reads_past_end() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 0, b"first");
        let first = bytes.len() as u64;
        encode_record(&mut bytes, 1, b"second");
        let file = file_with(&bytes);
        let mut reader = FrameReader::new(&file, 0, first + 3);
        assert!(matches!(reader.next_frame().unwrap(), Next::Frame { .. }));
        assert!(matches!(reader.next_frame().unwrap(), Next::Bad { at } if at == first));
    }
}
