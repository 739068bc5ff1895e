//! Client commands of protocol V2 as the server decodes them, and their client-side encoding.
//!
//! ```text
//! line command:  VERB[ param]*\n                          (a trailing \r is trimmed)
//! body command:  VERB[ param]*\n [u32 BE size][size bytes]
//! MPUB:          MPUB <topic>\n  [u32 BE body size][u32 BE count]([u32 BE size][bytes])*count
//! ```
//!
//! Commands with a body (IDENTIFY, AUTH, PUB, MPUB, DPUB) arrive with their line already
//! checked, as nsqd checks it before reading the body. Commands without a body carry their raw
//! parameters: nsqd validates those after its state checks, so the session does too.
//!
//! # Invariants
//! - Every `topic` in a decoded body command satisfies [`super::is_valid_name`].
//! - Every payload is a `Bytes` slice of the read buffer (no copy).
//! - [`Command::encode`] produces bytes that decode back to an equal command.

use bytes::{BufMut, Bytes, BytesMut};

/// A command verb, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Feature negotiation and client metadata (JSON body).
    Identify,
    /// Authentication secret (body).
    Auth,
    /// Subscribe to a topic's channel.
    Sub,
    /// Publish one message.
    Pub,
    /// Publish several messages atomically.
    Mpub,
    /// Publish one message with a delay.
    Dpub,
    /// Set the maximum number of messages in flight.
    Rdy,
    /// Finish a message.
    Fin,
    /// Requeue a message, optionally delayed.
    Req,
    /// Reset a message's timeout.
    Touch,
    /// Start a clean close.
    Cls,
    /// No operation (heartbeat answer).
    Nop,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 12] = [
        Verb::Identify,
        Verb::Auth,
        Verb::Sub,
        Verb::Pub,
        Verb::Mpub,
        Verb::Dpub,
        Verb::Rdy,
        Verb::Fin,
        Verb::Req,
        Verb::Touch,
        Verb::Cls,
        Verb::Nop,
    ];

    /// The verb as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Identify => "IDENTIFY",
            Verb::Auth => "AUTH",
            Verb::Sub => "SUB",
            Verb::Pub => "PUB",
            Verb::Mpub => "MPUB",
            Verb::Dpub => "DPUB",
            Verb::Rdy => "RDY",
            Verb::Fin => "FIN",
            Verb::Req => "REQ",
            Verb::Touch => "TOUCH",
            Verb::Cls => "CLS",
            Verb::Nop => "NOP",
        }
    }

    /// Looks a verb up by its exact (case-sensitive) wire spelling, as nsqd does.
    pub fn from_wire(word: &[u8]) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|verb| verb.as_str().as_bytes() == word)
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The space-separated parameters after the verb, exactly as split by nsqd
/// (`bytes.Split(line, " ")`: consecutive spaces give empty parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<Bytes>);

impl Params {
    /// Parameters from already split pieces.
    pub fn new(params: Vec<Bytes>) -> Self {
        Self(params)
    }

    /// Parameter `index` (0 = first after the verb).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index).map(|p| &p[..])
    }

    /// Number of parameters after the verb.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the verb came alone.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter()
    }
}

/// One decoded client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `IDENTIFY` with its JSON body.
    Identify(Bytes),
    /// `AUTH` with its secret.
    Auth(Bytes),
    /// `PUB <topic>` with the message body.
    Pub {
        /// Valid topic name.
        topic: String,
        /// Message body (non-empty, within `max_msg_size`).
        body: Bytes,
    },
    /// `MPUB <topic>` with every message body, in order.
    Mpub {
        /// Valid topic name.
        topic: String,
        /// Message bodies (at least one, each non-empty and within `max_msg_size`).
        bodies: Vec<Bytes>,
    },
    /// `DPUB <topic> <defer_ms>` with the message body.
    Dpub {
        /// Valid topic name.
        topic: String,
        /// Delay in milliseconds, within `0..=max_req_timeout_ms`.
        defer_ms: u64,
        /// Message body.
        body: Bytes,
    },
    /// `SUB <topic> <channel>` (raw parameters).
    Sub(Params),
    /// `RDY [count]` (raw parameters).
    Rdy(Params),
    /// `FIN <id>` (raw parameters).
    Fin(Params),
    /// `REQ <id> <timeout_ms>` (raw parameters).
    Req(Params),
    /// `TOUCH <id>` (raw parameters).
    Touch(Params),
    /// `CLS` (parameters are ignored by the server).
    Cls(Params),
    /// `NOP` (parameters are ignored by the server).
    Nop(Params),
}

impl Command {
    /// The command's verb.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Identify(_) => Verb::Identify,
            Command::Auth(_) => Verb::Auth,
            Command::Pub { .. } => Verb::Pub,
            Command::Mpub { .. } => Verb::Mpub,
            Command::Dpub { .. } => Verb::Dpub,
            Command::Sub(_) => Verb::Sub,
            Command::Rdy(_) => Verb::Rdy,
            Command::Fin(_) => Verb::Fin,
            Command::Req(_) => Verb::Req,
            Command::Touch(_) => Verb::Touch,
            Command::Cls(_) => Verb::Cls,
            Command::Nop(_) => Verb::Nop,
        }
    }

    /// Writes the command as a client sends it.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Command::Identify(body) | Command::Auth(body) => {
                write_line(dst, self.verb(), std::iter::empty());
                write_sized(dst, body);
            }
            Command::Pub { topic, body } => {
                write_line(dst, Verb::Pub, [topic.as_bytes()]);
                write_sized(dst, body);
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let defer = defer_ms.to_string();
                write_line(dst, Verb::Dpub, [topic.as_bytes(), defer.as_bytes()]);
                write_sized(dst, body);
            }
            Command::Mpub { topic, bodies } => {
                write_line(dst, Verb::Mpub, [topic.as_bytes()]);
                let size = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                put_len(dst, size);
                put_len(dst, bodies.len());
                for body in bodies {
                    write_sized(dst, body);
                }
            }
            Command::Sub(params)
            | Command::Rdy(params)
            | Command::Fin(params)
            | Command::Req(params)
            | Command::Touch(params)
            | Command::Cls(params)
            | Command::Nop(params) => {
                write_line(dst, self.verb(), params.iter().map(|p| &p[..]));
            }
        }
    }
}

/// Writes `VERB p1 p2\n`. A line whose last byte is `\r` gets an explicit `\r\n` so that the
/// server's single `\r` trim leaves it intact.
fn write_line<'a>(dst: &mut BytesMut, verb: Verb, params: impl IntoIterator<Item = &'a [u8]>) {
    dst.put_slice(verb.as_str().as_bytes());
    let mut last = b' ';
    for param in params {
        dst.put_u8(b' ');
        dst.put_slice(param);
        last = param.last().copied().unwrap_or(b' ');
    }
    if last == b'\r' {
        dst.put_u8(b'\r');
    }
    dst.put_u8(b'\n');
}

/// Writes `[u32 BE len][bytes]`.
fn write_sized(dst: &mut BytesMut, body: &[u8]) {
    put_len(dst, body.len());
    dst.put_slice(body);
}

/// Writes a length as the wire's 4-byte big-endian integer (saturating; callers stay far below).
fn put_len(dst: &mut BytesMut, len: usize) {
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::params;

    fn encoded(cmd: &Command) -> Vec<u8> {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn verbs_are_case_sensitive() {
        for verb in Verb::ALL {
            assert_eq!(Verb::from_wire(verb.as_str().as_bytes()), Some(verb));
        }
        assert_eq!(Verb::from_wire(b"pub"), None);
        assert_eq!(Verb::from_wire(b""), None);
    }

    #[test]
    fn golden_client_bytes() {
        assert_eq!(encoded(&Command::Nop(Params::default())), b"NOP\n");
        assert_eq!(encoded(&Command::Sub(params(&["t", "c"]))), b"SUB t c\n");
        assert_eq!(encoded(&Command::Rdy(params(&["\r"]))), b"RDY \r\r\n");
        assert_eq!(
            encoded(&Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"hi")
            }),
            b"PUB t\n\x00\x00\x00\x02hi"
        );
        assert_eq!(
            encoded(&Command::Dpub {
                topic: "t".into(),
                defer_ms: 5,
                body: Bytes::from_static(b"x")
            }),
            b"DPUB t 5\n\x00\x00\x00\x01x"
        );
        assert_eq!(
            encoded(&Command::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            }),
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
        );
        assert_eq!(
            encoded(&Command::Identify(Bytes::from_static(b"{}"))),
            b"IDENTIFY\n\x00\x00\x00\x02{}"
        );
    }
}
