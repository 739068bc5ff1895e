//! The whole broker configuration and how it is loaded.
//!
//! Layers, lowest first: built-in defaults < `config.toml` (or `--config FILE`) < `POLYMQ_`
//! environment variables (`__` nests: `POLYMQ_MQTT__LISTEN=0.0.0.0:1884`) < `--set key=value`
//! command-line overrides. Every section rejects unknown keys, so a typo stops start-up with a
//! message naming the key.
//!
//! # Invariants
//! - `Config::default()` is a working broker: every listener on its reference port, memory
//!   storage.
//! - Each protocol section is defined by its frontend crate; this module only composes them.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use polymq_core::queue::QueueConfig;
use polymq_core::RouterConfig;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: structured logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `polymq_nats=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[admin]`: the HTTP listener with `/healthz`, `/metrics` and NATS-style monitoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin listener at all.
    pub enabled: bool,
    /// Listener address.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:8222".into(),
        }
    }
}

/// `[core]`: routing core settings shared by every protocol. Durable queue timeouts and the
/// memory/store split use nsqd's keys in `[nsq]` (`msg_timeout_ms`, `max_msg_timeout_ms`,
/// `mem_queue_size`) and apply to every durable queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Most ready messages one memory queue holds before publishes to it fail.
    pub max_queue_depth: usize,
    /// Subjects kept in the router's match cache.
    pub match_cache_size: usize,
    /// Grace period for connections to drain at shutdown, ms.
    pub shutdown_grace_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_queue_depth: 1_000_000,
            match_cache_size: 4096,
            shutdown_grace_ms: 3_000,
        }
    }
}

/// The whole `config.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[storage]`: memory or disk backend.
    pub storage: polymq_storage::StorageConfig,
    /// `[core]`: routing and durable queues.
    pub core: CoreConfig,
    /// `[nsq]`: nsqd TCP protocol V2 and HTTP API.
    pub nsq: polymq_nsq::config::Config,
    /// `[nats]`: NATS client protocol.
    pub nats: polymq_nats::config::Config,
    /// `[mqtt]`: MQTT 3.1.1 and 5.0.
    pub mqtt: polymq_mqtt::config::Config,
    /// `[zmtp]`: ZMTP 3.x (ZeroMQ).
    pub zmtp: polymq_zmtp::config::Config,
    /// `[admin]`: health, metrics and monitoring over HTTP.
    pub admin: AdminConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        Self(Box::new(err))
    }
}

/// The figment stack below the CLI overrides: defaults < file < environment.
fn base(file: Option<&Path>) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(Env::prefixed("POLYMQ_").split("__"))
}

impl Config {
    /// The router settings: `[core]` plus nsqd's queue keys from `[nsq]`.
    pub fn router(&self) -> RouterConfig {
        RouterConfig {
            queue: QueueConfig {
                msg_timeout: Duration::from_millis(self.nsq.msg_timeout_ms),
                max_msg_timeout: Duration::from_millis(self.nsq.max_msg_timeout_ms),
                max_depth: self.core.max_queue_depth,
                mem_queue_size: usize::try_from(self.nsq.mem_queue_size).unwrap_or(usize::MAX),
            },
            cache_size: self.core.match_cache_size,
        }
    }

    /// Loads defaults < `file` < `POLYMQ_*` env < `overrides` (`section.key=value`, TOML values;
    /// bare words are taken as strings).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut figment = base(file);
        for item in overrides {
            figment = figment.merge(Toml::string(&override_toml(item)).nested());
        }
        Ok(figment.extract()?)
    }

    /// Defaults overlaid with TOML documents, in order (tests and embedded use).
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        for layer in layers {
            figment = figment.merge(Toml::string(layer));
        }
        Ok(figment.extract()?)
    }
}

/// Turns `nats.max_payload=1024` into a TOML document `[nats]\nmax_payload = 1024`.
fn override_toml(item: &str) -> String {
    let (key, value) = item.split_once('=').unwrap_or((item, "true"));
    let (key, value) = (key.trim(), value.trim());
    let value = if value.parse::<toml_value::Probe>().is_ok() {
        value.to_owned()
    } else {
        format!("{value:?}")
    };
    match key.rsplit_once('.') {
        Some((section, leaf)) => format!("[default.{section}]\n{leaf} = {value}\n"),
        None => format!("[default]\n{key} = {value}\n"),
    }
}

/// Recognises literals that TOML already reads as a value (numbers, booleans, quoted strings,
/// arrays, inline tables); anything else is quoted as a string.
mod toml_value {
    use std::str::FromStr;

    pub(super) struct Probe;

    impl FromStr for Probe {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let literal = s == "true"
                || s == "false"
                || s.parse::<i64>().is_ok()
                || s.parse::<f64>().is_ok()
                || s.starts_with('"')
                || s.starts_with('[')
                || s.starts_with('{');
            literal.then_some(Probe).ok_or(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_ports() {
        let config = Config::default();
        assert_eq!(config.nats.listen, "0.0.0.0:4222");
        assert_eq!(config.mqtt.listen, "0.0.0.0:1883");
        assert_eq!(config.nsq.tcp_listen, "0.0.0.0:4150");
        assert_eq!(config.nsq.http_listen, "0.0.0.0:4151");
        assert_eq!(config.zmtp.listen, "0.0.0.0:5555");
        assert_eq!(config.admin.listen, "0.0.0.0:8222");
    }

    #[test]
    fn layers_override_in_order() {
        let config = Config::from_toml_layers(&[
            "[nats]\nlisten = \"1.2.3.4:1\"\n",
            "[nats]\nlisten = \"5.6.7.8:2\"\n",
        ])
        .unwrap();
        assert_eq!(config.nats.listen, "5.6.7.8:2");
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::from_toml_layers(&["[nats]\nlisen = \"x\"\n"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::from_toml_layers(&["[natz]\nlisten = \"x\"\n"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("natz"), "{err}");
    }

    #[test]
    fn bad_value_is_named_in_the_error() {
        let err = Config::from_toml_layers(&["[admin]\nenabled = \"maybe\"\n"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("enabled"), "{err}");
    }

    #[test]
    fn cli_overrides_become_nested_toml() {
        assert_eq!(
            override_toml("nats.listen=1.2.3.4:5"),
            "[default.nats]\nlisten = \"1.2.3.4:5\"\n"
        );
        assert_eq!(
            override_toml("admin.enabled=false"),
            "[default.admin]\nenabled = false\n"
        );
    }
}
