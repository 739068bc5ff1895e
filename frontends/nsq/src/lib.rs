//! polymq-nsq: nsqd's TCP protocol V2 and HTTP API on the polymq core.
//!
//! Existing NSQ producers and consumers (go-nsq, pynsq, nsq_tail, to_nsq, nsqadmin reading
//! `/stats`) work unchanged: topics and channels are the core's nsqd topics, every channel a
//! durable queue; messages published on any protocol to a subject that names an NSQ topic
//! reach its channels.
//!
//! # Modules
//! - [`frame`]: pure V2 codec (commands, frames, limits, nsqd's error texts).
//! - [`session`]: one task per TCP client, the V2 state machine.
//! - [`identify`]: IDENTIFY settings and feature negotiation.
//! - [`mapping`]: NSQ messages to and from the core's `Envelope`.
//! - [`error`]: session errors with nsqd's texts and fatality.
//! - [`http`] and [`stats`]: the HTTP API.
//! - [`lookupd`]: registration with nsqlookupd.
//! - [`transport`]: the connection's byte stream, plain or snappy/deflate compressed.
//! - [`node`]: state shared by the TCP listener, the HTTP API and the lookupd link.
//! - [`config`]: the `[nsq]` section of config.toml.
//!
//! # Overflow policy
//! NSQ never drops: a channel's durable queue hands a client at most RDY messages in flight,
//! and the session outbox holds `max_rdy_count` deliveries, so the outbox cannot overflow;
//! messages wait in the channel (memory or the store) while the client is slow.
//!
//! # Invariants
//! - A publish is answered `OK` only after the core accepted the message (every matched
//!   channel or topic buffer took it under the store's durability).
//! - Every error a client sees is nsqd's text, with nsqd's fatality.
//! - Supported features are advertised truthfully: snappy and deflate, no TLS.

pub mod config;
pub mod error;
pub mod frame;
pub mod http;
pub mod identify;
pub mod lookupd;
pub mod mapping;
pub mod node;
pub mod session;
pub mod stats;
pub mod transport;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::node::Node;

/// Serves nsqd's TCP protocol V2 on `listener` until `shutdown`, then waits for the
/// connections to finish. Also runs the nsqlookupd registrations when configured.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = node.config.clone();
    Node::set_port(&node.tcp_port, listener.local_addr()?.port());
    let lookupd = (!config.lookupd_tcp_addresses.is_empty())
        .then(|| tokio::spawn(lookupd::run(node.clone(), shutdown.clone())));
    let accept_node = node.clone();
    let served = polymq_core::net::serve_tcp(
        listener,
        shutdown.clone(),
        config.max_connections,
        move |stream, peer, stop| session::run(stream, peer, accept_node.clone(), stop),
    )
    .await;
    if let Some(task) = lookupd {
        let _ = task.await;
    }
    served
}

/// Serves nsqd's HTTP API on `listener` until `shutdown` (graceful: requests in progress
/// finish).
pub async fn serve_http(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    Node::set_port(&node.http_port, listener.local_addr()?.port());
    http::serve(listener, node, shutdown).await
}
