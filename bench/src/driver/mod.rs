//! Protocol drivers: how the load runner publishes, subscribes and requests over each wire
//! protocol, using real third-party clients where one exists.
//!
//! A scenario names subjects in canonical dotted form (`bench.0`); each driver maps them to
//! its protocol's names (MQTT `bench/0`).
//!
//! # Invariants
//! - `subscriber` returns only once the subscription is in place at the broker, so nothing
//!   published afterwards can be missed for lack of interest.

mod nats;

use std::str::FromStr;

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

fn unsupported<T>(protocol: Protocol) -> anyhow::Result<T> {
    bail!("the load runner does not drive {protocol:?} yet")
}

/// Connects a publisher.
pub async fn publisher(protocol: Protocol, addr: &str) -> anyhow::Result<Box<dyn Publisher>> {
    match protocol {
        Protocol::Nats => Ok(Box::new(nats::NatsPublisher::connect(addr).await?)),
        other => unsupported(other),
    }
}

/// Connects a subscriber on `subject`, in `group` when given.
pub async fn subscriber(
    protocol: Protocol,
    addr: &str,
    subject: &str,
    group: Option<&str>,
) -> anyhow::Result<Box<dyn Subscriber>> {
    match protocol {
        Protocol::Nats => Ok(Box::new(
            nats::NatsSubscriber::connect(addr, subject, group).await?,
        )),
        other => unsupported(other),
    }
}

/// Starts a responder that echoes every request on `subject`; it runs until the process ends.
pub async fn responder(protocol: Protocol, addr: &str, subject: &str) -> anyhow::Result<()> {
    match protocol {
        Protocol::Nats => nats::spawn_responder(addr, subject).await,
        other => unsupported(other),
    }
}

/// Connects a requester.
pub async fn requester(protocol: Protocol, addr: &str) -> anyhow::Result<Box<dyn Requester>> {
    match protocol {
        Protocol::Nats => Ok(Box::new(nats::NatsRequester::connect(addr).await?)),
        other => unsupported(other),
    }
}
