//! Registration with nsqlookupd over its TCP protocol, as nsqd does it.
//!
//! ```text
//! nsqd → lookupd:  "  V1"
//!                  IDENTIFY\n[u32 BE size][JSON {version, tcp_port, http_port, hostname,
//!                                                broadcast_address, topology_zone, topology_region}]
//!                  REGISTER <topic>[ <channel>]\n   UNREGISTER <topic>[ <channel>]\n   PING\n
//! lookupd → nsqd:  [u32 BE size][data]             (OK, the IDENTIFY JSON, or E_… text)
//! ```
//!
//! One task per configured address. On (re)connect it identifies, then registers every
//! topic (a topic with channels is registered through its channels, as nsqd's connect
//! callback does). Afterwards it sends REGISTER/UNREGISTER for what changed whenever the
//! node's topology is poked, and PING every 15 s; the PING tick also re-compares, so changes
//! the core makes on its own (ephemeral deletions) are announced. A failed round trip closes
//! the connection; the next tick reconnects.
//!
//! # Invariants
//! - Every round trip is bounded (1 s connect, 1 s per read and write) and every response is
//!   bounded by `max_body_size`.
//! - A registration is remembered only after nsqlookupd answered it.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::node::{Node, NSQD_VERSION};

/// nsqd's lookupd heartbeat period.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// nsqd's dial and per-operation deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// The lookup protocol magic.
const MAGIC_V1: &[u8] = b"  V1";

/// One registration: a topic, or a topic's channel.
type Registration = (String, Option<String>);

/// Runs the registration loop for every configured nsqlookupd until `shutdown`.
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let tasks: Vec<_> = node
        .config
        .lookupd_tcp_addresses
        .iter()
        .map(|addr| tokio::spawn(peer_loop(node.clone(), addr.clone(), shutdown.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// What nsqlookupd should know: every topic, and every channel of every topic.
fn desired(node: &Node) -> BTreeSet<Registration> {
    let mut set = BTreeSet::new();
    for topic in node.router.topics() {
        set.insert((topic.name().to_owned(), None));
        for (channel, _) in topic.channels() {
            set.insert((topic.name().to_owned(), Some(channel)));
        }
    }
    set
}

/// The link to one nsqlookupd.
struct Peer {
    addr: String,
    conn: Option<TcpStream>,
    registered: BTreeSet<Registration>,
    max_response: u64,
}

async fn peer_loop(node: Arc<Node>, addr: String, shutdown: CancellationToken) {
    let mut peer = Peer {
        addr,
        conn: None,
        registered: BTreeSet::new(),
        max_response: node.config.max_body_size,
    };
    let mut topology = node.topology.subscribe();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let pinging = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ping.tick() => true,
            changed = topology.changed() => match changed {
                Ok(()) => false,
                Err(_) => return,
            },
        };
        if let Err(err) = peer.sync(&node, pinging).await {
            tracing::warn!(lookupd = %peer.addr, %err, "nsqlookupd round trip failed");
            peer.conn = None;
        }
    }
}

impl Peer {
    /// Connects if needed, sends what changed, and PINGs when asked.
    async fn sync(&mut self, node: &Node, ping: bool) -> std::io::Result<()> {
        if self.conn.is_none() {
            self.connect(node).await?;
            return Ok(());
        }
        self.send_changes(node).await?;
        if ping {
            self.command(b"PING\n").await?;
        }
        Ok(())
    }

    async fn connect(&mut self, node: &Node) -> std::io::Result<()> {
        let stream = bounded(TcpStream::connect(&self.addr)).await??;
        self.conn = Some(stream);
        self.registered.clear();
        bounded(self.conn_mut()?.write_all(MAGIC_V1)).await??;
        let identity = serde_json::json!({
            "version": NSQD_VERSION,
            "tcp_port": node.tcp_port.load(Ordering::Relaxed),
            "http_port": node.http_port.load(Ordering::Relaxed),
            "hostname": node.hostname,
            "broadcast_address": node.broadcast_address(),
            "topology_zone": "",
            "topology_region": "",
        })
        .to_string();
        let mut cmd = BytesMut::from(&b"IDENTIFY\n"[..]);
        cmd.put_u32(u32::try_from(identity.len()).unwrap_or(u32::MAX));
        cmd.put_slice(identity.as_bytes());
        let reply = self.command(&cmd).await?;
        if reply.starts_with(b"E_") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&reply).into_owned(),
            ));
        }
        let want = desired(node);
        for (topic, channel) in &want {
            let has_channels = want.iter().any(|(t, c)| t == topic && c.is_some());
            if channel.is_none() && has_channels {
                continue;
            }
            self.command(&line("REGISTER", topic, channel.as_deref()))
                .await?;
        }
        self.registered = want;
        Ok(())
    }

    async fn send_changes(&mut self, node: &Node) -> std::io::Result<()> {
        let want = desired(node);
        let gone: Vec<Registration> = self.registered.difference(&want).cloned().collect();
        // Channels first, then their topics.
        for (topic, channel) in gone.iter().rev() {
            self.command(&line("UNREGISTER", topic, channel.as_deref()))
                .await?;
            self.registered.remove(&(topic.clone(), channel.clone()));
        }
        let new: Vec<Registration> = want.difference(&self.registered).cloned().collect();
        for (topic, channel) in new {
            self.command(&line("REGISTER", &topic, channel.as_deref()))
                .await?;
            self.registered.insert((topic, channel));
        }
        Ok(())
    }

    fn conn_mut(&mut self) -> std::io::Result<&mut TcpStream> {
        self.conn
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))
    }

    /// One round trip: write `cmd`, read `[size][data]`.
    async fn command(&mut self, cmd: &[u8]) -> std::io::Result<Vec<u8>> {
        let max = self.max_response;
        let conn = self.conn_mut()?;
        bounded(conn.write_all(cmd)).await??;
        let size = bounded(conn.read_i32()).await??;
        if u64::try_from(size).map_or(true, |s| s > max) {
            return Err(std::io::Error::other(format!(
                "response body size ({size}) is greater than limit ({max})"
            )));
        }
        let mut data = vec![0u8; usize::try_from(size).unwrap_or_default()];
        bounded(conn.read_exact(&mut data)).await??;
        Ok(data)
    }
}

/// `VERB topic[ channel]\n`.
fn line(verb: &str, topic: &str, channel: Option<&str>) -> Vec<u8> {
    match channel {
        Some(channel) => format!("{verb} {topic} {channel}\n"),
        None => format!("{verb} {topic}\n"),
    }
    .into_bytes()
}

async fn bounded<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(line("REGISTER", "t", None), b"REGISTER t\n");
        assert_eq!(line("UNREGISTER", "t", Some("c")), b"UNREGISTER t c\n");
    }
}
