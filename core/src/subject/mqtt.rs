//! MQTT topic names and topic filters to and from canonical subjects and filters.
//!
//! The rules are nats-server's MQTT conversion, made lossless in both directions:
//!
//! | MQTT | canonical | example |
//! |---|---|---|
//! | level separator `/` | token separator `.` | `a/b` → `a.b` |
//! | empty level | token `/` | `/a` → `/.a`, `a/` → `a./`, `a//b` → `a./.b`, `/` → `/./` |
//! | literal `.` inside a level | `//` | `v1.2/x` → `v1//2.x` |
//! | `+` (filter, whole level) | `*` | `a/+/c` → `a.*.c` |
//! | `#` (filter, last whole level) | `>` that also matches the parent | `a/#` → `a.>` (+ `a`); `#` → `>` |
//! | `$share/{ShareName}/{filter}` | group `ShareName` on `filter` | [`parse_shared`] |
//! | `+` or `#` in a PUBLISH name | rejected | [`SubjectError::Wildcard`] |
//! | `+` or `#` not a whole level, `#` not last | rejected | [`SubjectError::MisplacedWildcard`] |
//! | `*` or `>` as a whole level | rejected | a literal MQTT level cannot become a canonical wildcard |
//! | space | kept | `retained messages/count` → `retained messages.count`, as mosquitto accepts it |
//! | other whitespace, NUL, 0x7F | rejected | as mosquitto (the codec already refuses control characters) |
//! | length | 1..=65535 bytes ([`MAX_TOPIC_LEN`]), canonical form ≤ 4096 | |
//!
//! [`subject_to_topic`] inverts the name mapping: token `/` → empty level, `//` → `.`, tokens
//! joined with `/`. A subject MQTT cannot express — a token holding `/` in any other form, a
//! token holding `+` or `#` (`a#ephemeral`), or the lone token `/` (the empty topic) — gives
//! `None`. Such a subject is not delivered to MQTT (the caller counts it); it is never mangled
//! the way nats-server drops stray `/` characters.
//!
//! The `$` rule needs no work here: a topic starts with `$` exactly when its canonical subject
//! does, and [`Filter::matches`] keeps leading wildcards away from `$` subjects.
//!
//! # Invariants
//! - Every topic `t` accepted by [`topic_to_subject`] round-trips:
//!   `subject_to_topic(&topic_to_subject(t)?) == Some(t)`.
//! - Every subject `s` with `subject_to_topic(s) == Some(t)` maps back: `topic_to_subject(&t) ==
//!   Ok(s)`.
//! - An MQTT filter matches an MQTT topic (levels, `+`, `#` with its parent, `$` rule) exactly
//!   when [`filter_to_filter`] of the one matches [`topic_to_subject`] of the other.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use super::{Filter, Subject, SubjectError};

/// Longest MQTT topic name or filter, in bytes (a UTF-8 string with a 16-bit length).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of an MQTT 5 shared subscription filter.
const SHARE_PREFIX: &str = "$share/";

/// Converts a PUBLISH topic name to its canonical subject.
pub fn topic_to_subject(topic: &str) -> Result<Subject, SubjectError> {
    check_length(topic)?;
    if topic.contains(['+', '#']) {
        return Err(SubjectError::Wildcard);
    }
    let mut canonical = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            canonical.push('.');
        }
        push_level(&mut canonical, level)?;
    }
    Subject::new(&canonical)
}

/// Converts a SUBSCRIBE topic filter (without `$share/`, see [`parse_shared`]) to a canonical
/// filter. `a/#` also matches `a`, as MQTT requires.
pub fn filter_to_filter(filter: &str) -> Result<Filter, SubjectError> {
    check_length(filter)?;
    let mut pattern = String::with_capacity(filter.len() + 8);
    let mut levels = filter.split('/').peekable();
    let mut multi_level = false;
    let mut first = true;
    while let Some(level) = levels.next() {
        if !first {
            pattern.push('.');
        }
        first = false;
        match level {
            "+" => pattern.push('*'),
            "#" if levels.peek().is_none() => {
                pattern.push('>');
                multi_level = true;
            }
            _ if level.contains(['+', '#']) => return Err(SubjectError::MisplacedWildcard),
            _ => push_level(&mut pattern, level)?,
        }
    }
    if multi_level {
        Filter::with_parent(&pattern)
    } else {
        Filter::new(&pattern)
    }
}

/// Splits an MQTT 5 shared subscription `$share/{ShareName}/{filter}` into `(ShareName,
/// filter)`. Returns `Ok(None)` for a filter that is not shared. The returned filter has been
/// checked with [`filter_to_filter`].
pub fn parse_shared(filter: &str) -> Result<Option<(String, String)>, SubjectError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((share_name, inner)) = rest.split_once('/') else {
        return Err(SubjectError::Invalid(
            "shared subscription without a topic filter",
        ));
    };
    if share_name.is_empty() {
        return Err(SubjectError::Invalid("empty ShareName"));
    }
    if share_name.contains(['+', '#']) {
        return Err(SubjectError::Invalid("ShareName contains a wildcard"));
    }
    if inner.is_empty() {
        return Err(SubjectError::Invalid(
            "shared subscription without a topic filter",
        ));
    }
    filter_to_filter(inner)?;
    Ok(Some((share_name.to_owned(), inner.to_owned())))
}

/// Converts a canonical subject back to an MQTT topic name, or `None` when MQTT cannot express
/// it.
pub fn subject_to_topic(subject: &Subject) -> Option<String> {
    if subject.as_str() == "/" {
        // One empty level is the empty topic, which MQTT forbids.
        return None;
    }
    let mut topic = String::with_capacity(subject.as_str().len());
    for (i, token) in subject.tokens().enumerate() {
        if i > 0 {
            topic.push('/');
        }
        push_token(&mut topic, token)?;
    }
    Some(topic)
}

/// Checks the MQTT length rule: 1..=[`MAX_TOPIC_LEN`] bytes.
fn check_length(name: &str) -> Result<(), SubjectError> {
    match name.len() {
        0 => Err(SubjectError::Empty),
        len if len > MAX_TOPIC_LEN => Err(SubjectError::TooLong {
            len,
            max: MAX_TOPIC_LEN,
        }),
        _ => Ok(()),
    }
}

/// Appends one literal MQTT level as a canonical token: empty → `/`, `.` → `//`.
fn push_level(canonical: &mut String, level: &str) -> Result<(), SubjectError> {
    match level {
        "" => canonical.push('/'),
        "*" | ">" => {
            return Err(SubjectError::Invalid(
                "MQTT level `*` or `>` has no canonical form",
            ))
        }
        _ => {
            let mut pieces = level.split('.');
            if let Some(head) = pieces.next() {
                canonical.push_str(head);
            }
            for piece in pieces {
                canonical.push_str("//");
                canonical.push_str(piece);
            }
        }
    }
    Ok(())
}

/// Appends one canonical token as an MQTT level: `/` → empty, `//` → `.`. `None` when the token
/// holds an unpaired `/` or an MQTT wildcard character.
fn push_token(topic: &mut String, token: &str) -> Option<()> {
    if token == "/" {
        return Some(());
    }
    if token.contains(['+', '#']) {
        return None;
    }
    let mut rest = token;
    while let Some(at) = rest.find('/') {
        let (head, tail) = rest.split_at(at);
        topic.push_str(head);
        topic.push('.');
        rest = tail.strip_prefix("//")?;
    }
    topic.push_str(rest);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(text: &str) -> Subject {
        Subject::new(text).unwrap()
    }

    #[test]
    fn topic_names_map_like_nats_server() {
        let cases = [
            ("a", "a"),
            ("a/b/c", "a.b.c"),
            ("/a", "/.a"),
            ("a/", "a./"),
            ("a//b", "a./.b"),
            ("/", "/./"),
            ("//", "/././"),
            ("v1.2/x", "v1//2.x"),
            (".", "//"),
            ("a..b", "a////b"),
            ("$SYS/broker/load", "$SYS.broker.load"),
            (
                "$SYS/broker/retained messages/count",
                "$SYS.broker.retained messages.count",
            ),
            ("foo*/bar>", "foo*.bar>"),
            ("caf\u{e9}/\u{1f600}", "caf\u{e9}.\u{1f600}"),
        ];
        for (topic, canonical) in cases {
            assert_eq!(topic_to_subject(topic), Ok(subject(canonical)), "{topic}");
        }
    }

    #[test]
    fn topic_names_rejected() {
        let cases = [
            ("", SubjectError::Empty),
            ("a/+", SubjectError::Wildcard),
            ("a/#", SubjectError::Wildcard),
            ("a+b", SubjectError::Wildcard),
            ("#", SubjectError::Wildcard),
            ("a\0b", SubjectError::InvalidChar(0)),
            ("a\tb", SubjectError::InvalidChar(0x09)),
            ("a\nb", SubjectError::InvalidChar(0x0a)),
            ("a\rb", SubjectError::InvalidChar(0x0d)),
            ("a\x0cb", SubjectError::InvalidChar(0x0c)),
            ("a\x7fb", SubjectError::InvalidChar(0x7f)),
        ];
        for (topic, err) in cases {
            assert_eq!(topic_to_subject(topic), Err(err), "{topic:?}");
        }
        assert!(matches!(
            topic_to_subject("a/*"),
            Err(SubjectError::Invalid(_))
        ));
        assert!(matches!(
            topic_to_subject(">"),
            Err(SubjectError::Invalid(_))
        ));
    }

    #[test]
    fn topic_length_limits() {
        let max = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            topic_to_subject(&max),
            Err(SubjectError::TooLong {
                len: MAX_TOPIC_LEN + 1,
                max: MAX_TOPIC_LEN
            })
        );
        // Within MQTT's limit but over the canonical one: every `.` doubles.
        let dots = ".".repeat(3000);
        assert!(matches!(
            topic_to_subject(&dots),
            Err(SubjectError::TooLong { max: 4096, .. })
        ));
        assert!(topic_to_subject(&"a".repeat(4096)).is_ok());
    }

    #[test]
    fn filters_map_wildcards() {
        let cases = [
            ("a/b", "Filter(a.b)"),
            ("a/+/c", "Filter(a.*.c)"),
            ("+", "Filter(*)"),
            ("+/+", "Filter(*.*)"),
            ("a/#", "Filter(a.>+parent)"),
            ("a/+/#", "Filter(a.*.>+parent)"),
            ("#", "Filter(>)"),
            ("/#", "Filter(/.>+parent)"),
            ("/+", "Filter(/.*)"),
            ("a//+", "Filter(a./.*)"),
            ("/", "Filter(/./)"),
            ("v1.2/+", "Filter(v1//2.*)"),
            ("$SYS/#", "Filter($SYS.>+parent)"),
            ("$share/g/a", "Filter($share.g.a)"),
        ];
        for (filter, debug) in cases {
            let got = filter_to_filter(filter).unwrap();
            assert_eq!(format!("{got:?}"), debug, "{filter}");
        }
    }

    #[test]
    fn filters_rejected() {
        let cases = [
            ("", SubjectError::Empty),
            ("a/#/b", SubjectError::MisplacedWildcard),
            ("#/a", SubjectError::MisplacedWildcard),
            ("a/b#", SubjectError::MisplacedWildcard),
            ("a/#b", SubjectError::MisplacedWildcard),
            ("a+/b", SubjectError::MisplacedWildcard),
            ("a/+b", SubjectError::MisplacedWildcard),
            ("++", SubjectError::MisplacedWildcard),
            ("##", SubjectError::MisplacedWildcard),
            ("a\0", SubjectError::InvalidChar(0)),
            ("a\t/+", SubjectError::InvalidChar(0x09)),
        ];
        for (filter, err) in cases {
            assert_eq!(filter_to_filter(filter), Err(err), "{filter:?}");
        }
        assert!(matches!(
            filter_to_filter("a/*"),
            Err(SubjectError::Invalid(_))
        ));
        assert!(matches!(
            filter_to_filter("a/>"),
            Err(SubjectError::Invalid(_))
        ));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert!(matches!(
            filter_to_filter(&long),
            Err(SubjectError::TooLong { .. })
        ));
    }

    #[test]
    fn filter_matching_follows_mqtt() {
        let cases = [
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "a/", true),
            ("a/#", "ab", false),
            ("a/+/#", "a/x", true),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("+/+", "/a", true),
            ("+", "/a", false),
            ("/+", "/a", true),
            ("#", "/", true),
            ("/#", "/", true),
            ("a//b", "a//b", true),
            ("a//b", "a/b", false),
            ("a/b", "a.b", false),
            ("v1.2/+", "v1.2/x", true),
            ("v1/+", "v1.2/x", false),
            ("#", "$SYS/broker", false),
            ("+/broker", "$SYS/broker", false),
            ("+/#", "$SYS", false),
            ("$SYS/#", "$SYS/broker", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/broker", true),
            ("a/$b/#", "a/$b/c", true),
            ("+/$b", "a/$b", true),
            ("#", "a$", true),
            ("foo*", "foo*", true),
            ("foo*", "foox", false),
        ];
        for (filter, topic, want) in cases {
            let f = filter_to_filter(filter).unwrap();
            let s = topic_to_subject(topic).unwrap();
            assert_eq!(f.matches(&s), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(parse_shared("$shared/g/a"), Ok(None));
        assert_eq!(parse_shared("$SHARE/g/a"), Ok(None));
        let ok = |group: &str, filter: &str| Ok(Some((group.to_owned(), filter.to_owned())));
        assert_eq!(parse_shared("$share/workers/jobs"), ok("workers", "jobs"));
        assert_eq!(parse_shared("$share/g/a/+/#"), ok("g", "a/+/#"));
        assert_eq!(parse_shared("$share/g/#"), ok("g", "#"));
        assert_eq!(parse_shared("$share/g//"), ok("g", "/"));
        assert_eq!(parse_shared("$share/g/$SYS/#"), ok("g", "$SYS/#"));
        assert_eq!(parse_shared("$share/$g.1/a"), ok("$g.1", "a"));
        for bad in [
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/+/a",
            "$share/#/a",
        ] {
            assert!(
                matches!(parse_shared(bad), Err(SubjectError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_shared("$share/g+x/a"),
            Err(SubjectError::Invalid("ShareName contains a wildcard"))
        );
        assert_eq!(
            parse_shared("$share/g/a/#/b"),
            Err(SubjectError::MisplacedWildcard)
        );
    }

    #[test]
    fn subjects_to_topics() {
        let cases = [
            ("a.b.c", Some("a/b/c")),
            ("/.a", Some("/a")),
            ("a./", Some("a/")),
            ("a./.b", Some("a//b")),
            ("/./", Some("/")),
            ("v1//2.x", Some("v1.2/x")),
            ("//", Some(".")),
            ("a////b", Some("a..b")),
            ("$SYS.x", Some("$SYS/x")),
            ("foo*.bar", Some("foo*/bar")),
            ("/", None),
            ("a/b.c", None),
            ("a.b/", None),
            ("a.///", None),
            ("a./b", None),
            ("foo#ephemeral", None),
            ("a+b.c", None),
        ];
        for (canonical, topic) in cases {
            assert_eq!(
                subject_to_topic(&subject(canonical)).as_deref(),
                topic,
                "{canonical}"
            );
        }
    }

    #[test]
    fn mapping_round_trips_both_ways() {
        for topic in [
            "a", "/a", "a/", "a//b", "/", "//", "v1.2/x", ".", "$SYS/x", "a/./b",
        ] {
            let s = topic_to_subject(topic).unwrap();
            assert_eq!(subject_to_topic(&s).as_deref(), Some(topic));
        }
        for canonical in ["a.b", "/./", "v1//2.x", "////.a"] {
            let topic = subject_to_topic(&subject(canonical)).unwrap();
            assert_eq!(topic_to_subject(&topic), Ok(subject(canonical)));
        }
    }

    proptest::proptest! {
        /// Every topic name made of levels, dots, spaces and `$` maps to a subject and back
        /// unchanged, and a filter naming the topic literally matches it.
        #[test]
        fn any_topic_name_round_trips(topic in "[ab. $/]{1,12}") {
            let s = topic_to_subject(&topic).unwrap();
            let back = subject_to_topic(&s);
            proptest::prop_assert_eq!(back.as_deref(), Some(topic.as_str()));
            proptest::prop_assert!(filter_to_filter(&topic).unwrap().matches(&s));
        }
    }
}
