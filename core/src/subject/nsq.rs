//! NSQ topic names to and from canonical subjects.
//!
//! NSQ names are flat: `.` is an ordinary character and there are no wildcards. The mapping
//! reads each `.` as a token separator and marks empty pieces with the reserved token `/`, so
//! every valid NSQ name has a canonical subject and comes back unchanged:
//!
//! | NSQ topic | canonical | rule |
//! |---|---|---|
//! | `a.b` | `a.b` | split on `.` |
//! | `a..b` | `a./.b` | empty piece → `/` |
//! | `.a`, `a.` | `/.a`, `a./` | leading or trailing empty piece → `/` |
//! | `.` | `/./` | |
//! | `jobs#ephemeral` | `jobs#ephemeral` | the suffix stays part of the last token (as in nsqd, `jobs` ≠ `jobs#ephemeral`) |
//! | `a.#ephemeral` | `a.#ephemeral` | the last piece is not empty: it carries the suffix |
//!
//! Names follow nsqd: `^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1..=[`MAX_NAME_LEN`] bytes with the
//! suffix counted. Channel names use the same rule; on channels `#ephemeral` is a group
//! attribute, not part of any subject.
//!
//! [`subject_to_topic`] is the inverse. A subject is deliverable to NSQ only when every token is
//! in `[a-zA-Z0-9_-]+` or is `/` (the last token may end in `#ephemeral`) and the joined name
//! is valid; anything else (`foo*`, `v1//2`, `$SYS.x`, names over 64 bytes) gives `None`.
//!
//! # Invariants
//! - Every name `n` with [`is_valid_name`] maps to a subject and round-trips:
//!   `subject_to_topic(&topic_to_subject(n)?) == Some(n)`.
//! - Every subject `s` with `subject_to_topic(s) == Some(n)` maps back: `topic_to_subject(&n) ==
//!   Ok(s)`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use super::{Subject, SubjectError};

/// Longest NSQ topic or channel name, in bytes, `#ephemeral` included.
pub const MAX_NAME_LEN: usize = 64;

/// Suffix that makes a topic or channel memory-only and auto-deleted.
const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// True when `name` is a valid nsqd topic or channel name.
pub fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !base.is_empty() && base.bytes().all(|b| b == b'.' || is_piece_byte(b))
}

/// True when `name` ends in `#ephemeral` (memory-only storage, deleted with its last user).
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// Converts an NSQ topic name to its canonical subject.
pub fn topic_to_subject(topic: &str) -> Result<Subject, SubjectError> {
    if topic.is_empty() {
        return Err(SubjectError::Empty);
    }
    if topic.len() > MAX_NAME_LEN {
        return Err(SubjectError::TooLong {
            len: topic.len(),
            max: MAX_NAME_LEN,
        });
    }
    if !is_valid_name(topic) {
        return Err(SubjectError::Invalid("not a valid NSQ topic name"));
    }
    let mut canonical = String::with_capacity(topic.len() * 2 + 1);
    for (i, piece) in topic.split('.').enumerate() {
        if i > 0 {
            canonical.push('.');
        }
        canonical.push_str(if piece.is_empty() { "/" } else { piece });
    }
    Subject::new(&canonical)
}

/// Converts a canonical subject to the NSQ topic that addresses it, or `None` when no NSQ
/// name does.
pub fn subject_to_topic(subject: &Subject) -> Option<String> {
    let mut topic = String::with_capacity(MAX_NAME_LEN);
    let mut tokens = subject.tokens().peekable();
    let mut first = true;
    while let Some(token) = tokens.next() {
        if !first {
            topic.push('.');
        }
        first = false;
        topic.push_str(token_to_piece(token, tokens.peek().is_none())?);
        if topic.len() > MAX_NAME_LEN {
            return None;
        }
    }
    is_valid_name(&topic).then_some(topic)
}

/// A byte allowed in one `.`-separated piece of a name.
fn is_piece_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The NSQ piece for one canonical token: `/` → empty, `[a-zA-Z0-9_-]+` as is; the last token
/// may end in `#ephemeral` (after a possibly empty piece).
fn token_to_piece(token: &str, last: bool) -> Option<&str> {
    if token == "/" {
        return Some("");
    }
    let base = match token.strip_suffix(EPHEMERAL_SUFFIX) {
        Some(base) if last => base,
        _ => token,
    };
    base.bytes().all(is_piece_byte).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(text: &str) -> Subject {
        Subject::new(text).unwrap()
    }

    #[test]
    fn names_follow_nsqd() {
        let valid = [
            "a",
            "jobs",
            "a.b",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "-",
            "_",
            "A-z_0.9",
            "jobs#ephemeral",
            ".#ephemeral",
            "a.#ephemeral",
        ];
        for name in valid {
            assert!(is_valid_name(name), "{name}");
        }
        let invalid = [
            "",
            "#ephemeral",
            "a#ephemeral#ephemeral",
            "a#b",
            "jobs#Ephemeral",
            "a b",
            "a/b",
            "a*",
            "$SYS",
            "caf\u{e9}",
            "a\0",
        ];
        for name in invalid {
            assert!(!is_valid_name(name), "{name:?}");
        }
        assert!(is_valid_name(&"a".repeat(MAX_NAME_LEN)));
        assert!(!is_valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        let suffixed = format!(
            "{}#ephemeral",
            "a".repeat(MAX_NAME_LEN - EPHEMERAL_SUFFIX.len())
        );
        assert!(is_valid_name(&suffixed));
        assert!(!is_valid_name(&format!("a{suffixed}")));
    }

    #[test]
    fn ephemeral_suffix() {
        assert!(is_ephemeral("jobs#ephemeral"));
        assert!(is_ephemeral("a.#ephemeral"));
        assert!(!is_ephemeral("jobs"));
        assert!(!is_ephemeral("jobs#ephemeral.x"));
        assert!(!is_ephemeral("ephemeral"));
    }

    #[test]
    fn topics_map_to_subjects() {
        let cases = [
            ("a", "a"),
            ("a.b", "a.b"),
            ("a..b", "a./.b"),
            (".a", "/.a"),
            ("a.", "a./"),
            (".", "/./"),
            ("..", "/././"),
            ("-", "-"),
            ("jobs#ephemeral", "jobs#ephemeral"),
            ("a.b#ephemeral", "a.b#ephemeral"),
            ("a.#ephemeral", "a.#ephemeral"),
            (".#ephemeral", "/.#ephemeral"),
        ];
        for (topic, canonical) in cases {
            assert_eq!(topic_to_subject(topic), Ok(subject(canonical)), "{topic}");
        }
    }

    #[test]
    fn invalid_topics_rejected() {
        assert_eq!(topic_to_subject(""), Err(SubjectError::Empty));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            topic_to_subject(&long),
            Err(SubjectError::TooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
        for bad in ["a b", "a/b", "foo*", "#ephemeral", "$SYS.x", "a#b"] {
            assert!(
                matches!(topic_to_subject(bad), Err(SubjectError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn subjects_to_topics() {
        let cases = [
            ("a.b", Some("a.b")),
            ("a./.b", Some("a..b")),
            ("/.a", Some(".a")),
            ("a./", Some("a.")),
            ("/./", Some(".")),
            ("jobs#ephemeral", Some("jobs#ephemeral")),
            ("a.#ephemeral", Some("a.#ephemeral")),
            ("/", None),
            ("#ephemeral", None),
            ("a./#ephemeral", None),
            ("a#ephemeral.b", None),
            ("foo*", None),
            ("v1//2.x", None),
            ("a/b.c", None),
            ("$SYS.x", None),
            ("caf\u{e9}", None),
            ("a#b", None),
        ];
        for (canonical, topic) in cases {
            assert_eq!(
                subject_to_topic(&subject(canonical)).as_deref(),
                topic,
                "{canonical}"
            );
        }
        let long = vec!["ab"; 22].join(".");
        assert_eq!(long.len(), 65);
        assert_eq!(subject_to_topic(&subject(&long)), None);
        let fits = vec!["ab"; 21].join(".");
        assert_eq!(
            subject_to_topic(&subject(&fits)).as_deref(),
            Some(fits.as_str())
        );
    }

    #[test]
    fn mapping_round_trips_both_ways() {
        for name in ["a..b", ".a", ".", "a.#ephemeral", "x-y_z.1"] {
            let s = topic_to_subject(name).unwrap();
            assert_eq!(subject_to_topic(&s).as_deref(), Some(name));
        }
        for canonical in ["a./.b", "/./", "/.#ephemeral"] {
            let name = subject_to_topic(&subject(canonical)).unwrap();
            assert_eq!(topic_to_subject(&name), Ok(subject(canonical)));
        }
    }
}
