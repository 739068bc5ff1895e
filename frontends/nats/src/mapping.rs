//! Mapping between NATS wire values and the core's [`Envelope`].
//!
//! NATS subjects are the canonical form, so subjects map by identity after validation. Header
//! blocks (`NATS/1.0[ <code>[ <description>]]\r\n(Name: Value\r\n)*\r\n`) become the
//! envelope's ordered header list; the status line's code and description travel as the
//! pseudo-headers [`STATUS_HEADER`] and [`DESCRIPTION_HEADER`] (names a NATS header cannot
//! have, since `:` ends a header name), so NATS-to-NATS delivery keeps them.
//!
//! # Invariants
//! - A rendered header block always parses back to the same headers, and never contains a
//!   bare CR or LF inside a name or value (those are replaced by spaces when rendering
//!   headers that came from other protocols).
//! - An envelope with no headers renders no block: it goes out as `MSG` (a block a client
//!   published is kept byte for byte by the session when this list does not reproduce it).
//! - Parsing wire bytes never panics: no unwrap or indexing outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use bytes::{BufMut, Bytes, BytesMut};
use polymq_core::{Envelope, Filter, Headers, Origin, Subject, SubjectError};

use crate::frame::put_msg_head;

/// Pseudo-header carrying a header block's status code (`503`).
pub const STATUS_HEADER: &str = ":status";
/// Pseudo-header carrying a header block's status description.
pub const DESCRIPTION_HEADER: &str = ":description";
/// The header block version line.
const VERSION_LINE: &[u8] = b"NATS/1.0";

/// nats-server's `IsValidLiteralSubject` (the pedantic PUB check): no empty token and no
/// wildcard token.
pub fn is_valid_literal(subject: &[u8]) -> bool {
    subject
        .split(|&b| b == b'.')
        .all(|t| !t.is_empty() && t != b"*" && t != b">")
}

/// The canonical subject a PUB goes to; `None` when it cannot be routed (invalid UTF-8,
/// empty tokens, wildcards, whitespace), in which case nothing matches, as in nats-server.
pub fn publish_subject(subject: &[u8]) -> Option<Subject> {
    std::str::from_utf8(subject)
        .ok()
        .and_then(|s| Subject::new(s).ok())
}

/// The filter of a SUB; an error becomes `-ERR 'Invalid Subject'`.
pub fn subscription_filter(subject: &[u8]) -> Result<Filter, SubjectError> {
    let text = std::str::from_utf8(subject).map_err(|_| SubjectError::Invalid("utf-8"))?;
    Filter::new(text)
}

/// Builds the envelope for a PUB/HPUB.
pub fn envelope(
    subject: Subject,
    reply_to: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: Bytes,
    origin: Origin,
    timestamp_ns: u64,
) -> Envelope {
    // Built in one expression: amending a stamped envelope made the compiler copy it whole.
    let (headers, header_block) = match headers {
        Some(block) => {
            let headers = parse_headers(block);
            let keep = !renders_back(&headers, block);
            (headers, keep.then(|| Bytes::copy_from_slice(block)))
        }
        None => (Headers::new(), None),
    };
    Envelope {
        reply_to: reply_to.and_then(publish_subject),
        headers,
        header_block,
        ..Envelope::stamped(subject, payload, origin, timestamp_ns)
    }
}

/// Parses a header block leniently, the way NATS clients read one: the version line may
/// carry a status; lines without `:` are skipped; values are trimmed.
pub fn parse_headers(block: &[u8]) -> Headers {
    let mut headers = Headers::new();
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    if let Some(status) = lines.next().and_then(|l| l.strip_prefix(VERSION_LINE)) {
        let status = trim(status);
        if !status.is_empty() {
            let (code, description) = match status.iter().position(|&b| b == b' ') {
                Some(at) => status.split_at(at),
                None => (status, &b""[..]),
            };
            headers.append(STATUS_HEADER, text(code));
            let description = trim(description);
            if !description.is_empty() {
                headers.append(DESCRIPTION_HEADER, text(description));
            }
        }
    }
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = line.split_at(colon);
            let value = value.get(1..).unwrap_or_default();
            headers.append(text(name), text(trim(value)));
        }
    }
    headers
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Renders the header block for `headers`, or `None` when there is nothing to send.
pub fn render_headers(headers: &Headers) -> Option<Bytes> {
    if headers.is_empty() {
        return None;
    }
    let mut block = BytesMut::with_capacity(64);
    block.put_slice(VERSION_LINE);
    if let Some(code) = headers.get(STATUS_HEADER) {
        block.put_u8(b' ');
        put_clean(&mut block, code);
        if let Some(description) = headers.get(DESCRIPTION_HEADER) {
            block.put_u8(b' ');
            put_clean(&mut block, description);
        }
    }
    block.put_slice(b"\r\n");
    for (name, value) in headers.iter() {
        if name == STATUS_HEADER || name == DESCRIPTION_HEADER {
            continue;
        }
        put_clean(&mut block, name);
        block.put_slice(b": ");
        put_clean(&mut block, value);
        block.put_slice(b"\r\n");
    }
    block.put_slice(b"\r\n");
    Some(block.freeze())
}

/// True when `block`, as published, needs no keeping beside `headers`: it is empty (an
/// `HPUB` with 0 header bytes goes out as `MSG`, as in nats-server) or rendering `headers`
/// reproduces it byte for byte.
pub fn renders_back(headers: &Headers, block: &[u8]) -> bool {
    block.is_empty() || render_headers(headers).is_some_and(|r| r == block)
}

/// Appends `text` with CR and LF replaced by spaces, so it cannot end a line.
fn put_clean(dst: &mut BytesMut, text: &str) {
    if !text.bytes().any(|b| b == b'\r' || b == b'\n') {
        dst.put_slice(text.as_bytes());
        return;
    }
    dst.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Appends one delivery: `HMSG` when the client takes headers and the message has some,
/// `MSG` with the bare payload otherwise (nats-server strips headers for such clients).
/// Returns the message bytes counted as nats-server's `out_bytes` (headers plus payload).
pub fn put_delivery(
    dst: &mut BytesMut,
    msg: &Envelope,
    sid: &[u8],
    headers: Option<&Bytes>,
) -> usize {
    let subject = msg.subject.as_str().as_bytes();
    let reply = msg.reply_to.as_ref().map(|r| r.as_str().as_bytes());
    let hdr_len = headers.map(Bytes::len);
    let size = hdr_len.unwrap_or(0) + msg.payload.len();
    dst.reserve(subject.len() + sid.len() + reply.map_or(0, <[u8]>::len) + size + 40);
    put_msg_head(dst, subject, sid, reply, hdr_len, msg.payload.len());
    if let Some(block) = headers {
        dst.put_slice(block);
    }
    dst.put_slice(&msg.payload);
    dst.put_slice(b"\r\n");
    size
}

/// Appends nats-server's no-responders notice for a request published to `subject`:
/// `HMSG <reply> <sid> <n> <n>\r\nNATS/1.0 503\r\nNats-Subject: <subject>\r\n\r\n\r\n`.
pub fn put_no_responders(dst: &mut BytesMut, reply: &[u8], sid: &[u8], subject: &[u8]) {
    const STATUS: &[u8] = b"NATS/1.0 503\r\nNats-Subject: ";
    let hdr = STATUS.len() + subject.len() + 4;
    put_msg_head(dst, reply, sid, None, Some(hdr), 0);
    dst.put_slice(STATUS);
    dst.put_slice(subject);
    dst.put_slice(b"\r\n\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use polymq_core::ConnId;
    use polymq_core::Protocol;
    use proptest::prelude::*;

    fn origin() -> Origin {
        Origin {
            protocol: Protocol::Nats,
            conn: ConnId(1),
        }
    }

    #[test]
    fn pedantic_literal_check_matches_nats_server() {
        for ok in ["a", "a.b", "foo*", "a.b>", "$SYS.x"] {
            assert!(is_valid_literal(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", ">", "a.>"] {
            assert!(!is_valid_literal(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn subjects_and_filters() {
        assert_eq!(publish_subject(b"a.b").unwrap().as_str(), "a.b");
        assert!(publish_subject(b"a.*").is_none());
        assert!(publish_subject(b"a..b").is_none());
        assert!(publish_subject(&[0xff]).is_none());
        assert!(subscription_filter(b"a.*.>").is_ok());
        assert!(subscription_filter(b"a.>.b").is_err());
        assert!(subscription_filter(b"a..b").is_err());
    }

    #[test]
    fn header_block_round_trip() {
        let block = b"NATS/1.0\r\nA: 1\r\nB:two  \r\nA: 3\r\n\r\n";
        let headers = parse_headers(block);
        let pairs: Vec<_> = headers.iter().collect();
        assert_eq!(pairs, vec![("A", "1"), ("B", "two"), ("A", "3")]);
        assert_eq!(
            render_headers(&headers).unwrap(),
            Bytes::from_static(b"NATS/1.0\r\nA: 1\r\nB: two\r\nA: 3\r\n\r\n")
        );
    }

    #[test]
    fn status_line_travels_as_pseudo_headers() {
        let headers = parse_headers(b"NATS/1.0 503 No Responders\r\n\r\n");
        assert_eq!(headers.get(STATUS_HEADER), Some("503"));
        assert_eq!(headers.get(DESCRIPTION_HEADER), Some("No Responders"));
        assert_eq!(
            render_headers(&headers).unwrap(),
            Bytes::from_static(b"NATS/1.0 503 No Responders\r\n\r\n")
        );
        assert!(render_headers(&Headers::new()).is_none());
    }

    #[test]
    fn foreign_headers_cannot_break_framing() {
        let mut headers = Headers::new();
        headers.append("x\r\ny", "1\n2");
        assert_eq!(
            render_headers(&headers).unwrap(),
            Bytes::from_static(b"NATS/1.0\r\nx  y: 1 2\r\n\r\n")
        );
    }

    #[test]
    fn deliveries_strip_or_keep_headers() {
        let mut msg = envelope(
            Subject::new("foo").unwrap(),
            Some(b"_INBOX.1"),
            Some(b"NATS/1.0\r\nK: v\r\n\r\n"),
            Bytes::from_static(b"hi"),
            origin(),
            7,
        );
        assert_eq!(msg.timestamp_ns, 7);
        let block = render_headers(&msg.headers).unwrap();
        let mut out = BytesMut::new();
        assert_eq!(put_delivery(&mut out, &msg, b"7", Some(&block)), 20);
        assert_eq!(
            &out[..],
            b"HMSG foo 7 _INBOX.1 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nhi\r\n"
        );
        out.clear();
        assert_eq!(put_delivery(&mut out, &msg, b"7", None), 2);
        assert_eq!(&out[..], b"MSG foo 7 _INBOX.1 2\r\nhi\r\n");
        msg.reply_to = None;
        out.clear();
        put_delivery(&mut out, &msg, b"7", None);
        assert_eq!(&out[..], b"MSG foo 7 2\r\nhi\r\n");
    }

    #[test]
    fn no_responders_bytes_match_nats_server() {
        let mut out = BytesMut::new();
        put_no_responders(&mut out, b"_INBOX.abc", b"1", b"svc.echo");
        let expected = format!(
            "HMSG _INBOX.abc 1 {n} {n}\r\nNATS/1.0 503\r\nNats-Subject: svc.echo\r\n\r\n\r\n",
            n = 32 + "svc.echo".len()
        );
        assert_eq!(&out[..], expected.as_bytes());
    }

    proptest! {
        #[test]
        fn rendered_headers_parse_back(pairs in proptest::collection::vec(
            ("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~&&[^ ]]([ -~]{0,20}[ -~&&[^ ]])?"), 1..6)
        ) {
            let mut headers = Headers::new();
            for (name, value) in &pairs {
                headers.append(name.as_str(), value.as_str());
            }
            let block = render_headers(&headers).unwrap();
            prop_assert_eq!(parse_headers(&block), headers);
        }
    }
}
