//! The server-side V2 decoder: command lines, then bodies, in nsqd's order of checks.
//!
//! nsqd reads a command line, validates what the line carries (parameters, topic name, DPUB
//! delay, and for IDENTIFY/AUTH/MPUB some session state), and only then reads the body,
//! checking its declared size before reading it. [`Codec`] does the same incrementally:
//!
//! 1. find `\n` within [`MAX_LINE_LEN`] bytes (nsqd's 16 KiB read buffer; a longer line
//!    closes the connection without a reply), consume the line and split it on single spaces;
//! 2. for a body command, run the line checks and remember the command as pending;
//! 3. read each 4-byte size, reject it against the limits *before* buffering what it
//!    announces, and split the body out of the buffer once it is complete.
//!
//! MPUB messages are read one after another from the stream, as nsqd's `readMPUB` does (the
//! body size field is range-checked, not used to delimit). One bound is added: the batch may
//! not consume more than `max_body_size` bytes, where nsqd would keep reading.
//!
//! The session tells the decoder the two facts nsqd consults before a body ([`Gate`]).
//!
//! # Invariants
//! - Nothing is buffered beyond a size that passed its limit check; the decoder never
//!   reserves more than `max(max_msg_size, max_body_size) + 8` bytes ahead.
//! - A command is returned only once its body is complete; the buffer is advanced past it.
//! - Every body is `split_to(n).freeze()` from the read buffer (MPUB members are slices of one
//!   such split).
//! - At end of stream an incomplete body is reported with nsqd's "failed to read" text; an
//!   incomplete line is not (nsqd treats it as a clean close).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::command::{Command, Params, Verb};
use super::error::DecodeError;
use super::outbound::Frame;
use super::text::{is_valid_name, parse_base10};

/// Longest command line nsqd reads, `\n` included (its `bufio.Reader` size).
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// Size limits the decoder enforces; defaults are nsqd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single message body (PUB, DPUB, each MPUB member).
    pub max_msg_size: u64,
    /// Largest IDENTIFY/AUTH/MPUB body.
    pub max_body_size: u64,
    /// Largest DPUB delay, in milliseconds.
    pub max_req_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

/// Session facts nsqd checks before reading a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// The client is in nsqd's initial state, where IDENTIFY and AUTH are read.
    pub initial: bool,
    /// AUTH is required and the client has not authenticated: MPUB fails before its body.
    pub auth_missing: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            initial: true,
            auth_missing: false,
        }
    }
}

/// The V2 server codec: decodes [`Command`]s, encodes [`Frame`]s.
#[derive(Debug, Default)]
pub struct Codec {
    limits: Limits,
    gate: Gate,
    /// Bytes of the buffer already searched for `\n`.
    scanned: usize,
    /// A body command whose line was accepted and consumed.
    pending: Option<Pending>,
}

/// A body command waiting for its body.
#[derive(Debug)]
enum Pending {
    /// IDENTIFY, AUTH, PUB or DPUB: one sized body.
    Single(Head),
    /// MPUB, with the members already checked and buffered.
    Mpub { topic: String, walk: MpubWalk },
}

/// What the line of a one-body command established.
#[derive(Debug)]
enum Head {
    Identify,
    Auth,
    Pub { topic: String },
    Dpub { topic: String, defer_ms: u64 },
}

impl Head {
    fn verb(&self) -> Verb {
        match self {
            Head::Identify => Verb::Identify,
            Head::Auth => Verb::Auth,
            Head::Pub { .. } => Verb::Pub,
            Head::Dpub { .. } => Verb::Dpub,
        }
    }

    /// The finished command; the head is left spent (its topic taken).
    fn finish(&mut self, body: Bytes) -> Command {
        match self {
            Head::Identify => Command::Identify(body),
            Head::Auth => Command::Auth(body),
            Head::Pub { topic } => Command::Pub {
                topic: std::mem::take(topic),
                body,
            },
            Head::Dpub { topic, defer_ms } => Command::Dpub {
                topic: std::mem::take(topic),
                defer_ms: *defer_ms,
                body,
            },
        }
    }
}

/// Progress through an MPUB batch, offsets relative to the first member.
#[derive(Debug, Default)]
struct MpubWalk {
    /// `(offset, len)` of every member checked and fully buffered so far.
    spans: Vec<(usize, usize)>,
    /// Offset of the next member's size field.
    next: usize,
}

/// The part of a body command that has not arrived yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Size,
    Body,
    MpubCount,
    MpubMemberSize(u32),
    MpubMemberBody,
}

/// Outcome of one attempt at a pending body.
enum Step {
    Done(Command),
    /// The buffer must reach this many bytes before progress is possible.
    Need(Missing, usize),
}

impl Codec {
    /// A decoder with the given limits, in the initial state.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Updates the session facts checked before bodies.
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = gate;
    }

    /// The session facts in force.
    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// Finds the end of the next command line: its length including `\n`.
    fn find_line(&mut self, src: &BytesMut) -> Result<Option<usize>, DecodeError> {
        let window = src.len().min(MAX_LINE_LEN);
        let unscanned = src.get(self.scanned..window).unwrap_or_default();
        if let Some(pos) = unscanned.iter().position(|&b| b == b'\n') {
            let len = self.scanned + pos + 1;
            self.scanned = 0;
            return Ok(Some(len));
        }
        if src.len() >= MAX_LINE_LEN {
            return Err(DecodeError::LineTooLong { max: MAX_LINE_LEN });
        }
        self.scanned = window;
        Ok(None)
    }

    /// Checks a complete line: a finished command, or a body command left pending.
    fn parse_line(&self, line: &Bytes) -> Result<Result<Command, Pending>, DecodeError> {
        let (word, params) = split_line(line);
        let Some(verb) = Verb::from_wire(&word) else {
            return Err(DecodeError::InvalidCommand(word));
        };
        let head = match verb {
            Verb::Identify | Verb::Auth => self.handshake_head(verb, &params)?,
            Verb::Pub => Head::Pub {
                topic: topic_param(Verb::Pub, &params, 1)?,
            },
            Verb::Dpub => self.dpub_head(&params)?,
            Verb::Mpub => {
                let topic = topic_param(Verb::Mpub, &params, 1)?;
                if self.gate.auth_missing {
                    return Err(DecodeError::AuthFirst(Verb::Mpub));
                }
                return Ok(Err(Pending::Mpub {
                    topic,
                    walk: MpubWalk::default(),
                }));
            }
            Verb::Sub => return Ok(Ok(Command::Sub(params))),
            Verb::Rdy => return Ok(Ok(Command::Rdy(params))),
            Verb::Fin => return Ok(Ok(Command::Fin(params))),
            Verb::Req => return Ok(Ok(Command::Req(params))),
            Verb::Touch => return Ok(Ok(Command::Touch(params))),
            Verb::Cls => return Ok(Ok(Command::Cls(params))),
            Verb::Nop => return Ok(Ok(Command::Nop(params))),
        };
        Ok(Err(Pending::Single(head)))
    }

    /// IDENTIFY and AUTH: only in the initial state; AUTH takes no parameters.
    fn handshake_head(&self, verb: Verb, params: &Params) -> Result<Head, DecodeError> {
        if !self.gate.initial {
            return Err(DecodeError::InvalidState(verb));
        }
        if verb == Verb::Identify {
            return Ok(Head::Identify);
        }
        if !params.is_empty() {
            return Err(DecodeError::AuthParameters);
        }
        Ok(Head::Auth)
    }

    /// DPUB: parameter count, topic, then the delay, parsed and ranged like nsqd.
    fn dpub_head(&self, params: &Params) -> Result<Head, DecodeError> {
        let topic = topic_param(Verb::Dpub, params, 2)?;
        let raw = params.get(1).unwrap_or_default();
        let Some(ms) = parse_base10(raw) else {
            return Err(DecodeError::DeferParse(Bytes::copy_from_slice(raw)));
        };
        // nsqd computes `time.Duration(ms) * time.Millisecond`: a wrapping signed product.
        let ns = (ms as i64).wrapping_mul(1_000_000);
        let max_ms = self.limits.max_req_timeout_ms;
        let max_ns = i64::try_from(max_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        if !(0..=max_ns).contains(&ns) {
            return Err(DecodeError::DeferRange { ms, max: max_ms });
        }
        Ok(Head::Dpub {
            topic,
            defer_ms: ns.unsigned_abs() / 1_000_000,
        })
    }

    /// The error nsqd reports when the stream ends at `missing`.
    fn missing_error(&self, missing: Missing) -> DecodeError {
        let verb = match &self.pending {
            Some(Pending::Single(head)) => head.verb(),
            Some(Pending::Mpub { .. }) | None => Verb::Mpub,
        };
        let message = matches!(verb, Verb::Pub | Verb::Dpub);
        match missing {
            Missing::Size if message => DecodeError::MessageSizeMissing(verb),
            Missing::Size => DecodeError::BodySizeMissing(verb),
            Missing::Body if message => DecodeError::MessageBodyMissing(verb),
            Missing::Body => DecodeError::BodyMissing(verb),
            Missing::MpubCount => DecodeError::MpubCountMissing,
            Missing::MpubMemberSize(index) => DecodeError::MpubMessageSizeMissing(index),
            Missing::MpubMemberBody => DecodeError::MessageBodyMissing(Verb::Mpub),
        }
    }
}

impl Codec {
    /// Advances the pending body command, if any; clears it once complete.
    fn resume(&mut self, src: &mut BytesMut) -> Result<Option<Step>, DecodeError> {
        let Some(pending) = self.pending.as_mut() else {
            return Ok(None);
        };
        let step = advance(src, &self.limits, pending)?;
        if matches!(step, Step::Done(_)) {
            self.pending = None;
        }
        Ok(Some(step))
    }
}

/// Advances a pending body command as far as the buffer allows.
fn advance(
    src: &mut BytesMut,
    limits: &Limits,
    pending: &mut Pending,
) -> Result<Step, DecodeError> {
    match pending {
        Pending::Single(head) => decode_single(src, limits, head),
        Pending::Mpub { topic, walk } => decode_mpub(src, limits, topic, walk),
    }
}

/// One sized body: size checks before buffering, then the body.
fn decode_single(
    src: &mut BytesMut,
    limits: &Limits,
    head: &mut Head,
) -> Result<Step, DecodeError> {
    let Some(size) = read_size(src, 0) else {
        return Ok(Step::Need(Missing::Size, 4));
    };
    check_single_size(head.verb(), size, limits)?;
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let end = len.saturating_add(4);
    if src.len() < end {
        return Ok(Step::Need(Missing::Body, end));
    }
    src.advance(4);
    Ok(Step::Done(head.finish(src.split_to(len).freeze())))
}

/// Splits a line (with its `\n`, and an optional `\r` before it) on single spaces, as nsqd's
/// `bytes.Split(line, " ")` does: the verb, then the parameters.
fn split_line(line: &Bytes) -> (Bytes, Params) {
    let mut end = line.len().saturating_sub(1);
    if end > 0 && line.get(end - 1) == Some(&b'\r') {
        end -= 1;
    }
    let text = line.slice(..end);
    let Some(first) = text.iter().position(|&b| b == b' ') else {
        return (text, Params::default());
    };
    let mut params = Vec::new();
    let mut start = first + 1;
    for (pos, _) in text
        .iter()
        .enumerate()
        .skip(start)
        .filter(|(_, &b)| b == b' ')
    {
        params.push(text.slice(start..pos));
        start = pos + 1;
    }
    params.push(text.slice(start..));
    (text.slice(..first), Params::new(params))
}

/// The topic of a publishing command, after nsqd's parameter-count check (`needed` is the
/// number of parameters after the verb).
fn topic_param(verb: Verb, params: &Params, needed: usize) -> Result<String, DecodeError> {
    if params.len() < needed {
        return Err(DecodeError::InsufficientParameters(verb));
    }
    let name = params.get(0).unwrap_or_default();
    if !is_valid_name(name) {
        return Err(DecodeError::BadTopic {
            verb,
            name: Bytes::copy_from_slice(name),
        });
    }
    Ok(name.iter().map(|&b| char::from(b)).collect())
}

/// The big-endian `i32` at `at`, if buffered (nsqd reads sizes as signed).
fn read_size(src: &[u8], at: usize) -> Option<i32> {
    let bytes = src.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

/// True when a (possibly negative) wire size exceeds `max`.
fn exceeds(size: i32, max: u64) -> bool {
    u64::try_from(size).is_ok_and(|s| s > max)
}

/// nsqd's size checks for PUB/DPUB (message) and IDENTIFY/AUTH (body).
fn check_single_size(verb: Verb, size: i32, limits: &Limits) -> Result<(), DecodeError> {
    if matches!(verb, Verb::Pub | Verb::Dpub) {
        if size <= 0 {
            return Err(DecodeError::MessageSizeInvalid(verb, size));
        }
        if exceeds(size, limits.max_msg_size) {
            return Err(DecodeError::MessageTooBig {
                verb,
                size,
                max: limits.max_msg_size,
            });
        }
        return Ok(());
    }
    if exceeds(size, limits.max_body_size) {
        let size = u64::try_from(size).unwrap_or_default();
        return Err(DecodeError::BodyTooBig {
            verb,
            size,
            max: limits.max_body_size,
        });
    }
    if size <= 0 {
        return Err(DecodeError::BodySizeInvalid(verb, size));
    }
    Ok(())
}

/// Advances an MPUB: body size, count, then each member in turn.
fn decode_mpub(
    src: &mut BytesMut,
    limits: &Limits,
    topic: &mut String,
    walk: &mut MpubWalk,
) -> Result<Step, DecodeError> {
    let Some(size) = read_size(src, 0) else {
        return Ok(Step::Need(Missing::Size, 4));
    };
    if size <= 0 {
        return Err(DecodeError::BodySizeInvalid(Verb::Mpub, size));
    }
    if exceeds(size, limits.max_body_size) {
        let size = u64::try_from(size).unwrap_or_default();
        return Err(DecodeError::BodyTooBig {
            verb: Verb::Mpub,
            size,
            max: limits.max_body_size,
        });
    }
    let Some(count) = read_size(src, 4) else {
        return Ok(Step::Need(Missing::MpubCount, 8));
    };
    let members = src.get(8..).unwrap_or_default();
    if let Some((missing, need)) = walk_mpub(members, count, limits, walk)? {
        return Ok(Step::Need(missing, need.saturating_add(8)));
    }
    src.advance(8);
    let region = src.split_to(walk.next).freeze();
    let bodies = walk
        .spans
        .iter()
        .map(|&(at, len)| region.slice(at..at + len))
        .collect();
    Ok(Step::Done(Command::Mpub {
        topic: std::mem::take(topic),
        bodies,
    }))
}

/// Checks MPUB members from `walk.next` on. `Ok(None)` when all `count` members are
/// buffered; otherwise what is missing and how many member bytes are needed.
fn walk_mpub(
    members: &[u8],
    count: i32,
    limits: &Limits,
    walk: &mut MpubWalk,
) -> Result<Option<(Missing, usize)>, DecodeError> {
    let max_count = limits.max_body_size.saturating_sub(4) / 5;
    if count <= 0 || exceeds(count, max_count) {
        return Err(DecodeError::MpubCountInvalid(count));
    }
    let count = usize::try_from(count).unwrap_or_default();
    while walk.spans.len() < count {
        let index = u32::try_from(walk.spans.len()).unwrap_or(u32::MAX);
        let Some(size) = read_size(members, walk.next) else {
            return Ok(Some((Missing::MpubMemberSize(index), walk.next + 4)));
        };
        if size <= 0 {
            return Err(DecodeError::MpubMessageSizeInvalid { index, size });
        }
        if exceeds(size, limits.max_msg_size) {
            return Err(DecodeError::MessageTooBig {
                verb: Verb::Mpub,
                size,
                max: limits.max_msg_size,
            });
        }
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let end = walk.next.saturating_add(4).saturating_add(len);
        let consumed = u64::try_from(end).unwrap_or(u64::MAX).saturating_add(4);
        if consumed > limits.max_body_size {
            return Err(DecodeError::BodyTooBig {
                verb: Verb::Mpub,
                size: consumed,
                max: limits.max_body_size,
            });
        }
        if members.len() < end {
            return Ok(Some((Missing::MpubMemberBody, end)));
        }
        walk.spans.push((walk.next + 4, len));
        walk.next = end;
    }
    Ok(None)
}

/// Decodes a complete `/mpub?binary=true` body (`[count]([size][bytes])*`), with the same
/// checks and texts as MPUB; running out of bytes is reported as nsqd's "failed to read".
pub fn decode_mpub_body(body: &Bytes, limits: &Limits) -> Result<Vec<Bytes>, DecodeError> {
    let Some(count) = read_size(body, 0) else {
        return Err(DecodeError::MpubCountMissing);
    };
    let members = body.slice(4.min(body.len())..);
    let mut walk = MpubWalk::default();
    match walk_mpub(&members, count, limits, &mut walk)? {
        Some((Missing::MpubMemberSize(index), _)) => {
            Err(DecodeError::MpubMessageSizeMissing(index))
        }
        Some(_) => Err(DecodeError::MessageBodyMissing(Verb::Mpub)),
        None => Ok(walk
            .spans
            .iter()
            .map(|&(at, len)| members.slice(at..at + len))
            .collect()),
    }
}

impl Decoder for Codec {
    type Item = Command;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        if self.pending.is_none() {
            let Some(len) = self.find_line(src)? else {
                return Ok(None);
            };
            let line = src.split_to(len).freeze();
            match self.parse_line(&line)? {
                Ok(command) => return Ok(Some(command)),
                Err(pending) => self.pending = Some(pending),
            }
        }
        match self.resume(src)? {
            Some(Step::Done(command)) => Ok(Some(command)),
            Some(Step::Need(_, total)) => {
                src.reserve(total.saturating_sub(src.len()));
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        if let Some(command) = self.decode(src)? {
            return Ok(Some(command));
        }
        // An unterminated line at end of stream is a clean close for nsqd (no pending body).
        match self.resume(src)? {
            Some(Step::Done(command)) => Ok(Some(command)),
            Some(Step::Need(missing, _)) => Err(self.missing_error(missing)),
            None => Ok(None),
        }
    }
}

impl Encoder<Frame> for Codec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        frame.encode(dst);
        Ok(())
    }
}
