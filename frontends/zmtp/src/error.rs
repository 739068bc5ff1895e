//! Why a ZMTP connection ends, and what (if anything) the peer is told first.
//!
//! libzmq closes silently on most protocol errors; it sends an ERROR command only when the
//! security mechanism rejects the peer (the ZAP status code, `400` for bad credentials). The
//! broker adds one more ERROR, for socket types it cannot serve, as RFC 23 recommends.
//!
//! # Invariants
//! - [`SessionError::to_wire`] returns `Some` only for errors raised during the handshake,
//!   before the peer can have been given anything else.

use bytes::Bytes;

use crate::frame::{Command, FrameError};

/// ERROR reason for a socket type the broker does not serve (RFC 23 reasons are VCHAR, so no
/// spaces).
pub const UNSUPPORTED_SOCKET_TYPE: &[u8] = b"Unsupported-Socket-Type";
/// ERROR reason for rejected PLAIN credentials (the ZAP status libzmq sends).
pub const AUTH_FAILED: &[u8] = b"400";

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
    /// The ERROR command to send before closing, as the reference behaves.
    pub fn to_wire(&self) -> Option<Command> {
        let reason = match self {
            Self::AuthFailed => Bytes::from_static(AUTH_FAILED),
            Self::UnsupportedSocketType(_) => Bytes::from_static(UNSUPPORTED_SOCKET_TYPE),
            Self::InvalidProperty(name) => Bytes::from(format!("Invalid-{name}")),
            _ => return None,
        };
        Some(Command::Error { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_handshake_rejections_are_reported() {
        let wire = SessionError::AuthFailed.to_wire();
        assert_eq!(
            wire,
            Some(Command::Error {
                reason: Bytes::from_static(b"400")
            })
        );
        let wire = SessionError::UnsupportedSocketType("PAIR".into()).to_wire();
        assert!(matches!(wire, Some(Command::Error { .. })));
        let wire = SessionError::InvalidProperty("X-Subject").to_wire();
        let reason = Bytes::from_static(b"Invalid-X-Subject");
        assert_eq!(wire, Some(Command::Error { reason }));
        assert_eq!(SessionError::MechanismMismatch.to_wire(), None);
        assert_eq!(SessionError::HeartbeatTimeout.to_wire(), None);
    }
}
