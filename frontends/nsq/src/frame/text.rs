//! The textual pieces of protocol V2: topic and channel names, decimal arguments, message ids,
//! and the Go `%q` quoting nsqd uses when it echoes a bad name in an error.
//!
//! Everything here works on raw bytes: a command line is not required to be UTF-8, and nsqd
//! compares and echoes bytes, not characters.
//!
//! # Invariants
//! - [`is_valid_name`] accepts exactly nsqd's `^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1..=64 bytes
//!   with the suffix counted, so every accepted name is ASCII.
//! - [`parse_base10`] accepts exactly what nsqd's `ByteToBase10` accepts (digits only, the
//!   empty string is 0, overflow wraps) so that the same inputs produce the same errors.
//! - [`go_quote`] is byte-exact with Go's `strconv.Quote` for ASCII input and for invalid
//!   UTF-8; for printable non-ASCII text it keeps the characters, as Go does.

/// Longest topic or channel name, in bytes, `#ephemeral` included.
pub const MAX_NAME_LEN: usize = 64;

/// Suffix that makes a topic or channel memory-only and auto-deleted.
pub const EPHEMERAL_SUFFIX: &[u8] = b"#ephemeral";

/// Length of a message id on the wire: 16 ASCII hex characters.
pub const MSG_ID_LEN: usize = 16;

/// True when `name` is a valid nsqd topic or channel name.
pub fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !base.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True when `name` ends in `#ephemeral`.
pub fn is_ephemeral(name: &[u8]) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// Parses a decimal argument the way nsqd's `ByteToBase10` does: only ASCII digits are
/// allowed, the empty string is 0 and overflow wraps around. `None` means "could not parse".
pub fn parse_base10(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(d - b'0')))
    })
}

/// A wire message id, or `None` when the argument is not exactly 16 bytes long (nsqd checks
/// only the length; the bytes need not be hex).
pub fn message_id(arg: &[u8]) -> Option<[u8; MSG_ID_LEN]> {
    <[u8; MSG_ID_LEN]>::try_from(arg).ok()
}

/// Quotes `raw` like Go's `%q` verb (`strconv.Quote`).
pub fn go_quote(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_quoted_char(&mut out, c);
        }
        for byte in chunk.invalid() {
            push_hex(&mut out, "\\x", u32::from(*byte), 2);
        }
    }
    out.push('"');
    out
}

/// Appends one character with Go's escaping rules.
fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_go_printable(c) => out.push(c),
        c if u32::from(c) < 0x80 => push_hex(out, "\\x", u32::from(c), 2),
        c if u32::from(c) < 0x1_0000 => push_hex(out, "\\u", u32::from(c), 4),
        c => push_hex(out, "\\U", u32::from(c), 8),
    }
}

/// Go's `unicode.IsPrint`: graphic characters and the ASCII space. Exact for ASCII; outside
/// it, controls, separators and the common invisible format characters are not printable.
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}')
        || matches!(c, '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
        || matches!(c, '\u{e0000}'..='\u{e007f}'))
}

/// Appends `prefix` and `value` as `width` lowercase hex digits.
fn push_hex(out: &mut String, prefix: &str, value: u32, width: usize) {
    out.push_str(prefix);
    out.push_str(&format!("{value:0width$x}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_nsqd() {
        for name in [
            "a",
            "a.b",
            ".",
            "a..b",
            "-",
            "_",
            "A-z_0.9",
            "jobs#ephemeral",
            ".#ephemeral",
        ] {
            assert!(is_valid_name(name.as_bytes()), "{name}");
        }
        for name in [
            "",
            "#ephemeral",
            "a#b",
            "a b",
            "a/b",
            "a*",
            "caf\u{e9}",
            "j#ephemeral#ephemeral",
        ] {
            assert!(!is_valid_name(name.as_bytes()), "{name:?}");
        }
        assert!(is_valid_name(&[b'a'; MAX_NAME_LEN]));
        assert!(!is_valid_name(&[b'a'; MAX_NAME_LEN + 1]));
        assert!(!is_valid_name(b"a\xff"));
        assert!(is_ephemeral(b"x#ephemeral"));
        assert!(!is_ephemeral(b"x"));
    }

    #[test]
    fn base10_matches_nsqd() {
        assert_eq!(parse_base10(b""), Some(0));
        assert_eq!(parse_base10(b"0"), Some(0));
        assert_eq!(parse_base10(b"2500"), Some(2500));
        assert_eq!(parse_base10(b"-1"), None);
        assert_eq!(parse_base10(b"1a"), None);
        assert_eq!(parse_base10(b" 1"), None);
        assert_eq!(parse_base10(b"18446744073709551616"), Some(0));
        assert_eq!(parse_base10(b"18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn message_ids_are_sixteen_bytes() {
        assert_eq!(message_id(b"0123456789abcdef"), Some(*b"0123456789abcdef"));
        assert_eq!(message_id(b"0123456789abcde"), None);
        assert_eq!(message_id(b"0123456789abcdef0"), None);
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote(b"abc"), r#""abc""#);
        assert_eq!(go_quote(b""), r#""""#);
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\t\n\r\x07\x08\x0c\x0b"), r#""\t\n\r\a\b\f\v""#);
        assert_eq!(go_quote(b"\x00\x1f\x7f"), r#""\x00\x1f\x7f""#);
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(go_quote("caf\u{e9}".as_bytes()), "\"caf\u{e9}\"");
        assert_eq!(go_quote("\u{a0}\u{feff}".as_bytes()), r#""\u00a0\ufeff""#);
        assert_eq!(go_quote("\u{e0001}".as_bytes()), r#""\U000e0001""#);
    }
}
