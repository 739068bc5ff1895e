//! The ZMTP 3.0/3.1 wire codec: greeting, frames, commands and multipart messages.
//!
//! Pure: no async, no I/O, no core types. The session feeds the read buffer to [`ZmtpCodec`] and
//! gets [`Inbound`] items: the peer's greeting first, then commands and whole messages.
//!
//! ```text
//! frame   = flags(1) size(1 | 8, BE) body
//! flags   = bit 0 MORE, bit 1 LONG (8-octet size), bit 2 COMMAND; bits 7-3 reserved
//! message = *(frame with MORE) frame without MORE          (commands never carry MORE)
//! ```
//!
//! # Invariants
//! - Check, then parse, then advance: nothing is consumed until a whole item is buffered.
//! - A declared frame size is checked against [`Limits::max_msg_size`] (the frame alone and
//!   the message it belongs to) as soon as the size field is readable, before its body is
//!   buffered; the number of parts of one message is capped by [`Limits::max_msg_parts`].
//! - Frame bodies are `Bytes` split from the read buffer: zero copy.
//! - Reserved flag bits are ignored (libzmq does not check them); the encoder never sets them.
//! - A command frame between two parts of a message is delivered at once and does not break
//!   the message (libzmq processes commands as they arrive).
//! - Decoding never panics, whatever the input.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod command;
mod greeting;

pub use command::{Command, Metadata, Property, PING_CONTEXT_MAX};
pub use greeting::{check_prefix, Greeting, Mechanism, Revision, GREETING_LEN, SIGNATURE_LEN};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Flag bit: more frames follow in this message.
pub const FLAG_MORE: u8 = 0x01;
/// Flag bit: the size field is 8 octets.
pub const FLAG_LONG: u8 = 0x02;
/// Flag bit: the frame is a command.
pub const FLAG_COMMAND: u8 = 0x04;

/// Octets of the longest frame header (flags and an 8-octet size).
pub const FRAME_HEADER_MAX: usize = 9;
/// Largest body a short frame can carry.
pub const SHORT_MAX: usize = 255;
/// Default [`Limits::max_msg_size`]: 16 MiB.
pub const DEFAULT_MAX_MSG_SIZE: usize = 16 * 1024 * 1024;
/// Default [`Limits::max_msg_parts`].
pub const DEFAULT_MAX_MSG_PARTS: usize = 4096;

/// Everything that can go wrong on the wire; every variant is fatal for the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The greeting does not start with `0xFF … 0x7F` (not a ZMTP 3 peer, or ZMTP 1.0).
    #[error("invalid greeting signature")]
    BadSignature,
    /// The peer speaks ZMTP 1.0 or 2.0.
    #[error("unsupported ZMTP major version {major}")]
    UnsupportedVersion {
        /// Major version octet the peer sent.
        major: u8,
    },
    /// A frame, or the message it belongs to, exceeds the size limit.
    #[error("message too large: {size} > {max}")]
    MessageTooLarge {
        /// Declared size (frame size plus the parts already received).
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message has more parts than allowed.
    #[error("too many message parts: more than {max}")]
    TooManyParts {
        /// The limit.
        max: usize,
    },
    /// A command frame has no name or a truncated name.
    #[error("malformed command")]
    MalformedCommand,
    /// A field to encode does not fit its length prefix.
    #[error("field too long to encode")]
    FieldTooLong,
    /// Transport error (needed by `tokio_util` codecs).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, and largest sum of the parts of one message, in octets.
    pub max_msg_size: usize,
    /// Most parts in one message.
    pub max_msg_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msg_size: DEFAULT_MAX_MSG_SIZE,
            max_msg_parts: DEFAULT_MAX_MSG_PARTS,
        }
    }
}

/// A whole multipart message: one or more parts (frames), in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message(pub Vec<Bytes>);

impl Message {
    /// Total size of the parts.
    pub fn size(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The peer's greeting (always the first item).
    Greeting(Greeting),
    /// A command frame.
    Command(Command),
    /// A complete message.
    Message(Message),
}

/// What the encoder writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// The broker's greeting.
    Greeting(Greeting),
    /// A command frame.
    Command(Command),
    /// A message; must have at least one part.
    Message(Message),
}

/// Largest parts vector [`ZmtpCodec::recycle`] keeps.
const RECYCLED_PARTS_MAX: usize = 16;

/// Decoder state plus the parts of a message still arriving.
#[derive(Debug)]
pub struct ZmtpCodec {
    limits: Limits,
    greeted: bool,
    parts: Vec<Bytes>,
    parts_size: usize,
}

impl ZmtpCodec {
    /// A codec that expects the peer's greeting first.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            greeted: false,
            parts: Vec::new(),
            parts_size: 0,
        }
    }

    /// A codec past the greeting (for tests and tools that start at the frame layer).
    pub fn after_greeting(limits: Limits) -> Self {
        Self {
            greeted: true,
            ..Self::new(limits)
        }
    }

    /// Takes back the parts vector of a message its receiver is done with, so the next
    /// message reuses its allocation (only a small one, and only between messages).
    pub fn recycle(&mut self, mut parts: Vec<Bytes>) {
        if self.parts.capacity() == 0 && parts.capacity() <= RECYCLED_PARTS_MAX {
            parts.clear();
            self.parts = parts;
        }
    }

    /// Parts of the message in progress received so far.
    pub fn parts_received(&self) -> usize {
        self.parts.len()
    }

    fn decode_greeting(src: &mut BytesMut) -> Result<Option<Greeting>, FrameError> {
        check_prefix(src)?;
        let Some(raw) = src.get(..GREETING_LEN) else {
            src.reserve(GREETING_LEN - src.len());
            return Ok(None);
        };
        let mut octets = [0u8; GREETING_LEN];
        octets.copy_from_slice(raw);
        let greeting = Greeting::from_bytes(&octets)?;
        src.advance(GREETING_LEN);
        Ok(Some(greeting))
    }

    /// Reads one frame header: `(flags, header length, body size)`, or `None` if incomplete.
    fn frame_header(src: &[u8]) -> Option<(u8, usize, u64)> {
        let (&flags, rest) = src.split_first()?;
        if flags & FLAG_LONG == 0 {
            return rest.first().map(|&size| (flags, 2, u64::from(size)));
        }
        let size: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        Some((flags, 9, u64::from_be_bytes(size)))
    }

    /// Checks a declared frame size against the limits before its body is buffered.
    fn check_size(&self, flags: u8, size: u64) -> Result<usize, FrameError> {
        let pending = if flags & FLAG_COMMAND == 0 {
            self.parts_size
        } else {
            0
        };
        let total = size.saturating_add(pending as u64);
        if total > self.limits.max_msg_size as u64 {
            return Err(FrameError::MessageTooLarge {
                size: total,
                max: self.limits.max_msg_size,
            });
        }
        usize::try_from(size).map_err(|_| FrameError::MessageTooLarge {
            size,
            max: self.limits.max_msg_size,
        })
    }

    /// Decodes one frame; `Ok(None)` until a whole frame is buffered.
    fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<(u8, Bytes)>, FrameError> {
        let Some((flags, header_len, size)) = Self::frame_header(src) else {
            return Ok(None);
        };
        let size = self.check_size(flags, size)?;
        let frame_len = header_len + size;
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        src.advance(header_len);
        Ok(Some((flags, src.split_to(size).freeze())))
    }

    /// Adds a message part; yields the message when the last part arrives.
    fn push_part(&mut self, flags: u8, body: Bytes) -> Result<Option<Message>, FrameError> {
        if self.parts.len() >= self.limits.max_msg_parts {
            return Err(FrameError::TooManyParts {
                max: self.limits.max_msg_parts,
            });
        }
        self.parts_size += body.len();
        self.parts.push(body);
        if flags & FLAG_MORE != 0 {
            return Ok(None);
        }
        self.parts_size = 0;
        Ok(Some(Message(std::mem::take(&mut self.parts))))
    }
}

impl Decoder for ZmtpCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        if !self.greeted {
            let Some(greeting) = Self::decode_greeting(src)? else {
                return Ok(None);
            };
            self.greeted = true;
            return Ok(Some(Inbound::Greeting(greeting)));
        }
        while let Some((flags, body)) = self.decode_frame(src)? {
            if flags & FLAG_COMMAND != 0 {
                return Command::parse(body).map(|c| Some(Inbound::Command(c)));
            }
            if let Some(message) = self.push_part(flags, body)? {
                return Ok(Some(Inbound::Message(message)));
            }
        }
        Ok(None)
    }
}

/// Writes a frame header for a body of `len` octets.
pub fn put_frame_header(dst: &mut BytesMut, flags: u8, len: usize) {
    if len <= SHORT_MAX {
        dst.put_u8(flags);
        dst.put_u8(len as u8);
    } else {
        dst.put_u8(flags | FLAG_LONG);
        dst.put_u64(len as u64);
    }
}

/// Writes one message frame.
pub fn put_part(dst: &mut BytesMut, body: &[u8], more: bool) {
    put_frame_header(dst, if more { FLAG_MORE } else { 0 }, body.len());
    dst.put_slice(body);
}

/// Writes a whole message from its parts (MORE on every part but the last).
pub fn put_message<'a>(dst: &mut BytesMut, parts: impl ExactSizeIterator<Item = &'a [u8]>) {
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.enumerate() {
        put_part(dst, part, i < last);
    }
}

/// Writes one command frame from an already encoded body.
pub fn put_command_body(dst: &mut BytesMut, body: &[u8]) {
    put_frame_header(dst, FLAG_COMMAND, body.len());
    dst.put_slice(body);
}

/// Writes one command frame.
pub fn put_command(dst: &mut BytesMut, command: &Command) -> Result<(), FrameError> {
    let len = command.body_len();
    dst.reserve(FRAME_HEADER_MAX + len);
    put_frame_header(dst, FLAG_COMMAND, len);
    command.encode_body(dst)
}

impl Encoder<Outbound> for ZmtpCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), FrameError> {
        match item {
            Outbound::Greeting(greeting) => dst.put_slice(&greeting.to_bytes()),
            Outbound::Command(command) => put_command(dst, &command)?,
            Outbound::Message(message) => {
                put_message(dst, message.0.iter().map(|part| part.as_ref()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
