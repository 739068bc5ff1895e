//! Arbitrary bytes through every subject mapping: nothing panics, and whenever a mapping
//! succeeds its inverse gives the input back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polymq_core::subject::{mqtt, nsq, zmtp, Subject};

fuzz_target!(|data: &[u8]| {
    for syntax in [zmtp::TopicSyntax::Nats, zmtp::TopicSyntax::Mqtt] {
        if let Ok(subject) = zmtp::frame_to_subject(data, syntax) {
            if syntax == zmtp::TopicSyntax::Nats {
                assert_eq!(&zmtp::subject_frame(&subject)[..], data);
            }
            check_reverse(&subject);
        }
    }
    let _ = zmtp::prefix_filter(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(subject) = mqtt::topic_to_subject(text) {
        assert_eq!(mqtt::subject_to_topic(&subject).as_deref(), Some(text));
    }
    if let Ok(subject) = nsq::topic_to_subject(text) {
        assert!(nsq::is_valid_name(text));
        assert_eq!(nsq::subject_to_topic(&subject).as_deref(), Some(text));
    }
    let _ = mqtt::filter_to_filter(text);
    if let Ok(Some((group, filter))) = mqtt::parse_shared(text) {
        assert_eq!(format!("$share/{group}/{filter}"), text);
        assert!(mqtt::filter_to_filter(&filter).is_ok());
    }
});

/// A subject that a protocol can express maps back to itself.
fn check_reverse(subject: &Subject) {
    if let Some(topic) = mqtt::subject_to_topic(subject) {
        assert_eq!(mqtt::topic_to_subject(&topic).as_ref(), Ok(subject));
    }
    if let Some(name) = nsq::subject_to_topic(subject) {
        assert_eq!(nsq::topic_to_subject(&name).as_ref(), Ok(subject));
    }
}
