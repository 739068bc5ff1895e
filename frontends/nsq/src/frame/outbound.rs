//! Frames the server sends, and a client-side decoder for them (tests, tools, fuzzing).
//!
//! ```text
//! frame:    [u32 BE size][u32 BE frame type][data]        size = 4 + len(data)
//! type 0:   response (OK, CLOSE_WAIT, _heartbeat_, IDENTIFY/AUTH JSON)
//! type 1:   error    (<CODE> <description>)
//! type 2:   message  [i64 BE timestamp ns][u16 BE attempts][16-byte id][body]
//! ```
//!
//! # Invariants
//! - `FrameDecoder` never buffers a frame whose declared size exceeds its `max_size`.
//! - `decode(encode(frame)) == frame` for every frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::error::DecodeError;
use super::text::MSG_ID_LEN;

/// Frame type of a response.
pub const FRAME_TYPE_RESPONSE: u32 = 0;
/// Frame type of an error.
pub const FRAME_TYPE_ERROR: u32 = 1;
/// Frame type of a message.
pub const FRAME_TYPE_MESSAGE: u32 = 2;

/// Bytes of a message frame's data before the body: timestamp, attempts, id.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + MSG_ID_LEN;

/// Response to a successful command.
pub const OK: &[u8] = b"OK";
/// Response to CLS.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
/// Heartbeat, sent as a response frame.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// One message as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFrame {
    /// Publish time, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Delivery attempts, this one included.
    pub attempts: u16,
    /// The 16-byte message id.
    pub id: [u8; MSG_ID_LEN],
    /// The message body.
    pub body: Bytes,
}

/// A server-to-client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Frame type 0.
    Response(Bytes),
    /// Frame type 1.
    Error(Bytes),
    /// Frame type 2.
    Message(MessageFrame),
}

impl Frame {
    /// A response frame with static data (`OK`, `CLOSE_WAIT`, `_heartbeat_`).
    pub fn response(data: &'static [u8]) -> Self {
        Frame::Response(Bytes::from_static(data))
    }

    /// Length of the frame's data (everything after the frame type).
    pub fn data_len(&self) -> usize {
        match self {
            Frame::Response(data) | Frame::Error(data) => data.len(),
            Frame::Message(msg) => MESSAGE_HEADER_LEN + msg.body.len(),
        }
    }

    /// Total bytes on the wire.
    pub fn encoded_len(&self) -> usize {
        8 + self.data_len()
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u32(u32::try_from(4 + self.data_len()).unwrap_or(u32::MAX));
        match self {
            Frame::Response(data) => {
                dst.put_u32(FRAME_TYPE_RESPONSE);
                dst.put_slice(data);
            }
            Frame::Error(data) => {
                dst.put_u32(FRAME_TYPE_ERROR);
                dst.put_slice(data);
            }
            Frame::Message(msg) => {
                dst.put_u32(FRAME_TYPE_MESSAGE);
                dst.put_i64(msg.timestamp_ns);
                dst.put_u16(msg.attempts);
                dst.put_slice(&msg.id);
                dst.put_slice(&msg.body);
            }
        }
    }
}

/// Client-side decoder of server frames.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_size: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames whose size field exceeds `max_size`.
    pub fn new(max_size: usize) -> Self {
        Self { max_size }
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(head) = src.get(..8) else {
            return Ok(None);
        };
        let (size_field, type_field) = head.split_at(4);
        let size = u32::from_be_bytes(size_field.try_into().unwrap_or_default());
        let frame_type = u32::from_be_bytes(type_field.try_into().unwrap_or_default());
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        if len < 4 || len > self.max_size {
            return Err(DecodeError::FrameSize(u64::from(size)));
        }
        if frame_type > FRAME_TYPE_MESSAGE {
            return Err(DecodeError::UnknownFrameType(frame_type));
        }
        if frame_type == FRAME_TYPE_MESSAGE && len - 4 < MESSAGE_HEADER_LEN {
            return Err(DecodeError::FrameSize(u64::from(size)));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(8);
        let mut data = src.split_to(len - 4).freeze();
        Ok(Some(match frame_type {
            FRAME_TYPE_RESPONSE => Frame::Response(data),
            FRAME_TYPE_ERROR => Frame::Error(data),
            _ => {
                let timestamp_ns = data.get_i64();
                let attempts = data.get_u16();
                let mut id = [0u8; MSG_ID_LEN];
                data.copy_to_slice(&mut id);
                Frame::Message(MessageFrame {
                    timestamp_ns,
                    attempts,
                    id,
                    body: data,
                })
            }
        }))
    }
}
