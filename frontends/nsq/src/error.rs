//! Session-level errors with nsqd's exact wire texts and fatality.
//!
//! [`NsqError::wire`] is the payload of the error frame; [`NsqError::is_fatal`] says whether
//! nsqd closes the connection after sending it (everything except E_FIN_FAILED, E_REQ_FAILED
//! and E_TOUCH_FAILED).
//!
//! # Invariants
//! - `Display` is the wire text (raw, non-UTF-8 arguments shown lossily); `wire()` is
//!   byte-exact.

use bytes::Bytes;
use polymq_core::queue::AckError;
use polymq_core::RouteError;

use crate::frame::{go_quote, DecodeError, Verb, MSG_ID_LEN};

/// What went wrong while serving one client.
#[derive(Debug, thiserror::Error)]
pub enum NsqError {
    /// The byte stream could not be decoded (all fatal).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A command not allowed in the client's state.
    #[error("E_INVALID cannot {0} in current state")]
    InvalidState(Verb),
    /// SUB on a connection that disabled heartbeats.
    #[error("E_INVALID cannot SUB with heartbeats disabled")]
    HeartbeatsDisabled,
    /// SUB without topic and channel.
    #[error("E_INVALID SUB insufficient number of parameters")]
    SubParameters,
    /// SUB with an invalid topic name.
    #[error("E_BAD_TOPIC SUB topic name {} is not valid", go_quote(.0))]
    SubTopic(Bytes),
    /// SUB with an invalid channel name.
    #[error("E_BAD_CHANNEL SUB channel name {} is not valid", go_quote(.0))]
    SubChannel(Bytes),
    /// SUB refused (consumer limit).
    #[error("E_SUB_FAILED SUB failed {0}")]
    SubFailed(String),
    /// A command that needs AUTH first.
    #[error("E_AUTH_FIRST AUTH required before {0}")]
    AuthFirst(Verb),
    /// A second AUTH.
    #[error("E_INVALID AUTH already set")]
    AuthAlreadySet,
    /// AUTH on a server without secrets.
    #[error("E_AUTH_DISABLED AUTH disabled")]
    AuthDisabled,
    /// A secret that is not accepted.
    #[error("E_AUTH_FAILED AUTH failed")]
    AuthFailed,
    /// RDY with a count that is not a decimal number.
    #[error("E_INVALID RDY could not parse count {}", String::from_utf8_lossy(.0))]
    RdyParse(Bytes),
    /// RDY outside `0..=max_rdy_count`.
    #[error("E_INVALID RDY count {count} out of range 0-{max}")]
    RdyRange {
        /// The count as nsqd reads it (signed).
        count: i64,
        /// The configured maximum.
        max: u64,
    },
    /// FIN, REQ or TOUCH without enough parameters.
    #[error("E_INVALID {0} insufficient number of params")]
    AckParams(Verb),
    /// A message id that is not 16 bytes.
    #[error("E_INVALID invalid message ID")]
    MessageId,
    /// REQ with a timeout that is not a decimal number.
    #[error("E_INVALID REQ could not parse timeout {}", String::from_utf8_lossy(.0))]
    ReqParse(Bytes),
    /// FIN, REQ or TOUCH on a message this client does not hold (not fatal).
    #[error("E_{verb}_FAILED {verb} {} failed {reason}", String::from_utf8_lossy(.id))]
    AckFailed {
        /// FIN, REQ or TOUCH.
        verb: Verb,
        /// The id as sent.
        id: [u8; MSG_ID_LEN],
        /// Why.
        reason: AckError,
    },
    /// IDENTIFY body is not the expected JSON.
    #[error("E_BAD_BODY IDENTIFY failed to decode JSON body")]
    IdentifyJson,
    /// IDENTIFY with an out-of-range setting, e.g. `heartbeat interval (5) is invalid`.
    #[error("E_BAD_BODY IDENTIFY {0}")]
    IdentifyValue(String),
    /// IDENTIFY asked for both deflate and snappy.
    #[error("E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")]
    CompressionConflict,
    /// The core refused a publish.
    #[error("E_{verb}_FAILED {verb} failed {reason}")]
    PublishFailed {
        /// PUB, MPUB or DPUB.
        verb: Verb,
        /// The core's reason.
        reason: RouteError,
    },
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl NsqError {
    /// The error frame payload, or `None` when nsqd closes without replying.
    pub fn wire(&self) -> Option<Bytes> {
        match self {
            NsqError::Decode(err) => err.wire(),
            NsqError::Io(_) => None,
            NsqError::RdyParse(raw) => Some(join(&[b"E_INVALID RDY could not parse count ", raw])),
            NsqError::ReqParse(raw) => {
                Some(join(&[b"E_INVALID REQ could not parse timeout ", raw]))
            }
            NsqError::AckFailed { verb, id, reason } => Some(join(&[
                format!("E_{verb}_FAILED {verb} ").as_bytes(),
                id,
                format!(" failed {reason}").as_bytes(),
            ])),
            other => Some(Bytes::from(other.to_string())),
        }
    }

    /// False only for the errors after which nsqd keeps the connection open.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, NsqError::AckFailed { .. })
    }
}

/// Concatenates wire pieces.
fn join(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(err: &NsqError) -> Vec<u8> {
        err.wire().map(|b| b.to_vec()).unwrap_or_default()
    }

    #[test]
    fn texts_match_nsqd() {
        let id = *b"0123456789abcdef";
        let fin = NsqError::AckFailed {
            verb: Verb::Fin,
            id,
            reason: AckError::NotInFlight,
        };
        assert_eq!(
            text(&fin),
            b"E_FIN_FAILED FIN 0123456789abcdef failed ID not in flight"
        );
        assert!(!fin.is_fatal());
        let touch = NsqError::AckFailed {
            verb: Verb::Touch,
            id,
            reason: AckError::NotOwner,
        };
        assert_eq!(
            text(&touch),
            b"E_TOUCH_FAILED TOUCH 0123456789abcdef failed client does not own message"
        );
        assert_eq!(
            text(&NsqError::RdyRange {
                count: 2501,
                max: 2500
            }),
            b"E_INVALID RDY count 2501 out of range 0-2500"
        );
        assert_eq!(
            text(&NsqError::SubChannel(Bytes::from_static(b"c!"))),
            b"E_BAD_CHANNEL SUB channel name \"c!\" is not valid"
        );
        assert_eq!(
            text(&NsqError::PublishFailed {
                verb: Verb::Mpub,
                reason: RouteError::Closed
            }),
            b"E_MPUB_FAILED MPUB failed closed"
        );
        assert_eq!(
            text(&NsqError::RdyParse(Bytes::from_static(b"x\xff"))),
            b"E_INVALID RDY could not parse count x\xff"
        );
        assert!(NsqError::AuthFailed.is_fatal());
    }
}
