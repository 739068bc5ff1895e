//! Test harness: the whole broker in-process on ephemeral 127.0.0.1 ports.
//!
//! `TestServer::start(extra_toml)` binds every listener on port 0 and exposes the addresses;
//! dropping the server (or `stop().await`) shuts it down.

#![allow(dead_code)]

pub mod mqtt_bytes;
pub mod mqtt_client;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use polymq::app::{self, Running};
use polymq::config::Config;

/// Listener settings that put every protocol on an ephemeral loopback port.
const EPHEMERAL: &str = r#"
[nsq]
tcp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[nats]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
websocket_listen = "127.0.0.1:0"
[zmtp]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
"#;

/// Upper bound for any single test step.
pub const STEP: Duration = Duration::from_secs(10);

/// A running broker and its addresses.
pub struct TestServer {
    pub nats: SocketAddr,
    pub mqtt: SocketAddr,
    pub mqtt_websocket: SocketAddr,
    pub nsq_tcp: SocketAddr,
    pub nsq_http: SocketAddr,
    pub zmtp: SocketAddr,
    pub admin: SocketAddr,
    running: Option<Running>,
}

impl TestServer {
    /// Starts the broker with `extra` TOML layered over the ephemeral-port defaults.
    pub async fn start(extra: &str) -> Self {
        let config = Config::from_toml_layers(&[EPHEMERAL, extra]).expect("test config");
        Self::start_config(config).await
    }

    /// Starts the broker with the disk backend in `dir` (restart tests), plus `extra` TOML.
    pub async fn start_disk(dir: &Path, extra: &str) -> Self {
        let storage = format!(
            "[storage]\nbackend = \"disk\"\ndata_dir = {:?}\nfsync = \"always\"\n",
            dir.display().to_string()
        );
        let config = Config::from_toml_layers(&[EPHEMERAL, &storage, extra]).expect("test config");
        Self::start_config(config).await
    }

    async fn start_config(config: Config) -> Self {
        let running = tokio::time::timeout(STEP, app::start(config))
            .await
            .expect("broker start timed out")
            .expect("broker start");
        let a = running.addrs.clone();
        let missing = "127.0.0.1:9".parse().expect("addr");
        Self {
            nats: a.nats.unwrap_or(missing),
            mqtt: a.mqtt.unwrap_or(missing),
            mqtt_websocket: a.mqtt_websocket.unwrap_or(missing),
            nsq_tcp: a.nsq_tcp.unwrap_or(missing),
            nsq_http: a.nsq_http.unwrap_or(missing),
            zmtp: a.zmtp.unwrap_or(missing),
            admin: a.admin.unwrap_or(missing),
            running: Some(running),
        }
    }

    /// The routing core, for white-box assertions.
    pub fn router(&self) -> &polymq_core::Router {
        &self.running.as_ref().expect("running").router
    }

    /// Graceful shutdown: drain and persist, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(STEP, running.shutdown())
                .await
                .expect("shutdown timed out")
                .expect("shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown_token().cancel();
        }
    }
}
