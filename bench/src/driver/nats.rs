//! NATS driver over async-nats (the official Rust client).

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;

use super::{Publisher, Requester, Subscriber};

async fn connect(addr: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .client_capacity(1 << 16)
        .connect(addr)
        .await
        .with_context(|| format!("connecting to NATS at {addr}"))
}

/// Publishes with `PUB`.
pub struct NatsPublisher(async_nats::Client);

impl NatsPublisher {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        Ok(Self(connect(addr).await?))
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<()> {
        Ok(self.0.publish(subject.to_owned(), payload).await?)
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.0.flush().await?)
    }
}

/// Receives with `SUB` (optionally in a queue group).
pub struct NatsSubscriber {
    _client: async_nats::Client,
    sub: async_nats::Subscriber,
}

impl NatsSubscriber {
    pub async fn connect(addr: &str, subject: &str, group: Option<&str>) -> anyhow::Result<Self> {
        let client = connect(addr).await?;
        let sub = match group {
            Some(group) => {
                client
                    .queue_subscribe(subject.to_owned(), group.to_owned())
                    .await?
            }
            None => client.subscribe(subject.to_owned()).await?,
        };
        client.flush().await?;
        Ok(Self {
            _client: client,
            sub,
        })
    }
}

#[async_trait]
impl Subscriber for NatsSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        Ok(self.sub.next().await.map(|m| m.payload))
    }
}

/// Echoes requests back to their reply subject.
pub async fn spawn_responder(addr: &str, subject: &str) -> anyhow::Result<()> {
    let client = connect(addr).await?;
    let mut sub = client.subscribe(subject.to_owned()).await?;
    client.flush().await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                if client.publish(reply, msg.payload).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(())
}

/// Sends requests with a reply inbox.
pub struct NatsRequester(async_nats::Client);

impl NatsRequester {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        Ok(Self(connect(addr).await?))
    }
}

#[async_trait]
impl Requester for NatsRequester {
    async fn request(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<Bytes> {
        Ok(self.0.request(subject.to_owned(), payload).await?.payload)
    }
}
