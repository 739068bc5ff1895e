//! Retained messages survive a broker restart with the disk backend.

mod common;

use std::time::Duration;

use common::{TestServer, STEP};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

/// Publishes retained messages (QoS 1, waiting for PUBACK) and disconnects.
async fn publish_retained(addr: std::net::SocketAddr, messages: &[(&str, &str)]) {
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
async fn collect_retained(
    addr: std::net::SocketAddr,
    filter: &str,
    count: usize,
) -> Vec<(String, String)> {
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
async fn persistent(addr: std::net::SocketAddr) -> (AsyncClient, rumqttc::EventLoop, bool) {
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

async fn publish_acked(addr: std::net::SocketAddr, topic: &str, bodies: &[&str]) {
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
