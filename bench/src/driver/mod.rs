//! Protocol drivers: how the load runner publishes, subscribes and requests over each wire
//! protocol, using real third-party clients where one exists.
//!
//! A scenario names subjects in canonical dotted form (`bench.0`); each driver maps them to
//! its protocol's names (MQTT `bench/0`, NSQ topic `bench.0`, ZMTP frame 0 `bench.0`).
//!
//! | protocol | driver | publish | subscribe (plain / group) | request |
//! |---|---|---|---|---|
//! | NATS | async-nats | `PUB` | `SUB` / queue group | inbox + `SUB` |
//! | MQTT | rumqttc (3.1.1) | `PUBLISH` at QoS 0 or 1 | filter / `$share/<group>/…` | – |
//! | NSQ | raw TCP V2 | `PUB`, or `MPUB` of `batch` | one channel each / one shared channel | – |
//! | ZMTP | libzmq (`zmq`) | PUB, or PUSH for groups | SUB prefix / PULL | REQ → REP |
//!
//! A ZMTP address may name two ports, `host:port1,port2`: publishers and requesters use the
//! first, subscribers, workers and responders the second (a libzmq proxy's frontend and
//! backend). Every other protocol takes `host:port`.
//!
//! # Invariants
//! - `subscriber` and `responder` return only once the subscription is in place at the
//!   broker, so nothing published afterwards can be missed for lack of interest.
//! - `publisher` returns only once messages it sends can reach the broker's subscribers (a
//!   ZMQ PUB drops what it sends before the broker's subscription has reached it).
//! - `Publisher::flush` returns only once the broker has everything published so far (for
//!   acknowledged protocols: every acknowledgement has arrived).

mod mqtt;
mod nats;
mod nsq;
mod zmtp;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use async_trait::async_trait;
use bytes::Bytes;

/// The wire protocols the runner can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NATS (async-nats).
    Nats,
    /// MQTT at QoS 0.
    Mqtt,
    /// MQTT at QoS 1.
    MqttQos1,
    /// NSQ TCP protocol V2.
    Nsq,
    /// ZMTP (libzmq).
    Zmtp,
}

impl FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "nats" => Self::Nats,
            "mqtt" => Self::Mqtt,
            "mqtt-qos1" => Self::MqttQos1,
            "nsq" => Self::Nsq,
            "zmtp" => Self::Zmtp,
            other => bail!("unknown protocol {other:?}"),
        })
    }
}

/// Sends messages.
#[async_trait]
pub trait Publisher: Send {
    /// Publishes one message.
    async fn publish(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<()>;
    /// Waits until everything published has reached the broker.
    async fn flush(&mut self) -> anyhow::Result<()>;
}

/// Receives messages.
#[async_trait]
pub trait Subscriber: Send {
    /// The next payload; `None` when the connection ended.
    async fn next(&mut self) -> anyhow::Result<Option<Bytes>>;
}

/// Sends requests and waits for their replies.
#[async_trait]
pub trait Requester: Send {
    /// One round trip.
    async fn request(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<Bytes>;
}

/// A name no other connection of this process uses: `<prefix>-<pid>-<n>`.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// How a publisher is meant to deliver: to every subscriber or to one member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// The receivers form one group (ZMTP then publishes with PUSH instead of PUB).
    pub to_group: bool,
    /// Messages per publish command (NSQ `MPUB` when above 1; the others ignore it).
    pub batch: usize,
}

fn unsupported<T>(protocol: Protocol, what: &str) -> anyhow::Result<T> {
    bail!("the load runner does not drive {what} over {protocol:?}")
}

/// Connects a publisher.
pub async fn publisher(
    protocol: Protocol,
    addr: &str,
    options: PublishOptions,
) -> anyhow::Result<Box<dyn Publisher>> {
    Ok(match protocol {
        Protocol::Nats => Box::new(nats::NatsPublisher::connect(addr).await?),
        Protocol::Mqtt => {
            Box::new(mqtt::MqttPublisher::connect(addr, mqtt::QoS::AtMostOnce).await?)
        }
        Protocol::MqttQos1 => {
            Box::new(mqtt::MqttPublisher::connect(addr, mqtt::QoS::AtLeastOnce).await?)
        }
        Protocol::Nsq => Box::new(nsq::NsqPublisher::connect(addr, options.batch).await?),
        Protocol::Zmtp => Box::new(zmtp::ZmtpPublisher::connect(addr, options.to_group).await?),
    })
}

/// Connects a subscriber on `subject`, in `group` when given.
pub async fn subscriber(
    protocol: Protocol,
    addr: &str,
    subject: &str,
    group: Option<&str>,
) -> anyhow::Result<Box<dyn Subscriber>> {
    Ok(match protocol {
        Protocol::Nats => Box::new(nats::NatsSubscriber::connect(addr, subject, group).await?),
        Protocol::Mqtt => Box::new(
            mqtt::MqttSubscriber::connect(addr, subject, group, mqtt::QoS::AtMostOnce).await?,
        ),
        Protocol::MqttQos1 => Box::new(
            mqtt::MqttSubscriber::connect(addr, subject, group, mqtt::QoS::AtLeastOnce).await?,
        ),
        Protocol::Nsq => Box::new(nsq::NsqSubscriber::connect(addr, subject, group).await?),
        Protocol::Zmtp => Box::new(zmtp::ZmtpSubscriber::connect(addr, subject, group).await?),
    })
}

/// Starts a responder that echoes every request on `subject`; it runs until the process ends.
pub async fn responder(protocol: Protocol, addr: &str, subject: &str) -> anyhow::Result<()> {
    match protocol {
        Protocol::Nats => nats::spawn_responder(addr, subject).await,
        Protocol::Zmtp => zmtp::spawn_responder(addr).await,
        other => unsupported(other, "request/reply"),
    }
}

/// Connects a requester.
pub async fn requester(protocol: Protocol, addr: &str) -> anyhow::Result<Box<dyn Requester>> {
    match protocol {
        Protocol::Nats => Ok(Box::new(nats::NatsRequester::connect(addr).await?)),
        Protocol::Zmtp => Ok(Box::new(zmtp::ZmtpRequester::connect(addr).await?)),
        other => unsupported(other, "request/reply"),
    }
}
