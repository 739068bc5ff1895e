//! Codec tests: golden bytes, incremental decoding, limits, end-of-stream texts, round trips.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::*;

/// Parameters from static strings.
pub(super) fn params(items: &[&'static str]) -> Params {
    Params::new(
        items
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect(),
    )
}

fn small_limits() -> Limits {
    Limits {
        max_msg_size: 10,
        max_body_size: 40,
        max_req_timeout_ms: 1000,
    }
}

/// Decodes every command in `input`, then reports what ended the stream.
fn decode_all(codec: &mut Codec, input: &[u8]) -> (Vec<Command>, Option<DecodeError>) {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(cmd)) => out.push(cmd),
            Ok(None) => return (out, None),
            Err(err) => return (out, Some(err)),
        }
    }
}

fn decode_one(input: &[u8]) -> Result<Option<Command>, DecodeError> {
    Codec::default().decode(&mut BytesMut::from(input))
}

fn error_text(input: &[u8], limits: Limits, gate: Gate) -> String {
    let mut codec = Codec::new(limits);
    codec.set_gate(gate);
    match decode_all(&mut codec, input) {
        (_, Some(err)) => String::from_utf8_lossy(&err.wire().unwrap_or_default()).into_owned(),
        (cmds, None) => panic!("no error, decoded {cmds:?}"),
    }
}

#[test]
fn magic() {
    assert!(check_magic(*b"  V2").is_ok());
    assert!(matches!(
        check_magic(*b"  V1"),
        Err(DecodeError::BadProtocol)
    ));
}

#[test]
fn golden_line_commands() {
    let cases: [(&[u8], Command); 8] = [
        (b"NOP\n", Command::Nop(Params::default())),
        (b"SUB t c\n", Command::Sub(params(&["t", "c"]))),
        (b"SUB t c\r\n", Command::Sub(params(&["t", "c"]))),
        (b"RDY 10\n", Command::Rdy(params(&["10"]))),
        (b"RDY  10\n", Command::Rdy(params(&["", "10"]))),
        (
            b"FIN 0123456789abcdef\n",
            Command::Fin(params(&["0123456789abcdef"])),
        ),
        (
            b"REQ 0123456789abcdef 50\n",
            Command::Req(params(&["0123456789abcdef", "50"])),
        ),
        (b"CLS x\n", Command::Cls(params(&["x"]))),
    ];
    for (wire, expected) in cases {
        assert_eq!(decode_one(wire).unwrap(), Some(expected), "{wire:?}");
    }
    assert_eq!(
        decode_one(b"TOUCH a\r\r\n").unwrap(),
        Some(Command::Touch(params(&["a\r"])))
    );
}

#[test]
fn golden_body_commands() {
    assert_eq!(
        decode_one(b"PUB t\n\x00\x00\x00\x02hi").unwrap(),
        Some(Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hi")
        })
    );
    assert_eq!(
        decode_one(b"DPUB t 1000\n\x00\x00\x00\x01x").unwrap(),
        Some(Command::Dpub {
            topic: "t".into(),
            defer_ms: 1000,
            body: Bytes::from_static(b"x")
        })
    );
    assert_eq!(
        decode_one(b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc")
            .unwrap(),
        Some(Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        })
    );
    assert_eq!(
        decode_one(b"IDENTIFY\n\x00\x00\x00\x02{}").unwrap(),
        Some(Command::Identify(Bytes::from_static(b"{}")))
    );
    assert_eq!(
        decode_one(b"AUTH\n\x00\x00\x00\x03abc").unwrap(),
        Some(Command::Auth(Bytes::from_static(b"abc")))
    );
}

#[test]
fn commands_follow_each_other() {
    let input = b"PUB t\n\x00\x00\x00\x01aNOP\nRDY 1\n";
    let (cmds, err) = decode_all(&mut Codec::default(), input);
    assert!(err.is_none());
    assert_eq!(cmds.len(), 3);
    assert_eq!(cmds[1], Command::Nop(Params::default()));
}

#[test]
fn mpub_members_are_read_from_the_stream() {
    // nsqd ignores the declared body size once it is in range: bytes after the last member
    // are the next command.
    let input = b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x01\x00\x00\x00\x01aNOP\n";
    let (cmds, err) = decode_all(&mut Codec::default(), input);
    assert!(err.is_none());
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[1], Command::Nop(Params::default()));
}

#[test]
fn split_at_every_byte() {
    let mut input = BytesMut::new();
    let commands = [
        Command::Identify(Bytes::from_static(b"{\"client_id\":\"x\"}")),
        Command::Sub(params(&["t", "c"])),
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hello"),
        },
        Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bcd")],
        },
        Command::Dpub {
            topic: "t".into(),
            defer_ms: 5,
            body: Bytes::from_static(b"z"),
        },
        Command::Rdy(params(&["5"])),
    ];
    for cmd in &commands {
        cmd.encode(&mut input);
    }
    for cut in 0..=input.len() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&input[..cut]);
        let mut out = Vec::new();
        while let Some(cmd) = codec.decode(&mut buf).unwrap() {
            out.push(cmd);
        }
        buf.extend_from_slice(&input[cut..]);
        let (rest, err) = decode_all(&mut codec, &buf);
        assert!(err.is_none(), "cut {cut}: {err:?}");
        out.extend(rest);
        assert_eq!(out, commands, "cut {cut}");
    }
}

#[test]
fn byte_by_byte() {
    let mut input = BytesMut::new();
    let cmd = Command::Mpub {
        topic: "t".into(),
        bodies: vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")],
    };
    cmd.encode(&mut input);
    let mut codec = Codec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for byte in input.iter() {
        buf.extend_from_slice(&[*byte]);
        if let Some(done) = codec.decode(&mut buf).unwrap() {
            out.push(done);
        }
    }
    assert_eq!(out, vec![cmd]);
    assert!(buf.is_empty());
}

#[test]
fn line_errors() {
    let gate = Gate::default();
    let limits = Limits::default();
    let cases: [(&[u8], &str); 9] = [
        (b"HELLO\n", "E_INVALID invalid command HELLO"),
        (b"pub t\n", "E_INVALID invalid command pub"),
        (b"\n", "E_INVALID invalid command "),
        (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
        (
            b"DPUB t\n",
            "E_INVALID DPUB insufficient number of parameters",
        ),
        (
            b"PUB a*b\n",
            "E_BAD_TOPIC PUB topic name \"a*b\" is not valid",
        ),
        (
            b"MPUB \n",
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"\" is not valid",
        ),
        (b"DPUB t x\n", "E_INVALID DPUB could not parse timeout x"),
        (b"AUTH x\n", "E_INVALID AUTH invalid number of parameters"),
    ];
    for (input, text) in cases {
        assert_eq!(error_text(input, limits, gate), text, "{input:?}");
    }
    assert_eq!(
        error_text(b"DPUB t 3600001\n", limits, gate),
        "E_INVALID DPUB timeout 3600001 out of range 0-3600000"
    );
    // Past i64::MAX nanoseconds nsqd's signed duration wraps negative.
    assert_eq!(
        error_text(b"DPUB t 9223372036855\n", limits, gate),
        "E_INVALID DPUB timeout 9223372036855 out of range 0-3600000"
    );
    // …and 2^63 ms wraps all the way to 0, which nsqd accepts.
    assert_eq!(
        decode_one(b"DPUB t 9223372036854775808\n\x00\x00\x00\x01x").unwrap(),
        Some(Command::Dpub {
            topic: "t".into(),
            defer_ms: 0,
            body: Bytes::from_static(b"x")
        })
    );
}

#[test]
fn gate_checks_come_before_bodies() {
    let subscribed = Gate {
        initial: false,
        auth_missing: false,
    };
    let limits = Limits::default();
    assert_eq!(
        error_text(b"IDENTIFY\n", limits, subscribed),
        "E_INVALID cannot IDENTIFY in current state"
    );
    assert_eq!(
        error_text(b"AUTH\n", limits, subscribed),
        "E_INVALID cannot AUTH in current state"
    );
    let unauthed = Gate {
        initial: true,
        auth_missing: true,
    };
    assert_eq!(
        error_text(b"MPUB t\n", limits, unauthed),
        "E_AUTH_FIRST AUTH required before MPUB"
    );
    assert_eq!(
        error_text(b"MPUB a!\n", limits, unauthed),
        "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a!\" is not valid"
    );
    // PUB checks authorization after its body: that is the session's job.
    let mut codec = Codec::default();
    codec.set_gate(unauthed);
    assert!(codec
        .decode(&mut BytesMut::from(&b"PUB t\n\x00\x00\x00\x01x"[..]))
        .unwrap()
        .is_some());
}

#[test]
fn size_errors_before_buffering() {
    let limits = small_limits();
    let gate = Gate::default();
    let cases: [(&[u8], &str); 12] = [
        (
            b"PUB t\n\x00\x00\x00\x00",
            "E_BAD_MESSAGE PUB invalid message body size 0",
        ),
        (
            b"PUB t\n\xff\xff\xff\xff",
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            b"PUB t\n\x00\x00\x00\x0b",
            "E_BAD_MESSAGE PUB message too big 11 > 10",
        ),
        (
            b"DPUB t 1\n\x00\x00\x00\x0b",
            "E_BAD_MESSAGE DPUB message too big 11 > 10",
        ),
        (
            b"IDENTIFY\n\x00\x00\x00\x29",
            "E_BAD_BODY IDENTIFY body too big 41 > 40",
        ),
        (
            b"IDENTIFY\n\x00\x00\x00\x00",
            "E_BAD_BODY IDENTIFY invalid body size 0",
        ),
        (
            b"AUTH\n\xff\xff\xff\xfe",
            "E_BAD_BODY AUTH invalid body size -2",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x00",
            "E_BAD_BODY MPUB invalid body size 0",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x29",
            "E_BAD_BODY MPUB body too big 41 > 40",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x00",
            "E_BAD_BODY MPUB invalid message count 0",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x08",
            "E_BAD_BODY MPUB invalid message count 8",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00",
            "E_BAD_MESSAGE MPUB invalid message(1) body size 0",
        ),
    ];
    for (input, text) in cases {
        // The error comes with only the size field buffered: nothing more is awaited.
        let mut codec = Codec::new(limits);
        let err = codec.decode(&mut BytesMut::from(input)).unwrap_err();
        assert_eq!(
            String::from_utf8_lossy(&err.wire().unwrap()),
            text,
            "{input:?}"
        );
    }
    assert_eq!(
        error_text(
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x0b",
            limits,
            gate
        ),
        "E_BAD_MESSAGE MPUB message too big 11 > 10"
    );
    // Members may not consume more than max_body_size, whatever the declared size said.
    let mut over = b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x07".to_vec();
    for _ in 0..3 {
        over.extend_from_slice(b"\x00\x00\x00\x0aabcdefghij");
    }
    assert_eq!(
        error_text(&over, limits, gate),
        "E_BAD_BODY MPUB body too big 46 > 40"
    );
}

#[test]
fn long_lines_close_silently() {
    let mut codec = Codec::default();
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN - 1][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"\n");
    assert!(matches!(
        codec.decode(&mut buf),
        Err(DecodeError::InvalidCommand(_))
    ));

    let mut codec = Codec::default();
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, DecodeError::LineTooLong { .. }));
    assert!(err.wire().is_none());
}

#[test]
fn end_of_stream_texts() {
    let limits = Limits::default();
    let gate = Gate::default();
    let cases: [(&[u8], &str); 9] = [
        (
            b"PUB t\n\x00\x00",
            "E_BAD_MESSAGE PUB failed to read message body size",
        ),
        (
            b"PUB t\n\x00\x00\x00\x05ab",
            "E_BAD_MESSAGE PUB failed to read message body",
        ),
        (
            b"DPUB t 0\n",
            "E_BAD_MESSAGE DPUB failed to read message body size",
        ),
        (
            b"IDENTIFY\n",
            "E_BAD_BODY IDENTIFY failed to read body size",
        ),
        (
            b"AUTH\n\x00\x00\x00\x05ab",
            "E_BAD_BODY AUTH failed to read body",
        ),
        (b"MPUB t\n", "E_BAD_BODY MPUB failed to read body size"),
        (
            b"MPUB t\n\x00\x00\x00\x10",
            "E_BAD_BODY MPUB failed to read message count",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x10\x00\x00\x00\x02\x00\x00\x00\x01a",
            "E_BAD_MESSAGE MPUB failed to read message(1) body size",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x10\x00\x00\x00\x02\x00\x00\x00\x03a",
            "E_BAD_MESSAGE MPUB failed to read message body",
        ),
    ];
    for (input, text) in cases {
        assert_eq!(error_text(input, limits, gate), text, "{input:?}");
    }
    let (cmds, err) = decode_all(&mut Codec::default(), b"NOP\nPUB t");
    assert_eq!(cmds.len(), 1);
    assert!(err.is_none(), "an unterminated line is a clean close");
}

#[test]
fn http_binary_mpub() {
    let limits = small_limits();
    let body = Bytes::from_static(b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc");
    assert_eq!(
        decode_mpub_body(&body, &limits).unwrap(),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
    );
    let short = Bytes::from_static(b"\x00\x00\x00\x02\x00\x00\x00\x01a");
    assert_eq!(
        decode_mpub_body(&short, &limits).unwrap_err().code(),
        "E_BAD_MESSAGE"
    );
    assert_eq!(
        decode_mpub_body(&Bytes::new(), &limits).unwrap_err().code(),
        "E_BAD_BODY"
    );
}

#[test]
fn golden_server_frames() {
    let mut out = BytesMut::new();
    Frame::response(OK).encode(&mut out);
    assert_eq!(&out[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
    out.clear();
    Frame::Error(Bytes::from_static(b"E_INVALID x")).encode(&mut out);
    assert_eq!(&out[..], b"\x00\x00\x00\x0f\x00\x00\x00\x01E_INVALID x");
    out.clear();
    Frame::Message(MessageFrame {
        timestamp_ns: 0x0102_0304_0506_0708,
        attempts: 3,
        id: *b"0123456789abcdef",
        body: Bytes::from_static(b"hi"),
    })
    .encode(&mut out);
    let mut expected =
        b"\x00\x00\x00\x20\x00\x00\x00\x02\x01\x02\x03\x04\x05\x06\x07\x08\x00\x03".to_vec();
    expected.extend_from_slice(b"0123456789abcdefhi");
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn frame_decoder_limits() {
    let mut decoder = FrameDecoder::new(16);
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x11\x00\x00\x00\x00"[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(DecodeError::FrameSize(17))
    ));
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x06\x00\x00\x00\x03OK"[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(DecodeError::UnknownFrameType(3))
    ));
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x06\x00\x00\x00\x02OK"[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(DecodeError::FrameSize(6))
    ));
}

fn arb_param() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        any::<u8>().prop_filter("separator", |b| *b != b' ' && *b != b'\n'),
        0..12,
    )
    .prop_map(Bytes::from)
}

fn arb_params() -> impl Strategy<Value = Params> {
    proptest::collection::vec(arb_param(), 0..4).prop_map(Params::new)
}

fn arb_topic() -> impl Strategy<Value = String> {
    "[.a-zA-Z0-9_-]{1,54}(#ephemeral)?"
}

fn arb_body() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 1..64).prop_map(Bytes::from)
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        arb_body().prop_map(Command::Identify),
        arb_body().prop_map(Command::Auth),
        (arb_topic(), arb_body()).prop_map(|(topic, body)| Command::Pub { topic, body }),
        (arb_topic(), 0..=3_600_000u64, arb_body()).prop_map(|(topic, defer_ms, body)| {
            Command::Dpub {
                topic,
                defer_ms,
                body,
            }
        }),
        (arb_topic(), proptest::collection::vec(arb_body(), 1..5))
            .prop_map(|(topic, bodies)| Command::Mpub { topic, bodies }),
        arb_params().prop_map(Command::Sub),
        arb_params().prop_map(Command::Rdy),
        arb_params().prop_map(Command::Fin),
        arb_params().prop_map(Command::Req),
        arb_params().prop_map(Command::Touch),
        arb_params().prop_map(Command::Cls),
        arb_params().prop_map(Command::Nop),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|d| Frame::Response(d.into())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|d| Frame::Error(d.into())),
        (
            any::<i64>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(timestamp_ns, attempts, id, body)| {
                Frame::Message(MessageFrame {
                    timestamp_ns,
                    attempts,
                    id,
                    body: body.into(),
                })
            }),
    ]
}

proptest! {
    #[test]
    fn commands_round_trip(cmds in proptest::collection::vec(arb_command(), 1..6)) {
        let mut wire = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut wire);
        }
        let (decoded, err) = decode_all(&mut Codec::default(), &wire);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(decoded, cmds);
    }

    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(arb_frame(), 1..6)) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire);
        }
        let mut decoder = FrameDecoder::new(1024);
        let mut decoded = Vec::new();
        while let Some(frame) = decoder.decode(&mut wire).unwrap() {
            decoded.push(frame);
        }
        prop_assert!(wire.is_empty());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = Codec::new(small_limits());
        let (cmds, _) = decode_all(&mut codec, &input);
        for cmd in cmds {
            let mut wire = BytesMut::new();
            cmd.encode(&mut wire);
            let (again, err) = decode_all(&mut Codec::new(small_limits()), &wire);
            prop_assert!(err.is_none());
            prop_assert_eq!(again, vec![cmd]);
        }
    }
}
