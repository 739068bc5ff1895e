//! Checksummed frames: the one on-disk framing shared by segments, the release log and the
//! metadata log.
//!
//! ```text
//! frame          = len u32 LE | crc32 u32 LE | body (len bytes)
//! segment record = body of a frame: offset u64 LE | payload
//! ```
//!
//! `crc32` is CRC-32/IEEE (crc32fast) over the body, so for a segment record it covers the
//! offset and the payload. A record therefore costs 16 bytes of framing. No file ever holds an
//! empty body, so `len = 0` is invalid; that makes a zero-filled tail (what some file systems
//! expose after a crash) invalid too, although the CRC of nothing is zero.
//!
//! # Invariants
//! - [`check_frame`] never panics and never reads past the slice: it answers complete,
//!   incomplete (more bytes needed) or invalid, and the caller advances only past a complete
//!   frame ("check, then parse, then advance").
//! - A frame whose CRC does not match its body, or whose body is empty, is never reported
//!   complete.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use bytes::{Buf, Bytes};

/// Bytes of `len` + `crc32` before every body.
pub(crate) const FRAME_HEADER: usize = 8;

/// Bytes of the offset that starts a segment record's body.
pub(crate) const OFFSET_LEN: usize = 8;

/// Framing bytes per segment record.
pub(crate) const RECORD_OVERHEAD: usize = FRAME_HEADER + OFFSET_LEN;

/// What [`check_frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameCheck {
    /// A whole, checksum-valid frame of this many bytes (header included).
    Complete(usize),
    /// The frame needs this many bytes in total; the buffer holds fewer.
    Incomplete(usize),
    /// The checksum does not match the body, or the body is empty.
    Invalid,
}

/// Appends one frame whose body is the concatenation of `parts`.
///
/// The caller keeps bodies under `u32::MAX` bytes (records are limited far below that).
pub(crate) fn encode_frame(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    out.reserve(FRAME_HEADER + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Appends one segment record.
pub(crate) fn encode_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    encode_frame(out, &[&offset.to_le_bytes(), payload]);
}

/// Checks whether `buf` starts with a complete, checksum-valid frame.
pub(crate) fn check_frame(buf: &[u8]) -> FrameCheck {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER>() else {
        return FrameCheck::Incomplete(FRAME_HEADER);
    };
    let (len, crc) = header.split_at(4);
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if len == 0 {
        return FrameCheck::Invalid;
    }
    let Some(body) = rest.get(..len) else {
        return FrameCheck::Incomplete(FRAME_HEADER + len);
    };
    if crc32fast::hash(body) == crc {
        FrameCheck::Complete(FRAME_HEADER + len)
    } else {
        FrameCheck::Invalid
    }
}

/// The body of a complete frame (as split off by the caller after [`check_frame`]).
pub(crate) fn frame_body(mut frame: Bytes) -> Bytes {
    frame.advance(FRAME_HEADER.min(frame.len()));
    frame
}

/// Splits a segment record's body into its offset and payload; `None` if the body is too
/// short to hold an offset.
pub(crate) fn split_record(mut body: Bytes) -> Option<(u64, Bytes)> {
    if body.len() < OFFSET_LEN {
        return None;
    }
    let offset = body.get_u64_le();
    Some((offset, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, offset, payload);
        out
    }

    #[test]
    fn record_layout_is_len_crc_offset_payload() {
        let out = record(7, b"abc");
        assert_eq!(out.len(), RECORD_OVERHEAD + 3);
        assert_eq!(&out[..4], &11u32.to_le_bytes());
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"abc");
        assert_eq!(&out[4..8], &crc32fast::hash(&body).to_le_bytes());
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(&out[16..], b"abc");
    }

    #[test]
    fn zero_filled_header_is_invalid() {
        assert_eq!(check_frame(&[0u8; 32]), FrameCheck::Invalid);
        assert_eq!(check_frame(&[0u8; 8]), FrameCheck::Invalid);
    }

    #[test]
    fn short_body_is_not_a_record() {
        assert_eq!(split_record(Bytes::from_static(b"1234567")), None);
    }

    proptest! {
        #[test]
        fn round_trip(offset in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let out = record(offset, &payload);
            prop_assert_eq!(check_frame(&out), FrameCheck::Complete(out.len()));
            let body = frame_body(Bytes::from(out));
            prop_assert_eq!(split_record(body), Some((offset, Bytes::from(payload))));
        }

        #[test]
        fn every_prefix_is_incomplete(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let out = record(1, &payload);
            for cut in 0..out.len() {
                prop_assert!(matches!(check_frame(&out[..cut]), FrameCheck::Incomplete(n) if n > cut));
            }
        }

        #[test]
        fn any_flipped_body_bit_is_invalid(
            payload in proptest::collection::vec(any::<u8>(), 1..64),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut out = record(3, &payload);
            let i = FRAME_HEADER + at.index(out.len() - FRAME_HEADER);
            out[i] ^= 1 << bit;
            prop_assert_eq!(check_frame(&out), FrameCheck::Invalid);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = check_frame(&bytes);
        }
    }
}
