//! Codec tests: golden bytes, byte-by-byte decoding, limits, and proptest round-trips.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn server() -> Codec {
    Codec::new(1024 * 1024)
}

fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Result<Vec<Packet>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(packet) = codec.decode(&mut buf)? {
        out.push(packet);
    }
    assert!(buf.is_empty(), "leftover bytes: {buf:?}");
    Ok(out)
}

fn encode(packet: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode(&mut out, v).unwrap();
    assert_eq!(
        out.len(),
        packet.encoded_len(v),
        "encoded_len of {packet:?}"
    );
    out
}

/// CONNECT 3.1.1, clean session, keep alive 60, client id "c1".
const CONNECT_V3: &[u8] = &[
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1',
];

#[test]
fn golden_connect_v311() {
    let mut codec = server();
    let packets = decode_all(&mut codec, CONNECT_V3).unwrap();
    let Packet::Connect(c) = &packets[0] else {
        panic!("{packets:?}")
    };
    assert_eq!(c.protocol, V3);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "c1");
    assert_eq!(codec.version(), Some(V3));
    assert_eq!(&encode(&packets[0], V3)[..], CONNECT_V3);
}

#[test]
fn golden_connect_v5_with_will_and_credentials() {
    let wire: &[u8] = &[
        0x10,
        39,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0b1110_1110,
        0,
        10, // header, flags, ka
        5,
        0x11,
        0,
        0,
        0,
        30, // session expiry 30
        0,
        1,
        b'x', // client id
        5,
        0x18,
        0,
        0,
        0,
        2, // will delay 2
        0,
        1,
        b'w',
        0,
        2,
        b'b',
        b'y', // will topic, payload
        0,
        1,
        b'u',
        0,
        2,
        b'p',
        b'w', // user, password
    ];
    let mut codec = server();
    let packets = decode_all(&mut codec, wire).unwrap();
    let Packet::Connect(c) = &packets[0] else {
        panic!()
    };
    assert_eq!(c.protocol, V5);
    assert_eq!(c.properties.session_expiry_interval, Some(30));
    let will = c.will.as_ref().unwrap();
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("w", &b"by"[..]));
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
    assert_eq!(will.properties.will_delay_interval, Some(2));
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    assert_eq!(&encode(&packets[0], V5)[..], wire);
}

#[test]
fn connect_errors_match_mosquitto() {
    let cases: &[(&[u8], &str)] = &[
        // Level 6: unsupported version.
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0, 0, 0],
            "version",
        ),
        // Unknown protocol name.
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'X', b'X', 4, 2, 0, 0, 0, 0],
            "protocol",
        ),
        // Reserved connect flag bit 0.
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 0, 0, 0],
            "protocol",
        ),
        // Will QoS 3.
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1e, 0, 0, 0, 0],
            "protocol",
        ),
        // Will retain without will flag.
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x22, 0, 0, 0, 0],
            "protocol",
        ),
        // Password without user name in 3.1.1.
        (
            &[
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 0, 0, 0, 0, 0,
            ],
            "protocol",
        ),
        // Reserved fixed-header flags on CONNECT.
        (
            &[0x11, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0],
            "protocol",
        ),
        // Surplus byte.
        (
            &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0, 9],
            "protocol",
        ),
        // First packet is not CONNECT.
        (&[0xc0, 0], "protocol"),
    ];
    for (wire, want) in cases {
        let err = decode_all(&mut server(), wire).unwrap_err();
        let got = match err {
            FrameError::UnsupportedProtocolVersion(_) => "version",
            FrameError::Protocol(_) => "protocol",
            other => panic!("{wire:?}: {other}"),
        };
        assert_eq!(&got, want, "{wire:?}");
    }
    // 5.0 allows a password without a user name.
    let v5: &[u8] = &[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert!(decode_all(&mut server(), v5).is_ok());
    // MQIsdp level 3 is MQTT 3.1.
    let v31: &[u8] = &[
        0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 0, 0, 0,
    ];
    let packets = decode_all(&mut server(), v31).unwrap();
    assert!(matches!(&packets[0], Packet::Connect(c) if c.protocol == ProtocolVersion::V31));
}

fn after_connect(version: ProtocolVersion, wire: &[u8]) -> Result<Vec<Packet>, FrameError> {
    let mut codec = Codec::with_version(version, 1024);
    decode_all(&mut codec, wire)
}

#[test]
fn golden_publish_and_acks() {
    let qos1: &[u8] = &[0x32, 8, 0, 3, b'a', b'/', b'b', 0, 7, b'x'];
    let packets = after_connect(V3, qos1).unwrap();
    let Packet::Publish(p) = &packets[0] else {
        panic!()
    };
    assert_eq!(
        (p.topic.as_str(), p.qos, p.packet_id),
        ("a/b", QoS::AtLeastOnce, 7)
    );
    assert_eq!(&p.payload[..], b"x");
    assert_eq!(&encode(&packets[0], V3)[..], qos1);

    let acks: &[u8] = &[0x40, 2, 0, 7, 0x50, 2, 0, 8, 0x62, 2, 0, 9, 0x70, 2, 0, 10];
    let packets = after_connect(V3, acks).unwrap();
    assert_eq!(packets.len(), 4);
    assert!(matches!(&packets[2], Packet::PubRel(a) if a.packet_id == 9));

    // 5.0 acknowledgements with a reason code and with properties.
    let v5_acks: &[u8] = &[
        0x40, 3, 0, 7, 0x10, 0x70, 8, 0, 3, 0x92, 4, 0x1f, 0, 1, b'r',
    ];
    let packets = after_connect(V5, v5_acks).unwrap();
    assert_eq!(packets[0], Packet::PubAck(Ack::with_reason(7, 0x10)));
    let Packet::PubComp(comp) = &packets[1] else {
        panic!()
    };
    assert_eq!(comp.properties.reason_string.as_deref(), Some("r"));
    let mut again = encode(&packets[0], V5);
    again.extend_from_slice(&encode(&packets[1], V5));
    assert_eq!(&again[..], v5_acks);
}

#[test]
fn mqtt31_flags_are_not_checked() {
    // A 3.1 client sets DUP on a resent PUBREL (0x6a) and may set QoS bits elsewhere;
    // 3.1.1 and 5.0 require the fixed values.
    let wire: &[u8] = &[0x6a, 2, 0, 9, 0x43, 2, 0, 7];
    let packets = after_connect(ProtocolVersion::V31, wire).unwrap();
    assert_eq!(packets[0], Packet::PubRel(Ack::new(9)));
    assert_eq!(packets[1], Packet::PubAck(Ack::new(7)));
    assert!(after_connect(V3, &wire[..4]).is_err());
    assert!(after_connect(V5, &wire[..4]).is_err());
}

#[test]
fn publish_errors() {
    // QoS 3, DUP on QoS 0, wildcard topic, empty topic in 3.1.1, packet id 0.
    for wire in [
        &[0x36, 5, 0, 1, b'a', 0, 1][..],
        &[0x38, 3, 0, 1, b'a'],
        &[0x30, 3, 0, 1, b'#'],
        &[0x30, 4, 0, 2, b'a', b'+'],
        &[0x30, 2, 0, 0],
        &[0x32, 5, 0, 1, b'a', 0, 0],
    ] {
        assert!(after_connect(V3, wire).is_err(), "{wire:?}");
    }
    // An empty topic is fine in 5.0 (topic alias), but not in 3.1.1.
    assert!(after_connect(V5, &[0x30, 6, 0, 0, 3, 0x23, 0, 1]).is_ok());
}

#[test]
fn golden_subscribe_and_unsubscribe() {
    let wire: &[u8] = &[
        0x82, 14, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0, 3, b'b', b'/', b'+', 2,
    ];
    let packets = after_connect(V3, wire).unwrap();
    let Packet::Subscribe(s) = &packets[0] else {
        panic!()
    };
    assert_eq!(s.filters.len(), 2);
    assert_eq!(s.filters[1].1.qos, QoS::ExactlyOnce);
    assert_eq!(&encode(&packets[0], V3)[..], wire);

    // 5.0 options: QoS 1, No Local, Retain As Published, Retain Handling 2; subscription id 5.
    let v5: &[u8] = &[0x82, 9, 0, 2, 2, 0x0b, 5, 0, 1, b'x', 0b0010_1101];
    let packets = after_connect(V5, v5).unwrap();
    let Packet::Subscribe(s) = &packets[0] else {
        panic!()
    };
    let opts = s.filters[0].1;
    assert!(opts.no_local && opts.retain_as_published);
    assert_eq!((opts.qos, opts.retain_handling), (QoS::AtLeastOnce, 2));
    assert_eq!(s.properties.subscription_identifiers, vec![5]);
    assert_eq!(&encode(&packets[0], V5)[..], v5);

    let unsub: &[u8] = &[0xa2, 5, 0, 3, 0, 1, b'x'];
    let packets = after_connect(V3, unsub).unwrap();
    assert!(matches!(&packets[0], Packet::Unsubscribe(u) if u.filters == ["x"]));
}

#[test]
fn subscribe_errors_match_mosquitto() {
    let malformed: &[(&[u8], ProtocolVersion)] = &[
        (&[0x80, 6, 0, 1, 0, 1, b'a', 0], V3),       // flags not 0010
        (&[0x82, 2, 0, 1], V3),                      // no filters
        (&[0x82, 6, 0, 0, 0, 1, b'a', 0], V3),       // packet id 0
        (&[0x82, 7, 0, 1, 0, 2, b'a', b'#', 0], V3), // # not a whole level
        (&[0x82, 8, 0, 1, 0, 3, b'#', b'/', b'a', 0], V3), // # not last
        (&[0x82, 6, 0, 1, 0, 1, b'a', 3], V3),       // QoS 3
        (&[0x82, 6, 0, 1, 0, 1, b'a', 4], V3),       // reserved bits in 3.1.1
        (&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30], V5), // retain handling 3
        (&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40], V5), // reserved bits in 5.0
        (&[0x82, 5, 0, 1, 0, 0, 0, 0], V5),          // empty filter
    ];
    for (wire, v) in malformed {
        let err = after_connect(*v, wire).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{wire:?}: {err}");
    }
    let protocol: &[&[u8]] = &[
        &[
            0x82, 16, 0, 1, 0, 0, 10, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'a', 4,
        ],
        &[
            0x82, 15, 0, 1, 0, 0, 9, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', 0,
        ],
        &[
            0x82, 16, 0, 1, 0, 0, 10, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'/', b'a', b'b', 0,
        ],
    ];
    for wire in protocol {
        let err = after_connect(V5, wire).unwrap_err();
        assert!(matches!(err, FrameError::Protocol(_)), "{wire:?}: {err}");
    }
}

#[test]
fn golden_server_packets() {
    let cases: Vec<(Packet, ProtocolVersion, &[u8])> = vec![
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: Properties::default(),
            }),
            V3,
            &[0x20, 2, 1, 0],
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0,
                properties: Properties {
                    receive_maximum: Some(20),
                    ..Properties::default()
                },
            }),
            V5,
            &[0x20, 6, 0, 0, 3, 0x21, 0, 20],
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: 1,
                properties: Properties::default(),
                codes: vec![1, 0x80],
            }),
            V3,
            &[0x90, 4, 0, 1, 1, 0x80],
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 3,
                properties: Properties::default(),
                codes: vec![],
            }),
            V3,
            &[0xb0, 2, 0, 3],
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 3,
                properties: Properties::default(),
                codes: vec![0x11],
            }),
            V5,
            &[0xb0, 4, 0, 3, 0, 0x11],
        ),
        (Packet::PingResp, V3, &[0xd0, 0]),
        (Packet::Disconnect(Disconnect::default()), V5, &[0xe0, 0]),
        (
            Packet::Disconnect(Disconnect::with_reason(0x8e)),
            V5,
            &[0xe0, 1, 0x8e],
        ),
    ];
    for (packet, v, wire) in cases {
        assert_eq!(&encode(&packet, v)[..], wire, "{packet:?}");
        assert_eq!(after_connect(v, wire).unwrap(), vec![packet]);
    }
}

#[test]
fn fixed_length_packets_are_checked_before_buffering() {
    // PINGREQ with a body, 3.1.1 PUBACK of 3 bytes, 3.1.1 DISCONNECT with a reason.
    for wire in [&[0xc0, 1][..], &[0x40, 3], &[0xe0, 1]] {
        assert!(
            matches!(after_connect(V3, wire), Err(FrameError::Malformed(_))),
            "{wire:?}"
        );
    }
    // Reserved packet type 0 and AUTH in 3.1.1.
    assert!(matches!(
        after_connect(V3, &[0x00, 0]),
        Err(FrameError::Protocol(_))
    ));
    assert!(matches!(
        after_connect(V3, &[0xf0, 0]),
        Err(FrameError::Protocol(_))
    ));
    assert_eq!(
        after_connect(V5, &[0xf0, 0]).unwrap(),
        vec![Packet::Auth(Disconnect::default())]
    );
}

#[test]
fn oversized_packets_are_rejected_from_the_header() {
    // 4 KiB limit; a PUBLISH declaring 1 MiB is refused with only two length bytes seen.
    let mut codec = Codec::with_version(V5, 4096);
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { size, max: 4096 } if size == 1 + 3 + (1 << 20)));
    assert_eq!(err.reason_code(), reason::PACKET_TOO_LARGE);
    // The limit counts the whole packet: exactly max is fine, one more is not.
    let payload = vec![0u8; 4096 - 1 - 2 - 3 - 1];
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a".into(),
        packet_id: 0,
        properties: Properties::default(),
        payload: Bytes::from(payload),
    });
    let wire = encode(&packet, V5);
    assert_eq!(wire.len(), 4096);
    assert_eq!(
        decode_all(&mut Codec::with_version(V5, 4096), &wire).unwrap(),
        vec![packet]
    );
    assert!(decode_all(&mut Codec::with_version(V5, 4095), &wire).is_err());
    // A CONNECT above mosquitto's 100,000-byte ceiling is refused before it is read.
    let mut big = BytesMut::from(&[0x10, 0xa1, 0x8d, 0x06][..]);
    assert!(server().decode(&mut big).is_err());
    // A remaining length of five bytes is malformed (closed without DISCONNECT after CONNECT).
    let mut five = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f][..]);
    assert!(matches!(
        Codec::with_version(V3, usize::MAX).decode(&mut five),
        Err(FrameError::Unanswered(_))
    ));
    let mut five = BytesMut::from(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f][..]);
    assert!(matches!(
        server().decode(&mut five),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn decodes_split_at_every_byte() {
    let mut stream = CONNECT_V3.to_vec();
    stream.extend_from_slice(&[0x82, 6, 0, 1, 0, 1, b'a', 1]);
    stream.extend_from_slice(&[0x34, 8, 0, 1, b'a', 0, 2, b'h', b'i', b'!']);
    stream.extend_from_slice(&[0xc0, 0, 0xe0, 0]);
    let whole = decode_all(&mut server(), &stream).unwrap();
    assert_eq!(whole.len(), 5);
    for split in 0..=stream.len() {
        let mut codec = server();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [&stream[..split], &stream[split..]] {
            buf.extend_from_slice(chunk);
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got, whole, "split at {split}");
    }
    // And fed one byte at a time.
    let mut codec = server();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in &stream {
        buf.extend_from_slice(&[*byte]);
        while let Some(p) = codec.decode(&mut buf).unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got, whole);
}

#[test]
fn encoder_rejects_oversized_fields() {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a".repeat(MAX_STRING_LEN + 1),
        packet_id: 0,
        properties: Properties::default(),
        payload: Bytes::new(),
    });
    let mut out = BytesMut::new();
    assert!(matches!(
        packet.encode(&mut out, V3),
        Err(FrameError::FieldTooLong(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn topic_checks() {
    for ok in [
        "a",
        "/",
        "a//b",
        "+",
        "#",
        "a/+/b",
        "a/#",
        "+/+",
        "$SYS/#",
        "$share/g/a/#",
    ] {
        assert!(valid_topic_filter(ok), "{ok}");
    }
    for bad in ["", "a#", "a/#/b", "a+", "+a/b", "#/"] {
        assert!(!valid_topic_filter(bad), "{bad}");
    }
    assert!(valid_topic_name("a/b/"));
    assert!(!valid_topic_name("a/+"));
    let deep = "a/".repeat(MAX_TOPIC_LEVELS + 1);
    assert!(!valid_topic_name(&deep) && !valid_topic_filter(&deep));
}

// ---- proptest round-trips -------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _/.é$-]{0,12}"
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9/$._-]{1,12}"
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        topic(),
        Just("a/+/b".to_owned()),
        Just("#".to_owned()),
        Just("x/#".to_owned())
    ]
}

fn bin() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    proptest::option::of(0u8..=1)
}

fn users() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..3)
}

fn publish_props() -> impl Strategy<Value = Properties> {
    (
        flag(),
        any::<Option<u32>>(),
        proptest::option::of(text()),
        proptest::option::of(topic()),
        proptest::option::of(bin()),
        proptest::collection::vec(1u32..=MAX_VARINT, 0..3),
        proptest::option::of(1u16..),
        users(),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, sids, alias, users)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            subscription_identifiers: sids,
            topic_alias: alias,
            user_properties: users,
            ..Properties::default()
        })
}

fn connack_props() -> impl Strategy<Value = Properties> {
    (
        any::<Option<u32>>(),
        proptest::option::of(text()),
        any::<Option<u16>>(),
        proptest::option::of(1u16..),
        any::<Option<u16>>(),
        (flag(), flag(), flag(), flag(), flag()),
        proptest::option::of(1u32..),
        (proptest::option::of(text()), users()),
    )
        .prop_map(
            |(sei, acid, ska, rm, tam, flags, mps, (reason, users))| Properties {
                session_expiry_interval: sei,
                assigned_client_identifier: acid,
                server_keep_alive: ska,
                receive_maximum: rm,
                topic_alias_maximum: tam,
                maximum_qos: flags.0,
                retain_available: flags.1,
                wildcard_subscription_available: flags.2,
                subscription_identifier_available: flags.3,
                shared_subscription_available: flags.4,
                maximum_packet_size: mps,
                reason_string: reason,
                user_properties: users,
                ..Properties::default()
            },
        )
}

fn reason_props() -> impl Strategy<Value = Properties> {
    (proptest::option::of(text()), users()).prop_map(|(reason_string, user_properties)| {
        Properties {
            reason_string,
            user_properties,
            ..Properties::default()
        }
    })
}

fn maybe(v: ProtocolVersion, props: Properties) -> Properties {
    if v.is_v5() {
        props
    } else {
        Properties::default()
    }
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        1u16..,
        publish_props(),
        bin(),
    )
        .prop_map(move |(dup, qos, retain, topic, pid, props, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: if at_most_once { 0 } else { pid },
                properties: maybe(v, props),
                payload,
            })
        })
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = proptest::option::of((
        topic(),
        bin(),
        qos(),
        any::<bool>(),
        publish_props(),
        any::<Option<u32>>(),
    ));
    (
        any::<bool>(),
        any::<u16>(),
        (
            any::<Option<u32>>(),
            proptest::option::of(1u16..),
            proptest::option::of(1u32..),
            flag(),
        ),
        text(),
        will,
        proptest::option::of(text()),
        proptest::option::of(bin()),
    )
        .prop_map(
            move |(clean, ka, (sei, rm, mps, rpi), id, will, user, pass)| {
                let properties = Properties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_packet_size: mps,
                    request_problem_information: rpi,
                    ..Properties::default()
                };
                let will = will.map(|(topic, payload, qos, retain, mut props, delay)| {
                    props.subscription_identifiers.clear();
                    props.topic_alias = None;
                    props.will_delay_interval = delay;
                    Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties: maybe(v, props),
                    }
                });
                // 3.1.1 forbids a password without a user name.
                let pass = if v.is_v5() || user.is_some() {
                    pass
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start: clean,
                    keep_alive: ka,
                    properties: maybe(v, properties),
                    client_id: id,
                    will,
                    username: user,
                    password: pass,
                }))
            },
        )
}

fn ack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = prop_oneof![Just(0u8), Just(0x10), Just(0x80), Just(0x92)];
    (0u8..4, 1u16.., codes, reason_props()).prop_map(move |(kind, pid, code, props)| {
        let code = match kind {
            0 | 1 if code == 0x92 => 0x91,
            2 | 3 if code != 0 => 0x92,
            _ => code,
        };
        let ack = if v.is_v5() {
            Ack {
                packet_id: pid,
                reason: code,
                properties: props,
            }
        } else {
            Ack::new(pid)
        };
        match kind {
            0 => Packet::PubAck(ack),
            1 => Packet::PubRec(ack),
            2 => Packet::PubRel(ack),
            _ => Packet::PubComp(ack),
        }
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(q, nl, rap, rh)| {
            if v.is_v5() {
                SubscriptionOptions {
                    qos: q,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos: q,
                    ..SubscriptionOptions::default()
                }
            }
        });
    (
        1u16..,
        proptest::option::of(1u32..=MAX_VARINT),
        users(),
        proptest::collection::vec((filter(), options), 1..4),
    )
        .prop_map(move |(pid, sid, users, filters)| {
            let props = Properties {
                subscription_identifiers: sid.into_iter().collect(),
                user_properties: users,
                ..Properties::default()
            };
            Packet::Subscribe(Subscribe {
                packet_id: pid,
                properties: maybe(v, props),
                filters,
            })
        })
}

fn others(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let list = proptest::collection::vec(any::<u8>(), 1..4);
    prop_oneof![
        (any::<bool>(), any::<u8>(), connack_props()).prop_map(move |(sp, code, props)| {
            Packet::ConnAck(ConnAck {
                session_present: sp,
                code,
                properties: maybe(v, props),
            })
        }),
        (any::<u16>(), reason_props(), list.clone()).prop_map(move |(pid, props, codes)| {
            Packet::SubAck(SubAck {
                packet_id: pid,
                properties: maybe(v, props),
                codes,
            })
        }),
        (1u16.., users(), proptest::collection::vec(filter(), 1..4)).prop_map(
            move |(pid, users, filters)| {
                let props = Properties {
                    user_properties: users,
                    ..Properties::default()
                };
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid,
                    properties: maybe(v, props),
                    filters,
                })
            }
        ),
        (any::<u16>(), reason_props(), list).prop_map(move |(pid, props, codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id: pid,
                properties: maybe(v, props),
                codes: if v.is_v5() { codes } else { Vec::new() },
            })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (any::<u8>(), any::<Option<u32>>(), reason_props()).prop_map(
            move |(code, sei, mut props)| {
                props.session_expiry_interval = sei;
                if v.is_v5() {
                    Packet::Disconnect(Disconnect {
                        reason: code,
                        properties: props,
                    })
                } else {
                    Packet::Disconnect(Disconnect::default())
                }
            }
        ),
    ]
}

fn any_packet(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    prop_oneof![publish(v), ack(v), subscribe(v), others(v)]
}

fn round_trip(packet: &Packet, v: ProtocolVersion) {
    let wire = encode(packet, v);
    let mut codec = Codec::with_version(v, usize::MAX);
    assert_eq!(decode_all(&mut codec, &wire).unwrap(), vec![packet.clone()]);
}

proptest! {
    #[test]
    fn round_trip_v311(packet in any_packet(V3)) {
        round_trip(&packet, V3);
    }

    #[test]
    fn round_trip_v5(packet in any_packet(V5)) {
        round_trip(&packet, V5);
    }

    #[test]
    fn round_trip_connect(packet in prop_oneof![connect(V3), connect(V5)]) {
        let wire = encode(&packet, V3);
        let decoded = decode_all(&mut server(), &wire).unwrap();
        prop_assert_eq!(decoded, vec![packet]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for v in [None, Some(V3), Some(V5)] {
            decode_and_reencode(v, &bytes);
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        packets in proptest::collection::vec(any_packet(V5), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut wire = BytesMut::new();
        for packet in &packets {
            packet.encode(&mut wire, V5).unwrap();
        }
        for (at, byte) in flips {
            let len = wire.len();
            wire[at % len] = byte;
        }
        decode_and_reencode(Some(V5), &wire);
        decode_and_reencode(Some(V3), &wire);
    }
}

/// What the fuzz target checks: whatever decodes re-encodes to bytes that decode the same.
fn decode_and_reencode(v: Option<ProtocolVersion>, bytes: &[u8]) {
    let mut codec = match v {
        None => server(),
        Some(v) => Codec::with_version(v, 1024),
    };
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = codec.decode(&mut buf) {
        let v = codec.version().unwrap_or(V3);
        let mut out = BytesMut::new();
        packet.encode(&mut out, v).unwrap();
        let mut again = Codec::with_version(v, usize::MAX);
        assert_eq!(again.decode(&mut out).unwrap(), Some(packet));
        assert!(out.is_empty());
    }
}
