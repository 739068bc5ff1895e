//! Pure codec for nsqd's TCP protocol V2: no async, no core types.
//!
//! ```text
//! client → server:  "  V2"                                  4-byte magic, once
//!                   VERB[ param]*\n                          line commands
//!                   VERB[ param]*\n[u32 BE size][body]       IDENTIFY, AUTH, PUB, DPUB
//!                   MPUB <topic>\n[u32 BE size][u32 BE n]([u32 BE size][body])*n
//! server → client:  [u32 BE size][u32 BE type][data]         response / error / message
//! ```
//!
//! - [`command`]: [`Command`], [`Verb`], [`Params`] and client-side encoding.
//! - [`decode`]: the server-side [`Codec`] with its [`Limits`] and [`Gate`].
//! - [`outbound`]: [`Frame`]s the server sends and a client-side [`FrameDecoder`].
//! - [`error`]: [`DecodeError`], rendered with nsqd's exact texts.
//! - [`text`]: names, decimal arguments, message ids, Go quoting.
//!
//! # Invariants
//! - No decoder panics on any input, and none buffers past a declared size that failed its
//!   limit check.
//! - Payloads are `Bytes` split from the read buffer, never copied.
//! - Encoding then decoding any command or frame gives it back unchanged.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod command;
pub mod decode;
pub mod error;
pub mod outbound;
pub mod text;

pub use command::{Command, Params, Verb};
pub use decode::{decode_mpub_body, Codec, Gate, Limits, MAX_LINE_LEN};
pub use error::DecodeError;
pub use outbound::{Frame, FrameDecoder, MessageFrame, CLOSE_WAIT, HEARTBEAT, OK};
pub use text::{go_quote, is_ephemeral, is_valid_name, message_id, parse_base10, MSG_ID_LEN};

/// The magic a V2 client sends first.
pub const MAGIC_V2: [u8; 4] = *b"  V2";

/// Accepts the V2 magic; anything else is nsqd's `E_BAD_PROTOCOL`.
pub fn check_magic(magic: [u8; 4]) -> Result<(), DecodeError> {
    if magic == MAGIC_V2 {
        Ok(())
    } else {
        Err(DecodeError::BadProtocol)
    }
}

#[cfg(test)]
mod tests;
