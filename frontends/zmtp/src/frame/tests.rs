//! Codec tests: golden bytes, incremental decoding, limits, round trips.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

fn decode_all(codec: &mut ZmtpCodec, bytes: &[u8]) -> Vec<Inbound> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(item) = codec.decode(&mut buf).unwrap() {
        out.push(item);
    }
    assert!(buf.is_empty(), "undecoded bytes left: {buf:?}");
    out
}

fn encode(items: Vec<Outbound>) -> BytesMut {
    let mut codec = ZmtpCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    for item in items {
        codec.encode(item, &mut buf).unwrap();
    }
    buf
}

fn msg(parts: &[&'static [u8]]) -> Message {
    Message(parts.iter().map(|p| Bytes::from_static(p)).collect())
}

/// A libzmq 4.3 SUB socket's greeting: signature with padding 0x..01, version 3.1, NULL.
const LIBZMQ_NULL_GREETING: [u8; 64] = {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[8] = 0x01;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 1;
    g[12] = b'N';
    g[13] = b'U';
    g[14] = b'L';
    g[15] = b'L';
    g
};

#[test]
fn broker_greeting_golden_bytes() {
    assert_eq!(
        Greeting::broker(Mechanism::Null).to_bytes(),
        LIBZMQ_NULL_GREETING
    );
    let plain = Greeting::broker(Mechanism::Plain).to_bytes();
    assert_eq!(&plain[..12], &LIBZMQ_NULL_GREETING[..12]);
    assert_eq!(&plain[12..32], b"PLAIN\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(plain[32], 1, "PLAIN server sets as-server");
    assert!(plain[33..].iter().all(|&b| b == 0));
}

#[test]
fn decodes_libzmq_greeting_then_ready() {
    let mut wire = LIBZMQ_NULL_GREETING.to_vec();
    // READY Socket-Type=SUB as libzmq sends it.
    wire.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB");
    let mut codec = ZmtpCodec::new(Limits::default());
    let items = decode_all(&mut codec, &wire);
    let Inbound::Greeting(greeting) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(greeting.mechanism, Mechanism::Null);
    assert_eq!(greeting.revision(), Revision::V3_1);
    assert!(!greeting.as_server);
    let Inbound::Command(Command::Ready(meta)) = &items[1] else {
        panic!("{items:?}")
    };
    assert_eq!(meta.get("socket-type").map(|v| &v[..]), Some(&b"SUB"[..]));
    assert_eq!(meta.get("Identity"), None);
}

#[test]
fn revision_follows_minor_version() {
    let mut raw = LIBZMQ_NULL_GREETING;
    raw[11] = 0;
    assert_eq!(
        Greeting::from_bytes(&raw).unwrap().revision(),
        Revision::V3_0
    );
    raw[11] = 7;
    assert_eq!(
        Greeting::from_bytes(&raw).unwrap().revision(),
        Revision::V3_1
    );
    raw[10] = 4;
    raw[11] = 0;
    assert_eq!(
        Greeting::from_bytes(&raw).unwrap().revision(),
        Revision::V3_1
    );
}

#[test]
fn garbage_greeting_is_rejected_at_the_first_octet() {
    let mut codec = ZmtpCodec::new(Limits::default());
    let mut buf = BytesMut::from(&b"G"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::BadSignature)
    ));
}

#[test]
fn unversioned_and_old_peers_are_rejected_early() {
    // ZMTP 1.0: tenth octet has bit 0 clear.
    let mut codec = ZmtpCodec::new(Limits::default());
    let mut buf = BytesMut::from(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x00][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::BadSignature)
    ));
    // ZMTP 2.0: major version 1 is visible at octet 11.
    let mut codec = ZmtpCodec::new(Limits::default());
    let mut buf = BytesMut::from(&LIBZMQ_NULL_GREETING[..11]);
    buf[10] = 1;
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::UnsupportedVersion { major: 1 })
    ));
}

#[test]
fn padding_and_filler_are_not_validated() {
    let mut raw = LIBZMQ_NULL_GREETING;
    raw[1..9].copy_from_slice(&[9; 8]);
    raw[40] = 0xAA;
    let greeting = Greeting::from_bytes(&raw).unwrap();
    assert_eq!(greeting.mechanism, Mechanism::Null);
}

#[test]
fn unknown_mechanism_is_kept_raw() {
    let mut raw = LIBZMQ_NULL_GREETING;
    raw[12..32].copy_from_slice(b"GSSAPI\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let greeting = Greeting::from_bytes(&raw).unwrap();
    assert!(matches!(greeting.mechanism, Mechanism::Other(field) if &field[..6] == b"GSSAPI"));
    // "NULL" with trailing garbage is not NULL (libzmq compares all 20 octets).
    raw[12..32].copy_from_slice(b"NULLX\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert!(matches!(
        Greeting::from_bytes(&raw).unwrap().mechanism,
        Mechanism::Other(_)
    ));
}

#[test]
fn message_frames_golden_bytes() {
    let wire = encode(vec![Outbound::Message(msg(&[b"topic", b"body"]))]);
    assert_eq!(&wire[..], b"\x01\x05topic\x00\x04body");
    let long = vec![7u8; 256];
    let wire = encode(vec![Outbound::Message(Message(vec![Bytes::from(
        long.clone(),
    )]))]);
    assert_eq!(&wire[..9], b"\x02\x00\x00\x00\x00\x00\x00\x01\x00");
    assert_eq!(&wire[9..], &long[..]);
}

#[test]
fn command_golden_bytes() {
    let cases: Vec<(Command, &[u8])> = vec![
        (
            Command::Subscribe(Bytes::from_static(b"ab")),
            b"\x04\x0c\x09SUBSCRIBEab",
        ),
        (Command::Cancel(Bytes::new()), b"\x04\x07\x06CANCEL"),
        (
            Command::Ping {
                ttl: 300,
                context: Bytes::from_static(b"c"),
            },
            b"\x04\x08\x04PING\x01\x2cc",
        ),
        (
            Command::Pong {
                context: Bytes::from_static(b"c"),
            },
            b"\x04\x06\x04PONGc",
        ),
        (
            Command::Error {
                reason: Bytes::from_static(b"400"),
            },
            b"\x04\x0a\x05ERROR\x03400",
        ),
        (Command::Welcome, b"\x04\x08\x07WELCOME"),
        (
            Command::Hello {
                username: Bytes::from_static(b"u"),
                password: Bytes::from_static(b"pw"),
            },
            b"\x04\x0b\x05HELLO\x01u\x02pw",
        ),
    ];
    for (command, golden) in cases {
        let wire = encode(vec![Outbound::Command(command.clone())]);
        assert_eq!(&wire[..], golden, "{command:?}");
        let mut codec = ZmtpCodec::after_greeting(Limits::default());
        assert_eq!(
            decode_all(&mut codec, golden),
            vec![Inbound::Command(command)]
        );
    }
    let mut ready = Metadata::default();
    ready.push("Socket-Type", Bytes::from_static(b"XPUB"));
    let wire = encode(vec![Outbound::Command(Command::Ready(ready))]);
    assert_eq!(
        &wire[..],
        b"\x04\x1a\x05READY\x0bSocket-Type\x00\x00\x00\x04XPUB"
    );
}

#[test]
fn long_frame_form_is_accepted_for_small_bodies() {
    let mut codec = ZmtpCodec::after_greeting(Limits::default());
    let items = decode_all(&mut codec, b"\x02\x00\x00\x00\x00\x00\x00\x00\x02hi");
    assert_eq!(items, vec![Inbound::Message(msg(&[b"hi"]))]);
}

#[test]
fn malformed_known_commands_decode_as_unknown() {
    let mut codec = ZmtpCodec::after_greeting(Limits::default());
    // READY with truncated metadata, PING without a TTL.
    let items = decode_all(&mut codec, b"\x04\x08\x05READY\x05a\x04\x06\x04PINGx");
    assert_eq!(
        items,
        vec![
            Inbound::Command(Command::Unknown {
                name: Bytes::from_static(b"READY"),
                data: Bytes::from_static(b"\x05a"),
            }),
            Inbound::Command(Command::Unknown {
                name: Bytes::from_static(b"PING"),
                data: Bytes::from_static(b"x"),
            }),
        ]
    );
}

#[test]
fn empty_or_truncated_command_is_an_error() {
    for wire in [&b"\x04\x00"[..], b"\x04\x03\x05REA"] {
        let mut codec = ZmtpCodec::after_greeting(Limits::default());
        let mut buf = BytesMut::from(wire);
        assert!(
            matches!(codec.decode(&mut buf), Err(FrameError::MalformedCommand)),
            "{wire:?}"
        );
    }
}

#[test]
fn command_between_parts_keeps_the_message() {
    let mut codec = ZmtpCodec::after_greeting(Limits::default());
    let items = decode_all(&mut codec, b"\x01\x01a\x04\x07\x04PING\x00\x00\x00\x01b");
    assert_eq!(
        items,
        vec![
            Inbound::Command(Command::Ping {
                ttl: 0,
                context: Bytes::new()
            }),
            Inbound::Message(msg(&[b"a", b"b"])),
        ]
    );
}

fn next_message(codec: &mut ZmtpCodec, buf: &mut BytesMut) -> Vec<Bytes> {
    match codec.decode(buf).unwrap() {
        Some(Inbound::Message(Message(parts))) => parts,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn recycled_parts_carry_the_next_message() {
    let mut codec = ZmtpCodec::after_greeting(Limits::default());
    let mut buf = BytesMut::from(&b"\x01\x01a\x00\x01b\x00\x01c\x01\x01d"[..]);
    let first = next_message(&mut codec, &mut buf);
    let reused = first.as_ptr();
    codec.recycle(first);
    let second = next_message(&mut codec, &mut buf);
    assert_eq!(second.as_ptr(), reused);
    // Half of the next message is in: a vector given back now must not disturb it.
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    codec.recycle(vec![Bytes::from_static(b"stale")]);
    buf.put_slice(b"\x00\x01e");
    let parts = next_message(&mut codec, &mut buf);
    assert_eq!(parts, [Bytes::from_static(b"d"), Bytes::from_static(b"e")]);
    // A large vector is not kept.
    codec.recycle(Vec::with_capacity(RECYCLED_PARTS_MAX + 1));
    assert_eq!(codec.parts.capacity(), 0);
}

#[test]
fn oversized_frame_is_rejected_before_its_body_arrives() {
    let limits = Limits {
        max_msg_size: 100,
        max_msg_parts: 8,
    };
    let mut codec = ZmtpCodec::after_greeting(limits);
    let mut buf = BytesMut::new();
    buf.put_u8(FLAG_LONG);
    buf.put_u64(101);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::MessageTooLarge {
                size: 101,
                max: 100
            }
        ),
        "{err:?}"
    );
    // A declared size near u64::MAX must not overflow anything.
    let mut codec = ZmtpCodec::after_greeting(limits);
    let mut buf = BytesMut::new();
    buf.put_u8(FLAG_LONG | FLAG_COMMAND);
    buf.put_u64(u64::MAX);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::MessageTooLarge { .. })
    ));
}

#[test]
fn message_total_counts_earlier_parts() {
    let limits = Limits {
        max_msg_size: 10,
        max_msg_parts: 8,
    };
    let mut codec = ZmtpCodec::after_greeting(limits);
    let mut buf = BytesMut::from(&b"\x01\x06aaaaaa\x00\x05"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::MessageTooLarge { size: 11, .. })
    ));
    let mut codec = ZmtpCodec::after_greeting(limits);
    let items = decode_all(&mut codec, b"\x01\x06aaaaaa\x00\x04bbbb\x00\x0acccccccccc");
    assert_eq!(
        items.len(),
        2,
        "the limit applies per message, not per connection"
    );
}

#[test]
fn too_many_parts_is_rejected() {
    let limits = Limits {
        max_msg_size: 100,
        max_msg_parts: 3,
    };
    let mut codec = ZmtpCodec::after_greeting(limits);
    let mut buf = BytesMut::from(&b"\x01\x00\x01\x00\x01\x00\x01\x00\x00\x00"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooManyParts { max: 3 })
    ));
}

#[test]
fn split_at_every_byte_decodes_the_same() {
    let mut ready = Metadata::default();
    ready.push("Socket-Type", Bytes::from_static(b"PUB"));
    ready.push("X-Subject", Bytes::from_static(b"a.b"));
    let items = vec![
        Outbound::Greeting(Greeting::broker(Mechanism::Plain)),
        Outbound::Command(Command::Ready(ready)),
        Outbound::Message(msg(&[b"a.b", b"", b"payload"])),
        Outbound::Message(Message(vec![Bytes::from(vec![1u8; 300])])),
        Outbound::Command(Command::Ping {
            ttl: 5,
            context: Bytes::from_static(b"ctx"),
        }),
    ];
    let wire = encode(items);
    let mut whole = ZmtpCodec::new(Limits::default());
    let expected = decode_all(&mut whole, &wire);
    assert_eq!(expected.len(), 5);
    for split in 0..=wire.len() {
        let mut codec = ZmtpCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [&wire[..split], &wire[split..]] {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, expected, "split at {split}");
    }
    // And one byte at a time.
    let mut codec = ZmtpCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in wire.iter() {
        buf.put_u8(*byte);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            got.push(item);
        }
    }
    assert_eq!(got, expected);
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::vec((bytes(255), bytes(300)), 0..4).prop_map(|props| {
        Metadata(
            props
                .into_iter()
                .map(|(name, value)| Property { name, value })
                .collect(),
        )
    })
}

const KNOWN: [&[u8]; 9] = [
    b"READY",
    b"ERROR",
    b"HELLO",
    b"WELCOME",
    b"INITIATE",
    b"SUBSCRIBE",
    b"CANCEL",
    b"PING",
    b"PONG",
];

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        metadata().prop_map(Command::Ready),
        metadata().prop_map(Command::Initiate),
        bytes(255).prop_map(|reason| Command::Error { reason }),
        (bytes(255), bytes(255))
            .prop_map(|(username, password)| Command::Hello { username, password }),
        Just(Command::Welcome),
        bytes(300).prop_map(Command::Subscribe),
        bytes(300).prop_map(Command::Cancel),
        (any::<u16>(), bytes(16)).prop_map(|(ttl, context)| Command::Ping { ttl, context }),
        bytes(16).prop_map(|context| Command::Pong { context }),
        (
            bytes(255).prop_filter("unknown name", |n| !KNOWN.contains(&&n[..])),
            bytes(300)
        )
            .prop_map(|(name, data)| Command::Unknown { name, data }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    proptest::collection::vec(bytes(400), 1..5).prop_map(Message)
}

fn greeting() -> impl Strategy<Value = Greeting> {
    let mechanism = prop_oneof![
        Just(Mechanism::Null),
        Just(Mechanism::Plain),
        Just(Mechanism::Curve),
        any::<[u8; 20]>().prop_map(Mechanism::from_field),
    ];
    (3u8.., any::<u8>(), mechanism, any::<bool>()).prop_map(
        |(major, minor, mechanism, as_server)| Greeting {
            major,
            minor,
            mechanism,
            as_server,
        },
    )
}

proptest! {
    #[test]
    fn commands_round_trip(commands in proptest::collection::vec(command(), 1..6)) {
        let wire = encode(commands.iter().cloned().map(Outbound::Command).collect());
        let mut codec = ZmtpCodec::after_greeting(Limits::default());
        let expected: Vec<_> = commands.into_iter().map(Inbound::Command).collect();
        prop_assert_eq!(decode_all(&mut codec, &wire), expected);
    }

    #[test]
    fn messages_round_trip(messages in proptest::collection::vec(message(), 1..6)) {
        let wire = encode(messages.iter().cloned().map(Outbound::Message).collect());
        let mut codec = ZmtpCodec::after_greeting(Limits::default());
        let expected: Vec<_> = messages.into_iter().map(Inbound::Message).collect();
        prop_assert_eq!(decode_all(&mut codec, &wire), expected);
    }

    #[test]
    fn greetings_round_trip(greeting in greeting()) {
        let wire = encode(vec![Outbound::Greeting(greeting)]);
        let mut codec = ZmtpCodec::new(Limits::default());
        prop_assert_eq!(decode_all(&mut codec, &wire), vec![Inbound::Greeting(greeting)]);
    }

    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits { max_msg_size: 256, max_msg_parts: 4 };
        for mut codec in [ZmtpCodec::new(limits), ZmtpCodec::after_greeting(limits)] {
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(item)) = codec.decode(&mut buf) {
                if let Inbound::Message(message) = item {
                    prop_assert!(message.size() <= 256 && message.0.len() <= 4);
                }
            }
        }
    }
}
