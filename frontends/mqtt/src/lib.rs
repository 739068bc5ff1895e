//! polymq-mqtt: the MQTT 3.1, 3.1.1 and 5.0 frontend.
//!
//! # Module map
//! - [`frame`]: pure codec for every control packet and MQTT 5 property (no async, no core).
//! - [`mapping`]: PUBLISH / will ⇄ core `Envelope` (topic mapping per DESIGN.md).
//! - [`session`]: one task per connection: CONNECT, QoS 0/1/2 flows, subscriptions, keep
//!   alive, will, topic aliases, flow control.
//! - [`broker`]: listener-wide state: session registry and takeover, offline persistent
//!   sessions (durable queue `mqtt/<client-id>`), session expiry, delayed wills, `$SYS`
//!   counters.
//! - [`sys`]: the `$SYS/broker/...` publisher.
//! - [`persist`]: the stored form of persistent sessions (store metadata
//!   `mqtt/session/<client-id>`), so they survive a restart with the disk backend.
//! - [`error`]: why a session ends and the DISCONNECT reason code a 5.0 client gets.
//! - [`config`]: the `[mqtt]` section of config.toml.
//!
//! # Overflow policy
//! QoS 0 deliveries to a full outbox are dropped and counted. QoS 1/2 deliveries to a
//! persistent session wait in its durable queue and go out within the client's window
//! (Receive Maximum); for a clean session they wait in a local queue of at most
//! `max_queued_messages`, beyond which they are dropped and counted (mosquitto).
//!
//! # Invariants
//! - Every connection ends through `session::Connection::finish`, which unsubscribes
//!   everything a clean session holds and hands a persistent session back to the registry.
//! - Retained messages live in the core router (persisted through the store's metadata).

pub mod broker;
pub mod config;
pub mod error;
pub mod frame;
pub mod mapping;
pub mod persist;
pub mod session;
pub mod sys;

use std::sync::Arc;

use polymq_core::net::serve_tcp;
use polymq_core::router::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use broker::Broker;

/// Serves MQTT on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<config::Config>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let broker = Arc::new(Broker::new(router, &config));
    if let Err(err) = broker.recover().await {
        tracing::error!(%err, "recovering MQTT sessions failed");
    }
    if broker.config.sys_interval_secs > 0 {
        tokio::spawn(sys::publish_loop(broker.clone(), shutdown.clone()));
    }
    let max_connections = broker.config.max_connections;
    let accepting = broker.clone();
    let served = serve_tcp(
        listener,
        shutdown,
        max_connections,
        move |stream, peer, token| session::run(accepting.clone(), stream, peer, token),
    )
    .await;
    // Every connection has handed its session back: let their records reach the store
    // before the binary persists and exits.
    let _ = tokio::time::timeout(FLUSH_WAIT, broker.flush_sessions()).await;
    served
}

/// Longest wait for session records at shutdown.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
