//! The `[mqtt]` section of config.toml.

use serde::{Deserialize, Serialize};

/// Settings for the mqtt listener; defaults follow the reference server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// Listener address.
    pub listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:1883".into(),
        }
    }
}
