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
//! - [`websocket`]: MQTT over WebSocket: the upgrade and a byte stream over binary messages.
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
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use polymq_core::net::serve_tcp;
use polymq_core::router::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use broker::Broker;

/// Serves MQTT on `listener`, and MQTT over WebSocket on `websocket` if given, until
/// `shutdown` is cancelled. Both share one session registry.
pub async fn serve(
    listener: TcpListener,
    websocket: Option<TcpListener>,
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
    let served = match websocket {
        Some(ws) => {
            let (tcp, ws) = tokio::join!(
                accept_loop(broker.clone(), listener, Transport::Tcp, shutdown.clone()),
                accept_loop(broker.clone(), ws, Transport::WebSocket, shutdown)
            );
            tcp.and(ws)
        }
        None => accept_loop(broker.clone(), listener, Transport::Tcp, shutdown).await,
    };
    // Every connection has handed its session back: let their records reach the store
    // before the binary persists and exits.
    let _ = tokio::time::timeout(FLUSH_WAIT, broker.flush_sessions()).await;
    served
}

/// How a listener's connections carry MQTT.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// MQTT bytes straight on TCP.
    Tcp,
    /// An HTTP upgrade, then MQTT in binary WebSocket messages.
    WebSocket,
}

/// Accepts connections on `listener` (at most `max_connections`, as mosquitto counts them
/// per listener) and runs a session for each.
async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    transport: Transport,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max_connections = broker.config.max_connections;
    // One closure per transport: a plain connection's task holds only the session's future.
    match transport {
        Transport::Tcp => {
            serve_tcp(
                listener,
                shutdown,
                max_connections,
                move |stream, peer, token| session::run(broker.clone(), stream, peer, token),
            )
            .await
        }
        Transport::WebSocket => {
            serve_tcp(
                listener,
                shutdown,
                max_connections,
                move |stream, peer, token| upgrade_then_run(broker.clone(), stream, peer, token),
            )
            .await
        }
    }
}

/// Answers the WebSocket upgrade within `connect_timeout_ms` (which then also bounds the
/// CONNECT, as on the plain listener) and runs the session over it.
async fn upgrade_then_run(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let limit = Duration::from_millis(broker.config.connect_timeout_ms);
    let max_packet = usize::try_from(broker.config.max_packet_size).unwrap_or(usize::MAX);
    // Boxed: the handshake's state must not stay in the connection's task afterwards.
    let upgrade = Box::pin(websocket::accept(stream, max_packet));
    match tokio::time::timeout(limit, upgrade).await {
        Ok(Ok(ws)) => session::run(broker, ws, peer, shutdown).await,
        Ok(Err(err)) => tracing::debug!(%err, %peer, "WebSocket upgrade refused"),
        Err(_) => tracing::debug!(%peer, "WebSocket upgrade timed out"),
    }
}

/// Longest wait for session records at shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
