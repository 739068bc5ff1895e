//! The NATS client-protocol wire codec: ops, limits, and the two codecs built on them.
//!
//! Pure code: no async, no core types. [`ServerCodec`] is what the broker runs on each
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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

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

/// An op name and how its line continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Connect,
    Pub,
    HPub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Info,
    Ok,
    Err,
    Msg,
    HMsg,
}

/// What follows an op name on its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// At least one blank, then arguments up to the end of line (`PUB a 1`).
    Args,
    /// Optional blanks, then one argument up to the end of line (`CONNECT{}` is fine).
    Json,
    /// Nothing that matters: everything up to `\n` is ignored (`PING`).
    Bare,
}

impl Verb {
    fn name(self) -> &'static [u8] {
        match self {
            Self::Connect => b"CONNECT",
            Self::Pub => b"PUB",
            Self::HPub => b"HPUB",
            Self::Sub => b"SUB",
            Self::Unsub => b"UNSUB",
            Self::Ping => b"PING",
            Self::Pong => b"PONG",
            Self::Info => b"INFO",
            Self::Ok => b"+OK",
            Self::Err => b"-ERR",
            Self::Msg => b"MSG",
            Self::HMsg => b"HMSG",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Pub => "PUB",
            Self::HPub => "HPUB",
            Self::Sub => "SUB",
            Self::Unsub => "UNSUB",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Info => "INFO",
            Self::Ok => "+OK",
            Self::Err => "-ERR",
            Self::Msg => "MSG",
            Self::HMsg => "HMSG",
        }
    }

    fn shape(self) -> Shape {
        match self {
            Self::Connect | Self::Info => Shape::Json,
            Self::Ping | Self::Pong | Self::Ok => Shape::Bare,
            Self::Pub
            | Self::HPub
            | Self::Sub
            | Self::Unsub
            | Self::Err
            | Self::Msg
            | Self::HMsg => Shape::Args,
        }
    }
}

/// Ops a server accepts from a client (`MSG`/`HMSG` are route-only in nats-server).
const CLIENT_VERBS: &[Verb] = &[
    Verb::Connect,
    Verb::Pub,
    Verb::HPub,
    Verb::Sub,
    Verb::Unsub,
    Verb::Ping,
    Verb::Pong,
    Verb::Info,
    Verb::Ok,
    Verb::Err,
];

/// Ops a client accepts from a server.
const SERVER_VERBS: &[Verb] = &[
    Verb::Info,
    Verb::Msg,
    Verb::HMsg,
    Verb::Ping,
    Verb::Pong,
    Verb::Ok,
    Verb::Err,
];

/// Where the line framer is inside the current op. Bytes already judged are consumed from
/// the buffer, so no state needs to re-scan them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of an op name.
    Verb,
    /// After an `Args` op name: one blank is required next.
    NeedBlank(Verb),
    /// Skipping blanks before the argument.
    Blanks(Verb),
    /// The buffer starts at the argument; waiting for `\n`.
    Arg(Verb),
    /// Discarding the rest of a `Bare` op's line.
    Skip(Verb),
}

/// A complete control line.
enum Line {
    /// An op with its argument (`\r` handling applied).
    Arg(Verb, Bytes),
    /// A `Bare` op.
    Bare(Verb),
}

/// Splits the stream into op lines, enforcing the control-line limit as bytes arrive.
#[derive(Debug)]
struct Framer {
    verbs: &'static [Verb],
    max_control_line: usize,
    state: State,
}

impl Framer {
    fn new(verbs: &'static [Verb], max_control_line: usize) -> Self {
        Self {
            verbs,
            max_control_line,
            state: State::Verb,
        }
    }

    /// The next complete line, `Ok(None)` when more bytes are needed.
    fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        loop {
            match self.state {
                State::Verb => {
                    let Some(verb) = match_verb(buf, self.verbs)? else {
                        return Ok(None);
                    };
                    buf.advance(verb.name().len());
                    self.state = match verb.shape() {
                        Shape::Args => State::NeedBlank(verb),
                        Shape::Json => State::Blanks(verb),
                        Shape::Bare => State::Skip(verb),
                    };
                }
                State::NeedBlank(verb) => match buf.first() {
                    None => return Ok(None),
                    Some(b' ' | b'\t') => self.state = State::Blanks(verb),
                    Some(_) => return Err(Error::UnknownOp),
                },
                State::Blanks(verb) => {
                    let blanks = buf.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
                    buf.advance(blanks);
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    self.state = State::Arg(verb);
                }
                State::Arg(verb) => return self.arg_line(verb, buf),
                State::Skip(verb) => match find_newline(buf) {
                    Some(nl) => {
                        buf.advance(nl + 1);
                        self.state = State::Verb;
                        return Ok(Some(Line::Bare(verb)));
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// Completes an argument line, or checks the partial argument against the limit.
    fn arg_line(&mut self, verb: Verb, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        let Some(nl) = find_newline(buf) else {
            let len = buf.len() - usize::from(buf.contains(&b'\r'));
            if len > self.max_control_line {
                return Err(Error::ControlLineTooLong {
                    len,
                    max: self.max_control_line,
                });
            }
            return Ok(None);
        };
        let mut line = buf.split_to(nl + 1);
        line.truncate(nl);
        // nats-server drops the last byte before `\n` once it has seen a `\r` on the line.
        if line.contains(&b'\r') {
            line.truncate(nl - 1);
        }
        if line.len() > self.max_control_line {
            return Err(Error::ControlLineTooLong {
                len: line.len(),
                max: self.max_control_line,
            });
        }
        self.state = State::Verb;
        Ok(Some(Line::Arg(verb, line.freeze())))
    }
}

/// Matches the op name at the start of `buf` (case-insensitively). `Ok(None)` while the
/// bytes so far are a prefix of some name.
fn match_verb(buf: &[u8], verbs: &[Verb]) -> Result<Option<Verb>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut partial = false;
    for &verb in verbs {
        let name = verb.name();
        let n = name.len().min(buf.len());
        let (Some(seen), Some(want)) = (buf.get(..n), name.get(..n)) else {
            continue;
        };
        if seen.eq_ignore_ascii_case(want) {
            if n == name.len() {
                return Ok(Some(verb));
            }
            partial = true;
        }
    }
    if partial {
        Ok(None)
    } else {
        Err(Error::UnknownOp)
    }
}

fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Splits an argument on blanks (and, for `SUB`/`UNSUB`, also CR/LF as nats-server's
/// `splitArg` does). Returns `None` when there are more than `N` arguments.
fn split_args<const N: usize>(arg: &Bytes, line_breaks: bool) -> Option<([Bytes; N], usize)> {
    let is_sep = |b: u8| matches!(b, b' ' | b'\t') || (line_breaks && matches!(b, b'\r' | b'\n'));
    let mut out: [Bytes; N] = std::array::from_fn(|_| Bytes::new());
    let mut count = 0;
    let mut start = None;
    for (i, b) in arg
        .iter()
        .copied()
        .enumerate()
        .chain(std::iter::once((arg.len(), b' ')))
    {
        match (is_sep(b), start) {
            (true, Some(s)) => {
                *out.get_mut(count)? = arg.slice(s..i);
                count += 1;
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    Some((out, count))
}

/// nats-server's `parseSize`: 1 to 9 ASCII digits.
fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > MAX_SIZE_DIGITS {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

/// Takes `size` payload bytes plus the `\r\n` that must follow them.
fn take_payload(buf: &mut BytesMut, size: usize) -> Result<Option<Bytes>, Error> {
    if buf.get(size).is_some_and(|&b| b != b'\r') {
        return Err(Error::UnknownOp);
    }
    match buf.get(size + 1) {
        None => {
            buf.reserve(size + 2 - buf.len());
            Ok(None)
        }
        Some(b'\n') => {
            let payload = buf.split_to(size).freeze();
            buf.advance(2);
            Ok(Some(payload))
        }
        Some(_) => Err(Error::UnknownOp),
    }
}

/// A message whose control line is parsed and whose payload is awaited.
#[derive(Debug)]
struct Pending {
    subject: Bytes,
    sid: Bytes,
    reply_to: Option<Bytes>,
    /// Header bytes at the front of the payload; `None` for `PUB`/`MSG`.
    hdr: Option<usize>,
    size: usize,
}

impl Pending {
    /// Parses `<subject> [reply] [hdr] <size>` (`with_sid`: `<subject> <sid> [reply] …`).
    fn parse(verb: Verb, arg: &Bytes, max_payload: usize) -> Result<Self, Error> {
        let op = verb.label();
        let with_sid = matches!(verb, Verb::Msg | Verb::HMsg);
        let with_hdr = matches!(verb, Verb::HPub | Verb::HMsg);
        let (args, count) = split_args::<5>(arg, false).ok_or(Error::Malformed { op })?;
        let fixed = 2 + usize::from(with_sid) + usize::from(with_hdr);
        let has_reply = match count.checked_sub(fixed) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(Error::Malformed { op }),
        };
        let mut args = args.into_iter().take(count);
        let subject = args.next().unwrap_or_default();
        let sid = if with_sid {
            args.next().unwrap_or_default()
        } else {
            Bytes::new()
        };
        let reply_to = if has_reply { args.next() } else { None };
        let hdr = if with_hdr {
            let digits = args.next().unwrap_or_default();
            Some(parse_size(&digits).ok_or(Error::Malformed { op })?)
        } else {
            None
        };
        let size = args
            .next()
            .and_then(|d| parse_size(&d))
            .ok_or(Error::Malformed { op })?;
        if hdr.is_some_and(|h| h > size) {
            return Err(Error::Malformed { op });
        }
        if size > max_payload {
            return Err(Error::PayloadTooLarge {
                size,
                max: max_payload,
            });
        }
        Ok(Self {
            subject,
            sid,
            reply_to,
            hdr,
            size,
        })
    }

    fn into_client_op(self, mut payload: Bytes) -> ClientOp {
        let Self {
            subject,
            reply_to,
            hdr,
            ..
        } = self;
        match hdr {
            None => ClientOp::Pub {
                subject,
                reply_to,
                payload,
            },
            Some(hdr) => {
                let headers = payload.split_to(hdr);
                ClientOp::HPub {
                    subject,
                    reply_to,
                    headers,
                    payload,
                }
            }
        }
    }

    fn into_server_op(self, mut payload: Bytes) -> ServerOp {
        let Self {
            subject,
            sid,
            reply_to,
            hdr,
            ..
        } = self;
        match hdr {
            None => ServerOp::Msg {
                subject,
                sid,
                reply_to,
                payload,
            },
            Some(hdr) => {
                let headers = payload.split_to(hdr);
                ServerOp::HMsg {
                    subject,
                    sid,
                    reply_to,
                    headers,
                    payload,
                }
            }
        }
    }
}

/// The broker's side of a connection: decodes [`ClientOp`], encodes [`ServerOp`].
#[derive(Debug)]
pub struct ServerCodec {
    framer: Framer,
    max_payload: usize,
    headers: bool,
    pending: Option<Pending>,
}

impl ServerCodec {
    /// A codec enforcing `limits`; `HPUB` is refused until [`Self::set_headers`] allows it.
    pub fn new(limits: Limits) -> Self {
        Self {
            framer: Framer::new(CLIENT_VERBS, limits.max_control_line),
            max_payload: limits.max_payload,
            headers: false,
            pending: None,
        }
    }

    /// Whether the client negotiated headers (CONNECT `headers:true`), which allows `HPUB`.
    pub fn set_headers(&mut self, headers: bool) {
        self.headers = headers;
    }

    /// True between ops: the next byte in the buffer starts a new op name (nats-server's
    /// `OP_START`, where it checks for CONNECT while authentication is pending).
    pub fn at_op_start(&self) -> bool {
        self.pending.is_none() && self.framer.state == State::Verb
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_control_line: self.framer.max_control_line,
            max_payload: self.max_payload,
        }
    }

    fn client_op(&mut self, line: Line) -> Result<Option<ClientOp>, Error> {
        let (verb, arg) = match line {
            Line::Bare(Verb::Ping) => return Ok(Some(ClientOp::Ping)),
            Line::Bare(Verb::Pong) => return Ok(Some(ClientOp::Pong)),
            Line::Bare(_) => return Ok(Some(ClientOp::Ok)),
            Line::Arg(verb, arg) => (verb, arg),
        };
        match verb {
            Verb::Connect => Ok(Some(ClientOp::Connect(arg))),
            Verb::Info => Ok(Some(ClientOp::Info(arg))),
            Verb::Err => Ok(Some(ClientOp::Err(arg))),
            Verb::Sub => parse_sub(&arg).map(Some),
            Verb::Unsub => parse_unsub(&arg).map(Some),
            Verb::HPub if !self.headers => Err(Error::HeadersNotSupported),
            _ => {
                self.pending = Some(Pending::parse(verb, &arg, self.max_payload)?);
                Ok(None)
            }
        }
    }
}

fn parse_sub(arg: &Bytes) -> Result<ClientOp, Error> {
    let malformed = || Error::Malformed { op: "SUB" };
    let ([a, b, c], count) = split_args::<3>(arg, true).ok_or_else(malformed)?;
    match count {
        2 => Ok(ClientOp::Sub {
            subject: a,
            queue: None,
            sid: b,
        }),
        3 => Ok(ClientOp::Sub {
            subject: a,
            queue: Some(b),
            sid: c,
        }),
        _ => Err(malformed()),
    }
}

fn parse_unsub(arg: &Bytes) -> Result<ClientOp, Error> {
    let ([sid, max], count) = split_args::<2>(arg, true).ok_or(Error::Malformed { op: "UNSUB" })?;
    match count {
        1 => Ok(ClientOp::Unsub {
            sid,
            max_msgs: None,
        }),
        2 => {
            let max_msgs = parse_size(&max).and_then(|n| u64::try_from(n).ok());
            Ok(ClientOp::Unsub { sid, max_msgs })
        }
        _ => Err(Error::Malformed { op: "UNSUB" }),
    }
}

impl Decoder for ServerCodec {
    type Item = ClientOp;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, Error> {
        loop {
            if let Some(pending) = &self.pending {
                let Some(payload) = take_payload(buf, pending.size)? else {
                    return Ok(None);
                };
                let pending = self.pending.take();
                return Ok(pending.map(|p| p.into_client_op(payload)));
            }
            let Some(line) = self.framer.next_line(buf)? else {
                return Ok(None);
            };
            if let Some(op) = self.client_op(line)? {
                return Ok(Some(op));
            }
        }
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
    framer: Framer,
    max_payload: usize,
    pending: Option<Pending>,
}

impl ClientCodec {
    /// A codec enforcing `limits` on what the server sends.
    pub fn new(limits: Limits) -> Self {
        Self {
            framer: Framer::new(SERVER_VERBS, limits.max_control_line),
            max_payload: limits.max_payload,
            pending: None,
        }
    }

    fn server_op(&mut self, line: Line) -> Result<Option<ServerOp>, Error> {
        let (verb, arg) = match line {
            Line::Bare(Verb::Ping) => return Ok(Some(ServerOp::Ping)),
            Line::Bare(Verb::Pong) => return Ok(Some(ServerOp::Pong)),
            Line::Bare(_) => return Ok(Some(ServerOp::Ok)),
            Line::Arg(verb, arg) => (verb, arg),
        };
        match verb {
            Verb::Info => Ok(Some(ServerOp::Info(trim_trailing_blanks(arg)))),
            Verb::Err => Ok(Some(ServerOp::Err(unquote(arg)))),
            _ => {
                self.pending = Some(Pending::parse(verb, &arg, self.max_payload)?);
                Ok(None)
            }
        }
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
        loop {
            if let Some(pending) = &self.pending {
                let Some(payload) = take_payload(buf, pending.size)? else {
                    return Ok(None);
                };
                let pending = self.pending.take();
                return Ok(pending.map(|p| p.into_server_op(payload)));
            }
            let Some(line) = self.framer.next_line(buf)? else {
                return Ok(None);
            };
            if let Some(op) = self.server_op(line)? {
                return Ok(Some(op));
            }
        }
    }
}

impl Encoder<ClientOp> for ClientCodec {
    type Error = Error;

    fn encode(&mut self, op: ClientOp, dst: &mut BytesMut) -> Result<(), Error> {
        encode_client_op(&op, dst);
        Ok(())
    }
}

/// Appends `n` in decimal without allocating.
pub fn put_decimal(dst: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(digits.get(start..).unwrap_or_default());
}

/// Appends the control line of a `MSG` (`headers: None`) or `HMSG` delivery, up to and
/// including its `\r\n`; the caller appends headers, payload and the final `\r\n`.
pub fn put_msg_head(
    dst: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply_to: Option<&[u8]>,
    headers: Option<usize>,
    payload: usize,
) {
    dst.put_slice(if headers.is_some() { b"HMSG " } else { b"MSG " });
    dst.put_slice(subject);
    dst.put_u8(b' ');
    dst.put_slice(sid);
    dst.put_u8(b' ');
    if let Some(reply) = reply_to {
        dst.put_slice(reply);
        dst.put_u8(b' ');
    }
    if let Some(hdr) = headers {
        put_decimal(dst, hdr);
        dst.put_u8(b' ');
        put_decimal(dst, hdr + payload);
    } else {
        put_decimal(dst, payload);
    }
    dst.put_slice(b"\r\n");
}

/// Appends `-ERR '<text>'\r\n`.
pub fn put_err(dst: &mut BytesMut, text: &[u8]) {
    dst.put_slice(b"-ERR '");
    dst.put_slice(text);
    dst.put_slice(b"'\r\n");
}

/// Appends one server op in wire form.
pub fn encode_server_op(op: &ServerOp, dst: &mut BytesMut) {
    match op {
        ServerOp::Info(json) => {
            dst.put_slice(b"INFO ");
            dst.put_slice(json);
            dst.put_slice(b" \r\n");
        }
        ServerOp::Msg {
            subject,
            sid,
            reply_to,
            payload,
        } => {
            dst.reserve(subject.len() + sid.len() + payload.len() + 32);
            put_msg_head(dst, subject, sid, reply_to.as_deref(), None, payload.len());
            dst.put_slice(payload);
            dst.put_slice(b"\r\n");
        }
        ServerOp::HMsg {
            subject,
            sid,
            reply_to,
            headers,
            payload,
        } => {
            let body = headers.len() + payload.len();
            dst.reserve(subject.len() + sid.len() + body + 48);
            put_msg_head(
                dst,
                subject,
                sid,
                reply_to.as_deref(),
                Some(headers.len()),
                payload.len(),
            );
            dst.put_slice(headers);
            dst.put_slice(payload);
            dst.put_slice(b"\r\n");
        }
        ServerOp::Ping => dst.put_slice(b"PING\r\n"),
        ServerOp::Pong => dst.put_slice(b"PONG\r\n"),
        ServerOp::Ok => dst.put_slice(b"+OK\r\n"),
        ServerOp::Err(text) => put_err(dst, text),
    }
}

/// Appends one client op in wire form.
pub fn encode_client_op(op: &ClientOp, dst: &mut BytesMut) {
    match op {
        ClientOp::Connect(json) => put_line(dst, b"CONNECT ", &[json]),
        ClientOp::Info(json) => put_line(dst, b"INFO ", &[json]),
        ClientOp::Err(text) => put_line(dst, b"-ERR ", &[text]),
        ClientOp::Pub {
            subject,
            reply_to,
            payload,
        } => {
            put_pub_head(
                dst,
                b"PUB ",
                subject,
                reply_to.as_ref(),
                None,
                payload.len(),
            );
            dst.put_slice(payload);
            dst.put_slice(b"\r\n");
        }
        ClientOp::HPub {
            subject,
            reply_to,
            headers,
            payload,
        } => {
            let hdr = Some(headers.len());
            put_pub_head(
                dst,
                b"HPUB ",
                subject,
                reply_to.as_ref(),
                hdr,
                payload.len(),
            );
            dst.put_slice(headers);
            dst.put_slice(payload);
            dst.put_slice(b"\r\n");
        }
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => match queue {
            Some(queue) => put_line(dst, b"SUB ", &[subject, b" ", queue, b" ", sid]),
            None => put_line(dst, b"SUB ", &[subject, b" ", sid]),
        },
        ClientOp::Unsub { sid, max_msgs } => {
            dst.put_slice(b"UNSUB ");
            dst.put_slice(sid);
            if let Some(max) = max_msgs {
                dst.put_u8(b' ');
                put_decimal(dst, usize::try_from(*max).unwrap_or(usize::MAX));
            }
            dst.put_slice(b"\r\n");
        }
        ClientOp::Ping => dst.put_slice(b"PING\r\n"),
        ClientOp::Pong => dst.put_slice(b"PONG\r\n"),
        ClientOp::Ok => dst.put_slice(b"+OK\r\n"),
    }
}

fn put_line(dst: &mut BytesMut, op: &[u8], parts: &[&[u8]]) {
    dst.put_slice(op);
    for part in parts {
        dst.put_slice(part);
    }
    dst.put_slice(b"\r\n");
}

fn put_pub_head(
    dst: &mut BytesMut,
    op: &[u8],
    subject: &[u8],
    reply_to: Option<&Bytes>,
    headers: Option<usize>,
    payload: usize,
) {
    dst.put_slice(op);
    dst.put_slice(subject);
    dst.put_u8(b' ');
    if let Some(reply) = reply_to {
        dst.put_slice(reply);
        dst.put_u8(b' ');
    }
    if let Some(hdr) = headers {
        put_decimal(dst, hdr);
        dst.put_u8(b' ');
        put_decimal(dst, hdr + payload);
    } else {
        put_decimal(dst, payload);
    }
    dst.put_slice(b"\r\n");
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
