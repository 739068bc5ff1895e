//! Cross-protocol matrix: a publisher on one protocol reaches subscribers on the others, with
//! real clients (async-nats, rumqttc, libzmq via the `zmq` crate) and raw nsqd V2 bytes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use common::{TestServer, STEP};

/// An MQTT 3.1.1 client whose PUBLISHes arrive on a channel.
struct Mqtt {
    client: AsyncClient,
    rx: mpsc::Receiver<(String, Bytes)>,
    acks: mpsc::Receiver<()>,
}

impl Mqtt {
    async fn connect(server: &TestServer, id: &str) -> Self {
        let mut opts = MqttOptions::new(id, server.mqtt.ip().to_string(), server.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(64);
        let (ack_tx, acks) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone())).await;
                    }
                    Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_)) => {
                        let _ = ack_tx.send(()).await;
                    }
                    _ => {}
                }
            }
        });
        let mut this = Self { client, rx, acks };
        this.ack().await;
        this
    }

    async fn ack(&mut self) {
        tokio::time::timeout(STEP, self.acks.recv())
            .await
            .expect("mqtt ack")
            .expect("event loop");
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.ack().await;
    }

    async fn next(&mut self) -> (String, Bytes) {
        tokio::time::timeout(STEP, self.rx.recv())
            .await
            .expect("mqtt message")
            .expect("event loop")
    }
}

async fn nats(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.nats.to_string())
        .await
        .expect("nats connect")
}

/// A raw nsqd V2 consumer on `topic`/`channel` with RDY 10.
async fn nsq_consumer(server: &TestServer, topic: &str, channel: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.nsq_tcp)
        .await
        .expect("nsq connect");
    s.write_all(format!("  V2SUB {topic} {channel}\nRDY 10\n").as_bytes())
        .await
        .expect("write");
    let (kind, body) = nsq_frame(&mut s).await;
    assert_eq!((kind, &body[..]), (0, &b"OK"[..]));
    s
}

/// Reads one nsqd frame: (type, data).
async fn nsq_frame(s: &mut TcpStream) -> (u32, Vec<u8>) {
    let size = tokio::time::timeout(STEP, s.read_u32())
        .await
        .expect("nsq frame")
        .expect("read");
    let kind = s.read_u32().await.expect("type");
    let mut data = vec![0; size as usize - 4];
    s.read_exact(&mut data).await.expect("data");
    (kind, data)
}

/// Reads the next message frame's body, answering heartbeats, and FINs it.
async fn nsq_message(s: &mut TcpStream) -> Vec<u8> {
    loop {
        let (kind, data) = nsq_frame(s).await;
        if kind == 0 && data == b"_heartbeat_" {
            s.write_all(b"NOP\n").await.expect("nop");
            continue;
        }
        assert_eq!(kind, 2, "expected a message frame, got {kind}: {data:?}");
        let id = &data[10..26];
        s.write_all(&[b"FIN ", id, b"\n"].concat())
            .await
            .expect("fin");
        return data[26..].to_vec();
    }
}

async fn nsq_pub(server: &TestServer, topic: &str, body: &[u8]) {
    let mut s = TcpStream::connect(server.nsq_tcp)
        .await
        .expect("nsq connect");
    let mut cmd = format!("  V2PUB {topic}\n").into_bytes();
    cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
    cmd.extend_from_slice(body);
    s.write_all(&cmd).await.expect("write");
    assert_eq!(nsq_frame(&mut s).await, (0, b"OK".to_vec()));
}

#[tokio::test]
async fn nats_to_mqtt_and_back_with_topic_mapping() {
    let server = TestServer::start("").await;
    let nc = nats(&server).await;
    let mut mqtt = Mqtt::connect(&server, "cross-1").await;
    mqtt.subscribe("sensors/+/temp").await;
    let mut nats_sub = nc.subscribe("sensors.>").await.expect("sub");
    nc.flush().await.expect("flush");

    nc.publish("sensors.kitchen.temp", "21.5".into())
        .await
        .expect("pub");
    assert_eq!(
        mqtt.next().await,
        ("sensors/kitchen/temp".into(), Bytes::from("21.5"))
    );

    mqtt.client
        .publish("sensors/v1.2/temp", QoS::AtLeastOnce, false, "x")
        .await
        .expect("mqtt pub");
    let got = tokio::time::timeout(STEP, async {
        loop {
            let m = nats_sub.next().await.expect("nats msg");
            if m.payload == "x" {
                return m;
            }
        }
    })
    .await
    .expect("nats got the MQTT message");
    assert_eq!(
        got.subject.as_str(),
        "sensors.v1//2.temp",
        "a literal '.' maps to '//'"
    );
    server.stop().await;
}

/// MQTT topic names may hold spaces (mosquitto accepts them): MQTT subscribers get them, and
/// NATS subscribers, whose `MSG` line cannot carry a space, skip them without harm.
#[tokio::test]
async fn mqtt_topic_with_a_space_reaches_mqtt_but_not_nats() {
    let server = TestServer::start("").await;
    let nc = nats(&server).await;
    let mut nats_sub = nc.subscribe(">").await.expect("sub");
    nc.flush().await.expect("flush");
    let mut mqtt = Mqtt::connect(&server, "space-1").await;
    mqtt.subscribe("living room/#").await;

    for topic in ["living room/lamp", "hall/lamp"] {
        mqtt.client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .expect("mqtt pub");
    }
    assert_eq!(
        mqtt.next().await,
        ("living room/lamp".into(), Bytes::from("living room/lamp"))
    );
    let m = tokio::time::timeout(STEP, nats_sub.next())
        .await
        .expect("nats message")
        .expect("subscription open");
    assert_eq!(
        m.subject.as_str(),
        "hall.lamp",
        "the spaced subject was skipped"
    );
    server.stop().await;
}

#[tokio::test]
async fn mqtt_and_nats_reach_an_nsq_channel() {
    let server = TestServer::start("").await;
    let mut consumer = nsq_consumer(&server, "orders", "billing").await;
    let nc = nats(&server).await;
    nc.publish("orders", "from-nats".into()).await.expect("pub");
    nc.flush().await.expect("flush");
    assert_eq!(nsq_message(&mut consumer).await, b"from-nats");
    let mqtt = Mqtt::connect(&server, "cross-2").await;
    mqtt.client
        .publish("orders", QoS::AtLeastOnce, false, "from-mqtt")
        .await
        .expect("pub");
    assert_eq!(nsq_message(&mut consumer).await, b"from-mqtt");
    server.stop().await;
}

#[tokio::test]
async fn nsq_topic_buffers_cross_protocol_messages_until_its_first_channel() {
    let server = TestServer::start("").await;
    // Creating the topic (nsqd /topic/create semantics) makes it hold messages.
    server.router().topic("jobs").expect("topic");
    let nc = nats(&server).await;
    for i in 0..3 {
        nc.publish("jobs", format!("job-{i}").into())
            .await
            .expect("pub");
    }
    nc.flush().await.expect("flush");
    let mut consumer = nsq_consumer(&server, "jobs", "workers").await;
    for i in 0..3 {
        assert_eq!(
            nsq_message(&mut consumer).await,
            format!("job-{i}").as_bytes()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn nsq_publish_reaches_nats_and_mqtt() {
    let server = TestServer::start("").await;
    let nc = nats(&server).await;
    let mut sub = nc.subscribe("events.login").await.expect("sub");
    nc.flush().await.expect("flush");
    let mut mqtt = Mqtt::connect(&server, "cross-3").await;
    mqtt.subscribe("events/#").await;
    nsq_pub(&server, "events.login", b"alice").await;
    let m = tokio::time::timeout(STEP, sub.next())
        .await
        .expect("nats")
        .expect("msg");
    assert_eq!(m.payload, "alice");
    assert_eq!(
        mqtt.next().await,
        ("events/login".into(), Bytes::from("alice"))
    );
    server.stop().await;
}

#[tokio::test]
async fn queue_group_is_shared_by_nats_and_mqtt() {
    let server = TestServer::start("").await;
    let nc = nats(&server).await;
    let mut worker = nc
        .queue_subscribe("work", "pool".into())
        .await
        .expect("qsub");
    nc.flush().await.expect("flush");
    let mut opts = rumqttc::v5::MqttOptions::new(
        "cross-share",
        server.mqtt.ip().to_string(),
        server.mqtt.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 64);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let (ack_tx, mut ack) = mpsc::channel::<()>(4);
    tokio::spawn(async move {
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        while let Ok(event) = events.poll().await {
            match event {
                rumqttc::v5::Event::Incoming(P5::Publish(p)) => {
                    let _ = tx.send(p.payload.clone()).await;
                }
                rumqttc::v5::Event::Incoming(P5::SubAck(_)) => {
                    let _ = ack_tx.send(()).await;
                }
                _ => {}
            }
        }
    });
    client
        .subscribe("$share/pool/work", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await
        .expect("share sub");
    tokio::time::timeout(STEP, ack.recv())
        .await
        .expect("suback")
        .expect("loop");

    let publisher = nats(&server).await;
    for i in 0..40 {
        publisher
            .publish("work", format!("{i}").into())
            .await
            .expect("pub");
    }
    publisher.flush().await.expect("flush");

    let mut seen = std::collections::BTreeSet::new();
    let (mut to_nats, mut to_mqtt) = (0, 0);
    tokio::time::timeout(STEP, async {
        while seen.len() < 40 {
            tokio::select! {
                Some(m) = worker.next() => {
                    assert!(seen.insert(m.payload.to_vec()), "delivered twice");
                    to_nats += 1;
                }
                Some(p) = rx.recv() => {
                    assert!(seen.insert(p.to_vec()), "delivered twice");
                    to_mqtt += 1;
                }
            }
        }
    })
    .await
    .expect("all 40 messages delivered once across the group");
    assert!(
        to_nats > 0 && to_mqtt > 0,
        "both members took work: nats {to_nats}, mqtt {to_mqtt}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_pub_reaches_nats_and_nats_reaches_zmq_sub() {
    let server = TestServer::start("").await;
    let nc = nats(&server).await;
    let mut sub = nc.subscribe("zmq.>").await.expect("sub");
    nc.flush().await.expect("flush");
    let endpoint = format!("tcp://{}", server.zmtp);

    // libzmq SUB on the prefix "alerts": receives [subject][body] from a NATS publisher.
    let sub_endpoint = endpoint.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let zmq_sub = tokio::task::spawn_blocking(move || {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::SUB).expect("socket");
        s.set_rcvtimeo(10_000).expect("rcvtimeo");
        s.connect(&sub_endpoint).expect("connect");
        s.set_subscribe(b"alerts").expect("subscribe");
        ready_tx.send(()).expect("ready");
        s.recv_multipart(0).expect("recv")
    });
    ready_rx.recv().expect("sub ready");
    // The SUBSCRIBE travels asynchronously: publish until the subscriber has it (bounded).
    let received = tokio::time::timeout(STEP, async {
        loop {
            nc.publish("alerts.disk", "full".into()).await.expect("pub");
            nc.flush().await.expect("flush");
            if zmq_sub.is_finished() {
                return zmq_sub.await.expect("zmq sub");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("zmq SUB received");
    assert_eq!(received, vec![b"alerts.disk".to_vec(), b"full".to_vec()]);

    // libzmq PUB: [subject][body] is published to the core.
    let pub_endpoint = endpoint.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let zmq_pub = tokio::task::spawn_blocking(move || {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::PUB).expect("socket");
        s.connect(&pub_endpoint).expect("connect");
        // A PUB sends only after the broker's SUBSCRIBE arrived: repeat until told to stop.
        for _ in 0..500 {
            s.send_multipart([&b"zmq.temp"[..], b"42"], 0)
                .expect("send");
            if stop_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                break;
            }
        }
    });
    let m = tokio::time::timeout(STEP, sub.next())
        .await
        .expect("nats got zmq")
        .expect("msg");
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("zmq.temp", &b"42"[..])
    );
    let _ = stop_tx.send(());
    zmq_pub.await.expect("zmq pub");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_request_is_answered_by_a_zmq_rep_worker() {
    let server = TestServer::start("").await;
    let endpoint = format!("tcp://{}", server.zmtp);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = tokio::task::spawn_blocking(move || {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::REP).expect("socket");
        s.set_rcvtimeo(100).expect("rcvtimeo");
        s.connect(&endpoint).expect("connect");
        for _ in 0..200 {
            if stop_rx.try_recv().is_ok() {
                return;
            }
            let Ok(frames) = s.recv_multipart(0) else {
                continue;
            };
            let subject = frames[0].clone();
            let body = String::from_utf8_lossy(&frames[1]).to_uppercase();
            s.send_multipart([subject, body.into_bytes()], 0)
                .expect("reply");
        }
    });
    let nc = nats(&server).await;
    // The REP peer joins with the listener's defaults (filter `>`); ask until it is attached.
    let reply = tokio::time::timeout(STEP, async {
        loop {
            match nc.request("rpc.upper", "hello".into()).await {
                Ok(reply) => return reply,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a reply from the ZMQ worker");
    assert_eq!(reply.payload, "HELLO");
    let _ = stop_tx.send(());
    worker.await.expect("worker");
    server.stop().await;
}
