//! Why an MQTT connection ends, and what the broker says on the wire before it closes.
//!
//! mosquitto's rules (`handle__packet`, `packet__read`): a 5.0 client gets a DISCONNECT with
//! the reason code of the error once it has been sent a successful CONNACK; a 3.1.x client,
//! or any client before CONNACK, just sees the connection close.
//!
//! # Invariants
//! - [`SessionError::to_wire`] never yields a DISCONNECT for a 3.1.x connection.

use crate::frame::{reason, Disconnect, FrameError, Packet, ProtocolVersion};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bytes that are not a valid packet.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A valid packet that breaks the protocol (second CONNECT, server-only packet, …).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A protocol violation that mosquitto answers by closing without a DISCONNECT (second
    /// CONNECT, AUTH without an authentication method, a server-only packet from a client).
    #[error("protocol violation: {0}")]
    Violation(&'static str),
    /// Topic Alias 0, above the maximum, or unknown with an empty topic.
    #[error("topic alias invalid")]
    TopicAliasInvalid,
    /// More unacknowledged QoS 2 PUBLISHes than the advertised Receive Maximum.
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// RETAIN=1 while retained messages are turned off.
    #[error("retain not supported")]
    RetainNotSupported,
    /// Nothing arrived for 1.5 × keep alive.
    #[error("keep alive timeout")]
    KeepAliveTimeout,
    /// Another connection took over the client id.
    #[error("session taken over")]
    TakenOver,
    /// The broker is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// The core refused a message (store failure while the client waits for an ack).
    #[error("routing failed: {0}")]
    Route(#[from] polymq_core::RouteError),
    /// No CONNECT arrived in time.
    #[error("connect timeout")]
    ConnectTimeout,
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// The MQTT 5 reason code for this end of the session, if the client is told one.
    pub fn reason_code(&self) -> Option<u8> {
        let code = match self {
            Self::Frame(FrameError::Io(_) | FrameError::Unanswered(_))
            | Self::Io(_)
            | Self::ConnectTimeout
            | Self::Violation(_)
            // mosquitto closes an idle client without a DISCONNECT (0x8D is optional).
            | Self::KeepAliveTimeout => return None,
            Self::Frame(err) => err.reason_code(),
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
            Self::ReceiveMaximumExceeded => reason::RECEIVE_MAXIMUM_EXCEEDED,
            Self::RetainNotSupported => reason::RETAIN_NOT_SUPPORTED,
            Self::TakenOver => reason::SESSION_TAKEN_OVER,
            Self::ShuttingDown => reason::SERVER_SHUTTING_DOWN,
            Self::Route(_) => reason::UNSPECIFIED_ERROR,
        };
        Some(code)
    }

    /// The DISCONNECT a 5.0 client gets before the broker closes (none for 3.1.x).
    pub fn to_wire(&self, version: ProtocolVersion) -> Option<Packet> {
        if !version.is_v5() {
            return None;
        }
        self.reason_code()
            .map(|code| Packet::Disconnect(Disconnect::with_reason(code)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_gets_reason_codes_v3_gets_nothing() {
        let cases = [
            (SessionError::Frame(FrameError::Malformed("x")), 0x81),
            (SessionError::Protocol("x"), 0x82),
            (
                SessionError::Frame(FrameError::TooLarge { size: 2, max: 1 }),
                0x95,
            ),
            (SessionError::TopicAliasInvalid, 0x94),
            (SessionError::ReceiveMaximumExceeded, 0x93),
            (SessionError::TakenOver, 0x8e),
            (SessionError::ShuttingDown, 0x8b),
        ];
        for (err, code) in cases {
            assert_eq!(
                err.to_wire(ProtocolVersion::V5),
                Some(Packet::Disconnect(Disconnect::with_reason(code)))
            );
            assert_eq!(err.to_wire(ProtocolVersion::V311), None);
        }
        for silent in [
            SessionError::ConnectTimeout,
            SessionError::KeepAliveTimeout,
            SessionError::Violation("second CONNECT"),
            SessionError::Frame(FrameError::Unanswered("duplicate property")),
        ] {
            assert_eq!(silent.to_wire(ProtocolVersion::V5), None);
        }
    }
}
