//! Errors the V2 decoders report, each rendered with nsqd's exact wire text.
//!
//! `Display` is the text of nsqd's error frame (`<CODE> <description>`); [`DecodeError::wire`]
//! returns the same text as bytes, byte-exact even where nsqd echoes raw, non-UTF-8 input.
//! Every decode error is fatal: nsqd sends the frame (when there is one) and closes.
//!
//! # Invariants
//! - `wire()` and `Display` agree on every UTF-8 input.
//! - [`DecodeError::LineTooLong`] and [`DecodeError::Io`] have no wire text: nsqd closes
//!   without replying to them.

use bytes::Bytes;

use super::command::Verb;
use super::text::go_quote;

/// Why a byte stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The 4-byte magic was not `"  V2"`.
    #[error("E_BAD_PROTOCOL")]
    BadProtocol,
    /// No `\n` within nsqd's read buffer: nsqd drops the connection without a reply.
    #[error("command line longer than {max} bytes")]
    LineTooLong {
        /// Longest accepted line, `\n` included.
        max: usize,
    },
    /// The verb is not a V2 command.
    #[error("E_INVALID invalid command {}", String::from_utf8_lossy(.0))]
    InvalidCommand(Bytes),
    /// IDENTIFY or AUTH after the initial state.
    #[error("E_INVALID cannot {0} in current state")]
    InvalidState(Verb),
    /// PUB, MPUB or DPUB without its parameters.
    #[error("E_INVALID {0} insufficient number of parameters")]
    InsufficientParameters(Verb),
    /// AUTH with parameters on its line.
    #[error("E_INVALID AUTH invalid number of parameters")]
    AuthParameters,
    /// MPUB before AUTH on a server that requires it (nsqd checks this before the body).
    #[error("E_AUTH_FIRST AUTH required before {0}")]
    AuthFirst(Verb),
    /// A topic name that is not valid. nsqd prefixes the MPUB text with its code twice.
    #[error("E_BAD_TOPIC {}{verb} topic name {} is not valid",
        if *.verb == Verb::Mpub { "E_BAD_TOPIC " } else { "" }, go_quote(.name))]
    BadTopic {
        /// The publishing verb.
        verb: Verb,
        /// The name as sent.
        name: Bytes,
    },
    /// DPUB's delay is not a decimal number.
    #[error("E_INVALID DPUB could not parse timeout {}", String::from_utf8_lossy(.0))]
    DeferParse(Bytes),
    /// DPUB's delay is outside `0..=max_req_timeout_ms`.
    #[error("E_INVALID DPUB timeout {ms} out of range 0-{max}")]
    DeferRange {
        /// The delay as parsed.
        ms: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The stream ended before a PUB/DPUB body size.
    #[error("E_BAD_MESSAGE {0} failed to read message body size")]
    MessageSizeMissing(Verb),
    /// A PUB/DPUB body size of zero or less.
    #[error("E_BAD_MESSAGE {0} invalid message body size {1}")]
    MessageSizeInvalid(Verb, i32),
    /// A PUB/DPUB/MPUB message over `max_msg_size`.
    #[error("E_BAD_MESSAGE {verb} message too big {size} > {max}")]
    MessageTooBig {
        /// The publishing verb.
        verb: Verb,
        /// Declared size.
        size: i32,
        /// The configured maximum.
        max: u64,
    },
    /// The stream ended inside a PUB/DPUB/MPUB message body.
    #[error("E_BAD_MESSAGE {0} failed to read message body")]
    MessageBodyMissing(Verb),
    /// The stream ended before an IDENTIFY/AUTH/MPUB body size.
    #[error("E_BAD_BODY {0} failed to read body size")]
    BodySizeMissing(Verb),
    /// An IDENTIFY/AUTH/MPUB body size of zero or less.
    #[error("E_BAD_BODY {0} invalid body size {1}")]
    BodySizeInvalid(Verb, i32),
    /// An IDENTIFY/AUTH/MPUB body over `max_body_size`.
    #[error("E_BAD_BODY {verb} body too big {size} > {max}")]
    BodyTooBig {
        /// The verb.
        verb: Verb,
        /// Declared (or, for MPUB, consumed) size.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The stream ended inside an IDENTIFY/AUTH body.
    #[error("E_BAD_BODY {0} failed to read body")]
    BodyMissing(Verb),
    /// The stream ended before the MPUB message count.
    #[error("E_BAD_BODY MPUB failed to read message count")]
    MpubCountMissing,
    /// An MPUB count of zero or less, or more than the body size allows.
    #[error("E_BAD_BODY MPUB invalid message count {0}")]
    MpubCountInvalid(i32),
    /// The stream ended before the size of MPUB message `index`.
    #[error("E_BAD_MESSAGE MPUB failed to read message({0}) body size")]
    MpubMessageSizeMissing(u32),
    /// MPUB message `index` declared a size of zero or less.
    #[error("E_BAD_MESSAGE MPUB invalid message({index}) body size {size}")]
    MpubMessageSizeInvalid {
        /// Zero-based position in the batch.
        index: u32,
        /// Declared size.
        size: i32,
    },
    /// Server frame decoding (client side): a frame type other than 0, 1, 2.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u32),
    /// Server frame decoding (client side): a size that cannot hold the frame.
    #[error("invalid frame size {0}")]
    FrameSize(u64),
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl DecodeError {
    /// The error frame payload nsqd sends for this error, or `None` when nsqd closes silently.
    pub fn wire(&self) -> Option<Bytes> {
        match self {
            DecodeError::LineTooLong { .. }
            | DecodeError::Io(_)
            | DecodeError::UnknownFrameType(_)
            | DecodeError::FrameSize(_) => None,
            DecodeError::InvalidCommand(raw) => Some(join(b"E_INVALID invalid command ", raw)),
            DecodeError::DeferParse(raw) => {
                Some(join(b"E_INVALID DPUB could not parse timeout ", raw))
            }
            other => Some(Bytes::from(other.to_string())),
        }
    }

    /// The error code (`E_BAD_BODY`, …) without its description.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::BadProtocol => "E_BAD_PROTOCOL",
            DecodeError::InvalidCommand(_)
            | DecodeError::InvalidState(_)
            | DecodeError::InsufficientParameters(_)
            | DecodeError::AuthParameters
            | DecodeError::DeferParse(_)
            | DecodeError::DeferRange { .. } => "E_INVALID",
            DecodeError::AuthFirst(_) => "E_AUTH_FIRST",
            DecodeError::BadTopic { .. } => "E_BAD_TOPIC",
            DecodeError::MessageSizeMissing(_)
            | DecodeError::MessageSizeInvalid(..)
            | DecodeError::MessageTooBig { .. }
            | DecodeError::MessageBodyMissing(_)
            | DecodeError::MpubMessageSizeMissing(_)
            | DecodeError::MpubMessageSizeInvalid { .. } => "E_BAD_MESSAGE",
            DecodeError::BodySizeMissing(_)
            | DecodeError::BodySizeInvalid(..)
            | DecodeError::BodyTooBig { .. }
            | DecodeError::BodyMissing(_)
            | DecodeError::MpubCountMissing
            | DecodeError::MpubCountInvalid(_) => "E_BAD_BODY",
            DecodeError::LineTooLong { .. }
            | DecodeError::UnknownFrameType(_)
            | DecodeError::FrameSize(_)
            | DecodeError::Io(_) => "",
        }
    }
}

/// `prefix` followed by the raw bytes nsqd echoes.
fn join(prefix: &[u8], raw: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + raw.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(raw);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(err: &DecodeError) -> Vec<u8> {
        err.wire().map(|b| b.to_vec()).unwrap_or_default()
    }

    #[test]
    fn texts_match_nsqd() {
        let bad = |verb| DecodeError::BadTopic {
            verb,
            name: Bytes::from_static(b"a b"),
        };
        assert_eq!(
            wire(&bad(Verb::Pub)),
            b"E_BAD_TOPIC PUB topic name \"a b\" is not valid"
        );
        assert_eq!(
            wire(&bad(Verb::Mpub)),
            b"E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a b\" is not valid"
        );
        assert_eq!(
            wire(&DecodeError::MessageTooBig {
                verb: Verb::Pub,
                size: 11,
                max: 10
            }),
            b"E_BAD_MESSAGE PUB message too big 11 > 10"
        );
        assert_eq!(
            wire(&DecodeError::MpubMessageSizeInvalid { index: 2, size: -1 }),
            b"E_BAD_MESSAGE MPUB invalid message(2) body size -1"
        );
        assert_eq!(wire(&DecodeError::BadProtocol), b"E_BAD_PROTOCOL");
        assert_eq!(
            wire(&DecodeError::InvalidCommand(Bytes::from_static(b"X\xff"))),
            b"E_INVALID invalid command X\xff"
        );
        assert!(DecodeError::LineTooLong { max: 1 }.wire().is_none());
    }

    #[test]
    fn codes_prefix_the_text() {
        let errors = [
            DecodeError::BadProtocol,
            DecodeError::InvalidState(Verb::Identify),
            DecodeError::AuthFirst(Verb::Mpub),
            DecodeError::BodyTooBig {
                verb: Verb::Mpub,
                size: 9,
                max: 8,
            },
            DecodeError::MpubCountInvalid(0),
            DecodeError::MessageBodyMissing(Verb::Dpub),
            DecodeError::DeferRange { ms: 9, max: 8 },
        ];
        for err in errors {
            assert!(err.to_string().starts_with(err.code()), "{err}");
        }
    }
}
