//! MQTT data representations (§1.5 of both specs): the bounds-checked reader over one packet
//! body and the matching writers.
//!
//! ```text
//! Two Byte Integer      u16 big-endian
//! Four Byte Integer     u32 big-endian
//! Variable Byte Integer 7 bits per byte, low group first, bit 7 = more; 1..=4 bytes, minimal
//! UTF-8 String          u16 length + bytes (well-formed UTF-8, mosquitto's character rules)
//! Binary Data           u16 length + bytes
//! ```
//!
//! # Invariants
//! - Every read checks the remaining length first, then parses, then advances; nothing here
//!   indexes or unwraps wire data.
//! - Binary reads are zero-copy slices of the packet's `Bytes`.

use bytes::{Buf, BufMut, Bytes};

use super::FrameError;

/// Largest value a Variable Byte Integer can carry (268,435,455).
pub const MAX_VARINT: u32 = 268_435_455;

/// Largest packet the protocol can express: a 5-byte fixed header (type byte and a 4-byte
/// Remaining Length) plus [`MAX_VARINT`] bytes.
pub const MAX_PACKET_SIZE: u32 = MAX_VARINT + 5;

/// Largest length of a UTF-8 String or Binary Data field.
pub const MAX_STRING_LEN: usize = u16::MAX as usize;

/// A cursor over one packet's variable header and payload.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Wraps the body of one complete packet.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes left unread.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Malformed("packet shorter than its fields"));
        }
        Ok(())
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// A Two Byte Integer.
    pub fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    /// A Four Byte Integer.
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer and the number of bytes it took.
    pub fn varint(&mut self) -> Result<(u32, usize), FrameError> {
        match parse_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok((value, len))
            }
            None => Err(FrameError::Malformed("truncated variable byte integer")),
        }
    }

    /// `n` raw bytes, zero-copy.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, FrameError> {
        let len = usize::from(self.u16()?);
        self.bytes(len)
    }

    /// A UTF-8 String, validated with mosquitto's rules.
    pub fn string(&mut self) -> Result<String, FrameError> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(&raw).map_err(|_| FrameError::Malformed("invalid UTF-8"))?;
        validate_text(text)?;
        Ok(text.to_owned())
    }

    /// Everything left, zero-copy (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }
}

/// Parses a Variable Byte Integer at the start of `buf`: `Ok(None)` when more bytes are
/// needed, an error when a fifth byte would be needed or the encoding is not minimal.
pub fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, FrameError> {
    let mut value: u32 = 0;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && *byte == 0 {
                return Err(FrameError::Malformed("variable byte integer not minimal"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(FrameError::Malformed(
            "variable byte integer longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// Number of bytes `value` takes as a Variable Byte Integer.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a Variable Byte Integer; the caller guarantees `value <= MAX_VARINT`.
pub fn put_varint(out: &mut impl BufMut, value: usize) {
    let mut rest = value;
    loop {
        // Truncation is the encoding: the low seven bits of what is left.
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.put_u8(low);
            return;
        }
        out.put_u8(low | 0x80);
    }
}

/// Writes Binary Data (the caller checked the length with [`check_len`]).
pub fn put_binary(out: &mut impl BufMut, data: &[u8]) {
    out.put_u16(u16::try_from(data.len()).unwrap_or(u16::MAX));
    out.put_slice(data);
}

/// Encoded size of a UTF-8 String or Binary Data field.
pub fn field_len(data: &[u8]) -> usize {
    2 + data.len()
}

/// Checks that a field fits its two-byte length prefix.
pub fn check_len(data: &[u8]) -> Result<(), FrameError> {
    if data.len() > MAX_STRING_LEN {
        return Err(FrameError::FieldTooLong(data.len()));
    }
    Ok(())
}

/// mosquitto's string rules on top of well-formed UTF-8: no NUL or other control characters
/// (U+0001..U+001F, U+007F..U+009F) and no non-characters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF).
pub fn validate_text(text: &str) -> Result<(), FrameError> {
    let bad = text.chars().any(|c| {
        let cp = u32::from(c);
        cp <= 0x1f
            || (0x7f..=0x9f).contains(&cp)
            || (0xfdd0..=0xfdef).contains(&cp)
            || cp & 0xfffe == 0xfffe
    });
    if bad {
        return Err(FrameError::Malformed(
            "disallowed character in UTF-8 string",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn varint_golden_values() {
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ];
        for (value, wire) in cases {
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(&out[..], wire, "{value}");
            assert_eq!(varint_len(value), wire.len());
            let parsed = parse_varint(wire).unwrap().unwrap();
            assert_eq!(parsed, (u32::try_from(value).unwrap(), wire.len()));
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_waits_for_more() {
        assert!(parse_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(parse_varint(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(parse_varint(&[0xff, 0xff]).unwrap(), None);
        assert_eq!(parse_varint(&[]).unwrap(), None);
        assert!(parse_varint(&[0x80, 0x00]).is_err());
    }

    #[test]
    fn strings_follow_mosquitto_rules() {
        for bad in [
            "a\0b",
            "a\u{1}",
            "\u{7f}",
            "\u{9f}",
            "\u{fdd0}",
            "\u{fffe}",
            "\u{1ffff}",
        ] {
            assert!(validate_text(bad).is_err(), "{bad:?}");
        }
        for good in ["", "a/b", "ünï", "\u{a0}", "\u{10000}", "$SYS/x"] {
            assert!(validate_text(good).is_ok(), "{good:?}");
        }
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xc3, 0x28]));
        assert!(r.string().is_err());
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert!(r.string().is_err());
    }
}
