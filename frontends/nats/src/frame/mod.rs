//! The NATS client-protocol wire codec: ops, limits, and the two codecs built on them.
//!
//! Pure code: no async, no core types. `lines` splits the stream into op lines and payloads
//! (shared by both directions), `encode` writes ops. [`ServerCodec`] is what the broker runs on each
//! connection (decodes [`ClientOp`], encodes [`ServerOp`]); [`ClientCodec`] is the mirror image
//! used by tests and tools.
//!
//! ```text
//! client → server                                   server → client
//! CONNECT <json>\r\n                                INFO <json> \r\n
//! PUB <subject> [reply] <#bytes>\r\n<payload>\r\n   MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n
//! HPUB <subject> [reply] <#hdr> <#total>\r\n        HMSG <subject> <sid> [reply] <#hdr> <#total>\r\n
//!      <headers><payload>\r\n                            <headers><payload>\r\n
//! SUB <subject> [queue] <sid>\r\n                   PING\r\n  PONG\r\n  +OK\r\n
//! UNSUB <sid> [max_msgs]\r\n                        -ERR '<text>'\r\n
//! PING\r\n  PONG\r\n
//! ```
//!
//! Decoding follows nats-server's `parser.go` byte for byte where a client can observe it:
//! op names are case-insensitive, arguments are separated by spaces or tabs, a line ends at
//! `\n` (a `\r` seen in the argument drops the argument's last byte), `PING`/`PONG`/`+OK`
//! ignore whatever follows them up to `\n`, and a payload must be followed by exactly `\r\n`.
//!
//! # Invariants
//! - The read buffer never holds more than `max_control_line` bytes of an unfinished
//!   argument, nor more than `max_payload + 2` bytes of an unfinished payload: a declared size
//!   over the limit is an error as soon as its control line ends, before any payload is
//!   buffered; an over-long line is an error as soon as it is longer than the limit.
//! - Decoding never panics, whatever the input; every payload is a `Bytes` split from the read
//!   buffer (no copy).
//! - Decoded ops are consumed from the buffer; on `Ok(None)` the codec keeps its own progress,
//!   so feeding the same stream in any split yields the same ops.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod encode;
mod lines;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use encode::{encode_client_op, encode_server_op, put_decimal, put_err, put_msg_head};
use lines::{parse_size, split_args, Line, Pending, Reader, Verb, CLIENT_VERBS, SERVER_VERBS};

/// nats-server's default `max_control_line` (bytes of arguments on one line).
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// nats-server's default `max_payload` (bytes of headers plus payload).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Longest size field nats-server parses (`999999999`); longer is malformed.
const MAX_SIZE_DIGITS: usize = 9;

/// Size limits a codec enforces before buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest argument part of a control line, in bytes.
    pub max_control_line: usize,
    /// Largest declared message size (headers plus payload), in bytes.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// What went wrong decoding the byte stream. Every variant ends the connection; what the
/// peer is told first differs (see the session's error mapping).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes that start no known op, or a payload not followed by `\r\n`
    /// (nats-server: `-ERR 'Unknown Protocol Operation'`).
    #[error("unknown protocol operation")]
    UnknownOp,
    /// An argument line longer than the limit (`-ERR 'maximum control line exceeded'`).
    #[error("maximum control line exceeded: {len} > {max}")]
    ControlLineTooLong {
        /// Bytes of argument seen so far.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A declared message size over the limit (`-ERR 'Maximum Payload Violation'`).
    #[error("maximum payload exceeded: {size} > {max}")]
    PayloadTooLarge {
        /// Declared size (headers plus payload).
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Arguments of a known op that do not parse: wrong count, a bad size, headers larger than
    /// the total. nats-server closes the connection without an `-ERR`.
    #[error("malformed {op} arguments")]
    Malformed {
        /// The op whose arguments were bad.
        op: &'static str,
    },
    /// `HPUB` from a connection that did not negotiate headers (closed without `-ERR`).
    #[error("message headers not supported")]
    HeadersNotSupported,
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One op a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT <json>`: the raw JSON argument.
    Connect(Bytes),
    /// `PUB`: a message without headers.
    Pub {
        /// Destination subject, as sent.
        subject: Bytes,
        /// Reply subject, if any.
        reply_to: Option<Bytes>,
        /// Message body.
        payload: Bytes,
    },
    /// `HPUB`: a message with a header block.
    HPub {
        /// Destination subject, as sent.
        subject: Bytes,
        /// Reply subject, if any.
        reply_to: Option<Bytes>,
        /// The header block, `NATS/1.0…\r\n\r\n` (may be empty when the client said 0).
        headers: Bytes,
        /// Message body after the headers.
        payload: Bytes,
    },
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        /// Subject filter, as sent.
        subject: Bytes,
        /// Queue group, if any.
        queue: Option<Bytes>,
        /// Client-chosen subscription id.
        sid: Bytes,
    },
    /// `UNSUB <sid> [max_msgs]`.
    Unsub {
        /// Subscription id.
        sid: Bytes,
        /// The parsed limit; `None` when absent or not a number (both mean "now").
        max_msgs: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO <json>` (clients may send it; the server validates and ignores it).
    Info(Bytes),
    /// `+OK` (ignored by the server).
    Ok,
    /// `-ERR <text>` (a client error; the server closes the connection).
    Err(Bytes),
}

impl ClientOp {
    /// The op's name as nats-server traces it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::Pub { .. } => "PUB",
            Self::HPub { .. } => "HPUB",
            Self::Sub { .. } => "SUB",
            Self::Unsub { .. } => "UNSUB",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Info(_) => "INFO",
            Self::Ok => "+OK",
            Self::Err(_) => "-ERR",
        }
    }
}

/// One op the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO <json> `: the JSON text (the encoder adds nats-server's trailing space).
    Info(Bytes),
    /// `MSG`: a delivery without headers.
    Msg {
        /// The subject the message was published to.
        subject: Bytes,
        /// The subscription it matched.
        sid: Bytes,
        /// Reply subject, if any.
        reply_to: Option<Bytes>,
        /// Message body.
        payload: Bytes,
    },
    /// `HMSG`: a delivery with a header block.
    HMsg {
        /// The subject the message was published to.
        subject: Bytes,
        /// The subscription it matched.
        sid: Bytes,
        /// Reply subject, if any.
        reply_to: Option<Bytes>,
        /// The header block, `NATS/1.0…\r\n\r\n`.
        headers: Bytes,
        /// Message body after the headers.
        payload: Bytes,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK` (verbose mode).
    Ok,
    /// `-ERR '<text>'`: the text without quotes.
    Err(Bytes),
}

/// The broker's side of a connection: decodes [`ClientOp`], encodes [`ServerOp`].
#[derive(Debug)]
pub struct ServerCodec {
    reader: Reader,
    headers: bool,
}

impl ServerCodec {
    /// A codec enforcing `limits`; `HPUB` is refused until [`Self::set_headers`] allows it.
    pub fn new(limits: Limits) -> Self {
        Self {
            reader: Reader::new(CLIENT_VERBS, limits),
            headers: false,
        }
    }

    /// Whether the client negotiated headers (CONNECT `headers:true`), which allows `HPUB`.
    pub fn set_headers(&mut self, headers: bool) {
        self.headers = headers;
    }

    /// True between ops: the next byte in the buffer starts a new op name (nats-server's
    /// `OP_START`, where it checks for CONNECT while authentication is pending).
    pub fn at_op_start(&self) -> bool {
        self.reader.at_op_start()
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        self.reader.limits()
    }
}

/// A client op from one line; `None` when a payload must follow.
fn client_op(reader: &mut Reader, headers: bool, line: Line) -> Result<Option<ClientOp>, Error> {
    let (verb, arg) = match line {
        Line::Bare(Verb::Ping) => return Ok(Some(ClientOp::Ping)),
        Line::Bare(Verb::Pong) => return Ok(Some(ClientOp::Pong)),
        Line::Bare(_) => return Ok(Some(ClientOp::Ok)),
        Line::Arg(verb, arg) => (verb, arg),
    };
    match verb {
        Verb::Connect => Ok(Some(ClientOp::Connect(arg.freeze()))),
        Verb::Info => Ok(Some(ClientOp::Info(arg.freeze()))),
        Verb::Err => Ok(Some(ClientOp::Err(arg.freeze()))),
        Verb::Sub => parse_sub(&arg.freeze()).map(Some),
        Verb::Unsub => parse_unsub(&arg.freeze()).map(Some),
        Verb::HPub if !headers => Err(Error::HeadersNotSupported),
        _ => reader.expect_payload(verb, arg).map(|()| None),
    }
}

fn parse_sub(arg: &Bytes) -> Result<ClientOp, Error> {
    let malformed = || Error::Malformed { op: "SUB" };
    let ([a, b, c], count) = split_args::<3>(arg, true).ok_or_else(malformed)?;
    match count {
        2 => Ok(ClientOp::Sub {
            subject: arg.slice(a),
            queue: None,
            sid: arg.slice(b),
        }),
        3 => Ok(ClientOp::Sub {
            subject: arg.slice(a),
            queue: Some(arg.slice(b)),
            sid: arg.slice(c),
        }),
        _ => Err(malformed()),
    }
}

fn parse_unsub(arg: &Bytes) -> Result<ClientOp, Error> {
    let ([sid, max], count) = split_args::<2>(arg, true).ok_or(Error::Malformed { op: "UNSUB" })?;
    match count {
        1 => Ok(ClientOp::Unsub {
            sid: arg.slice(sid),
            max_msgs: None,
        }),
        2 => {
            let max_msgs = arg
                .get(max)
                .and_then(parse_size)
                .and_then(|n| u64::try_from(n).ok());
            Ok(ClientOp::Unsub {
                sid: arg.slice(sid),
                max_msgs,
            })
        }
        _ => Err(Error::Malformed { op: "UNSUB" }),
    }
}

impl Decoder for ServerCodec {
    type Item = ClientOp;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, Error> {
        let headers = self.headers;
        self.reader.decode(
            buf,
            |reader, line| client_op(reader, headers, line),
            Pending::into_client_op,
        )
    }
}

impl Encoder<ServerOp> for ServerCodec {
    type Error = Error;

    fn encode(&mut self, op: ServerOp, dst: &mut BytesMut) -> Result<(), Error> {
        encode_server_op(&op, dst);
        Ok(())
    }
}

/// A client's side of a connection: decodes [`ServerOp`], encodes [`ClientOp`].
#[derive(Debug)]
pub struct ClientCodec {
    reader: Reader,
}

impl ClientCodec {
    /// A codec enforcing `limits` on what the server sends.
    pub fn new(limits: Limits) -> Self {
        Self {
            reader: Reader::new(SERVER_VERBS, limits),
        }
    }
}

/// A server op from one line; `None` when a payload must follow.
fn server_op(reader: &mut Reader, line: Line) -> Result<Option<ServerOp>, Error> {
    let (verb, arg) = match line {
        Line::Bare(Verb::Ping) => return Ok(Some(ServerOp::Ping)),
        Line::Bare(Verb::Pong) => return Ok(Some(ServerOp::Pong)),
        Line::Bare(_) => return Ok(Some(ServerOp::Ok)),
        Line::Arg(verb, arg) => (verb, arg),
    };
    match verb {
        Verb::Info => Ok(Some(ServerOp::Info(trim_trailing_blanks(arg.freeze())))),
        Verb::Err => Ok(Some(ServerOp::Err(unquote(arg.freeze())))),
        _ => reader.expect_payload(verb, arg).map(|()| None),
    }
}

fn trim_trailing_blanks(mut arg: Bytes) -> Bytes {
    let keep = arg.len()
        - arg
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
    arg.truncate(keep);
    arg
}

/// `'text'` → `text` (nats-server always quotes; tolerate a missing quote).
fn unquote(mut arg: Bytes) -> Bytes {
    if arg.len() >= 2 && arg.first() == Some(&b'\'') && arg.last() == Some(&b'\'') {
        arg.truncate(arg.len() - 1);
        arg.advance(1);
    }
    arg
}

impl Decoder for ClientCodec {
    type Item = ServerOp;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, Error> {
        self.reader.decode(buf, server_op, Pending::into_server_op)
    }
}

impl Encoder<ClientOp> for ClientCodec {
    type Error = Error;

    fn encode(&mut self, op: ClientOp, dst: &mut BytesMut) -> Result<(), Error> {
        encode_client_op(&op, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn server() -> ServerCodec {
        let mut codec = ServerCodec::new(Limits::default());
        codec.set_headers(true);
        codec
    }

    fn decode_all(codec: &mut ServerCodec, input: &[u8]) -> Result<Vec<ClientOp>, Error> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(op) = codec.decode(&mut buf)? {
            out.push(op);
        }
        Ok(out)
    }

    fn one(input: &str) -> Result<ClientOp, Error> {
        let ops = decode_all(&mut server(), input.as_bytes())?;
        assert_eq!(ops.len(), 1, "{ops:?}");
        Ok(ops.into_iter().next().unwrap())
    }

    #[test]
    fn golden_client_ops() {
        assert_eq!(
            one("CONNECT {\"verbose\":false}\r\n").unwrap(),
            ClientOp::Connect(b("{\"verbose\":false}"))
        );
        assert_eq!(one("connect{}\r\n").unwrap(), ClientOp::Connect(b("{}")));
        assert_eq!(
            one("PUB foo 5\r\nhello\r\n").unwrap(),
            ClientOp::Pub {
                subject: b("foo"),
                reply_to: None,
                payload: b("hello")
            }
        );
        assert_eq!(
            one("pub\tfoo  \t_INBOX.1 2\r\nhi\r\n").unwrap(),
            ClientOp::Pub {
                subject: b("foo"),
                reply_to: Some(b("_INBOX.1")),
                payload: b("hi")
            }
        );
        assert_eq!(
            one("PUB foo 0\r\n\r\n").unwrap(),
            ClientOp::Pub {
                subject: b("foo"),
                reply_to: None,
                payload: Bytes::new()
            }
        );
        assert_eq!(
            one("HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n").unwrap(),
            ClientOp::HPub {
                subject: b("foo"),
                reply_to: Some(b("r")),
                headers: b("NATS/1.0\r\n\r\n"),
                payload: b("hi")
            }
        );
        assert_eq!(
            one("SUB foo.* 1\r\n").unwrap(),
            ClientOp::Sub {
                subject: b("foo.*"),
                queue: None,
                sid: b("1")
            }
        );
        assert_eq!(
            one("sub foo workers 22\n").unwrap(),
            ClientOp::Sub {
                subject: b("foo"),
                queue: Some(b("workers")),
                sid: b("22")
            }
        );
        assert_eq!(
            one("UNSUB 1\r\n").unwrap(),
            ClientOp::Unsub {
                sid: b("1"),
                max_msgs: None
            }
        );
        assert_eq!(
            one("UNSUB 1 10\r\n").unwrap(),
            ClientOp::Unsub {
                sid: b("1"),
                max_msgs: Some(10)
            }
        );
        assert_eq!(
            one("UNSUB 1 x\r\n").unwrap(),
            ClientOp::Unsub {
                sid: b("1"),
                max_msgs: None
            }
        );
        assert_eq!(one("PING\r\n").unwrap(), ClientOp::Ping);
        assert_eq!(one("ping\n").unwrap(), ClientOp::Ping);
        assert_eq!(one("PINGPONG whatever\r\n").unwrap(), ClientOp::Ping);
        assert_eq!(one("PONG\r\n").unwrap(), ClientOp::Pong);
        assert_eq!(one("+OK\r\n").unwrap(), ClientOp::Ok);
        assert_eq!(one("-ERR 'oops'\r\n").unwrap(), ClientOp::Err(b("'oops'")));
        assert_eq!(one("INFO {}\r\n").unwrap(), ClientOp::Info(b("{}")));
    }

    #[test]
    fn carriage_return_drops_the_last_argument_byte_like_nats_server() {
        // "a\rb 1x\n": a `\r` was seen, so the byte before `\n` goes.
        assert_eq!(
            one("SUB a\rb 1x\n").unwrap(),
            ClientOp::Sub {
                subject: b("a"),
                queue: Some(b("b")),
                sid: b("1")
            }
        );
        assert_eq!(one("CONNECT\r\n").unwrap(), ClientOp::Connect(Bytes::new()));
    }

    #[test]
    fn unknown_ops_are_rejected_at_the_first_bad_byte() {
        for input in [
            "FOO\r\n",
            "\r\n",
            " PUB a 1\r\n",
            "MSG a 1 1\r\nx\r\n",
            "PX",
            "SUBX a 1\r\n",
        ] {
            let err = decode_all(&mut server(), input.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::UnknownOp), "{input:?}: {err:?}");
        }
        // Op names needing a blank fail on anything else.
        assert!(matches!(
            decode_all(&mut server(), b"PUB\r\n"),
            Err(Error::UnknownOp)
        ));
        // A prefix of a known op waits for more bytes.
        assert!(decode_all(&mut server(), b"CONNE").unwrap().is_empty());
    }

    #[test]
    fn payload_must_end_with_crlf() {
        assert!(matches!(
            decode_all(&mut server(), b"PUB a 2\r\nhiX"),
            Err(Error::UnknownOp)
        ));
        assert!(matches!(
            decode_all(&mut server(), b"PUB a 2\r\nhi\rX"),
            Err(Error::UnknownOp)
        ));
        assert!(decode_all(&mut server(), b"PUB a 2\r\nhi\r")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_arguments() {
        for (input, op) in [
            ("PUB foo\r\n", "PUB"),
            ("PUB foo bar\r\n", "PUB"),
            ("PUB a b c 1\r\n", "PUB"),
            ("PUB a 1234567890\r\n", "PUB"),
            ("PUB a -1\r\n", "PUB"),
            ("PUB \r\n", "PUB"),
            ("HPUB a 5 4\r\n", "HPUB"),
            ("HPUB a 5\r\n", "HPUB"),
            ("SUB foo\r\n", "SUB"),
            ("SUB a b c d\r\n", "SUB"),
            ("UNSUB\t\r\n", "UNSUB"),
            ("UNSUB 1 2 3\r\n", "UNSUB"),
        ] {
            match decode_all(&mut server(), input.as_bytes()) {
                Err(Error::Malformed { op: got }) => assert_eq!(got, op, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn hpub_needs_negotiated_headers() {
        let mut codec = ServerCodec::new(Limits::default());
        let err = decode_all(&mut codec, b"HPUB a 12 12\r\n").unwrap_err();
        assert!(matches!(err, Error::HeadersNotSupported));
    }

    #[test]
    fn over_limit_payload_is_rejected_before_buffering() {
        let limits = Limits {
            max_control_line: 64,
            max_payload: 10,
        };
        let mut codec = ServerCodec::new(limits);
        let mut buf = BytesMut::from(&b"PUB a 11\r\n"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, Error::PayloadTooLarge { size: 11, max: 10 }));
        codec.set_headers(true);
        let mut codec = ServerCodec::new(limits);
        codec.set_headers(true);
        let mut buf = BytesMut::from(&b"HPUB a 5 11\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Error::PayloadTooLarge { size: 11, .. })
        ));
        // Exactly at the limit is fine.
        let mut codec = ServerCodec::new(limits);
        let ops = decode_all(&mut codec, b"PUB a 10\r\n0123456789\r\n").unwrap();
        assert_eq!(ops.len(), 1);
    }

    #[test]
    fn over_limit_control_line_is_rejected_before_newline() {
        let limits = Limits {
            max_control_line: 8,
            max_payload: 10,
        };
        let mut codec = ServerCodec::new(limits);
        // 8 bytes of argument, no newline yet: still fine.
        let mut buf = BytesMut::from(&b"SUB 12345678"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"9");
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, Error::ControlLineTooLong { len: 9, max: 8 }));
        // The op name and the blanks after it do not count; a trailing `\r` does not count.
        let mut codec = ServerCodec::new(limits);
        let ops = decode_all(&mut codec, b"SUB    abcd 123\r\n").unwrap();
        assert_eq!(ops.len(), 1);
        let mut codec = ServerCodec::new(limits);
        assert!(matches!(
            decode_all(&mut codec, b"CONNECT {\"a\":123}\r\n"),
            Err(Error::ControlLineTooLong { len: 9, max: 8 })
        ));
    }

    #[test]
    fn bare_ops_ignore_long_tails_without_buffering() {
        let mut codec = server();
        let mut buf = BytesMut::from(&b"PING"[..]);
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"\r\nPONG\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ClientOp::Ping));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ClientOp::Pong));
    }

    #[test]
    fn blanks_after_the_op_are_consumed_as_they_arrive() {
        let mut codec = server();
        let mut buf = BytesMut::from(&b"SUB "[..]);
        for _ in 0..100 {
            buf.extend_from_slice(&[b' '; 1000]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"a 1\r\n");
        let op = codec.decode(&mut buf).unwrap();
        assert_eq!(
            op,
            Some(ClientOp::Sub {
                subject: b("a"),
                queue: None,
                sid: b("1")
            })
        );
    }

    const STREAM: &[u8] = b"CONNECT {\"verbose\":false,\"headers\":true}\r\nPING\r\nSUB foo 1\r\n\
        SUB bar q 2\r\nPUB foo 5\r\nhello\r\nHPUB bar _INBOX.x 18 20\r\nNATS/1.0\r\nA: b\r\n\r\n\
        hi\r\nUNSUB 1 3\r\npong\n+OK\r\n";

    #[test]
    fn split_at_every_byte_decodes_the_same() {
        let whole = decode_all(&mut server(), STREAM).unwrap();
        assert_eq!(whole.len(), 9);
        for split in 0..=STREAM.len() {
            let mut codec = server();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&STREAM[..split], &STREAM[split..]] {
                buf.extend_from_slice(part);
                while let Some(op) = codec.decode(&mut buf).unwrap() {
                    out.push(op);
                }
            }
            assert_eq!(out, whole, "split at {split}");
        }
        // One byte at a time.
        let mut codec = server();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in STREAM {
            buf.extend_from_slice(&[*byte]);
            while let Some(op) = codec.decode(&mut buf).unwrap() {
                out.push(op);
            }
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn golden_server_ops() {
        let mut codec = server();
        let mut dst = BytesMut::new();
        let ops = [
            ServerOp::Info(b("{\"server_id\":\"N\"}")),
            ServerOp::Msg {
                subject: b("foo"),
                sid: b("1"),
                reply_to: None,
                payload: b("hi"),
            },
            ServerOp::Msg {
                subject: b("foo"),
                sid: b("9"),
                reply_to: Some(b("_INBOX.a")),
                payload: Bytes::new(),
            },
            ServerOp::HMsg {
                subject: b("_INBOX.a"),
                sid: b("2"),
                reply_to: None,
                headers: b("NATS/1.0 503\r\n\r\n"),
                payload: Bytes::new(),
            },
            ServerOp::Ping,
            ServerOp::Pong,
            ServerOp::Ok,
            ServerOp::Err(b("Unknown Protocol Operation")),
        ];
        for op in ops {
            codec.encode(op, &mut dst).unwrap();
        }
        assert_eq!(
            &dst[..],
            &b"INFO {\"server_id\":\"N\"} \r\nMSG foo 1 2\r\nhi\r\nMSG foo 9 _INBOX.a 0\r\n\r\n\
               HMSG _INBOX.a 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPING\r\nPONG\r\n+OK\r\n\
               -ERR 'Unknown Protocol Operation'\r\n"[..]
        );
    }

    #[test]
    fn client_codec_reads_server_ops() {
        let mut codec = ClientCodec::new(Limits::default());
        let mut buf = BytesMut::from(
            &b"INFO {\"a\":1} \r\nMSG foo 1 r 2\r\nhi\r\nHMSG foo 1 5 7\r\nH\r\n\r\nok\r\n\
               -ERR 'Stale Connection'\r\nPING\r\n"[..],
        );
        let mut out = Vec::new();
        while let Some(op) = codec.decode(&mut buf).unwrap() {
            out.push(op);
        }
        assert_eq!(
            out,
            vec![
                ServerOp::Info(b("{\"a\":1}")),
                ServerOp::Msg {
                    subject: b("foo"),
                    sid: b("1"),
                    reply_to: Some(b("r")),
                    payload: b("hi")
                },
                ServerOp::HMsg {
                    subject: b("foo"),
                    sid: b("1"),
                    reply_to: None,
                    headers: b("H\r\n\r\n"),
                    payload: b("ok")
                },
                ServerOp::Err(b("Stale Connection")),
                ServerOp::Ping,
            ]
        );
        // A client never accepts client ops.
        let mut buf = BytesMut::from(&b"PUB a 1\r\nx\r\n"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(Error::UnknownOp)));
    }

    #[test]
    fn decimal_formatting() {
        for n in [0usize, 7, 10, 99, 1_048_576, usize::MAX] {
            let mut dst = BytesMut::new();
            put_decimal(&mut dst, n);
            assert_eq!(&dst[..], n.to_string().as_bytes());
        }
    }

    fn token() -> impl Strategy<Value = Bytes> {
        "[A-Za-z0-9_.*>$-]{1,24}".prop_map(|s| Bytes::from(s.into_bytes()))
    }

    fn line_arg() -> impl Strategy<Value = Bytes> {
        "[^ \t\r\n][^\r\n]{0,60}".prop_map(|s| Bytes::from(s.into_bytes()))
    }

    fn json_like() -> impl Strategy<Value = Bytes> {
        "[^ \t\r\n]([^\r\n]{0,60}[^ \t\r\n])?".prop_map(|s| Bytes::from(s.into_bytes()))
    }

    fn body() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
    }

    fn client_op() -> impl Strategy<Value = ClientOp> {
        prop_oneof![
            line_arg().prop_map(ClientOp::Connect),
            line_arg().prop_map(ClientOp::Info),
            line_arg().prop_map(ClientOp::Err),
            (token(), proptest::option::of(token()), body()).prop_map(
                |(subject, reply_to, payload)| ClientOp::Pub {
                    subject,
                    reply_to,
                    payload
                }
            ),
            (token(), proptest::option::of(token()), body(), body()).prop_map(
                |(subject, reply_to, headers, payload)| ClientOp::HPub {
                    subject,
                    reply_to,
                    headers,
                    payload
                }
            ),
            (token(), proptest::option::of(token()), token()).prop_map(|(subject, queue, sid)| {
                ClientOp::Sub {
                    subject,
                    queue,
                    sid,
                }
            }),
            (token(), proptest::option::of(0u64..=999_999_999))
                .prop_map(|(sid, max_msgs)| ClientOp::Unsub { sid, max_msgs }),
            Just(ClientOp::Ping),
            Just(ClientOp::Pong),
            Just(ClientOp::Ok),
        ]
    }

    fn server_op() -> impl Strategy<Value = ServerOp> {
        prop_oneof![
            json_like().prop_map(ServerOp::Info),
            "[^\r\n']{0,40}".prop_map(|s| ServerOp::Err(Bytes::from(s.into_bytes()))),
            (token(), token(), proptest::option::of(token()), body()).prop_map(
                |(subject, sid, reply_to, payload)| ServerOp::Msg {
                    subject,
                    sid,
                    reply_to,
                    payload
                }
            ),
            (
                token(),
                token(),
                proptest::option::of(token()),
                body(),
                body()
            )
                .prop_map(|(subject, sid, reply_to, headers, payload)| {
                    ServerOp::HMsg {
                        subject,
                        sid,
                        reply_to,
                        headers,
                        payload,
                    }
                }),
            Just(ServerOp::Ping),
            Just(ServerOp::Pong),
            Just(ServerOp::Ok),
        ]
    }

    proptest! {
        #[test]
        fn client_ops_round_trip(ops in proptest::collection::vec(client_op(), 1..8), split in any::<prop::sample::Index>()) {
            let mut wire = BytesMut::new();
            for op in &ops {
                encode_client_op(op, &mut wire);
            }
            let cut = split.index(wire.len() + 1);
            let mut codec = server();
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Some(op) = codec.decode(&mut buf).unwrap() {
                out.push(op);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(op) = codec.decode(&mut buf).unwrap() {
                out.push(op);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, ops);
        }

        #[test]
        fn server_ops_round_trip(ops in proptest::collection::vec(server_op(), 1..8)) {
            let mut wire = BytesMut::new();
            for op in &ops {
                encode_server_op(op, &mut wire);
            }
            let mut codec = ClientCodec::new(Limits::default());
            let mut out = Vec::new();
            while let Some(op) = codec.decode(&mut wire).unwrap() {
                out.push(op);
            }
            prop_assert!(wire.is_empty());
            prop_assert_eq!(out, ops);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overbuffer(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits { max_control_line: 32, max_payload: 64 };
            let mut codec = ServerCodec::new(limits);
            codec.set_headers(true);
            let mut buf = BytesMut::new();
            for chunk in input.chunks(7) {
                buf.extend_from_slice(chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert!(buf.len() <= limits.max_control_line + limits.max_payload + 2 + 7);
            }
        }
    }
}
