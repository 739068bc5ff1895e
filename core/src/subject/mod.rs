//! Canonical subjects and filters, and the mappings from each protocol's names onto them.
//!
//! The canonical form is NATS subject syntax: a non-empty sequence of non-empty tokens joined by
//! `.`. Two reserved spellings make MQTT names round-trip losslessly (the nats-server MQTT rules):
//! the token `/` is an empty MQTT level and `//` inside a token is a literal `.`.
//!
//! One departure from NATS syntax: a token may hold a space (0x20). MQTT topic names may
//! (mosquitto accepts `$SYS/broker/retained messages/count`) and so may ZMQ topic frames
//! (`"10001 23 45"`), but a NATS control line cannot carry one, so such a subject is simply not
//! delivered to NATS clients ([`Subject::fits_nats`]). Every other whitespace stays invalid.
//!
//! A [`Filter`] is either a token pattern (`*` = one token, `>` = one or more trailing tokens) or
//! a ZMQ byte prefix over the joined canonical string.
//!
//! # Invariants
//! - A [`Subject`] is valid canonical text: no empty token, no whitespace other than the space,
//!   no NUL, no 0x7F, no wildcard token, at most [`MAX_SUBJECT_LEN`] bytes.
//! - A token [`Filter`] has `>` only as its last token; `*` and `>` only as whole tokens.
//! - Leading wildcards (`*`, `>`, prefix not starting with `$`) never match a subject whose first
//!   token starts with `$`, on every protocol.
//!
//! Protocol mappings live in the submodules: [`mqtt`], [`nsq`], [`zmtp`]. NATS is the identity.

pub mod mqtt;
pub mod nsq;
pub mod zmtp;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Longest canonical subject or filter, in bytes (the NATS control-line limit).
pub const MAX_SUBJECT_LEN: usize = 4096;

/// Why a name could not become a canonical subject or filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The name is empty.
    #[error("empty subject")]
    Empty,
    /// The name is longer than [`MAX_SUBJECT_LEN`] (or the protocol's own limit).
    #[error("subject too long: {len} > {max}")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A token is empty (`a..b`, `.a`, `a.`).
    #[error("empty token in subject")]
    EmptyToken,
    /// Whitespace other than the space, NUL or DEL inside the name.
    #[error("invalid character {0:#04x} in subject")]
    InvalidChar(u32),
    /// A wildcard where only a literal subject is allowed.
    #[error("wildcard in a publish subject")]
    Wildcard,
    /// `>` (or MQTT `#`) not in the last position, or a wildcard that is not a whole token/level.
    #[error("misplaced wildcard")]
    MisplacedWildcard,
    /// The name is not valid in its protocol (NSQ name rules, MQTT share syntax, …).
    #[error("invalid name: {0}")]
    Invalid(&'static str),
    /// A canonical subject this protocol cannot express.
    #[error("subject not representable in this protocol")]
    NotRepresentable,
}

/// Checks one byte of a token: no whitespace but the space, no NUL or DEL.
fn check_byte(b: u8) -> Result<(), SubjectError> {
    match b {
        b'\t' | b'\r' | b'\n' | 0x0c | 0 | 0x7f => Err(SubjectError::InvalidChar(b.into())),
        _ => Ok(()),
    }
}

/// Validates canonical text; `wildcards` allows `*` and a trailing `>`.
fn validate(text: &str, wildcards: bool) -> Result<(), SubjectError> {
    if text.is_empty() {
        return Err(SubjectError::Empty);
    }
    if text.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong {
            len: text.len(),
            max: MAX_SUBJECT_LEN,
        });
    }
    let mut tokens = text.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        token.bytes().try_for_each(check_byte)?;
        match token {
            "*" | ">" if !wildcards => return Err(SubjectError::Wildcard),
            ">" if tokens.peek().is_some() => return Err(SubjectError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A canonical, literal subject (no wildcards). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

impl Subject {
    /// Validates `text` as a canonical literal subject.
    pub fn new(text: &str) -> Result<Self, SubjectError> {
        validate(text, false)?;
        Ok(Self(Arc::from(text)))
    }

    /// The joined canonical text, e.g. `sensors.kitchen.temp`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tokens of the subject, in order.
    pub fn tokens(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }

    /// True when a NATS `MSG` line can carry the subject: it holds no space (NATS splits its
    /// control lines on whitespace).
    pub fn fits_nats(&self) -> bool {
        !self.0.as_bytes().contains(&b' ')
    }

    /// True when the first token starts with `$` (broker namespace, not matched by leading
    /// wildcards).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({})", &*self.0)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Subject {
    type Error = SubjectError;
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

/// What a subscription matches.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// A token pattern in canonical syntax (`a.*.c`, `a.>`).
    Tokens {
        /// The canonical pattern text.
        pattern: Arc<str>,
        /// MQTT `a/#`: the pattern ends in `>` and also matches the parent (`a`).
        matches_parent: bool,
    },
    /// A ZMQ byte prefix over the joined canonical subject (`""` matches everything not `$`).
    Prefix(Bytes),
}

impl Filter {
    /// Validates a canonical pattern (`*` one token, `>` one or more trailing tokens).
    pub fn new(pattern: &str) -> Result<Self, SubjectError> {
        validate(pattern, true)?;
        Ok(Self::Tokens {
            pattern: Arc::from(pattern),
            matches_parent: false,
        })
    }

    /// A filter for an MQTT multi-level wildcard: `pattern` ends in `>` and the parent also
    /// matches (`a.>` matches `a`).
    pub fn with_parent(pattern: &str) -> Result<Self, SubjectError> {
        validate(pattern, true)?;
        let matches_parent = pattern.ends_with(".>");
        Ok(Self::Tokens {
            pattern: Arc::from(pattern),
            matches_parent,
        })
    }

    /// A ZMQ byte-prefix filter.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        Self::Prefix(prefix.into())
    }

    /// A filter matching exactly one subject.
    pub fn exact(subject: &Subject) -> Self {
        Self::Tokens {
            pattern: Arc::from(subject.as_str()),
            matches_parent: false,
        }
    }

    /// True when the filter matches exactly one subject (no wildcard, not a prefix).
    pub fn is_literal(&self) -> bool {
        match self {
            Self::Tokens { pattern, .. } => pattern.split('.').all(|t| t != "*" && t != ">"),
            Self::Prefix(_) => false,
        }
    }

    /// The canonical pattern text, or `None` for a byte prefix.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            Self::Tokens { pattern, .. } => Some(pattern),
            Self::Prefix(_) => None,
        }
    }

    /// Reference matcher: does this filter match `subject`? The router's index must agree
    /// with this function on every input.
    pub fn matches(&self, subject: &Subject) -> bool {
        match self {
            Self::Prefix(prefix) => {
                let text = subject.as_str().as_bytes();
                if subject.is_system() && prefix.first() != Some(&b'$') {
                    return false;
                }
                text.starts_with(prefix)
            }
            Self::Tokens {
                pattern,
                matches_parent,
            } => tokens_match(pattern, subject, *matches_parent),
        }
    }
}

/// Token-wise match of a canonical pattern against a subject, with the `$` rule.
fn tokens_match(pattern: &str, subject: &Subject, matches_parent: bool) -> bool {
    let mut pat = pattern.split('.').peekable();
    let mut sub = subject.tokens().peekable();
    let mut first = true;
    loop {
        match (pat.next(), sub.peek()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return !(first && subject.is_system()),
            (Some(">"), None) => return matches_parent && !first,
            (Some("*"), Some(_)) if first && subject.is_system() => return false,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == *s => {}
            _ => return false,
        }
        sub.next();
        first = false;
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tokens {
                pattern,
                matches_parent: false,
            } => write!(f, "Filter({pattern})"),
            Self::Tokens {
                pattern,
                matches_parent: true,
            } => write!(f, "Filter({pattern}+parent)"),
            Self::Prefix(p) => write!(f, "Prefix({:?})", String::from_utf8_lossy(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Subject {
        Subject::new(text).unwrap()
    }

    #[test]
    fn subject_validation_follows_nats() {
        for ok in [
            "a",
            "a.b",
            "foo*.b",
            "$SYS.x",
            "/./",
            "v1//2.x",
            "a#ephemeral",
        ] {
            assert!(Subject::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(Subject::new(""), Err(SubjectError::Empty));
        assert_eq!(Subject::new("a..b"), Err(SubjectError::EmptyToken));
        assert_eq!(Subject::new(".a"), Err(SubjectError::EmptyToken));
        assert_eq!(Subject::new("a."), Err(SubjectError::EmptyToken));
        assert!(Subject::new("a b.c").is_ok_and(|s| !s.fits_nats()));
        assert!(Subject::new("a.b").is_ok_and(|s| s.fits_nats()));
        assert_eq!(Subject::new("a\tb"), Err(SubjectError::InvalidChar(0x09)));
        assert_eq!(Subject::new("a.*"), Err(SubjectError::Wildcard));
        assert_eq!(Subject::new(">"), Err(SubjectError::Wildcard));
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert!(matches!(
            Subject::new(&long),
            Err(SubjectError::TooLong { .. })
        ));
    }

    #[test]
    fn filter_validation() {
        assert!(Filter::new("a.*.c").is_ok());
        assert!(Filter::new("a.>").is_ok());
        assert!(Filter::new(">").is_ok());
        assert_eq!(Filter::new("a.>.c"), Err(SubjectError::MisplacedWildcard));
        assert_eq!(Filter::new("a..c"), Err(SubjectError::EmptyToken));
        assert!(Filter::new("foo*").unwrap().is_literal());
        assert!(!Filter::new("a.*").unwrap().is_literal());
    }

    #[test]
    fn token_matching() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.*", "a", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("*.b", "a.b", true),
            (">", "a", true),
            (">", "$SYS.x", false),
            ("*.x", "$SYS.x", false),
            ("$SYS.>", "$SYS.x", true),
            ("$SYS.*", "$SYS.x", true),
            ("foo*", "foo*", true),
            ("foo*", "foox", false),
        ];
        for (f, subj, want) in cases {
            assert_eq!(
                Filter::new(f).unwrap().matches(&s(subj)),
                want,
                "{f} vs {subj}"
            );
        }
    }

    #[test]
    fn parent_matching_for_mqtt_hash() {
        let f = Filter::with_parent("a.>").unwrap();
        assert!(f.matches(&s("a")));
        assert!(f.matches(&s("a.b")));
        assert!(!f.matches(&s("b")));
        let all = Filter::with_parent(">").unwrap();
        assert!(all.matches(&s("a")));
        assert!(!all.matches(&s("$SYS.broker")));
    }

    #[test]
    fn prefix_matching_is_bytewise() {
        let f = Filter::prefix(&b"foo"[..]);
        assert!(f.matches(&s("foo")));
        assert!(f.matches(&s("foo.bar")));
        assert!(f.matches(&s("foobar")));
        assert!(!f.matches(&s("fo")));
        let all = Filter::prefix(Bytes::new());
        assert!(all.matches(&s("x")));
        assert!(!all.matches(&s("$SYS.x")));
        assert!(Filter::prefix(&b"$S"[..]).matches(&s("$SYS.x")));
    }
}
