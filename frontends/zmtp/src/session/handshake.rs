//! The ZMTP handshake: greetings, then the NULL or PLAIN security exchange up to the peer's
//! metadata, from which the peer's role and the Socket-Type the broker announces are chosen.
//!
//! ```text
//! send greeting ─► read greeting ─► NULL:  READY                    ─► (session sends READY)
//!                                   PLAIN: HELLO ► WELCOME, INITIATE
//! ```
//!
//! The broker's READY is not sent here: the session sends it once the peer's core
//! subscription exists.
//!
//! # Invariants
//! - The peer's metadata is read before the broker answers with its own, so the broker can
//!   announce the Socket-Type that suits the peer (libzmq sends its READY/INITIATE without
//!   waiting, so this never stalls a libzmq peer).
//! - PLAIN credentials are compared in full, without an early exit on the first difference.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::config::Config;
use crate::error::SessionError;
use crate::frame::{
    Command, Greeting, Inbound, Mechanism, Metadata, Outbound, Revision, ZmtpCodec,
};
use crate::mapping::{PeerTarget, Role};

use super::Listener;

/// What the handshake learned about the peer.
#[derive(Debug)]
pub(super) struct PeerInfo {
    pub(super) revision: Revision,
    pub(super) role: Role,
    /// The Socket-Type of the broker's READY, sent once the peer's subscriptions exist.
    pub(super) announce: &'static str,
    pub(super) target: Option<PeerTarget>,
}

/// Greeting, security mechanism and metadata exchange.
pub(super) async fn handshake<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    listener: &Listener,
) -> Result<PeerInfo, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mechanism = listener.config.mechanism.into();
    framed
        .send(Outbound::Greeting(Greeting::broker(mechanism)))
        .await?;
    let Inbound::Greeting(greeting) = next_item(framed).await? else {
        return Err(SessionError::UnexpectedCommand("message".into()));
    };
    if greeting.mechanism != mechanism {
        return Err(SessionError::MechanismMismatch);
    }
    let metadata = match mechanism {
        Mechanism::Plain => plain_handshake(framed, &listener.config).await?,
        _ => match expect_command(framed, "READY").await? {
            Command::Ready(metadata) => metadata,
            _ => return Err(SessionError::UnexpectedCommand("READY".into())),
        },
    };
    let socket_type = metadata.get("Socket-Type").cloned().unwrap_or_default();
    let Some((role, announce)) = Role::for_socket_type(&socket_type) else {
        let name = String::from_utf8_lossy(&socket_type).into_owned();
        return Err(SessionError::UnsupportedSocketType(name));
    };
    tracing::debug!(
        socket_type = %String::from_utf8_lossy(&socket_type),
        identity = ?metadata.get("Identity"),
        revision = ?greeting.revision(),
        "zmtp handshake"
    );
    let target = match role {
        Role::Publisher | Role::Subscriber => None,
        _ => Some(
            PeerTarget::resolve(&metadata, role, &listener.defaults)
                .map_err(|err| SessionError::InvalidProperty(err.0))?,
        ),
    };
    Ok(PeerInfo {
        revision: greeting.revision(),
        role,
        announce,
        target,
    })
}

async fn next_item<S>(framed: &mut Framed<S, ZmtpCodec>) -> Result<Inbound, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        Some(item) => Ok(item?),
        None => Err(SessionError::Closed),
    }
}

/// Reads the next handshake command, which must be `name`.
async fn expect_command<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    name: &str,
) -> Result<Command, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_item(framed).await? {
        Inbound::Command(Command::Error { reason }) => Err(SessionError::PeerError(
            String::from_utf8_lossy(&reason).into_owned(),
        )),
        Inbound::Command(command) if command.name() == name.as_bytes() => Ok(command),
        Inbound::Command(command) => Err(SessionError::UnexpectedCommand(
            String::from_utf8_lossy(command.name()).into_owned(),
        )),
        Inbound::Greeting(_) | Inbound::Message(_) => {
            Err(SessionError::UnexpectedCommand("message".into()))
        }
    }
}

/// PLAIN (RFC 24): HELLO → WELCOME or ERROR `400`, then INITIATE with the metadata.
async fn plain_handshake<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    config: &Config,
) -> Result<Metadata, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Command::Hello { username, password } = expect_command(framed, "HELLO").await? else {
        return Err(SessionError::UnexpectedCommand("HELLO".into()));
    };
    let known = config.users.iter().fold(false, |found, user| {
        let matches = constant_time_eq(user.username.as_bytes(), &username)
            & constant_time_eq(user.password.as_bytes(), &password);
        found | matches
    });
    if !known {
        return Err(SessionError::AuthFailed);
    }
    framed.send(Outbound::Command(Command::Welcome)).await?;
    match expect_command(framed, "INITIATE").await? {
        Command::Initiate(metadata) => Ok(metadata),
        _ => Err(SessionError::UnexpectedCommand("INITIATE".into())),
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_in_full() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
