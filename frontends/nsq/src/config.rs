//! The `[nsq]` section of config.toml: listeners and nsqd's limits, with nsqd's defaults.
//!
//! # Invariants
//! - `Config::default()` matches nsqd's defaults (`nsqd/options.go`).
//! - Durations are milliseconds, sizes bytes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frame::Limits;

/// nsqd-compatible settings; defaults follow nsqd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// TCP protocol V2 listener (nsqd `--tcp-address`).
    pub tcp_listen: String,
    /// HTTP API listener (nsqd `--http-address`).
    pub http_listen: String,
    /// Largest message body, bytes (nsqd `--max-msg-size`).
    pub max_msg_size: u64,
    /// Largest MPUB, IDENTIFY or AUTH body, bytes (nsqd `--max-body-size`).
    pub max_body_size: u64,
    /// Default in-flight timeout, ms (nsqd `--msg-timeout`).
    pub msg_timeout_ms: u64,
    /// Largest `msg_timeout` a client may IDENTIFY with, ms (nsqd `--max-msg-timeout`).
    pub max_msg_timeout_ms: u64,
    /// Largest REQ / DPUB / `?defer=` delay, ms (nsqd `--max-req-timeout`).
    pub max_req_timeout_ms: u64,
    /// Default heartbeat interval, ms (nsqd: `--client-timeout` / 2).
    pub heartbeat_interval_ms: u64,
    /// Largest heartbeat interval a client may IDENTIFY with, ms.
    pub max_heartbeat_interval_ms: u64,
    /// Largest RDY count (nsqd `--max-rdy-count`).
    pub max_rdy_count: u64,
    /// Largest `output_buffer_size` a client may IDENTIFY with, bytes.
    pub max_output_buffer_size: u64,
    /// Largest `output_buffer_timeout` a client may IDENTIFY with, ms.
    pub max_output_buffer_timeout_ms: u64,
    /// Messages a topic or channel keeps in memory before the rest lives only in the store
    /// (nsqd `--mem-queue-size`; with the disk backend). Applies to every durable queue.
    pub mem_queue_size: u64,
    /// Accepted AUTH secrets; AUTH is required when the list is not empty.
    pub auth_secrets: Vec<String>,
    /// nsqlookupd TCP addresses to register topics and channels with.
    pub lookupd_tcp_addresses: Vec<String>,
    /// Address announced to nsqlookupd and in `/info`; empty means the hostname.
    pub broadcast_address: String,
    /// Most consumers per channel; 0 is unlimited (nsqd `--max-channel-consumers`).
    pub max_channel_consumers: u64,
    /// Most simultaneous TCP connections.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            tcp_listen: "0.0.0.0:4150".into(),
            http_listen: "0.0.0.0:4151".into(),
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            msg_timeout_ms: 60_000,
            max_msg_timeout_ms: 15 * 60_000,
            max_req_timeout_ms: 60 * 60_000,
            heartbeat_interval_ms: 30_000,
            max_heartbeat_interval_ms: 60_000,
            max_rdy_count: 2500,
            max_output_buffer_size: 64 * 1024,
            max_output_buffer_timeout_ms: 30_000,
            mem_queue_size: 10_000,
            auth_secrets: Vec::new(),
            lookupd_tcp_addresses: Vec::new(),
            broadcast_address: String::new(),
            max_channel_consumers: 0,
            max_connections: 65_536,
        }
    }
}

impl Config {
    /// The decoder limits these settings describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_msg_size: self.max_msg_size,
            max_body_size: self.max_body_size,
            max_req_timeout_ms: self.max_req_timeout_ms,
        }
    }

    /// True when clients must AUTH.
    pub fn auth_enabled(&self) -> bool {
        !self.auth_secrets.is_empty()
    }

    /// Default in-flight timeout.
    pub fn msg_timeout(&self) -> Duration {
        Duration::from_millis(self.msg_timeout_ms)
    }

    /// Default heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Largest REQ delay.
    pub fn max_req_timeout(&self) -> Duration {
        Duration::from_millis(self.max_req_timeout_ms)
    }
}
