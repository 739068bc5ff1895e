//! Why a ZMTP connection ends, and what (if anything) the peer is told first.
//!
//! libzmq closes silently on most protocol errors; it sends an ERROR command only when the
//! security mechanism rejects the peer (the ZAP status code, `400` for bad credentials), in the
//! mechanism's own spelling (see [`LIBZMQ_PLAIN_ERROR_NAME`]). The broker adds ERRORs for
//! socket types it cannot serve (RFC 37 says a peer SHOULD) and for `X-Subject`, `X-Group` or
//! `Resource` values it cannot use.
//!
//! # Invariants
//! - [`SessionError::to_wire`] returns `Some` only for errors raised during the handshake,
//!   before the peer can have been given anything else.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{Command, FrameError, Mechanism};

/// ERROR reason for a socket type the broker does not serve (RFC 23 reasons are VCHAR, so no
/// spaces).
pub const UNSUPPORTED_SOCKET_TYPE: &[u8] = b"Unsupported-Socket-Type";
/// ERROR reason for rejected PLAIN credentials (the ZAP status libzmq sends).
pub const AUTH_FAILED: &[u8] = b"400";
/// How libzmq's PLAIN mechanism spells ERROR, both when it sends one and when it recognises
/// one: its C literal `"\x05ERROR"` is read as the escape `\x05E` (`^`) followed by `RROR`,
/// so the name-size octet is lost. A libzmq PLAIN client reports a correct `\x05ERROR` as an
/// unexpected command instead of an authentication failure.
pub const LIBZMQ_PLAIN_ERROR_NAME: &[u8] = b"^RROR";

/// Everything that ends a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Malformed or over-limit input, or a transport error.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The handshake did not finish within `handshake_ivl_ms`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer's greeting names another security mechanism.
    #[error("security mechanism mismatch")]
    MechanismMismatch,
    /// PLAIN credentials were rejected.
    #[error("authentication failed")]
    AuthFailed,
    /// The peer's Socket-Type is missing or not served by the broker.
    #[error("unsupported socket type {0:?}")]
    UnsupportedSocketType(String),
    /// An `X-Subject`, `X-Group` or `Resource` property the broker cannot use.
    #[error("invalid {0} property")]
    InvalidProperty(&'static str),
    /// A command that the handshake does not allow at this point.
    #[error("unexpected command {0:?}")]
    UnexpectedCommand(String),
    /// The peer sent ERROR.
    #[error("peer error: {0:?}")]
    PeerError(String),
    /// Nothing arrived within a heartbeat timeout or a PING's TTL.
    #[error("heartbeat timed out")]
    HeartbeatTimeout,
}

impl SessionError {
    /// The body of the ERROR command to send before closing, as libzmq's `mechanism` spells
    /// it (see [`LIBZMQ_PLAIN_ERROR_NAME`]); `None` when libzmq closes silently.
    pub fn to_wire(&self, mechanism: Mechanism) -> Option<Bytes> {
        let reason = match self {
            Self::AuthFailed => Bytes::from_static(AUTH_FAILED),
            Self::UnsupportedSocketType(_) => Bytes::from_static(UNSUPPORTED_SOCKET_TYPE),
            Self::InvalidProperty(name) => Bytes::from(format!("Invalid-{name}")),
            _ => return None,
        };
        let mut body = BytesMut::with_capacity(reason.len() + 8);
        if mechanism == Mechanism::Plain {
            body.put_slice(LIBZMQ_PLAIN_ERROR_NAME);
            body.put_u8(reason.len() as u8);
            body.put_slice(&reason);
        } else {
            Command::Error { reason }.encode_body(&mut body).ok()?;
        }
        Some(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_handshake_rejections_are_reported() {
        let null = |err: SessionError| err.to_wire(Mechanism::Null);
        let wire = null(SessionError::UnsupportedSocketType("PAIR".into()));
        assert_eq!(
            wire.as_deref(),
            Some(&b"\x05ERROR\x17Unsupported-Socket-Type"[..])
        );
        let wire = null(SessionError::InvalidProperty("X-Subject"));
        assert_eq!(
            wire.as_deref(),
            Some(&b"\x05ERROR\x11Invalid-X-Subject"[..])
        );
        assert_eq!(null(SessionError::MechanismMismatch), None);
        assert_eq!(null(SessionError::HeartbeatTimeout), None);
    }

    #[test]
    fn plain_errors_use_libzmq_spelling() {
        // The exact bytes a libzmq PLAIN server sends after its ZAP handler answers 400.
        let wire = SessionError::AuthFailed.to_wire(Mechanism::Plain);
        assert_eq!(wire.as_deref(), Some(&b"^RROR\x03400"[..]));
    }
}
