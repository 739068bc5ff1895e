//! Binary encoding of an [`Envelope`] (plus its attempt count) as a store record.
//!
//! ```text
//! version u8 (=1) | id [16] | timestamp_ns u64 | attempts u16 | flags u8 | qos u8
//! subject str | reply_to str? | content_type str? | correlation bytes? | expires_at u64?
//! header_block bytes?
//! headers: count u32, (name str, value str)* | frames: (count u32, len u32*)? | payload bytes
//! str/bytes = len u32 + data; `?` = present only when its flag bit is set
//! ```
//! All integers big-endian.
//!
//! # Invariants
//! - `decode(encode(m)) == m` for every envelope (the origin is not stored: recovered messages
//!   come from the broker).
//! - `decode` never panics on any input; it returns [`RecordError`] instead.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::envelope::{Envelope, Headers, MessageId, Origin, Qos};
use crate::subject::Subject;

const VERSION: u8 = 1;
const F_RETAIN: u8 = 1;
const F_UTF8: u8 = 2;
const F_REPLY: u8 = 4;
const F_CTYPE: u8 = 8;
const F_CORR: u8 = 16;
const F_EXPIRES: u8 = 32;
const F_BLOCK: u8 = 64;
const F_FRAMES: u8 = 128;

/// A record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record ended early.
    #[error("record truncated")]
    Truncated,
    /// Unknown version or field value.
    #[error("record malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes a message and its attempt count.
pub fn encode(msg: &Envelope, attempts: u16) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + msg.subject.as_str().len() + msg.payload.len());
    buf.put_u8(VERSION);
    buf.put_slice(&msg.id.0);
    buf.put_u64(msg.timestamp_ns);
    buf.put_u16(attempts);
    let mut flags = 0;
    for (set, bit) in [
        (msg.retain, F_RETAIN),
        (msg.payload_utf8, F_UTF8),
        (msg.reply_to.is_some(), F_REPLY),
        (msg.content_type.is_some(), F_CTYPE),
        (msg.correlation_data.is_some(), F_CORR),
        (msg.expires_at_ns.is_some(), F_EXPIRES),
        (msg.header_block.is_some(), F_BLOCK),
        (msg.frames.is_some(), F_FRAMES),
    ] {
        if set {
            flags |= bit;
        }
    }
    buf.put_u8(flags);
    buf.put_u8(match msg.qos {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    });
    put_bytes(&mut buf, msg.subject.as_str().as_bytes());
    if let Some(reply) = &msg.reply_to {
        put_bytes(&mut buf, reply.as_str().as_bytes());
    }
    if let Some(ctype) = &msg.content_type {
        put_bytes(&mut buf, ctype.as_bytes());
    }
    if let Some(corr) = &msg.correlation_data {
        put_bytes(&mut buf, corr);
    }
    if let Some(at) = msg.expires_at_ns {
        buf.put_u64(at);
    }
    if let Some(block) = &msg.header_block {
        put_bytes(&mut buf, block);
    }
    buf.put_u32(len_u32(msg.headers.len()));
    for (name, value) in msg.headers.iter() {
        put_bytes(&mut buf, name.as_bytes());
        put_bytes(&mut buf, value.as_bytes());
    }
    if let Some(frames) = &msg.frames {
        buf.put_u32(len_u32(frames.len()));
        for &len in frames {
            buf.put_u32(len_u32(len));
        }
    }
    put_bytes(&mut buf, &msg.payload);
    buf.freeze()
}

/// Decodes a record into a message (origin = broker) and its attempt count.
pub fn decode(mut rec: Bytes) -> Result<(Envelope, u16), RecordError> {
    if get_u8(&mut rec)? != VERSION {
        return Err(RecordError::Malformed("version"));
    }
    let id = MessageId::from_slice(&take(&mut rec, 16)?).ok_or(RecordError::Truncated)?;
    let timestamp_ns = get_u64(&mut rec)?;
    let attempts = get_u16(&mut rec)?;
    let flags = get_u8(&mut rec)?;
    let qos = match get_u8(&mut rec)? {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        2 => Qos::ExactlyOnce,
        _ => return Err(RecordError::Malformed("qos")),
    };
    let subject = get_subject(&mut rec)?;
    let reply_to = (flags & F_REPLY != 0)
        .then(|| get_subject(&mut rec))
        .transpose()?;
    let content_type = (flags & F_CTYPE != 0)
        .then(|| get_string(&mut rec))
        .transpose()?;
    let correlation_data = (flags & F_CORR != 0)
        .then(|| get_bytes(&mut rec))
        .transpose()?;
    let expires_at_ns = (flags & F_EXPIRES != 0)
        .then(|| get_u64(&mut rec))
        .transpose()?;
    let header_block = (flags & F_BLOCK != 0)
        .then(|| get_bytes(&mut rec))
        .transpose()?;
    let mut headers = Headers::new();
    for _ in 0..get_u32(&mut rec)? {
        let name = get_string(&mut rec)?;
        headers.append(name, get_string(&mut rec)?);
    }
    let frames = if flags & F_FRAMES != 0 {
        let count = get_u32(&mut rec)?;
        let mut frames = Vec::new();
        for _ in 0..count {
            frames.push(get_u32(&mut rec)? as usize);
        }
        Some(frames)
    } else {
        None
    };
    let payload = get_bytes(&mut rec)?;
    let msg = Envelope {
        id,
        subject,
        reply_to,
        payload,
        frames,
        headers,
        header_block,
        timestamp_ns,
        origin: Origin::broker(),
        qos,
        retain: flags & F_RETAIN != 0,
        expires_at_ns,
        content_type,
        correlation_data,
        payload_utf8: flags & F_UTF8 != 0,
    };
    Ok((msg, attempts))
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_bytes(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u32(len_u32(data.len()));
    buf.put_slice(data);
}

fn take(rec: &mut Bytes, n: usize) -> Result<Bytes, RecordError> {
    if rec.remaining() < n {
        return Err(RecordError::Truncated);
    }
    Ok(rec.split_to(n))
}

fn get_u8(rec: &mut Bytes) -> Result<u8, RecordError> {
    rec.try_get_u8().map_err(|_| RecordError::Truncated)
}

fn get_u16(rec: &mut Bytes) -> Result<u16, RecordError> {
    rec.try_get_u16().map_err(|_| RecordError::Truncated)
}

fn get_u32(rec: &mut Bytes) -> Result<u32, RecordError> {
    rec.try_get_u32().map_err(|_| RecordError::Truncated)
}

fn get_u64(rec: &mut Bytes) -> Result<u64, RecordError> {
    rec.try_get_u64().map_err(|_| RecordError::Truncated)
}

fn get_bytes(rec: &mut Bytes) -> Result<Bytes, RecordError> {
    let len = get_u32(rec)? as usize;
    take(rec, len)
}

fn get_string(rec: &mut Bytes) -> Result<String, RecordError> {
    String::from_utf8(get_bytes(rec)?.to_vec()).map_err(|_| RecordError::Malformed("utf-8"))
}

fn get_subject(rec: &mut Bytes) -> Result<Subject, RecordError> {
    Subject::new(&get_string(rec)?).map_err(|_| RecordError::Malformed("subject"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_envelope() -> Envelope {
        let mut msg = Envelope::new(
            Subject::new("a.b").unwrap(),
            Bytes::from_static(b"hello world"),
            Origin::broker(),
        );
        msg.reply_to = Some(Subject::new("_INBOX.x").unwrap());
        msg.headers.append("k", "v1");
        msg.headers.append("k", "v2");
        msg.frames = Some(vec![5, 1, 5]);
        msg.qos = Qos::ExactlyOnce;
        msg.retain = true;
        msg.payload_utf8 = true;
        msg.expires_at_ns = Some(42);
        msg.content_type = Some("text/plain".into());
        msg.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
        msg.header_block = Some(Bytes::from_static(b"NATS/1.0\r\nk:v1\r\n\r\n"));
        msg
    }

    fn same(a: &Envelope, b: &Envelope) -> bool {
        a.id == b.id
            && a.subject == b.subject
            && a.reply_to == b.reply_to
            && a.payload == b.payload
            && a.frames == b.frames
            && a.headers == b.headers
            && a.header_block == b.header_block
            && a.timestamp_ns == b.timestamp_ns
            && a.qos == b.qos
            && a.retain == b.retain
            && a.expires_at_ns == b.expires_at_ns
            && a.content_type == b.content_type
            && a.correlation_data == b.correlation_data
            && a.payload_utf8 == b.payload_utf8
    }

    #[test]
    fn round_trips_every_field() {
        let msg = full_envelope();
        let (back, attempts) = decode(encode(&msg, 7)).unwrap();
        assert_eq!(attempts, 7);
        assert!(same(&msg, &back));
        let plain = Envelope::new(Subject::new("x").unwrap(), Bytes::new(), Origin::broker());
        let (back, _) = decode(encode(&plain, 0)).unwrap();
        assert!(same(&plain, &back));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let rec = encode(&full_envelope(), 1);
        for cut in 0..rec.len() {
            assert!(decode(rec.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
