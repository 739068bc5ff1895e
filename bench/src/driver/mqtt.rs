//! MQTT driver over rumqttc (MQTT 3.1.1), at QoS 0 or QoS 1.
//!
//! Subjects map to topics by turning `.` into `/` (`bench.1` → `bench/1`); a group subscribes
//! to the shared subscription `$share/<group>/<topic>` (mosquitto serves `$share` to 3.1.1
//! clients too). Each connection's event loop runs in its own task: a publisher's counts what
//! the broker has taken (written at QoS 0, PUBACKed at QoS 1), a subscriber's forwards payloads
//! into a bounded channel, so a slow reader slows the socket instead of growing memory.
//!
//! # Invariants
//! - `connect` returns only after CONNACK, and a subscriber only after a SUBACK that grants
//!   the subscription.
//! - `flush` waits until every publish was written (QoS 0) or acknowledged (QoS 1).
//! - An event loop task ends at its first connection error: rumqttc's reconnect would hide
//!   loss, so the run reports it instead.

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use rumqttc::QoS;

use super::{unique_name, Publisher, Subscriber};

/// Longest wait for CONNACK or SUBACK.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued between the client handle and its event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Payloads queued between a subscriber's event loop and the scenario.
const DELIVERY_CAPACITY: usize = 4096;
/// Largest packet either way.
const MAX_PACKET: usize = 1 << 20;

/// `bench.1` → `bench/1`.
fn topic(subject: &str) -> String {
    subject.replace('.', "/")
}

/// The filter a subscriber asks for: the topic, shared when in a group.
fn filter(subject: &str, group: Option<&str>) -> String {
    match group {
        Some(group) => format!("$share/{group}/{}", topic(subject)),
        None => topic(subject),
    }
}

fn split_addr(addr: &str) -> anyhow::Result<(&str, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .context("MQTT address wants host:port")?;
    Ok((host, port.parse().context("MQTT port")?))
}

/// Connects and polls the event loop until CONNACK.
async fn connect(addr: &str) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (host, port) = split_addr(addr)?;
    let mut options = MqttOptions::new(unique_name("polymq-bench"), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, events.poll())
        .await
        .context("no CONNACK in time")?
        .with_context(|| format!("connecting to MQTT at {addr}"))?;
    match first {
        Event::Incoming(Incoming::ConnAck(_)) => Ok((client, events)),
        other => bail!("expected CONNACK, got {other:?}"),
    }
}

/// Publishes at one QoS; the event loop task counts what the broker has taken.
pub struct MqttPublisher {
    client: AsyncClient,
    qos: QoS,
    /// Last subject and its topic, so the mapping is done once per subject.
    topic: (String, String),
    published: u64,
    taken: watch::Receiver<u64>,
    events: JoinHandle<anyhow::Result<()>>,
}

impl MqttPublisher {
    pub async fn connect(addr: &str, qos: QoS) -> anyhow::Result<Self> {
        let (client, events) = connect(addr).await?;
        let (count, taken) = watch::channel(0);
        let events = tokio::spawn(count_taken(events, qos, count));
        Ok(Self {
            client,
            qos,
            topic: (String::new(), String::new()),
            published: 0,
            taken,
            events,
        })
    }
}

/// Polls the publisher's event loop, counting writes (QoS 0) or PUBACKs (QoS 1).
async fn count_taken(
    mut events: EventLoop,
    qos: QoS,
    count: watch::Sender<u64>,
) -> anyhow::Result<()> {
    loop {
        let taken = match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => qos == QoS::AtMostOnce,
            Ok(Event::Incoming(Incoming::PubAck(_))) => qos != QoS::AtMostOnce,
            Ok(_) => false,
            // The client handle was dropped: the publisher is done.
            Err(rumqttc::ConnectionError::RequestsDone) => return Ok(()),
            Err(err) => return Err(err).context("MQTT publisher connection"),
        };
        if taken {
            count.send_modify(|n| *n += 1);
        }
    }
}

#[async_trait]
impl Publisher for MqttPublisher {
    async fn publish(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<()> {
        if self.topic.0 != subject {
            self.topic = (subject.to_owned(), topic(subject));
        }
        self.client
            .publish_bytes(self.topic.1.clone(), self.qos, false, payload)
            .await
            .context("MQTT event loop has stopped")?;
        self.published += 1;
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let published = self.published;
        if self.taken.wait_for(|n| *n >= published).await.is_ok() {
            return Ok(());
        }
        // The event loop ended before everything was taken: report why.
        match (&mut self.events).await {
            Ok(Err(err)) => Err(err),
            Ok(Ok(())) => bail!("MQTT event loop ended before every publish was taken"),
            Err(join) => Err(join.into()),
        }
    }
}

/// Receives on one filter at one QoS.
pub struct MqttSubscriber {
    _client: AsyncClient,
    deliveries: mpsc::Receiver<Bytes>,
    events: Option<JoinHandle<anyhow::Result<()>>>,
}

impl MqttSubscriber {
    pub async fn connect(
        addr: &str,
        subject: &str,
        group: Option<&str>,
        qos: QoS,
    ) -> anyhow::Result<Self> {
        let (client, mut events) = connect(addr).await?;
        let filter = filter(subject, group);
        client.subscribe(filter.clone(), qos).await?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, await_suback(&mut events))
            .await
            .with_context(|| format!("no SUBACK for {filter} in time"))??;
        let (tx, deliveries) = mpsc::channel(DELIVERY_CAPACITY);
        let events = tokio::spawn(forward(events, tx));
        Ok(Self {
            _client: client,
            deliveries,
            events: Some(events),
        })
    }
}

/// Polls until the SUBACK arrives and checks that it granted the subscription.
async fn await_suback(events: &mut EventLoop) -> anyhow::Result<()> {
    loop {
        if let Event::Incoming(Incoming::SubAck(ack)) = events.poll().await? {
            return match ack.return_codes.first() {
                Some(rumqttc::SubscribeReasonCode::Success(_)) => Ok(()),
                other => bail!("subscription refused: {other:?}"),
            };
        }
    }
}

/// Polls the subscriber's event loop, forwarding every PUBLISH payload (rumqttc acknowledges
/// QoS 1 deliveries itself).
async fn forward(mut events: EventLoop, tx: mpsc::Sender<Bytes>) -> anyhow::Result<()> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if tx.send(publish.payload).await.is_err() {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(err) => return Err(err).context("MQTT subscriber connection"),
        }
    }
}

#[async_trait]
impl Subscriber for MqttSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        if let Some(payload) = self.deliveries.recv().await {
            return Ok(Some(payload));
        }
        match self.events.take() {
            Some(events) => events.await?.map(|()| None),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_topics_and_shared_filters() {
        assert_eq!(topic("bench.1"), "bench/1");
        assert_eq!(filter("bench.1", None), "bench/1");
        assert_eq!(filter("bench.1", Some("workers")), "$share/workers/bench/1");
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_addr("127.0.0.1:1883").ok(), Some(("127.0.0.1", 1883)));
        assert!(split_addr("127.0.0.1").is_err());
        assert!(split_addr("127.0.0.1:x").is_err());
    }
}
