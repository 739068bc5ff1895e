//! MQTT answers to malformed and edge-case input, byte for byte as mosquitto 2.0 gives them on
//! the same input (recorded side by side on a loopback port), including whether the connection
//! stays open. Where polymq deliberately differs, the test says so.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt_bytes::{pkt, string, vbi};
use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// PINGREQ: appended to input that must leave the connection open; PINGRESP proves it.
const PINGREQ: &[u8] = &[0xc0, 0x00];
const PINGRESP: &[u8] = &[0xd0, 0x00];
/// CONNACK 0 of a 3.1.1 session.
const CONNACK_V3: &[u8] = &[0x20, 0x02, 0x00, 0x00];
/// CONNACK 0 of a 5.0 session with the default config: Topic Alias Maximum 10, Maximum Packet
/// Size 16 MiB, Receive Maximum 20, in mosquitto's order. mosquitto sends no Maximum Packet
/// Size by default (it has no limit); polymq bounds what it buffers per client.
const CONNACK_V5: &[u8] = &[
    0x20, 0x0e, 0x00, 0x00, 0x0b, 0x22, 0x00, 0x0a, 0x27, 0x01, 0x00, 0x00, 0x00, 0x21, 0x00, 0x14,
];

/// CONNECT for protocol `level` with connect `flags`, keep alive 60, client id `id`, 5.0
/// `props` (level 5 only) and the rest of the payload in `tail`.
fn connect(level: u8, flags: u8, id: &[u8], props: &[u8], tail: &[u8]) -> Vec<u8> {
    let name: &[u8] = if level == 3 { b"MQIsdp" } else { b"MQTT" };
    let mut body = string(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    if level == 5 {
        vbi(props.len(), &mut body);
        body.extend_from_slice(props);
    }
    body.extend_from_slice(&string(id));
    body.extend_from_slice(tail);
    pkt(0x10, &body)
}

fn connect_v3(id: &str) -> Vec<u8> {
    connect(4, 0x02, id.as_bytes(), &[], &[])
}

fn connect_v5(id: &str) -> Vec<u8> {
    connect(5, 0x02, id.as_bytes(), &[], &[])
}

/// PUBLISH with `header` (type, DUP, QoS, RETAIN), packet id 1 when QoS > 0, payload `x`.
fn publish(header: u8, topic: &[u8], v5: bool) -> Vec<u8> {
    let mut body = string(topic);
    if header & 0x06 != 0 {
        body.extend_from_slice(&[0, 1]);
    }
    if v5 {
        body.push(0);
    }
    body.push(b'x');
    pkt(header, &body)
}

/// 5.0 QoS 1 PUBLISH (packet id 1) with the property block `props` and payload `x`.
fn publish_with(header: u8, topic: &[u8], props: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&[0, 1]);
    vbi(props.len(), &mut body);
    body.extend_from_slice(props);
    body.push(b'x');
    pkt(header, &body)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Sends `input` in one write and returns what the broker answers until it closes.
async fn until_closed(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(input).await.unwrap();
    let mut out = Vec::new();
    timeout(Duration::from_secs(5), async {
        loop {
            match stream.read_buf(&mut out).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("connection stayed open");
    out
}

/// Sends `input` and a PINGREQ in one write; returns the answer up to and including the
/// PINGRESP (so the connection was still open after `input`).
async fn while_open(addr: SocketAddr, input: &[u8], expected_len: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&cat(&[input, PINGREQ])).await.unwrap();
    let mut out = Vec::new();
    timeout(Duration::from_secs(5), async {
        while out.len() < expected_len + PINGRESP.len() {
            assert_ne!(
                stream.read_buf(&mut out).await.unwrap(),
                0,
                "closed: {out:02x?}"
            );
        }
    })
    .await
    .expect("no PINGRESP in time");
    out
}

async fn expect_open(addr: SocketAddr, input: &[u8], answer: &[u8], what: &str) {
    let got = while_open(addr, input, answer.len()).await;
    assert_eq!(got, cat(&[answer, PINGRESP]), "{what}");
}

async fn expect_closed(addr: SocketAddr, input: &[u8], answer: &[u8], what: &str) {
    assert_eq!(until_closed(addr, input).await, answer, "{what}");
}

async fn with_server<F, Fut>(test: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let server = TestServer::start("[mqtt]\nsys_interval_secs = 0\n").await;
    timeout(Duration::from_secs(30), test(server.mqtt))
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn refused_connects_match_mosquitto() {
    with_server(|addr| async move {
        let refused: &[(&str, Vec<u8>, &[u8])] = &[
            (
                "level 6",
                connect(6, 0x02, b"c", &[], &[]),
                &[0x20, 2, 0, 1],
            ),
            (
                "MQTT level 3",
                pkt(
                    0x10,
                    &cat(&[&string(b"MQTT"), &[3, 2, 0, 60], &string(b"c")]),
                ),
                &[0x20, 2, 0, 1],
            ),
            (
                "empty id, clean 0",
                connect(4, 0x00, b"", &[], &[]),
                &[0x20, 2, 0, 2],
            ),
            (
                "3.1 empty id",
                connect(3, 0x02, b"", &[], &[]),
                &[0x20, 2, 0, 2],
            ),
            (
                "auth method",
                connect(5, 0x02, b"c", &cat(&[&[0x15], &string(b"SCRAM")]), &[]),
                &[0x20, 3, 0, 0x8c, 0],
            ),
            // Closed without CONNACK.
            (
                "protocol name",
                pkt(
                    0x10,
                    &cat(&[&string(b"MQTX"), &[4, 2, 0, 60], &string(b"c")]),
                ),
                &[],
            ),
            ("reserved flag", connect(4, 0x03, b"c", &[], &[]), &[]),
            ("header flags", cat(&[&[0x11], &connect_v3("c")[1..]]), &[]),
            (
                "will QoS 3",
                connect(4, 0x1e, b"c", &[], &cat(&[&string(b"w"), &string(b"p")])),
                &[],
            ),
            (
                "will retain, no will",
                connect(4, 0x22, b"c", &[], &[]),
                &[],
            ),
            (
                "password, no user 3.1.1",
                connect(4, 0x42, b"c", &[], &string(b"pw")),
                &[],
            ),
            (
                "client id not UTF-8",
                connect(4, 0x02, b"\xff\xfe", &[], &[]),
                &[],
            ),
            (
                "client id with U+0000",
                connect(4, 0x02, b"a\x00b", &[], &[]),
                &[],
            ),
            (
                "wildcard will topic",
                connect(4, 0x06, b"c", &[], &cat(&[&string(b"a/#"), &string(b"p")])),
                &[],
            ),
            (
                "remaining length 5 bytes",
                vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
                &[],
            ),
            ("remaining length not minimal", vec![0x10, 0x80, 0x00], &[]),
            ("first packet PINGREQ", PINGREQ.to_vec(), &[]),
            (
                "duplicate property",
                connect(5, 0x02, b"c", &[0x21, 0, 5, 0x21, 0, 5], &[]),
                &[],
            ),
            (
                "receive maximum 0",
                connect(5, 0x02, b"c", &[0x21, 0, 0], &[]),
                &[],
            ),
            ("surplus bytes", connect(4, 0x02, b"c", &[], b"zz"), &[]),
        ];
        for (what, input, answer) in refused {
            expect_closed(addr, input, answer, what).await;
        }
        // 5.0 allows a password without a user name.
        expect_open(
            addr,
            &connect(5, 0x42, b"pw5", &[], &string(b"pw")),
            CONNACK_V5,
            "5.0 password",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn packets_sent_with_connect_are_handled() {
    with_server(|addr| async move {
        // CONNECT and SUBSCRIBE in one segment, as many clients write them.
        let sub = pkt(
            0x82,
            &cat(&[
                &[0, 1],
                &string(b"a"),
                &[0],
                &string(b"b"),
                &[1],
                &string(b"c"),
                &[2],
            ]),
        );
        let answer = cat(&[CONNACK_V3, &[0x90, 5, 0, 1, 0, 1, 2]]);
        expect_open(
            addr,
            &cat(&[&connect_v3("pipe3"), &sub]),
            &answer,
            "3.1.1 SUBACK",
        )
        .await;
        let unsub = pkt(0xa2, &cat(&[&[0, 2, 0], &string(b"a"), &string(b"z")]));
        let sub5 = pkt(0x82, &cat(&[&[0, 1, 0], &string(b"a"), &[1]]));
        let answer = cat(&[
            CONNACK_V5,
            &[0x90, 4, 0, 1, 0, 1],
            &[0xb0, 5, 0, 2, 0, 0, 0x11],
        ]);
        expect_open(
            addr,
            &cat(&[&connect_v5("pipe5"), &sub5, &unsub]),
            &answer,
            "5.0 UNSUBACK",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn publishing_into_sys_is_not_authorized() {
    with_server(|addr| async move {
        let q1 = publish(0x32, b"$SYS/x", false);
        expect_open(
            addr,
            &cat(&[&connect_v3("sys3"), &q1]),
            &cat(&[CONNACK_V3, &[0x40, 2, 0, 1]]),
            "3.1.1 PUBACK",
        )
        .await;
        let q1 = publish(0x32, b"$SYS/x", true);
        expect_open(
            addr,
            &cat(&[&connect_v5("sys5"), &q1]),
            &cat(&[CONNACK_V5, &[0x40, 3, 0, 1, 0x87]]),
            "5.0 PUBACK",
        )
        .await;
        let q2 = publish(0x34, b"$SYSX", true);
        expect_open(
            addr,
            &cat(&[&connect_v5("sys5b"), &q2]),
            &cat(&[CONNACK_V5, &[0x50, 3, 0, 1, 0x87]]),
            "5.0 PUBREC",
        )
        .await;
        // Other `$` topics are published (no subscriber: 0x10).
        let q1 = publish(0x32, b"$foo/x", true);
        expect_open(
            addr,
            &cat(&[&connect_v5("sys5c"), &q1]),
            &cat(&[CONNACK_V5, &[0x40, 3, 0, 1, 0x10]]),
            "5.0 $foo",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn broken_packets_after_connect_close_as_mosquitto_does() {
    with_server(|addr| async move {
        let sub = |filter: &[u8], options: u8, v5: bool| {
            let head: &[u8] = if v5 { &[0, 1, 0] } else { &[0, 1] };
            pkt(0x82, &cat(&[head, &string(filter), &[options]]))
        };
        let disconnect = |code: u8| [0xe0, 1, code];
        let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
            ("QoS 3", publish(0x36, b"a", true), Some(0x81)),
            ("wildcard topic +", publish(0x32, b"a/+", true), Some(0x82)),
            ("wildcard topic #", publish(0x30, b"#", true), Some(0x82)),
            ("topic not UTF-8", publish(0x32, b"a\xff", true), Some(0x81)),
            (
                "topic with U+0000",
                publish(0x32, b"a\x00", true),
                Some(0x81),
            ),
            (
                "empty topic, no alias",
                publish(0x32, b"", true),
                Some(0x82),
            ),
            (
                "packet id 0",
                pkt(0x32, &cat(&[&string(b"a"), &[0, 0, 0], b"x"])),
                Some(0x82),
            ),
            (
                "topic alias above maximum",
                pkt(0x32, &cat(&[&string(b"a"), &[0, 1, 3, 0x23, 0x03, 0xe8]])),
                Some(0x94),
            ),
            (
                "unknown topic alias",
                pkt(0x32, &cat(&[&string(b""), &[0, 1, 3, 0x23, 0, 1]])),
                Some(0x82),
            ),
            (
                "SUBSCRIBE flags",
                cat(&[&[0x80], &sub(b"a", 0, true)[1..]]),
                Some(0x81),
            ),
            ("SUBSCRIBE QoS 3", sub(b"a", 3, true), Some(0x81)),
            ("SUBSCRIBE reserved bits", sub(b"a", 0x40, true), Some(0x81)),
            ("retain handling 3", sub(b"a", 0x30, true), Some(0x81)),
            ("invalid filter", sub(b"a/#/b", 1, true), Some(0x81)),
            ("+ inside a level", sub(b"a+", 0, true), Some(0x81)),
            ("empty filter", sub(b"", 0, true), Some(0x81)),
            ("filter not UTF-8", sub(b"\xff", 0, true), Some(0x81)),
            (
                "share name with +",
                sub(b"$share/g+/a", 1, true),
                Some(0x81),
            ),
            (
                "subscription identifier 0",
                pkt(0x82, &cat(&[&[0, 1, 2, 0x0b, 0], &string(b"a"), &[1]])),
                Some(0x81),
            ),
            (
                "UNSUBSCRIBE without filters",
                pkt(0xa2, &[0, 1, 0]),
                Some(0x81),
            ),
            ("packet type 0", vec![0, 0], Some(0x82)),
            (
                "property not allowed in PUBLISH",
                publish_with(0x32, b"a", &[0x11, 0, 0, 0, 0]),
                Some(0x81),
            ),
            // mosquitto closes these without a DISCONNECT.
            ("second CONNECT", connect_v5("again"), None),
            (
                "duplicate property",
                publish_with(0x32, b"a", &[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]),
                None,
            ),
            (
                "two subscription identifiers",
                pkt(
                    0x82,
                    &cat(&[&[0, 1, 4, 0x0b, 1, 0x0b, 2], &string(b"a"), &[1]]),
                ),
                None,
            ),
            ("PUBREL flags", vec![0x60, 2, 0, 7], None),
            ("DISCONNECT flags", vec![0xe1, 0], None),
            (
                "remaining length 5 bytes",
                vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
                None,
            ),
            ("AUTH", vec![0xf0, 0], None),
            ("bad DISCONNECT reason", vec![0xe0, 1, 3], None),
        ];
        for (i, (what, packet, code)) in cases.iter().enumerate() {
            let input = cat(&[&connect_v5(&format!("bad5-{i}")), packet]);
            let answer = match code {
                Some(code) => cat(&[CONNACK_V5, &disconnect(*code)]),
                None => CONNACK_V5.to_vec(),
            };
            expect_closed(addr, &input, &answer, what).await;
        }
        // 3.1.1 gets no DISCONNECT, just the close.
        for (i, (what, packet, _)) in cases.iter().enumerate() {
            if matches!(*what, "AUTH" | "bad DISCONNECT reason")
                || what.contains("propert")
                || what.contains("alias")
                || what.contains("identifier")
                || what.contains("share")
                || what.contains("empty topic")
                || what.contains("UNSUBSCRIBE")
            {
                continue;
            }
            let packet = v3_form(packet);
            let input = cat(&[&connect_v3(&format!("bad3-{i}")), &packet]);
            expect_closed(addr, &input, CONNACK_V3, what).await;
        }
    })
    .await;
}

/// The 3.1.1 form of a 5.0 test packet: drops the empty property block of PUBLISH and
/// SUBSCRIBE.
fn v3_form(packet: &[u8]) -> Vec<u8> {
    let header = packet[0];
    if packet[1] & 0x80 != 0 {
        // A Remaining Length of more than one byte: sent as it is.
        return packet.to_vec();
    }
    let body = &packet[2..];
    match header >> 4 {
        3 => {
            let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
            let pid = if header & 0x06 != 0 { 2 } else { 0 };
            let split = topic_end + pid;
            pkt(header, &cat(&[&body[..split], &body[split + 1..]]))
        }
        8 => pkt(header, &cat(&[&body[..2], &body[3..]])),
        1 => connect(4, 0x02, b"again3", &[], &[]),
        _ => packet.to_vec(),
    }
}

#[tokio::test]
async fn acknowledgements_of_unknown_packet_ids() {
    with_server(|addr| async move {
        // PUBREL → PUBCOMP and PUBREC → PUBREL even for ids never used (mosquitto).
        let input = cat(&[
            &connect_v3("acks3"),
            &[0x62, 2, 0, 7],
            &[0x50, 2, 0, 8],
            &[0x40, 2, 0, 9],
        ]);
        let answer = cat(&[CONNACK_V3, &[0x70, 2, 0, 7], &[0x62, 2, 0, 8]]);
        expect_open(addr, &input, &answer, "3.1.1").await;
        // 5.0: PUBCOMP says 0x92 Packet Identifier not found (PROTOCOLS.md §3.3; mosquitto
        // 2.0.11 answers 0x00).
        let input = cat(&[&connect_v5("acks5"), &[0x62, 2, 0, 7], &[0x70, 2, 0, 8]]);
        let answer = cat(&[CONNACK_V5, &[0x70, 3, 0, 7, 0x92]]);
        expect_open(addr, &input, &answer, "5.0").await;
    })
    .await;
}

/// Reads exactly `len` bytes from `stream`, bounded in time.
async fn read_n(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    timeout(Duration::from_secs(5), stream.read_exact(&mut out))
        .await
        .expect("no answer in time")
        .unwrap();
    out
}

/// A 3.1.1 subscriber to `acks/t` at QoS `qos` that has just received one PUBLISH of that QoS
/// (packet id 1), published at QoS 2 by a second client.
async fn subscriber_with_delivery(addr: SocketAddr, id: &str, qos: u8) -> TcpStream {
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let subscribe = pkt(0x82, &cat(&[&[0, 1], &string("acks/t"), &[qos]]));
    sub.write_all(&cat(&[&connect_v3(id), &subscribe]))
        .await
        .unwrap();
    assert_eq!(
        read_n(&mut sub, 9).await,
        [0x20, 2, 0, 0, 0x90, 3, 0, 1, qos]
    );
    let mut publisher = TcpStream::connect(addr).await.unwrap();
    let publish = pkt(0x34, &cat(&[&string("acks/t"), &[0, 9], b"m"]));
    publisher
        .write_all(&cat(&[&connect_v3(&format!("{id}-pub")), &publish]))
        .await
        .unwrap();
    let expected = pkt(0x30 | qos << 1, &cat(&[&string("acks/t"), &[0, 1], b"m"]));
    assert_eq!(read_n(&mut sub, expected.len()).await, expected);
    sub
}

/// Sends `input` on `stream` and expects the broker to close it without a byte more.
async fn expect_dropped(mut stream: TcpStream, input: &[u8], what: &str) {
    stream.write_all(&cat(&[input, PINGREQ])).await.unwrap();
    let mut rest = Vec::new();
    let closed = timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("connection stayed open");
    assert!(
        closed.is_err() || rest.is_empty(),
        "{what}: got {rest:02x?}"
    );
}

#[tokio::test]
async fn acknowledgements_of_the_wrong_kind_close_the_connection() {
    // mosquitto treats an ack that does not fit the QoS (or QoS 2 state) of the delivery with
    // that packet id as a protocol error and closes, with no DISCONNECT even in 5.0.
    with_server(|addr| async move {
        let sub = subscriber_with_delivery(addr, "pubcomp-q1", 1).await;
        expect_dropped(sub, &[0x70, 2, 0, 1], "PUBCOMP for QoS 1").await;
        let sub = subscriber_with_delivery(addr, "pubrec-q1", 1).await;
        expect_dropped(sub, &[0x50, 2, 0, 1], "PUBREC for QoS 1").await;
        let sub = subscriber_with_delivery(addr, "puback-q2", 2).await;
        expect_dropped(sub, &[0x40, 2, 0, 1], "PUBACK for QoS 2").await;
        let sub = subscriber_with_delivery(addr, "pubcomp-q2", 2).await;
        expect_dropped(sub, &[0x70, 2, 0, 1], "PUBCOMP before PUBREC").await;
        let mut sub = subscriber_with_delivery(addr, "puback-rel", 2).await;
        sub.write_all(&[0x50, 2, 0, 1]).await.unwrap();
        assert_eq!(read_n(&mut sub, 4).await, [0x62, 2, 0, 1]);
        expect_dropped(sub, &[0x40, 2, 0, 1], "PUBACK after PUBREC").await;
        // The right acks keep it open.
        let mut sub = subscriber_with_delivery(addr, "right", 2).await;
        sub.write_all(&[0x50, 2, 0, 1]).await.unwrap();
        assert_eq!(read_n(&mut sub, 4).await, [0x62, 2, 0, 1]);
        sub.write_all(&cat(&[&[0x70, 2, 0, 1], PINGREQ]))
            .await
            .unwrap();
        assert_eq!(read_n(&mut sub, 2).await, PINGRESP);
    })
    .await;
}

#[tokio::test]
async fn mqtt31_connack_has_no_session_present_flag() {
    with_server(|addr| async move {
        // MQTT 3.1 (`MQIsdp`) reserves the whole first CONNACK byte: a resumed session is
        // not announced there (mosquitto sends 0 too). 3.1.1 does announce it.
        for (level, id, present) in [(3, &b"v31-session"[..], 0), (4, b"v311-session", 1)] {
            let persistent = connect(level, 0x00, id, &[], &[]);
            let first = cat(&[&persistent, &[0xe0, 0]]);
            expect_closed(addr, &first, &[0x20, 2, 0, 0], "first").await;
            expect_open(addr, &persistent, &[0x20, 2, present, 0], "resumed").await;
        }
    })
    .await;
}

#[tokio::test]
async fn bridge_state_and_share_topics_as_mosquitto() {
    with_server(|addr| async move {
        // A bridge may publish its connection state under `$SYS`; `$share/...` is never a
        // topic.
        let cases: &[(&[u8], u8)] = &[
            (b"$SYS/broker/connection/me/state", 0x10),
            (b"$SYS/broker/connection/me", 0x87),
            (b"$share/share/topic", 0x87),
        ];
        for (i, &(topic, code)) in cases.iter().enumerate() {
            let q1 = publish(0x32, topic, true);
            expect_open(
                addr,
                &cat(&[&connect_v5(&format!("dollar{i}")), &q1]),
                &cat(&[CONNACK_V5, &[0x40, 3, 0, 1, code]]),
                &String::from_utf8_lossy(topic),
            )
            .await;
        }
    })
    .await;
}
