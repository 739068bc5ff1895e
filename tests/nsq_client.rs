//! NSQ with a real client library (tokio-nsq): producer, consumers on two channels, requeue,
//! and NSQ ↔ NATS traffic through the shared subject space.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, STEP};
use tokio::time::timeout;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConfigSharedCompression, NSQConsumer, NSQConsumerConfig,
    NSQConsumerConfigSources, NSQDeflateLevel, NSQEvent, NSQMessage, NSQProducer,
    NSQProducerConfig, NSQRequeueDelay, NSQTopic,
};

async fn run(test: impl std::future::Future<Output = ()>) {
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

async fn producer(server: &TestServer) -> NSQProducer {
    let mut producer = NSQProducerConfig::new(server.nsq_tcp.to_string()).build();
    match timeout(STEP, producer.consume()).await.unwrap() {
        Some(NSQEvent::Healthy()) => {}
        other => panic!("producer did not connect: {other:?}"),
    }
    producer
}

fn consumer(server: &TestServer, topic: &Arc<NSQTopic>, channel: &str) -> NSQConsumer {
    NSQConsumerConfig::new(topic.clone(), NSQChannel::new(channel).unwrap())
        .set_max_in_flight(10)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![server
            .nsq_tcp
            .to_string()]))
        .build()
}

async fn next_message(consumer: &mut NSQConsumer) -> NSQMessage {
    timeout(STEP, consumer.consume_filtered())
        .await
        .expect("no message")
        .expect("consumer ended")
}

async fn acked(producer: &mut NSQProducer) {
    match timeout(STEP, producer.consume()).await.unwrap() {
        Some(NSQEvent::Ok()) => {}
        other => panic!("publish not acknowledged: {other:?}"),
    }
}

#[tokio::test]
async fn producer_and_consumers_on_two_channels() {
    run(async {
        let server = TestServer::start("").await;
        let topic = NSQTopic::new("client_topic").unwrap();
        let mut a = consumer(&server, &topic, "a");
        let mut b = consumer(&server, &topic, "b");
        let mut producer = producer(&server).await;
        // Wait until both channels exist so neither misses a message.
        timeout(STEP, async {
            loop {
                let ready = server
                    .router()
                    .get_topic("client_topic")
                    .is_some_and(|t| t.channels().len() == 2);
                if ready {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("consumers did not subscribe");
        producer.publish(&topic, b"one".to_vec()).await.unwrap();
        acked(&mut producer).await;
        producer
            .publish_multiple(&topic, vec![b"two".to_vec(), b"three".to_vec()])
            .await
            .unwrap();
        acked(&mut producer).await;
        for consumer in [&mut a, &mut b] {
            let mut bodies = Vec::new();
            for _ in 0..3 {
                let msg = next_message(consumer).await;
                bodies.push(String::from_utf8(msg.body.clone()).unwrap());
                msg.finish().await;
            }
            bodies.sort();
            assert_eq!(bodies, ["one", "three", "two"]);
        }

        producer.publish(&topic, b"again".to_vec()).await.unwrap();
        acked(&mut producer).await;
        let first = next_message(&mut a).await;
        assert_eq!(first.attempt, 1);
        first.requeue(NSQRequeueDelay::NoDelay).await;
        let second = next_message(&mut a).await;
        assert_eq!(
            (second.body.as_slice(), second.attempt),
            (b"again".as_slice(), 2)
        );
        second.touch().await;
        second.finish().await;
        next_message(&mut b).await.finish().await;
    })
    .await;
}

#[tokio::test]
async fn nats_publishers_reach_nsq_channels() {
    run(async {
        let server = TestServer::start("").await;
        let topic = NSQTopic::new("bridge").unwrap();
        let mut nsq = consumer(&server, &topic, "c");
        timeout(STEP, async {
            while server
                .router()
                .get_topic("bridge")
                .is_none_or(|t| t.channels().is_empty())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("consumer did not subscribe");
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        nats.publish("bridge", "from nats".into()).await.unwrap();
        nats.flush().await.unwrap();
        let msg = next_message(&mut nsq).await;
        assert_eq!(msg.body, b"from nats");
        msg.finish().await;
    })
    .await;
}

#[tokio::test]
async fn nsq_publishers_reach_nats_subscribers() {
    run(async {
        let server = TestServer::start("").await;
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        let mut sub = nats.subscribe("metrics.cpu").await.unwrap();
        nats.flush().await.unwrap();
        let mut producer = producer(&server).await;
        producer
            .publish(&NSQTopic::new("metrics.cpu").unwrap(), b"42".to_vec())
            .await
            .unwrap();
        acked(&mut producer).await;
        let msg = timeout(STEP, futures::StreamExt::next(&mut sub))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.payload.as_ref(), b"42");
    })
    .await;
}

/// A compressed producer and consumer: every frame both ways goes through the negotiated
/// compression, and the broker reports it in /stats.
async fn compressed_round_trip(compression: NSQConfigSharedCompression, topic_name: &str) {
    let server = TestServer::start("").await;
    let topic = NSQTopic::new(topic_name).unwrap();
    let shared = NSQConfigShared::new().set_compression(compression);
    let mut consumer = NSQConsumerConfig::new(topic.clone(), NSQChannel::new("z").unwrap())
        .set_max_in_flight(50)
        .set_shared(shared.clone())
        .set_sources(NSQConsumerConfigSources::Daemons(vec![server
            .nsq_tcp
            .to_string()]))
        .build();
    let mut producer = NSQProducerConfig::new(server.nsq_tcp.to_string())
        .set_shared(shared)
        .build();
    match timeout(STEP, producer.consume()).await.unwrap() {
        Some(NSQEvent::Healthy()) => {}
        other => panic!("producer did not connect: {other:?}"),
    }
    // Bodies large and repetitive enough to span snappy blocks and deflate windows.
    let bodies: Vec<Vec<u8>> = (0..20u8)
        .map(|i| std::iter::repeat_n(b'a' + i, 40_000 + usize::from(i)).collect())
        .collect();
    producer
        .publish_multiple(&topic, bodies.clone())
        .await
        .unwrap();
    acked(&mut producer).await;
    let mut received = Vec::new();
    for _ in 0..bodies.len() {
        let msg = next_message(&mut consumer).await;
        received.push(msg.body.clone());
        msg.finish().await;
    }
    received.sort();
    assert_eq!(received, bodies);
}

#[tokio::test]
async fn snappy_compressed_clients() {
    run(compressed_round_trip(
        NSQConfigSharedCompression::Snappy,
        "snappy_topic",
    ))
    .await;
}

#[tokio::test]
async fn deflate_compressed_clients() {
    run(compressed_round_trip(
        NSQConfigSharedCompression::Deflate(NSQDeflateLevel::new(3).unwrap()),
        "deflate_topic",
    ))
    .await;
}
