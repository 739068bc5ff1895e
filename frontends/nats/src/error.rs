//! Why a NATS session ends, and what nats-server tells the client first.
//!
//! Every [`SessionError`] closes the connection. [`SessionError::to_wire`] gives the exact
//! `-ERR` text nats-server sends before closing, or `None` where it closes silently
//! (malformed arguments, a bad CONNECT JSON, a client `-ERR`, a slow consumer, I/O failures).
//!
//! Non-fatal errors (`Invalid Subject`, `Invalid Publish Subject`) do not end the session and
//! are written inline by the session; their texts are the constants below.
//!
//! # Invariants
//! - The texts are nats-server's byte for byte, including its inconsistent capitalisation.

use crate::frame;

/// `-ERR` for a SUB whose subject the index refuses (connection kept).
pub const INVALID_SUBJECT: &str = "Invalid Subject";
/// `-ERR` text for a SUB past `max_subscriptions` (the connection stays open).
pub const MAX_SUBSCRIPTIONS: &str = "maximum subscriptions exceeded";
/// `-ERR` for a pedantic client publishing to a non-literal subject (connection kept).
pub const INVALID_PUBLISH_SUBJECT: &str = "Invalid Publish Subject";

/// A reason to close a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The byte stream broke a protocol rule.
    #[error(transparent)]
    Frame(#[from] frame::Error),
    /// Bad or missing credentials, or a first op that is not CONNECT when auth is required.
    #[error("authorization violation")]
    AuthorizationViolation,
    /// No CONNECT within the auth timeout.
    #[error("authentication timeout")]
    AuthenticationTimeout,
    /// CONNECT `protocol` outside 0..=1.
    #[error("invalid client protocol")]
    InvalidClientProtocol,
    /// CONNECT `no_responders` without `headers`.
    #[error("no responders requires headers support")]
    NoRespondersRequiresHeaders,
    /// Over the connection limit.
    #[error("maximum connections exceeded")]
    MaxConnections,
    /// Unanswered PINGs.
    #[error("stale connection")]
    StaleConnection,
    /// The client did not keep up with its outbound messages.
    #[error("slow consumer")]
    SlowConsumer,
    /// CONNECT or INFO JSON that does not parse.
    #[error("bad {op} JSON: {source}")]
    BadJson {
        /// The op that carried it.
        op: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The client sent `-ERR`.
    #[error("client error: {0}")]
    ClientError(String),
    /// The client closed the connection.
    #[error("connection closed by client")]
    Eof,
    /// The broker is shutting down.
    #[error("server shutdown")]
    Shutdown,
}

impl SessionError {
    /// The `-ERR` text nats-server sends before closing for this reason, if any.
    pub fn to_wire(&self) -> Option<&'static str> {
        match self {
            Self::Frame(frame::Error::UnknownOp) => Some("Unknown Protocol Operation"),
            Self::Frame(frame::Error::ControlLineTooLong { .. }) => {
                Some("maximum control line exceeded")
            }
            Self::Frame(frame::Error::PayloadTooLarge { .. }) => Some("Maximum Payload Violation"),
            Self::AuthorizationViolation => Some("Authorization Violation"),
            Self::AuthenticationTimeout => Some("Authentication Timeout"),
            Self::InvalidClientProtocol => Some("invalid client protocol"),
            Self::NoRespondersRequiresHeaders => Some("no responders requires headers support"),
            Self::MaxConnections => Some("maximum connections exceeded"),
            Self::StaleConnection => Some("Stale Connection"),
            Self::Frame(
                frame::Error::Malformed { .. }
                | frame::Error::HeadersNotSupported
                | frame::Error::Io(_),
            )
            | Self::SlowConsumer
            | Self::BadJson { .. }
            | Self::ClientError(_)
            | Self::Eof
            | Self::Shutdown => None,
        }
    }

    /// True when pending outbound data is worth flushing before closing (nats-server's
    /// `skipFlushOnClose` is set for write failures and slow consumers: they see EOF only).
    pub fn flushes(&self) -> bool {
        !matches!(self, Self::SlowConsumer | Self::Frame(frame::Error::Io(_)))
    }
}

impl From<std::io::Error> for SessionError {
    fn from(err: std::io::Error) -> Self {
        Self::Frame(frame::Error::Io(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_texts_are_nats_servers() {
        let cases: [(SessionError, Option<&str>); 9] = [
            (
                frame::Error::UnknownOp.into(),
                Some("Unknown Protocol Operation"),
            ),
            (
                frame::Error::ControlLineTooLong { len: 5, max: 4 }.into(),
                Some("maximum control line exceeded"),
            ),
            (
                frame::Error::PayloadTooLarge { size: 5, max: 4 }.into(),
                Some("Maximum Payload Violation"),
            ),
            (frame::Error::Malformed { op: "PUB" }.into(), None),
            (frame::Error::HeadersNotSupported.into(), None),
            (
                SessionError::AuthorizationViolation,
                Some("Authorization Violation"),
            ),
            (SessionError::StaleConnection, Some("Stale Connection")),
            (SessionError::SlowConsumer, None),
            (SessionError::ClientError("x".into()), None),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_wire(), want, "{err:?}");
        }
        assert!(!SessionError::SlowConsumer.flushes());
        assert!(SessionError::StaleConnection.flushes());
    }
}
