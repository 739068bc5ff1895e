//! The `[nsq]` section of config.toml.

use serde::{Deserialize, Serialize};

/// nsqd-compatible settings; defaults follow nsqd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// TCP protocol V2 listener.
    pub tcp_listen: String,
    /// HTTP API listener.
    pub http_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            tcp_listen: "0.0.0.0:4150".into(),
            http_listen: "0.0.0.0:4151".into(),
        }
    }
}
