//! Splitting the byte stream into op lines and message payloads, for both directions.
//!
//! [`Framer`] recognises op names and cuts control lines, enforcing `max_control_line` as
//! bytes arrive; [`Pending`] is a parsed `PUB`/`HPUB`/`MSG`/`HMSG` control line whose payload
//! is awaited; [`Reader`] drives both for a codec.
//!
//! # Invariants
//! - See the parent module: limits are checked before buffering, nothing panics, bytes
//!   already judged are consumed so no state re-scans them.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::{ClientOp, Error, Limits, ServerOp, MAX_SIZE_DIGITS};

/// An op name and how its line continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
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
pub(super) enum Shape {
    /// At least one blank, then arguments up to the end of line (`PUB a 1`).
    Args,
    /// Optional blanks, then one argument up to the end of line (`CONNECT{}` is fine).
    Json,
    /// Nothing that matters: everything up to `\n` is ignored (`PING`).
    Bare,
}

impl Verb {
    pub(super) fn name(self) -> &'static [u8] {
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

    pub(super) fn label(self) -> &'static str {
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
pub(super) const CLIENT_VERBS: &[Verb] = &[
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
pub(super) const SERVER_VERBS: &[Verb] = &[
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
pub(super) enum State {
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
pub(super) enum Line {
    /// An op with its argument (`\r` handling applied), split from the read buffer.
    Arg(Verb, BytesMut),
    /// A `Bare` op.
    Bare(Verb),
}

/// Splits the stream into op lines, enforcing the control-line limit as bytes arrive.
#[derive(Debug)]
pub(super) struct Framer {
    verbs: &'static [Verb],
    pub(super) max_control_line: usize,
    pub(super) state: State,
}

impl Framer {
    pub(super) fn new(verbs: &'static [Verb], max_control_line: usize) -> Self {
        Self {
            verbs,
            max_control_line,
            state: State::Verb,
        }
    }

    /// The next complete line, `Ok(None)` when more bytes are needed.
    pub(super) fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
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
        let Some((nl, cr)) = line_end(buf) else {
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
        if cr {
            line.truncate(nl - 1);
        }
        if line.len() > self.max_control_line {
            return Err(Error::ControlLineTooLong {
                len: line.len(),
                max: self.max_control_line,
            });
        }
        self.state = State::Verb;
        Ok(Some(Line::Arg(verb, line)))
    }
}

/// Matches the op name at the start of `buf` (case-insensitively). `Ok(None)` while the
/// bytes so far are a prefix of some name.
pub(super) fn match_verb(buf: &[u8], verbs: &[Verb]) -> Result<Option<Verb>, Error> {
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

pub(super) fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The first `\n` and whether a `\r` came before it, in one pass over a short line.
fn line_end(buf: &[u8]) -> Option<(usize, bool)> {
    let mut cr = false;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' => return Some((i, cr)),
            b'\r' => cr = true,
            _ => {}
        }
    }
    None
}

/// Splits an argument on blanks (and, for `SUB`/`UNSUB`, also CR/LF as nats-server's
/// `splitArg` does) into the ranges of its parts, so a caller takes as `Bytes` only the parts
/// it keeps. Returns `None` when there are more than `N` arguments.
pub(super) fn split_args<const N: usize>(
    arg: &[u8],
    line_breaks: bool,
) -> Option<([Range<usize>; N], usize)> {
    let is_sep = |b: u8| matches!(b, b' ' | b'\t') || (line_breaks && matches!(b, b'\r' | b'\n'));
    let mut out: [Range<usize>; N] = std::array::from_fn(|_| 0..0);
    let mut count = 0;
    let mut start = None;
    for (i, &b) in arg.iter().enumerate() {
        if !is_sep(b) {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            *out.get_mut(count)? = s..i;
            count += 1;
        }
    }
    if let Some(s) = start {
        *out.get_mut(count)? = s..arg.len();
        count += 1;
    }
    Some((out, count))
}

/// nats-server's `parseSize`: 1 to 9 ASCII digits.
pub(super) fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > MAX_SIZE_DIGITS {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

/// Takes `size` payload bytes plus the `\r\n` that must follow them.
pub(super) fn take_payload(buf: &mut BytesMut, size: usize) -> Result<Option<Bytes>, Error> {
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

/// Splits `range` (past everything still to be taken) off the end of `arg` and returns it.
fn cut(arg: &mut BytesMut, range: Range<usize>) -> Bytes {
    let mut tail = arg.split_off(range.start.min(arg.len()));
    tail.truncate(range.len());
    tail.freeze()
}

/// A message whose control line is parsed and whose payload is awaited.
#[derive(Debug)]
pub(super) struct Pending {
    subject: Bytes,
    sid: Bytes,
    reply_to: Option<Bytes>,
    /// Header bytes at the front of the payload; `None` for `PUB`/`MSG`.
    hdr: Option<usize>,
    size: usize,
}

impl Pending {
    /// Parses `<subject> [reply] [hdr] <size>` (`with_sid`: `<subject> <sid> [reply] …`).
    /// The subject is `arg` cut down to it, so a plain `PUB` line costs no further slice.
    pub(super) fn parse(verb: Verb, mut arg: BytesMut, max_payload: usize) -> Result<Self, Error> {
        let op = verb.label();
        let malformed = || Error::Malformed { op };
        let with_sid = matches!(verb, Verb::Msg | Verb::HMsg);
        let with_hdr = matches!(verb, Verb::HPub | Verb::HMsg);
        let (args, count) = split_args::<5>(&arg, false).ok_or_else(malformed)?;
        let fixed = 2 + usize::from(with_sid) + usize::from(with_hdr);
        let has_reply = match count.checked_sub(fixed) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(malformed()),
        };
        let mut args = args.into_iter().take(count);
        let subject = args.next().unwrap_or_default();
        let sid = with_sid.then(|| args.next().unwrap_or_default());
        let reply_to = if has_reply { args.next() } else { None };
        let hdr = if with_hdr {
            let digits = args.next().and_then(|r| arg.get(r)).unwrap_or_default();
            Some(parse_size(digits).ok_or_else(malformed)?)
        } else {
            None
        };
        let size = args
            .next()
            .and_then(|r| arg.get(r))
            .and_then(parse_size)
            .ok_or_else(malformed)?;
        if hdr.is_some_and(|h| h > size) {
            return Err(malformed());
        }
        if size > max_payload {
            return Err(Error::PayloadTooLarge {
                size,
                max: max_payload,
            });
        }
        // Parts after the subject are split off first; what is left is the subject.
        let reply_to = reply_to.map(|r| cut(&mut arg, r));
        let sid = sid.map_or_else(Bytes::new, |r| cut(&mut arg, r));
        arg.truncate(subject.end);
        arg.advance(subject.start);
        Ok(Self {
            subject: arg.freeze(),
            sid,
            reply_to,
            hdr,
            size,
        })
    }

    pub(super) fn into_client_op(self, mut payload: Bytes) -> ClientOp {
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

    pub(super) fn into_server_op(self, mut payload: Bytes) -> ServerOp {
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

/// The decoding state both directions share: the line framer and the message whose payload
/// is awaited.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) framer: Framer,
    pub(super) max_payload: usize,
    pub(super) pending: Option<Pending>,
}

impl Reader {
    pub(super) fn new(verbs: &'static [Verb], limits: Limits) -> Self {
        Self {
            framer: Framer::new(verbs, limits.max_control_line),
            max_payload: limits.max_payload,
            pending: None,
        }
    }

    /// True between ops (nats-server's `OP_START`).
    pub(super) fn at_op_start(&self) -> bool {
        self.pending.is_none() && self.framer.state == State::Verb
    }

    /// The limits being enforced.
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_control_line: self.framer.max_control_line,
            max_payload: self.max_payload,
        }
    }

    /// Parses the control line of a message op; its payload is awaited next.
    pub(super) fn expect_payload(&mut self, verb: Verb, arg: BytesMut) -> Result<(), Error> {
        self.pending = Some(Pending::parse(verb, arg, self.max_payload)?);
        Ok(())
    }

    /// The next op: `op` turns a line into an op (or `None` after [`Self::expect_payload`]),
    /// `message` a parsed control line and its payload.
    pub(super) fn decode<Op>(
        &mut self,
        buf: &mut BytesMut,
        mut op: impl FnMut(&mut Self, Line) -> Result<Option<Op>, Error>,
        message: fn(Pending, Bytes) -> Op,
    ) -> Result<Option<Op>, Error> {
        loop {
            if let Some(pending) = &self.pending {
                let Some(payload) = take_payload(buf, pending.size)? else {
                    return Ok(None);
                };
                return Ok(self.pending.take().map(|p| message(p, payload)));
            }
            let Some(line) = self.framer.next_line(buf)? else {
                return Ok(None);
            };
            if let Some(op) = op(self, line)? {
                return Ok(Some(op));
            }
        }
    }
}
