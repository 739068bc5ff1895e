//! Wiring: open storage, recover the router, bind every listener, run the frontends, drain.
//!
//! [`start`] binds all listeners before it returns, so callers (the binary, the test harness)
//! know every address, including ephemeral ports. [`Running::shutdown`] stops accepting,
//! asks every connection to close, waits up to the grace period, then persists the store.
//!
//! # Invariants
//! - Every frontend task and the admin listener share one root [`CancellationToken`].
//! - The store is persisted (`SyncAll`) after the frontends stopped, so nothing acknowledged is
//!   left in user-space buffers at exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use polymq_core::{PersistMode, Router, StoreError};

use crate::admin;
use crate::config::Config;

/// Where each enabled listener is bound.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    /// NSQ TCP protocol V2.
    pub nsq_tcp: Option<SocketAddr>,
    /// NSQ HTTP API.
    pub nsq_http: Option<SocketAddr>,
    /// NATS.
    pub nats: Option<SocketAddr>,
    /// MQTT.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over WebSocket, when `mqtt.websocket_listen` is set.
    pub mqtt_websocket: Option<SocketAddr>,
    /// ZMTP (the main listener).
    pub zmtp: Option<SocketAddr>,
    /// Admin HTTP.
    pub admin: Option<SocketAddr>,
}

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Storage could not be opened or recovered.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// A started broker.
#[derive(Debug)]
pub struct Running {
    /// Bound addresses.
    pub addrs: Addrs,
    /// The routing core (for embedding and tests).
    pub router: Router,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, std::io::Result<()>)>,
    grace: Duration,
}

/// Pending connections the kernel queues per listener (the default 128 overflows when
/// hundreds of clients connect at once).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(what: &'static str, addr: &str) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_err = |source| StartError::Bind {
        what,
        addr: addr.to_owned(),
        source,
    };
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| bind_err(std::io::Error::other("address resolves to nothing")))?;
    let socket = match resolved {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(resolved).map_err(bind_err)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// Opens storage, recovers state and starts every enabled listener.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let storage = config.storage.clone();
    let store = tokio::task::spawn_blocking(move || polymq_storage::open(&storage))
        .await
        .map_err(|err| StoreError::Io(std::io::Error::other(err)))??;
    let router = Router::open(config.router(), store).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut addrs = Addrs::default();
    let nats_monitor = polymq_nats::monitor::Monitor::default();

    if config.nats.enabled {
        let (listener, addr) = bind("nats", &config.nats.listen).await?;
        addrs.nats = Some(addr);
        let (router, cfg, stop) = (
            router.clone(),
            Arc::new(config.nats.clone()),
            shutdown.clone(),
        );
        let monitor = nats_monitor.clone();
        tasks.spawn(async move {
            (
                "nats",
                polymq_nats::serve(listener, router, cfg, stop, monitor).await,
            )
        });
    }
    if config.mqtt.enabled {
        let (listener, addr) = bind("mqtt", &config.mqtt.listen).await?;
        addrs.mqtt = Some(addr);
        let websocket = if config.mqtt.websocket_listen.is_empty() {
            None
        } else {
            let (listener, addr) = bind("mqtt websocket", &config.mqtt.websocket_listen).await?;
            addrs.mqtt_websocket = Some(addr);
            Some(listener)
        };
        let (router, cfg, stop) = (
            router.clone(),
            Arc::new(config.mqtt.clone()),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            (
                "mqtt",
                polymq_mqtt::serve(listener, websocket, router, cfg, stop).await,
            )
        });
    }
    if config.nsq.enabled {
        let node = polymq_nsq::Node::new(router.clone(), Arc::new(config.nsq.clone()));
        let (listener, addr) = bind("nsq tcp", &config.nsq.tcp_listen).await?;
        addrs.nsq_tcp = Some(addr);
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { ("nsq", polymq_nsq::serve(listener, n, stop).await) });
        let (listener, addr) = bind("nsq http", &config.nsq.http_listen).await?;
        addrs.nsq_http = Some(addr);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            (
                "nsq http",
                polymq_nsq::serve_http(listener, node, stop).await,
            )
        });
    }
    if config.zmtp.enabled {
        let (listener, addr) = bind("zmtp", &config.zmtp.listen).await?;
        addrs.zmtp = Some(addr);
        let (r, cfg, stop) = (
            router.clone(),
            Arc::new(config.zmtp.clone()),
            shutdown.clone(),
        );
        tasks.spawn(async move { ("zmtp", polymq_zmtp::serve(listener, r, cfg, stop).await) });
        for extra in config.zmtp.extra_listeners() {
            let (listener, _) = bind("zmtp extra", &extra.listen).await?;
            let (r, cfg, stop) = (router.clone(), Arc::new(extra), shutdown.clone());
            tasks.spawn(async move {
                (
                    "zmtp extra",
                    polymq_zmtp::serve(listener, r, cfg, stop).await,
                )
            });
        }
    }
    if config.admin.enabled {
        let (listener, addr) = bind("admin", &config.admin.listen).await?;
        addrs.admin = Some(addr);
        let app = admin::routes(router.clone(), nats_monitor);
        let stop = shutdown.clone();
        tasks.spawn(async move { ("admin", admin::serve(listener, app, stop).await) });
    }
    let grace = Duration::from_millis(config.core.shutdown_grace_ms);
    tracing::info!(?addrs, backend = ?config.storage.backend, "polymq started");
    Ok(Running {
        addrs,
        router,
        shutdown,
        tasks,
        grace,
    })
}

impl Running {
    /// A token that stops the broker when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until any listener task ends on its own (an error, normally).
    pub async fn wait_any(&mut self) -> Option<(&'static str, std::io::Result<()>)> {
        self.tasks.join_next().await.and_then(Result::ok)
    }

    /// Stops accepting, closes connections (waiting up to the grace period) and persists.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Ok((what, Err(err))) = joined {
                    tracing::warn!(listener = what, %err, "listener ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; aborting remaining connections");
            self.tasks.abort_all();
        }
        self.router.flush().await;
        self.router.store().persist(PersistMode::SyncAll).await
    }
}
