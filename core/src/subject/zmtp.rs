//! ZMTP topic frames and SUBSCRIBE prefixes to and from canonical subjects and filters.
//!
//! ZeroMQ has no subject syntax of its own: by convention frame 0 of a message names the topic
//! and a SUB socket subscribes to byte prefixes of it.
//!
//! | ZMTP | canonical | rule |
//! |---|---|---|
//! | topic frame (listener `topic_syntax = "nats"`, the default) | subject | the frame is canonical text, validated as NATS does |
//! | topic frame (listener `topic_syntax = "mqtt"`) | subject | the MQTT topic-name rule of [`super::mqtt`] |
//! | empty or non-UTF-8 topic frame | rejected | the frontend drops and counts it (ZMTP has no NACK) |
//! | outgoing frame 0 | the joined canonical subject | [`subject_frame`], for every listener |
//! | SUBSCRIBE prefix `p` | [`Filter::Prefix`]`(p)` | byte prefix over the joined subject; never turned into tokens |
//!
//! A prefix is compared byte by byte: `foo` matches `foo`, `foo.bar` and `foobar`. The empty
//! prefix matches every subject whose first token does not start with `$`, like `>`.
//!
//! # Invariants
//! - `frame_to_subject(&subject_frame(s), TopicSyntax::Nats) == Ok(s)` for every subject `s`.
//! - A frame accepted with [`TopicSyntax::Nats`] is returned unchanged by [`subject_frame`].
//! - [`prefix_filter`] always yields [`Filter::Prefix`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use bytes::Bytes;

use super::{mqtt, Filter, Subject, SubjectError, MAX_SUBJECT_LEN};

/// How a listener reads the topic frame of incoming messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicSyntax {
    /// Canonical (NATS) subject text: `sensors.kitchen.temp`.
    #[default]
    Nats,
    /// An MQTT topic name: `sensors/kitchen/temp`.
    Mqtt,
}

impl TopicSyntax {
    /// Longest topic frame this syntax can accept, checked before the frame is decoded.
    fn max_len(self) -> usize {
        match self {
            Self::Nats => MAX_SUBJECT_LEN,
            Self::Mqtt => mqtt::MAX_TOPIC_LEN,
        }
    }
}

/// Reads the topic frame (frame 0) of an incoming message as a canonical subject.
pub fn frame_to_subject(frame: &[u8], syntax: TopicSyntax) -> Result<Subject, SubjectError> {
    if frame.is_empty() {
        return Err(SubjectError::Empty);
    }
    if frame.len() > syntax.max_len() {
        return Err(SubjectError::TooLong {
            len: frame.len(),
            max: syntax.max_len(),
        });
    }
    let text = std::str::from_utf8(frame)
        .map_err(|_| SubjectError::Invalid("topic frame is not UTF-8"))?;
    match syntax {
        TopicSyntax::Nats => Subject::new(text),
        TopicSyntax::Mqtt => mqtt::topic_to_subject(text),
    }
}

/// The topic frame (frame 0) for an outgoing message: the joined canonical subject.
pub fn subject_frame(subject: &Subject) -> Bytes {
    Bytes::copy_from_slice(subject.as_str().as_bytes())
}

/// The filter for a SUBSCRIBE prefix: a byte prefix over the joined canonical subject.
pub fn prefix_filter(prefix: &[u8]) -> Filter {
    Filter::prefix(Bytes::copy_from_slice(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(text: &str) -> Subject {
        Subject::new(text).unwrap()
    }

    #[test]
    fn nats_syntax_frames() {
        for ok in [
            "a",
            "a.b",
            "foo*",
            "$SYS.x",
            "/./",
            "v1//2.x",
            "jobs#ephemeral",
            "10001 23 45",
        ] {
            assert_eq!(
                frame_to_subject(ok.as_bytes(), TopicSyntax::Nats),
                Ok(subject(ok))
            );
        }
        let cases: [(&[u8], SubjectError); 7] = [
            (b"a\tb", SubjectError::InvalidChar(0x09)),
            (b"", SubjectError::Empty),
            (b"a..b", SubjectError::EmptyToken),
            (b"a.", SubjectError::EmptyToken),
            (b"a.*", SubjectError::Wildcard),
            (b"a\nb", SubjectError::InvalidChar(0x0a)),
            (
                b"\xff\xfe",
                SubjectError::Invalid("topic frame is not UTF-8"),
            ),
        ];
        for (frame, err) in cases {
            assert_eq!(
                frame_to_subject(frame, TopicSyntax::Nats),
                Err(err),
                "{frame:?}"
            );
        }
        let long = vec![b'a'; MAX_SUBJECT_LEN + 1];
        assert_eq!(
            frame_to_subject(&long, TopicSyntax::Nats),
            Err(SubjectError::TooLong {
                len: MAX_SUBJECT_LEN + 1,
                max: MAX_SUBJECT_LEN
            })
        );
    }

    #[test]
    fn mqtt_syntax_frames() {
        let cases = [
            ("a/b", "a.b"),
            ("/a", "/.a"),
            ("a//b", "a./.b"),
            ("v1.2/x", "v1//2.x"),
        ];
        for (frame, canonical) in cases {
            let got = frame_to_subject(frame.as_bytes(), TopicSyntax::Mqtt);
            assert_eq!(got, Ok(subject(canonical)), "{frame}");
        }
        assert_eq!(
            frame_to_subject(b"a/+", TopicSyntax::Mqtt),
            Err(SubjectError::Wildcard)
        );
        assert_eq!(
            frame_to_subject(b"", TopicSyntax::Mqtt),
            Err(SubjectError::Empty)
        );
        let long = vec![b'a'; mqtt::MAX_TOPIC_LEN + 1];
        assert!(matches!(
            frame_to_subject(&long, TopicSyntax::Mqtt),
            Err(SubjectError::TooLong {
                max: mqtt::MAX_TOPIC_LEN,
                ..
            })
        ));
    }

    #[test]
    fn outgoing_frame_is_canonical_text() {
        for text in ["a.b", "/./", "v1//2.x"] {
            let s = subject(text);
            let frame = subject_frame(&s);
            assert_eq!(&frame[..], text.as_bytes());
            assert_eq!(frame_to_subject(&frame, TopicSyntax::Nats), Ok(s));
        }
        let from_mqtt = frame_to_subject(b"a/b", TopicSyntax::Mqtt).unwrap();
        assert_eq!(&subject_frame(&from_mqtt)[..], b"a.b");
    }

    #[test]
    fn prefixes_stay_bytewise() {
        let foo = prefix_filter(b"foo");
        assert_eq!(foo, Filter::Prefix(Bytes::from_static(b"foo")));
        assert!(foo.pattern().is_none());
        assert!(foo.matches(&subject("foo")));
        assert!(foo.matches(&subject("foo.bar")));
        assert!(foo.matches(&subject("foobar")));
        assert!(!foo.matches(&subject("fo")));
        let dotted = prefix_filter(b"a.");
        assert!(dotted.matches(&subject("a.b")));
        assert!(!dotted.matches(&subject("a")));
        let all = prefix_filter(b"");
        assert!(all.matches(&subject("x")));
        assert!(!all.matches(&subject("$SYS.x")));
        assert!(prefix_filter(b"$").matches(&subject("$SYS.x")));
        assert!(!prefix_filter(b"*").matches(&subject("a")));
    }

    #[test]
    fn topic_syntax_config_names() {
        assert_eq!(TopicSyntax::default(), TopicSyntax::Nats);
        let parse = |text: &str| {
            serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(text))
        };
        assert_eq!(parse("nats"), Ok(TopicSyntax::Nats));
        assert_eq!(parse("mqtt"), Ok(TopicSyntax::Mqtt));
        assert!(parse("MQTT").is_err());
    }
}
