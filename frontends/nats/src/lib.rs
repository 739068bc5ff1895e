//! polymq-nats: the NATS client protocol on the polymq core, so that unmodified NATS clients
//! (nats.go, nats-py, async-nats, the `nats` CLI) work as against nats-server.
//!
//! # Layout
//! - [`frame`]: the pure wire codec (ops, limits, `ServerCodec` / `ClientCodec`).
//! - [`connect`]: INFO, CONNECT options and credential checks.
//! - [`mapping`]: subjects and header blocks to and from the core's `Envelope`.
//! - `session`: one task per connection (handshake, op loop, deliveries, keepalive).
//! - [`monitor`]: the connection registry and `/varz`, `/connz`, `/subsz`.
//! - [`error`]: why a session ends and nats-server's `-ERR` text for it.
//! - [`config`]: the `[nats]` section of config.toml.
//!
//! # Semantics
//! - Subjects are canonical as they are; `*` and `>` are the core's wildcards. Queue groups are
//!   core groups (shared with NSQ channels, MQTT `$share` and ZMQ PULL groups of the same
//!   filter and name). `echo:false` is the core's no-local. A subject or reply subject holding
//!   a space (MQTT and ZMTP names may) cannot be written in a `MSG` line: it is not delivered
//!   and counted as dropped.
//! - Delivery is at most once. A request (PUB with reply-to) that reaches no subscriber gets
//!   the 503 no-responders status when the client asked for it.
//!
//! # Overflow policy
//! Slow consumers are disconnected, as nats-server does. Pending output is counted in bytes in
//! the session's write buffer; passing `max_pending`, overflowing the outbox that feeds it
//! (`Overflow::Disconnect`, `max_pending / 128` messages, a burst buffer), or a write stalled
//! for `write_deadline` closes the connection without flushing anything more and without an
//! `-ERR` (nats-server's `markConnAsClosed` skips the flush for slow consumers; the client
//! reads EOF), and counts it in `/varz` `slow_consumers`.
//!
//! # Invariants
//! - The router is never awaited and no lock is held across an `.await`.
//! - Every session deregisters its subscriptions and its monitor entry when it ends.

pub mod config;
pub mod connect;
pub mod error;
pub mod frame;
pub mod mapping;
pub mod monitor;
mod session;

use std::sync::Arc;

use polymq_core::net::serve_tcp;
use polymq_core::router::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::connect::{Auth, Info};
use crate::monitor::{Monitor, Settings};
use crate::session::Shared;

/// Connections accepted beyond `max_connections` only to be told
/// `-ERR 'maximum connections exceeded'` (the accept loop stops past this many).
const OVER_LIMIT_GRACE: usize = 1024;

/// Serves the NATS client protocol on `listener` until `shutdown` is cancelled, then waits
/// for every connection to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<config::Config>,
    shutdown: CancellationToken,
    monitor: Monitor,
) -> std::io::Result<()> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let local = listener.local_addr()?;
    monitor.configure(Settings::new(&config, local, monitor.server_id()));
    let info = Info::new(
        &config,
        monitor.server_id(),
        local.ip().to_string(),
        local.port(),
    );
    let shared = Arc::new(Shared {
        router,
        auth: Auth::from_config(&config),
        info,
        monitor,
        config,
    });
    let admit = shared
        .config
        .max_connections
        .saturating_add(OVER_LIMIT_GRACE);
    serve_tcp(listener, shutdown, admit, move |stream, peer, token| {
        session::run(stream, peer, shared.clone(), token)
    })
    .await
}
