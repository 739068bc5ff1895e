//! The subject table of DESIGN.md across all four protocols, and property tests for the
//! mappings: round-trips for MQTT and NSQ names, and MQTT filter matching checked against a
//! plain MQTT matcher written from the specification.

use polymq_core::subject::{mqtt, nsq, zmtp, Filter, Subject};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Proto {
    Nats,
    Mqtt,
    Nsq,
    Zmtp,
    /// A ZMTP listener with `topic_syntax = "mqtt"`.
    ZmtpMqtt,
}

/// Publish name → canonical subject, per protocol.
fn publish(proto: Proto, name: &str) -> Option<Subject> {
    match proto {
        Proto::Nats => Subject::new(name).ok(),
        Proto::Mqtt => mqtt::topic_to_subject(name).ok(),
        Proto::Nsq => nsq::topic_to_subject(name).ok(),
        Proto::Zmtp => zmtp::frame_to_subject(name.as_bytes(), zmtp::TopicSyntax::Nats).ok(),
        Proto::ZmtpMqtt => zmtp::frame_to_subject(name.as_bytes(), zmtp::TopicSyntax::Mqtt).ok(),
    }
}

/// Subscription → canonical filter, per protocol (NSQ subscribes to one exact topic).
fn subscribe(proto: Proto, filter: &str) -> Filter {
    match proto {
        Proto::Nats => Filter::new(filter).unwrap(),
        Proto::Mqtt => mqtt::filter_to_filter(filter).unwrap(),
        Proto::Nsq => Filter::exact(&nsq::topic_to_subject(filter).unwrap()),
        Proto::Zmtp | Proto::ZmtpMqtt => zmtp::prefix_filter(filter.as_bytes()),
    }
}

/// Canonical subject → the name each protocol delivers under.
fn deliver(proto: Proto, subject: &Subject) -> Option<String> {
    match proto {
        Proto::Nats => subject.fits_nats().then(|| subject.to_string()),
        Proto::Mqtt => mqtt::subject_to_topic(subject),
        Proto::Nsq => nsq::subject_to_topic(subject),
        Proto::Zmtp | Proto::ZmtpMqtt => {
            String::from_utf8(zmtp::subject_frame(subject).to_vec()).ok()
        }
    }
}

#[test]
fn publish_names_to_canonical() {
    use Proto::*;
    let table: &[(Proto, &str, Option<&str>)] = &[
        (Nats, "sensors.kitchen.temp", Some("sensors.kitchen.temp")),
        (Nats, "foo*", Some("foo*")),
        (Nats, "a..b", None),
        (Nats, "a.*", None),
        (Nats, "a.>", None),
        (Nats, "a\tb", None),
        (Mqtt, "sensors/kitchen/temp", Some("sensors.kitchen.temp")),
        (Mqtt, "/a", Some("/.a")),
        (Mqtt, "a/", Some("a./")),
        (Mqtt, "a//b", Some("a./.b")),
        (Mqtt, "/", Some("/./")),
        (Mqtt, "v1.2/x", Some("v1//2.x")),
        (Mqtt, "$SYS/broker/uptime", Some("$SYS.broker.uptime")),
        (Mqtt, "a/+", None),
        (Mqtt, "a/#", None),
        (Mqtt, "a\0", None),
        (Mqtt, "living room/lamp", Some("living room.lamp")),
        (Mqtt, "a\tb", None),
        (Mqtt, "a\x7f", None),
        (Mqtt, "", None),
        (Nsq, "jobs", Some("jobs")),
        (Nsq, "sensors.kitchen", Some("sensors.kitchen")),
        (Nsq, "a..b", Some("a./.b")),
        (Nsq, ".a", Some("/.a")),
        (Nsq, "a.", Some("a./")),
        (Nsq, ".", Some("/./")),
        (Nsq, "jobs#ephemeral", Some("jobs#ephemeral")),
        (Nsq, "a/b", None),
        (Nsq, "foo*", None),
        (Nsq, "#ephemeral", None),
        (Zmtp, "sensors.kitchen.temp", Some("sensors.kitchen.temp")),
        (Zmtp, "v1//2.x", Some("v1//2.x")),
        (Zmtp, "10001 23 45", Some("10001 23 45")),
        (Zmtp, "a..b", None),
        (Zmtp, "", None),
        (
            ZmtpMqtt,
            "sensors/kitchen/temp",
            Some("sensors.kitchen.temp"),
        ),
        (ZmtpMqtt, "v1.2/x", Some("v1//2.x")),
        (ZmtpMqtt, "a/+", None),
    ];
    for &(proto, name, canonical) in table {
        let got = publish(proto, name);
        assert_eq!(
            got.as_ref().map(Subject::as_str),
            canonical,
            "{proto:?} publish {name:?}"
        );
    }
}

#[test]
fn subscriptions_match_canonical_subjects() {
    use Proto::*;
    let table: &[(Proto, &str, &str, bool)] = &[
        (Nats, "a.*", "a.b", true),
        (Nats, "a.*", "a.b.c", false),
        (Nats, "a.>", "a", false),
        (Nats, ">", "$SYS.x", false),
        (Nats, "$SYS.>", "$SYS.x", true),
        (Nats, "a.>", "a./.b", true),
        (Mqtt, "a/#", "a", true),
        (Mqtt, "a/#", "a.b.c", true),
        (Mqtt, "a/#", "a./", true),
        (Mqtt, "#", "$SYS.broker", false),
        (Mqtt, "+/broker", "$SYS.broker", false),
        (Mqtt, "$SYS/#", "$SYS", true),
        (Mqtt, "+/a", "/.a", true),
        (Mqtt, "a//b", "a./.b", true),
        (Mqtt, "v1.2/+", "v1//2.x", true),
        (Mqtt, "a/+", "a.b", true),
        (Mqtt, "sensors/#", "sensors.kitchen", true),
        (Nsq, "sensors.kitchen", "sensors.kitchen", true),
        (Nsq, "sensors.kitchen", "sensors.kitchen.temp", false),
        (Nsq, "jobs", "jobs#ephemeral", false),
        (Nsq, "jobs#ephemeral", "jobs#ephemeral", true),
        (Nsq, "a..b", "a./.b", true),
        (Zmtp, "foo", "foo", true),
        (Zmtp, "foo", "foo.bar", true),
        (Zmtp, "foo", "foobar", true),
        (Zmtp, "foo.", "foo", false),
        (Zmtp, "", "a", true),
        (Zmtp, "", "$SYS.x", false),
        (Zmtp, "$SYS", "$SYS.x", true),
        (Zmtp, "a.*", "a.b", false),
    ];
    for &(proto, filter, subject, want) in table {
        let subject = Subject::new(subject).unwrap();
        let got = subscribe(proto, filter).matches(&subject);
        assert_eq!(got, want, "{proto:?} filter {filter:?} vs {subject}");
    }
}

#[test]
fn canonical_subjects_delivered_per_protocol() {
    use Proto::*;
    let table: &[(&str, Proto, Option<&str>)] = &[
        ("a.b", Nats, Some("a.b")),
        ("a.b", Mqtt, Some("a/b")),
        ("a.b", Nsq, Some("a.b")),
        ("a.b", Zmtp, Some("a.b")),
        ("a./.b", Mqtt, Some("a//b")),
        ("a./.b", Nsq, Some("a..b")),
        ("v1//2.x", Mqtt, Some("v1.2/x")),
        ("v1//2.x", Nsq, None),
        ("v1//2.x", Zmtp, Some("v1//2.x")),
        ("a/b.c", Nats, Some("a/b.c")),
        ("a/b.c", Mqtt, None),
        ("a/b.c", Nsq, None),
        ("foo*", Mqtt, Some("foo*")),
        ("foo*", Nsq, None),
        ("jobs#ephemeral", Mqtt, None),
        ("jobs#ephemeral", Nsq, Some("jobs#ephemeral")),
        ("$SYS.x", Mqtt, Some("$SYS/x")),
        ("$SYS.x", Nsq, None),
        ("/", Mqtt, None),
        ("/", Nsq, None),
    ];
    for &(subject, proto, name) in table {
        let got = deliver(proto, &Subject::new(subject).unwrap());
        assert_eq!(got.as_deref(), name, "{subject} to {proto:?}");
    }
}

#[test]
fn one_name_from_every_protocol_meets_in_one_subject() {
    let nats = publish(Proto::Nats, "sensors.kitchen").unwrap();
    assert_eq!(publish(Proto::Mqtt, "sensors/kitchen"), Some(nats.clone()));
    assert_eq!(publish(Proto::Nsq, "sensors.kitchen"), Some(nats.clone()));
    assert_eq!(publish(Proto::Zmtp, "sensors.kitchen"), Some(nats.clone()));
    assert_eq!(publish(Proto::ZmtpMqtt, "sensors/kitchen"), Some(nats));
}

/// MQTT topic matching written from the specification (§4.7), independent of the canonical
/// form: levels, `+` one level, `#` the rest including the parent, and the `$` rule.
fn mqtt_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    let mut i = 0;
    loop {
        match (filter.get(i), topic.get(i)) {
            (Some(&"#"), _) => return true,
            (None, None) => return true,
            (Some(&"+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            _ => return false,
        }
        i += 1;
    }
}

/// MQTT topic-filter validity from the specification (§4.7.1), for names free of characters
/// that the canonical form rejects on its own.
fn mqtt_filter_is_valid(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "+" => true,
            "#" => i == last,
            _ => !level.contains(['+', '#']),
        })
}

/// One MQTT level from a small alphabet with the characters that need care.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just(".".to_owned()),
        Just("a.b".to_owned()),
        Just("a b".to_owned()),
        Just("$".to_owned()),
        Just("$a".to_owned()),
    ]
}

fn structured_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("MQTT names are not empty", |topic| !topic.is_empty())
}

fn structured_filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (prop::collection::vec(filter_level, 1..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("MQTT filters are not empty", |filter| !filter.is_empty())
}

/// Canonical subjects built from tokens that sit on the edges of the reverse mappings.
fn canonical_subject() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("a"),
        Just("/"),
        Just("//"),
        Just("a//b"),
        Just("a/b"),
        Just("///"),
        Just("#ephemeral"),
        Just("a#ephemeral"),
        Just("/#ephemeral"),
        Just("foo*"),
        Just("a+"),
        Just("$SYS"),
    ];
    prop::collection::vec(token, 1..5).prop_map(|tokens| tokens.join("."))
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![structured_topic(), "[ab/.$]{1,10}"]
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![structured_filter(), "[ab/.$+#]{1,10}", Just("#".to_owned())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mqtt_topics_round_trip(topic in "[a-zA-Z0-9/.$_\u{e9}\u{1f600}*-]{1,40}") {
        // Only a whole `*` level has no canonical form.
        prop_assume!(!topic.split('/').any(|level| level == "*"));
        let subject = mqtt::topic_to_subject(&topic).unwrap();
        prop_assert_eq!(mqtt::subject_to_topic(&subject), Some(topic));
    }

    #[test]
    fn mqtt_any_accepted_topic_round_trips(topic in "\\PC{1,30}") {
        if let Ok(subject) = mqtt::topic_to_subject(&topic) {
            prop_assert_eq!(mqtt::subject_to_topic(&subject), Some(topic));
        }
    }

    #[test]
    fn representable_subjects_round_trip(
        text in prop_oneof!["[ab/#*$.]{1,16}", canonical_subject()],
    ) {
        let Ok(subject) = Subject::new(&text) else { return Ok(()) };
        if let Some(topic) = mqtt::subject_to_topic(&subject) {
            prop_assert_eq!(mqtt::topic_to_subject(&topic), Ok(subject.clone()));
        }
        if let Some(name) = nsq::subject_to_topic(&subject) {
            prop_assert_eq!(nsq::topic_to_subject(&name), Ok(subject.clone()));
        }
        let frame = zmtp::subject_frame(&subject);
        prop_assert_eq!(zmtp::frame_to_subject(&frame, zmtp::TopicSyntax::Nats), Ok(subject));
    }

    #[test]
    fn nsq_names_round_trip(
        base in "[.a-zA-Z0-9_-]{1,54}",
        ephemeral in any::<bool>(),
    ) {
        let name = if ephemeral { format!("{base}#ephemeral") } else { base };
        prop_assert!(nsq::is_valid_name(&name));
        prop_assert_eq!(nsq::is_ephemeral(&name), ephemeral);
        let subject = nsq::topic_to_subject(&name).unwrap();
        prop_assert_eq!(nsq::subject_to_topic(&subject), Some(name));
    }

    #[test]
    fn nsq_small_alphabet_round_trips(name in "[.a#]{1,12}") {
        match nsq::topic_to_subject(&name) {
            Ok(subject) => prop_assert_eq!(nsq::subject_to_topic(&subject), Some(name)),
            Err(_) => prop_assert!(!nsq::is_valid_name(&name)),
        }
    }

    #[test]
    fn mqtt_filters_match_like_mqtt(filter in filter(), topic in topic()) {
        let subject = mqtt::topic_to_subject(&topic).unwrap();
        let converted = mqtt::filter_to_filter(&filter);
        prop_assert_eq!(converted.is_ok(), mqtt_filter_is_valid(&filter), "{:?}", converted);
        if let Ok(f) = converted {
            prop_assert_eq!(
                f.matches(&subject),
                mqtt_matches(&filter, &topic),
                "filter {:?} ({:?}) vs topic {:?} ({})", filter, f, topic, subject
            );
        }
    }

    #[test]
    fn mqtt_shared_filters_split(
        group in "[a-z$.]{1,6}",
        inner in structured_filter(),
    ) {
        let shared = format!("$share/{group}/{inner}");
        prop_assert_eq!(mqtt::parse_shared(&shared), Ok(Some((group, inner))));
    }
}
