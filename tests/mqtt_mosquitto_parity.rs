//! What an MQTT client sees of polymq where it was compared packet by packet with mosquitto
//! 2.0 (`bench/mqtt_diff.py`): the resend order on session resumption, the in-flight window
//! of a 5.0 client that sends no Receive Maximum, and the `$SYS` tree's flags. Raw sockets, so
//! that DUP flags, packet ids and packet order are checked exactly.

mod common;

use std::net::SocketAddr;

use common::mqtt_bytes::{pkt, string, vbi};
use common::{TestServer, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const V3: u8 = 4;
const V5: u8 = 5;

/// One PUBLISH as a client sees it.
#[derive(Debug, PartialEq)]
struct Publish {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    pid: Option<u16>,
    /// 5.0 Message Expiry Interval.
    expiry: Option<u32>,
    payload: String,
}

/// A packet from the broker, decoded as far as these tests need.
#[derive(Debug, PartialEq)]
enum Got {
    ConnAck { session_present: bool, code: u8 },
    Publish(Publish),
    PubRel(u16),
    Other(u8, Vec<u8>),
}

/// A raw MQTT client connection of protocol level `v`.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    v: u8,
}

impl Raw {
    /// Connects and sends CONNECT; a persistent session (5.0: expiry 300 s) unless `clean`.
    async fn connect(addr: SocketAddr, v: u8, id: &str, clean: bool, props: &[u8]) -> Self {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut raw = Self {
            stream,
            buf: Vec::new(),
            v,
        };
        let mut body = string("MQTT");
        body.extend_from_slice(&[v, if clean { 0x02 } else { 0x00 }, 0, 60]);
        if v == V5 {
            let mut all = props.to_vec();
            if !clean {
                all.extend_from_slice(&[0x11, 0, 0, 0x01, 0x2c]);
            }
            vbi(all.len(), &mut body);
            body.extend_from_slice(&all);
        }
        body.extend_from_slice(&string(id));
        raw.send(&pkt(0x10, &body)).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn subscribe(&mut self, filter: &str, qos: u8) {
        let mut body = vec![0, 1];
        if self.v == V5 {
            body.push(0);
        }
        body.extend_from_slice(&string(filter));
        body.push(qos);
        self.send(&pkt(0x82, &body)).await;
        match self.next().await {
            Got::Other(0x90, _) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str, qos: u8, pid: u16) {
        let mut body = string(topic);
        if qos > 0 {
            body.extend_from_slice(&pid.to_be_bytes());
        }
        if self.v == V5 {
            body.push(0);
        }
        body.extend_from_slice(payload.as_bytes());
        self.send(&pkt(0x30 | (qos << 1), &body)).await;
    }

    /// Publishes at QoS 1 and waits for the PUBACK, so the message has been routed.
    async fn publish_acked(&mut self, topic: &str, payload: &str, pid: u16) {
        self.publish(topic, payload, 1, pid).await;
        match self.next().await {
            Got::Other(0x40, body) => assert_eq!(body[..2], pid.to_be_bytes()),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) for `pid`.
    async fn ack(&mut self, header: u8, pid: u16) {
        self.send(&pkt(header, &pid.to_be_bytes())).await;
    }

    async fn next(&mut self) -> Got {
        let (header, body) = timeout(STEP, self.read_packet())
            .await
            .expect("no packet in time");
        self.decode(header, body)
    }

    async fn next_publish(&mut self) -> Publish {
        match self.next().await {
            Got::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn read_packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(packet) = self.take() {
                return packet;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take(&mut self) -> Option<(u8, Vec<u8>)> {
        let (mut len, mut shift, mut pos) = (0usize, 0, 1);
        loop {
            let byte = *self.buf.get(pos)?;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            pos += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if self.buf.len() < pos + len {
            return None;
        }
        let header = self.buf[0];
        let body = self.buf[pos..pos + len].to_vec();
        self.buf.drain(..pos + len);
        Some((header, body))
    }

    fn decode(&self, header: u8, body: Vec<u8>) -> Got {
        match header >> 4 {
            2 => Got::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            },
            3 => Got::Publish(self.decode_publish(header, &body)),
            6 => Got::PubRel(u16::from_be_bytes([body[0], body[1]])),
            _ => Got::Other(header, body),
        }
    }

    fn decode_publish(&self, header: u8, body: &[u8]) -> Publish {
        let qos = (header >> 1) & 3;
        let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + n].to_vec()).expect("utf-8 topic");
        let mut pos = 2 + n;
        let pid = (qos > 0).then(|| {
            pos += 2;
            u16::from_be_bytes([body[pos - 2], body[pos - 1]])
        });
        let mut expiry = None;
        if self.v == V5 {
            // Property lengths here stay below 128: one length byte.
            let len = usize::from(body[pos]);
            let props = &body[pos + 1..pos + 1 + len];
            if let [0x02, a, b, c, d, ..] = props {
                expiry = Some(u32::from_be_bytes([*a, *b, *c, *d]));
            }
            pos += 1 + len;
        }
        Publish {
            dup: header & 0x08 != 0,
            qos,
            retain: header & 0x01 != 0,
            topic,
            pid,
            expiry,
            payload: String::from_utf8_lossy(&body[pos..]).into_owned(),
        }
    }

    async fn expect_connack(&mut self, session_present: bool) {
        assert_eq!(
            self.next().await,
            Got::ConnAck {
                session_present,
                code: 0
            }
        );
    }
}

fn publish(dup: bool, qos: u8, pid: u16, topic: &str, payload: &str) -> Got {
    Got::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: topic.into(),
        pid: Some(pid),
        expiry: None,
        payload: payload.into(),
    })
}

/// Waits until the broker has noticed that `client_id`'s connection is gone.
async fn detached(server: &TestServer, client_id: &str) {
    let queue = server
        .router()
        .get_durable_queue(&format!("mqtt/{client_id}"))
        .expect("session queue");
    for _ in 0..1000 {
        if queue.stats().client_count == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{client_id} still attached");
}

/// mosquitto resends a resumed session's in-flight messages in the order it first sent them:
/// an unacknowledged QoS 1 PUBLISH (DUP=1), a PUBREL for the QoS 2 message the client
/// PUBREC'd, an unacknowledged QoS 2 PUBLISH (DUP=1), then what was queued while offline
/// (DUP=0, the next packet ids). Completing them leaves nothing to resend.
async fn resume_order(v: u8) {
    let server = TestServer::start("").await;
    let addr = server.mqtt;
    let id = format!("parity-resume-{v}");
    let mut sub = Raw::connect(addr, v, &id, false, &[]).await;
    sub.expect_connack(false).await;
    sub.subscribe("r/#", 2).await;
    let mut publisher = Raw::connect(addr, v, &format!("parity-pub-{v}"), true, &[]).await;
    publisher.expect_connack(false).await;
    publisher.publish_acked("r/a", "m1", 1).await;
    for (pid, (topic, payload)) in [(2, ("r/a", "m2")), (3, ("r/b", "m3"))] {
        publisher.publish(topic, payload, 2, pid).await;
        assert!(matches!(publisher.next().await, Got::Other(0x50, _)));
        publisher.ack(0x62, pid).await;
        assert!(matches!(publisher.next().await, Got::Other(0x70, _)));
    }
    assert_eq!(sub.next().await, publish(false, 1, 1, "r/a", "m1"));
    assert_eq!(sub.next().await, publish(false, 2, 2, "r/a", "m2"));
    assert_eq!(sub.next().await, publish(false, 2, 3, "r/b", "m3"));
    sub.ack(0x50, 2).await;
    assert_eq!(sub.next().await, Got::PubRel(2));
    drop(sub);
    detached(&server, &id).await;

    // Offline: routed into the session's queue (the PUBACK comes after the queue took it).
    publisher.publish_acked("r/a", "m4", 4).await;

    let mut sub = Raw::connect(addr, v, &id, false, &[]).await;
    sub.expect_connack(true).await;
    assert_eq!(sub.next().await, publish(true, 1, 1, "r/a", "m1"));
    assert_eq!(sub.next().await, Got::PubRel(2));
    assert_eq!(sub.next().await, publish(true, 2, 3, "r/b", "m3"));
    assert_eq!(sub.next().await, publish(false, 1, 4, "r/a", "m4"));
    sub.ack(0x40, 1).await;
    sub.ack(0x70, 2).await;
    sub.ack(0x50, 3).await;
    assert_eq!(sub.next().await, Got::PubRel(3));
    sub.ack(0x70, 3).await;
    sub.ack(0x40, 4).await;
    // A live message after the acks proves they were handled before it.
    publisher.publish_acked("r/a", "m5", 5).await;
    assert_eq!(sub.next().await, publish(false, 1, 5, "r/a", "m5"));
    sub.ack(0x40, 5).await;
    drop(sub);

    // Everything was completed: a second resume resends nothing.
    let mut sub = Raw::connect(addr, v, &id, false, &[]).await;
    sub.expect_connack(true).await;
    publisher.publish_acked("r/a", "m6", 6).await;
    assert_eq!(sub.next().await, publish(false, 1, 6, "r/a", "m6"));
}

#[tokio::test]
async fn resume_resends_in_flight_in_first_order_v311() {
    timeout(STEP * 3, resume_order(V3)).await.expect("test");
}

#[tokio::test]
async fn resume_resends_in_flight_in_first_order_v5() {
    timeout(STEP * 3, resume_order(V5)).await.expect("test");
}

/// mosquitto keeps `max_inflight_messages` for a 5.0 client that sends no Receive Maximum;
/// QoS 0 messages pass the full window.
#[tokio::test]
async fn v5_without_receive_maximum_gets_max_inflight() {
    timeout(STEP * 3, async {
        let server = TestServer::start("[mqtt]\nmax_inflight = 3\n").await;
        let mut sub = Raw::connect(server.mqtt, V5, "parity-window", true, &[]).await;
        sub.expect_connack(false).await;
        sub.subscribe("w", 1).await;
        let mut publisher = Raw::connect(server.mqtt, V5, "parity-window-pub", true, &[]).await;
        publisher.expect_connack(false).await;
        for i in 1..=5u16 {
            publisher.publish_acked("w", &format!("q1-{i}"), i).await;
        }
        publisher.publish("w", "q0", 0, 0).await;
        for i in 1..=3u16 {
            assert_eq!(
                sub.next().await,
                publish(false, 1, i, "w", &format!("q1-{i}"))
            );
        }
        let q0 = sub.next_publish().await;
        assert_eq!((q0.qos, q0.payload.as_str()), (0, "q0"));
        sub.ack(0x40, 1).await;
        assert_eq!(sub.next().await, publish(false, 1, 4, "w", "q1-4"));
        // Only one slot came free: a QoS 0 barrier arrives before q1-5.
        publisher.publish("w", "barrier", 0, 0).await;
        assert_eq!(sub.next_publish().await.payload, "barrier");
        sub.ack(0x40, 2).await;
        assert_eq!(sub.next().await, publish(false, 1, 5, "w", "q1-5"));
    })
    .await
    .expect("test");
}

/// `$SYS` values are retained QoS 2 messages with a 60 s Message Expiry Interval (the
/// version has none), so a subscriber gets the QoS it was granted; names and payload formats
/// are mosquitto's, including the topic with a space.
async fn sys_tree(v: u8, granted: u8) {
    let server = TestServer::start("[mqtt]\nsys_interval_secs = 1\n").await;
    let mut sub = Raw::connect(server.mqtt, v, &format!("parity-sys-{v}"), true, &[]).await;
    sub.expect_connack(false).await;
    sub.subscribe("$SYS/#", granted).await;
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/load/connections/1min",
        "$SYS/broker/store/messages/count",
    ];
    let mut seen = std::collections::HashMap::new();
    while !wanted.iter().all(|t| seen.contains_key(*t)) {
        let p = match sub.next().await {
            Got::Publish(p) => p,
            Got::PubRel(pid) => {
                sub.ack(0x70, pid).await;
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        match (p.qos, p.pid) {
            (1, Some(pid)) => sub.ack(0x40, pid).await,
            (2, Some(pid)) => sub.ack(0x50, pid).await,
            _ => {}
        }
        assert_eq!(p.qos, granted, "{p:?}");
        assert!(!p.dup);
        if p.topic == "$SYS/broker/version" {
            assert_eq!(p.expiry, None);
        } else if v == V5 {
            assert!(p.expiry.is_some_and(|e| (1..=60).contains(&e)), "{p:?}");
        }
        seen.entry(p.topic.clone()).or_insert(p);
    }
    let version = &seen["$SYS/broker/version"];
    assert!(version.retain && version.payload.starts_with("polymq version "));
    let uptime = &seen["$SYS/broker/uptime"];
    let secs = uptime.payload.strip_suffix(" seconds").expect("N seconds");
    assert!(secs.parse::<u64>().is_ok(), "{uptime:?}");
    let load = &seen["$SYS/broker/load/connections/1min"].payload;
    let (whole, frac) = load.split_once('.').expect("%.2f");
    assert!(whole.parse::<u64>().is_ok() && frac.len() == 2, "{load}");
    let retained = &seen["$SYS/broker/retained messages/count"].payload;
    assert!(retained.parse::<u64>().is_ok_and(|n| n > 0), "{retained}");
}

#[tokio::test]
async fn sys_values_reach_a_qos2_subscriber_at_qos2_with_expiry() {
    timeout(STEP * 3, sys_tree(V5, 2)).await.expect("test");
}

#[tokio::test]
async fn sys_values_reach_a_qos1_subscriber_at_qos1() {
    timeout(STEP * 3, sys_tree(V3, 1)).await.expect("test");
}
