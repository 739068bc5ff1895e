//! Writing ops in wire form, for both directions.
//!
//! # Invariants
//! - Sizes are written in decimal without allocating; every op ends with `\r\n`.

use bytes::{BufMut, Bytes, BytesMut};

use super::{ClientOp, ServerOp};

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
    put_reply_and_sizes(dst, reply_to, headers, payload);
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
    put_reply_and_sizes(dst, reply_to.map(|r| &r[..]), headers, payload);
}

/// The end of a message control line: `[reply ]<size>\r\n` or `[reply ]<hdr> <total>\r\n`.
fn put_reply_and_sizes(
    dst: &mut BytesMut,
    reply_to: Option<&[u8]>,
    headers: Option<usize>,
    payload: usize,
) {
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
