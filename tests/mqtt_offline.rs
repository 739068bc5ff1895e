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

/// Subscribes `client_id` to `filter` with a persistent session and disconnects it, then
/// publishes `bodies` to `topic` at QoS 1 (each acknowledged) while it is away, and
/// reconnects it. Returns the publisher and the resumed session's messages.
async fn publish_while_offline(
    server: &TestServer,
    client_id: &str,
    filter: &str,
    topic: &str,
    bodies: &[String],
) -> (AsyncClient, AsyncClient, mpsc::Receiver<Vec<u8>>) {
    let (sub, _rx, mut sub_acks) = connect(server, client_id).await;
    ack(&mut sub_acks).await;
    sub.subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    ack(&mut sub_acks).await;
    sub.disconnect().await.expect("disconnect");

    let (publisher, _prx, mut pub_acks) = connect(server, &format!("{client_id}-pub")).await;
    ack(&mut pub_acks).await;
    for body in bodies {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, body.clone())
            .await
            .expect("pub");
        ack(&mut pub_acks).await;
    }

    let (resumed, rx, mut sub_acks) = connect(server, client_id).await;
    ack(&mut sub_acks).await;
    (publisher, resumed, rx)
}

/// The next `n` payloads.
async fn next_payloads(rx: &mut mpsc::Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(
            tokio::time::timeout(STEP, rx.recv())
                .await
                .expect("queued")
                .expect("loop"),
        );
    }
    got
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn offline_queue_keeps_the_oldest_max_queued_messages() {
    let server = TestServer::start("[mqtt]\nmax_queued_messages = 3\n").await;
    let (publisher, _sub, mut rx) = publish_while_offline(
        &server,
        "offline-sub",
        "limit/t",
        "limit/t",
        &bodies("m", 10),
    )
    .await;
    assert_eq!(
        next_payloads(&mut rx, 3).await,
        [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]
    );
    publisher
        .publish("limit/t", QoS::AtLeastOnce, false, "live")
        .await
        .expect("pub");
    assert_eq!(
        next_payloads(&mut rx, 1).await,
        [b"live".to_vec()],
        "nothing beyond the cap was queued"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_offline_persistent_member_keeps_its_share() {
    let server = TestServer::start("").await;
    let (_publisher, _member, mut rx) = publish_while_offline(
        &server,
        "share-member",
        "$share/workers/jobs",
        "jobs",
        &bodies("job-", 3),
    )
    .await;
    assert_eq!(
        next_payloads(&mut rx, 3).await,
        [b"job-0".to_vec(), b"job-1".to_vec(), b"job-2".to_vec()]
    );
    server.stop().await;
}
