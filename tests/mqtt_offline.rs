//! Persistent sessions while their client is offline: the queue is capped at
//! `max_queued_messages` (newer messages dropped while full, as mosquitto does, older ones
//! delivered on resume), and a `$share` membership is kept, so the group's messages wait for
//! the session (PROTOCOLS.md §6.3).

mod common;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use common::{TestServer, STEP};

/// Connects `id` with a persistent session; PUBLISH payloads arrive on the channel.
async fn connect(
    server: &TestServer,
    id: &str,
) -> (AsyncClient, mpsc::Receiver<Vec<u8>>, mpsc::Receiver<()>) {
    let mut opts = MqttOptions::new(id, server.mqtt.ip().to_string(), server.mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::channel(64);
    let (ack_tx, acks) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(p.payload.to_vec()).await;
                }
                Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_) | Packet::PubAck(_)) => {
                    let _ = ack_tx.send(()).await;
                }
                Event::Outgoing(rumqttc::Outgoing::Disconnect) => break,
                _ => {}
            }
        }
    });
    (client, rx, acks)
}

async fn ack(acks: &mut mpsc::Receiver<()>) {
    tokio::time::timeout(STEP, acks.recv())
        .await
        .expect("ack")
        .expect("event loop");
}

#[tokio::test]
async fn offline_queue_keeps_the_oldest_max_queued_messages() {
    let server = TestServer::start("[mqtt]\nmax_queued_messages = 3\n").await;
    let (sub, _rx, mut sub_acks) = connect(&server, "offline-sub").await;
    ack(&mut sub_acks).await;
    sub.subscribe("limit/t", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    ack(&mut sub_acks).await;
    sub.disconnect().await.expect("disconnect");

    let (publisher, _prx, mut pub_acks) = connect(&server, "offline-pub").await;
    ack(&mut pub_acks).await;
    for i in 0..10 {
        publisher
            .publish("limit/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("pub");
        ack(&mut pub_acks).await;
    }

    let (_sub, mut rx, mut sub_acks) = connect(&server, "offline-sub").await;
    ack(&mut sub_acks).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(STEP, rx.recv())
                .await
                .expect("queued")
                .expect("loop"),
        );
    }
    assert_eq!(got, [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    publisher
        .publish("limit/t", QoS::AtLeastOnce, false, "live")
        .await
        .expect("pub");
    let next = tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("live")
        .expect("loop");
    assert_eq!(next, b"live", "nothing beyond the cap was queued");
    server.stop().await;
}

#[tokio::test]
async fn an_offline_persistent_member_keeps_its_share() {
    let server = TestServer::start("").await;
    let (member, _rx, mut acks) = connect(&server, "share-member").await;
    ack(&mut acks).await;
    member
        .subscribe("$share/workers/jobs", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    ack(&mut acks).await;
    member.disconnect().await.expect("disconnect");

    let (publisher, _prx, mut pub_acks) = connect(&server, "share-publisher").await;
    ack(&mut pub_acks).await;
    for i in 0..3 {
        publisher
            .publish("jobs", QoS::AtLeastOnce, false, format!("job-{i}"))
            .await
            .expect("pub");
        ack(&mut pub_acks).await;
    }

    let (_member, mut rx, mut acks) = connect(&server, "share-member").await;
    ack(&mut acks).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(STEP, rx.recv())
                .await
                .expect("queued")
                .expect("loop"),
        );
    }
    assert_eq!(
        got,
        [b"job-0".to_vec(), b"job-1".to_vec(), b"job-2".to_vec()]
    );
    server.stop().await;
}
