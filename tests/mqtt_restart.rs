//! What MQTT keeps across a broker restart with the disk backend: retained messages,
//! persistent sessions with their subscriptions and queued messages, and their QoS 1/2 flows
//! in flight (MQTT 5 §4.4: unacknowledged PUBLISHes again with their packet ids and DUP=1,
//! PUBRELs again, inbound QoS 2 ids waiting for PUBREL still known), in 3.1.1 and 5.0.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::mqtt_client::{publish, Client as Raw};
use common::{TestServer, STEP};
use polymq_mqtt::frame::{self as mqtt, Ack, ProtocolVersion, Publish};
use polymq_mqtt::persist::{self, StoredFlight};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

/// Publishes retained messages (QoS 1, waiting for PUBACK) and disconnects.
async fn publish_retained(addr: SocketAddr, messages: &[(&str, &str)]) {
    let options = MqttOptions::new("restart-pub", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    for (topic, body) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, true, *body)
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < messages.len() {
        let event = timeout(STEP, eventloop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    while timeout(STEP, eventloop.poll()).await.unwrap().is_ok() {}
}

/// Subscribes and collects `count` retained messages as (topic, payload).
async fn collect_retained(addr: SocketAddr, filter: &str, count: usize) -> Vec<(String, String)> {
    let options = MqttOptions::new("restart-sub", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut got = Vec::new();
    while got.len() < count {
        let event = timeout(STEP, eventloop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::Publish(p)) = event {
            assert!(p.retain);
            got.push((p.topic, String::from_utf8(p.payload.to_vec()).unwrap()));
        }
    }
    got.sort();
    got
}

#[tokio::test]
async fn retained_messages_survive_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    timeout(Duration::from_secs(60), async {
        let server = TestServer::start_disk(dir.path(), "[mqtt]\nsys_interval_secs = 0\n").await;
        let addr = server.mqtt;
        publish_retained(
            addr,
            &[
                ("dev/1/state", "on"),
                ("dev/2/state", "off"),
                ("dev/3/state", "x"),
            ],
        )
        .await;
        // Replace one and clear one before the restart.
        publish_retained(addr, &[("dev/2/state", "on"), ("dev/3/state", "")]).await;
        // The core writes retained messages to the store in the background: wait until the
        // store holds exactly the two left before stopping.
        let store = server.router().store().clone();
        let mut stored = Vec::new();
        for _ in 0..500 {
            stored = store.load_meta("retained/").await.unwrap();
            if stored.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stored.len(), 2, "retained messages in the store");
        server.stop().await;

        let server = TestServer::start_disk(dir.path(), "[mqtt]\nsys_interval_secs = 0\n").await;
        let got = collect_retained(server.mqtt, "dev/#", 2).await;
        assert_eq!(
            got,
            vec![
                ("dev/1/state".to_owned(), "on".to_owned()),
                ("dev/2/state".to_owned(), "on".to_owned())
            ]
        );
        assert_eq!(server.router().retained_count(), 2);
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

/// Connects a persistent 3.1.1 session; returns the client, its event loop and Session Present.
async fn persistent(addr: SocketAddr) -> (AsyncClient, rumqttc::EventLoop, bool) {
    let mut options = MqttOptions::new("restart-persist", addr.ip().to_string(), addr.port());
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        let event = timeout(STEP, eventloop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::ConnAck(ack)) = event {
            return (client, eventloop, ack.session_present);
        }
    }
}

async fn publish_acked(addr: SocketAddr, topic: &str, bodies: &[&str]) {
    let options = MqttOptions::new("restart-ctl", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    for body in bodies {
        client
            .publish(topic, QoS::AtLeastOnce, false, *body)
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < bodies.len() {
        if let Event::Incoming(Packet::PubAck(_)) =
            timeout(STEP, eventloop.poll()).await.unwrap().unwrap()
        {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    while timeout(STEP, eventloop.poll()).await.unwrap().is_ok() {}
}

#[tokio::test]
async fn persistent_session_survives_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[mqtt]\nsys_interval_secs = 0\n";
    timeout(Duration::from_secs(60), async {
        let server = TestServer::start_disk(dir.path(), config).await;
        let (client, mut eventloop, present) = persistent(server.mqtt).await;
        assert!(!present);
        client
            .subscribe("orders/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) =
                timeout(STEP, eventloop.poll()).await.unwrap().unwrap()
            {
                break;
            }
        }
        client.disconnect().await.unwrap();
        while timeout(STEP, eventloop.poll()).await.unwrap().is_ok() {}
        publish_acked(server.mqtt, "orders/1", &["before-restart"]).await;
        server.stop().await;

        let server = TestServer::start_disk(dir.path(), config).await;
        // The subscription was restored: this is queued while the client is still away.
        publish_acked(server.mqtt, "orders/2", &["after-restart"]).await;
        let (_client, mut eventloop, present) = persistent(server.mqtt).await;
        assert!(present);
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Event::Incoming(Packet::Publish(p)) =
                timeout(STEP, eventloop.poll()).await.unwrap().unwrap()
            {
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
        assert_eq!(got, ["before-restart", "after-restart"]);
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

// ---- QoS 1/2 flows in flight across a restart (raw packets) --------------------------------

const CONFIG: &str = "[mqtt]\nsys_interval_secs = 0\n";
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// Publishes QoS 1 messages from a clean session, each acknowledged.
async fn publish_qos1(addr: SocketAddr, v: ProtocolVersion, topic: &str, bodies: &[&str]) {
    let (mut p, _) = Raw::persistent(addr, v, "flight-pub").await;
    for (pid, body) in (1..).zip(bodies) {
        p.publish(topic, body.as_bytes(), mqtt::QoS::AtLeastOnce, false, pid)
            .await;
        match p.recv().await {
            Some(mqtt::Packet::PubAck(ack)) => assert_eq!(ack.packet_id, pid),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    p.send(mqtt::Packet::Disconnect(mqtt::Disconnect::default()))
        .await;
    assert_eq!(p.recv().await, None);
}

/// Waits (bounded) until the stored record of `client_id` satisfies `check`.
async fn wait_for_record(
    server: &TestServer,
    client_id: &str,
    check: impl Fn(&StoredFlight) -> bool,
) {
    let key = format!("mqtt/session/{client_id}");
    for _ in 0..500 {
        let records = server.router().load_state(&key).await.unwrap();
        let stored = records.into_iter().find(|(k, _)| *k == key);
        if let Some(session) = stored.and_then(|(_, value)| persist::decode(value)) {
            if check(&session.flight) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("record of {client_id} never matched");
}

/// Stops the broker gracefully and starts it again on the same directory.
async fn restart(server: TestServer, dir: &Path) -> TestServer {
    server.stop().await;
    TestServer::start_disk(dir, CONFIG).await
}

fn body(p: &Publish) -> &[u8] {
    &p.payload[..]
}

async fn qos1_in_flight_keeps_its_packet_id(v: ProtocolVersion) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_disk(dir.path(), CONFIG).await;
    let (mut c, _) = Raw::persistent(server.mqtt, v, "flight-q1").await;
    c.subscribe("f/#", mqtt::QoS::AtLeastOnce).await;
    publish_qos1(server.mqtt, v, "f/x", &["a", "b", "c"]).await;
    let sent: Vec<Publish> = vec![
        c.recv_publish().await,
        c.recv_publish().await,
        c.recv_publish().await,
    ];
    assert_eq!(
        sent.iter().map(body).collect::<Vec<_>>(),
        [b"a", b"b", b"c"]
    );
    // Only the middle one is acknowledged before the broker goes down.
    c.send(mqtt::Packet::PubAck(Ack::new(sent[1].packet_id)))
        .await;
    c.sync().await;
    let server = {
        let stopping = restart(server, dir.path());
        let (_, server) = tokio::join!(c.until_closed(), stopping);
        server
    };
    publish_qos1(server.mqtt, v, "f/x", &["d"]).await;
    let (mut c, present) = Raw::persistent(server.mqtt, v, "flight-q1").await;
    assert!(present);
    // The unacknowledged ones come first, in order, with their packet ids and DUP=1.
    for old in [&sent[0], &sent[2]] {
        let again = c.recv_publish().await;
        assert_eq!(
            (body(&again), again.packet_id, again.dup),
            (body(old), old.packet_id, true),
            "{v:?}"
        );
    }
    let fresh = c.recv_publish().await;
    assert_eq!((body(&fresh), fresh.dup), (&b"d"[..], false));
    assert!(fresh.packet_id != sent[0].packet_id && fresh.packet_id != sent[2].packet_id);
    for pid in [sent[0].packet_id, sent[2].packet_id, fresh.packet_id] {
        c.send(mqtt::Packet::PubAck(Ack::new(pid))).await;
    }
    c.sync().await;
    // Acknowledged now: nothing comes back after another restart.
    drop(c);
    let server = restart(server, dir.path()).await;
    let (mut c, present) = Raw::persistent(server.mqtt, v, "flight-q1").await;
    assert!(present);
    c.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn qos1_in_flight_keeps_its_packet_id_and_dup_across_a_restart() {
    for v in VERSIONS {
        timeout(
            Duration::from_secs(60),
            qos1_in_flight_keeps_its_packet_id(v),
        )
        .await
        .expect("test timed out");
    }
}

async fn pubrel_is_resent(v: ProtocolVersion) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_disk(dir.path(), CONFIG).await;
    let (mut c, _) = Raw::persistent(server.mqtt, v, "flight-q2").await;
    c.subscribe("g/#", mqtt::QoS::ExactlyOnce).await;
    let (mut p, _) = Raw::persistent(server.mqtt, v, "flight-q2-pub").await;
    p.publish("g/x", b"two", mqtt::QoS::ExactlyOnce, false, 3)
        .await;
    assert!(matches!(p.recv().await, Some(mqtt::Packet::PubRec(_))));
    p.send(mqtt::Packet::PubRel(Ack::new(3))).await;
    assert_eq!(p.recv().await, Some(mqtt::Packet::PubComp(Ack::new(3))));
    drop(p);
    let msg = c.recv_publish().await;
    assert_eq!((body(&msg), msg.qos), (&b"two"[..], mqtt::QoS::ExactlyOnce));
    c.send(mqtt::Packet::PubRec(Ack::new(msg.packet_id))).await;
    assert_eq!(
        c.recv().await,
        Some(mqtt::Packet::PubRel(Ack::new(msg.packet_id)))
    );
    let server = {
        let stopping = restart(server, dir.path());
        let (_, server) = tokio::join!(c.until_closed(), stopping);
        server
    };
    let (mut c, present) = Raw::persistent(server.mqtt, v, "flight-q2").await;
    assert!(present);
    // Only the PUBREL comes again, with the same packet id; never the PUBLISH.
    assert_eq!(
        c.recv().await,
        Some(mqtt::Packet::PubRel(Ack::new(msg.packet_id))),
        "{v:?}"
    );
    // A new message ends the replay; the PUBREL'd one still completes on its PUBCOMP.
    publish_qos1(server.mqtt, v, "g/y", &["three"]).await;
    let next = c.recv_publish().await;
    assert_eq!((body(&next), next.dup), (&b"three"[..], false));
    assert_ne!(next.packet_id, msg.packet_id);
    c.send(mqtt::Packet::PubAck(Ack::new(next.packet_id))).await;
    c.send(mqtt::Packet::PubComp(Ack::new(msg.packet_id))).await;
    c.expect_silence(Duration::from_millis(300)).await;
    drop(c);
    // Completed: no PUBREL nor PUBLISH after another restart.
    let server = restart(server, dir.path()).await;
    let (mut c, present) = Raw::persistent(server.mqtt, v, "flight-q2").await;
    assert!(present);
    c.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn pubrel_waiting_for_pubcomp_is_resent_after_a_restart() {
    for v in VERSIONS {
        timeout(Duration::from_secs(60), pubrel_is_resent(v))
            .await
            .expect("test timed out");
    }
}

async fn inbound_qos2_routed_once(v: ProtocolVersion) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_disk(dir.path(), CONFIG).await;
    let (mut s, _) = Raw::persistent(server.mqtt, v, "once-sub").await;
    s.subscribe("once/#", mqtt::QoS::AtLeastOnce).await;
    drop(s);
    let (mut p, _) = Raw::persistent(server.mqtt, v, "once-pub").await;
    p.publish("once/x", b"exactly", mqtt::QoS::ExactlyOnce, false, 7)
        .await;
    assert_eq!(p.recv().await, Some(mqtt::Packet::PubRec(Ack::new(7))));
    // The broker goes down before PUBREL.
    let server = {
        let stopping = restart(server, dir.path());
        let (_, server) = tokio::join!(p.until_closed(), stopping);
        server
    };
    wait_for_record(&server, "once-pub", |flight| flight.inbound == [7]).await;
    let (mut p, present) = Raw::persistent(server.mqtt, v, "once-pub").await;
    assert!(present);
    p.send(with_dup(publish(
        "once/x",
        b"exactly",
        mqtt::QoS::ExactlyOnce,
        false,
        7,
    )))
    .await;
    assert_eq!(p.recv().await, Some(mqtt::Packet::PubRec(Ack::new(7))));
    p.send(mqtt::Packet::PubRel(Ack::new(7))).await;
    assert_eq!(
        p.recv().await,
        Some(mqtt::Packet::PubComp(Ack::new(7))),
        "{v:?}"
    );
    // The stored record forgets the completed id at once (a crash now must not keep it).
    wait_for_record(&server, "once-pub", |flight| flight.inbound.is_empty()).await;
    // Once completed, the packet id is free again: a new message with it is routed.
    p.publish("once/x", b"next", mqtt::QoS::ExactlyOnce, false, 7)
        .await;
    assert_eq!(p.recv().await, Some(mqtt::Packet::PubRec(Ack::new(7))));
    p.send(mqtt::Packet::PubRel(Ack::new(7))).await;
    assert_eq!(p.recv().await, Some(mqtt::Packet::PubComp(Ack::new(7))));
    let (mut s, present) = Raw::persistent(server.mqtt, v, "once-sub").await;
    assert!(present);
    for expected in ["exactly", "next"] {
        let got = s.recv_publish().await;
        assert_eq!(body(&got), expected.as_bytes(), "{v:?}");
        s.send(mqtt::Packet::PubAck(Ack::new(got.packet_id))).await;
    }
    s.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn inbound_qos2_is_routed_once_across_a_restart() {
    for v in VERSIONS {
        timeout(Duration::from_secs(60), inbound_qos2_routed_once(v))
            .await
            .expect("test timed out");
    }
}

/// `packet` (a PUBLISH) with DUP set: a client's resend.
fn with_dup(mut packet: mqtt::Packet) -> mqtt::Packet {
    if let mqtt::Packet::Publish(publish) = &mut packet {
        publish.dup = true;
    }
    packet
}
