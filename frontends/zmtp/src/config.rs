//! The `[zmtp]` section of config.toml, and the `[[zmtp.listener]]` extra listeners.
//!
//! ```toml
//! [zmtp]
//! listen = "0.0.0.0:5555"
//! mechanism = "plain"
//! users = [{ username = "admin", password = "secret" }]
//!
//! [[zmtp.listener]]            # one more endpoint with its own defaults
//! listen = "0.0.0.0:5556"
//! default_subject = "jobs"
//! default_group = "workers"
//! ```
//!
//! Defaults follow libzmq where libzmq has the knob (`ZMQ_SNDHWM`, `ZMQ_HEARTBEAT_*`,
//! `ZMQ_HANDSHAKE_IVL`), except `max_msg_size`: libzmq's `ZMQ_MAXMSGSIZE` is unlimited by
//! default, the broker caps what one peer can make it buffer at 16 MiB.
//!
//! # Invariants
//! - [`Config::extra_listeners`] yields complete configs: each serves exactly like the main
//!   listener except for `listen` and the defaults its `[[zmtp.listener]]` entry overrides.

use polymq_core::subject::zmtp::TopicSyntax;
use serde::{Deserialize, Serialize};

/// The security mechanism the listener requires (RFC 23 NULL, RFC 24 PLAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MechanismConfig {
    /// No security: any peer may connect.
    #[default]
    Null,
    /// Username and password from [`Config::users`], checked during the handshake.
    Plain,
}

impl From<MechanismConfig> for crate::frame::Mechanism {
    fn from(mechanism: MechanismConfig) -> Self {
        match mechanism {
            MechanismConfig::Null => Self::Null,
            MechanismConfig::Plain => Self::Plain,
        }
    }
}

/// One PLAIN account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// PLAIN username (at most 255 octets on the wire).
    pub username: String,
    /// PLAIN password (at most 255 octets on the wire).
    pub password: String,
}

/// One `[[zmtp.listener]]` entry: another endpoint with its own defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Listener address.
    pub listen: String,
    /// Overrides [`Config::default_subject`] on this listener.
    #[serde(default)]
    pub default_subject: Option<String>,
    /// Overrides [`Config::default_group`] on this listener.
    #[serde(default)]
    pub default_group: Option<String>,
    /// Overrides [`Config::topic_syntax`] on this listener.
    #[serde(default)]
    pub topic_syntax: Option<TopicSyntax>,
}

/// Settings for the ZMTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// Listener address.
    pub listen: String,
    /// Largest frame, and largest sum of the parts of one message (libzmq `ZMQ_MAXMSGSIZE`
    /// limits each part and defaults to no limit; polymq also bounds the whole message). A
    /// peer exceeding it is disconnected, as libzmq disconnects it.
    pub max_msg_size: usize,
    /// Messages queued towards one peer before further ones are dropped and counted
    /// (libzmq `ZMQ_SNDHWM`); also bounds a peer's outstanding requests.
    pub sndhwm: usize,
    /// How frame 0 of incoming messages is read: `"nats"` (canonical) or `"mqtt"`.
    pub topic_syntax: TopicSyntax,
    /// Subject for PUSH/REQ/DEALER peers whose messages have a single part and whose READY
    /// names no `X-Subject` or `Resource`; filter for PULL/REP/ROUTER peers that name none.
    /// Canonical (NATS) syntax whatever `topic_syntax` says. The default `>` matches every
    /// subject (producers then need frame 0).
    pub default_subject: String,
    /// Group for PULL peers that name no `X-Group` or `Resource`. REP/ROUTER responders that
    /// name no `X-Group` join `<default_group>.rep`, so default workers and default consumers
    /// never share a group.
    pub default_group: String,
    /// Whether PULL peers receive frame 0 (the subject) before the body, as DESIGN.md's
    /// convention says; `false` sends the body frames alone, for workers written for a plain
    /// PUSH/PULL pipeline. SUB peers always get frame 0 (libzmq filters on it).
    pub pull_subject_frame: bool,
    /// How long a REQ/DEALER request waits for a reply before the broker answers it with the
    /// `408` error reply (see the crate docs), in milliseconds.
    pub request_timeout_ms: u64,
    /// Interval between the broker's PINGs to ZMTP 3.1 peers, in milliseconds; 0 disables
    /// them (libzmq `ZMQ_HEARTBEAT_IVL`, default 0).
    pub heartbeat_ivl_ms: u64,
    /// How long to wait for any traffic after a PING before closing, in milliseconds; 0 means
    /// `heartbeat_ivl_ms` (libzmq `ZMQ_HEARTBEAT_TIMEOUT`).
    pub heartbeat_timeout_ms: u64,
    /// TTL announced in the broker's PINGs, in milliseconds (sent in tenths of a second,
    /// libzmq `ZMQ_HEARTBEAT_TTL`, default 0 = none).
    pub heartbeat_ttl_ms: u64,
    /// Longest time from accept to the end of the security handshake, in milliseconds
    /// (libzmq `ZMQ_HANDSHAKE_IVL`, default 30 s).
    pub handshake_ivl_ms: u64,
    /// Security mechanism every peer must use.
    pub mechanism: MechanismConfig,
    /// PLAIN accounts.
    pub users: Vec<User>,
    /// Most concurrent connections on this listener.
    pub max_connections: usize,
    /// Extra listeners (`[[zmtp.listener]]`); see [`Config::extra_listeners`].
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:5555".into(),
            max_msg_size: 16 * 1024 * 1024,
            sndhwm: 1000,
            topic_syntax: TopicSyntax::Nats,
            default_subject: ">".into(),
            default_group: "zmtp".into(),
            pull_subject_frame: true,
            request_timeout_ms: 5000,
            heartbeat_ivl_ms: 0,
            heartbeat_timeout_ms: 0,
            heartbeat_ttl_ms: 0,
            handshake_ivl_ms: 30_000,
            mechanism: MechanismConfig::Null,
            users: Vec::new(),
            max_connections: 65_536,
            listeners: Vec::new(),
        }
    }
}

impl Config {
    /// One complete config per `[[zmtp.listener]]` entry, for the binary to pass to
    /// [`crate::serve`] with a listener bound to its `listen`: everything is inherited from
    /// this section except `listen` and the defaults the entry overrides; the derived configs
    /// have no extra listeners of their own.
    pub fn extra_listeners(&self) -> Vec<Config> {
        self.listeners
            .iter()
            .map(|extra| Config {
                listen: extra.listen.clone(),
                default_subject: extra
                    .default_subject
                    .clone()
                    .unwrap_or_else(|| self.default_subject.clone()),
                default_group: extra
                    .default_group
                    .clone()
                    .unwrap_or_else(|| self.default_group.clone()),
                topic_syntax: extra.topic_syntax.unwrap_or(self.topic_syntax),
                listeners: Vec::new(),
                ..self.clone()
            })
            .collect()
    }

    /// The group REP/ROUTER responders join when they name none.
    pub fn default_responder_group(&self) -> String {
        format!("{}.rep", self.default_group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_libzmq() {
        let config = Config::default();
        assert_eq!(config.max_msg_size, 16 * 1024 * 1024);
        assert_eq!(config.sndhwm, 1000);
        assert_eq!(config.heartbeat_ivl_ms, 0);
        assert_eq!(config.handshake_ivl_ms, 30_000);
        assert_eq!(config.mechanism, MechanismConfig::Null);
        assert_eq!(config.default_subject, ">");
        assert_eq!(config.default_responder_group(), "zmtp.rep");
    }

    #[test]
    fn extra_listeners_inherit_and_override() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "sndhwm": 10,
            "mechanism": "plain",
            "users": [{"username": "u", "password": "p"}],
            "listener": [
                {"listen": "127.0.0.1:1", "default_subject": "jobs", "default_group": "w"},
                {"listen": "127.0.0.1:2", "topic_syntax": "mqtt"}
            ]
        }))
        .unwrap();
        let extra = config.extra_listeners();
        assert_eq!(extra.len(), 2);
        assert_eq!(extra[0].listen, "127.0.0.1:1");
        assert_eq!(extra[0].default_subject, "jobs");
        assert_eq!(extra[0].default_group, "w");
        assert_eq!(extra[0].sndhwm, 10);
        assert_eq!(extra[0].mechanism, MechanismConfig::Plain);
        assert_eq!(extra[0].users.len(), 1);
        assert!(extra[0].listeners.is_empty());
        assert_eq!(extra[1].default_subject, ">");
        assert_eq!(extra[1].topic_syntax, TopicSyntax::Mqtt);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let bad = serde_json::from_value::<Config>(serde_json::json!({"sndhmw": 1}));
        assert!(bad.is_err());
        let bad = serde_json::from_value::<Config>(serde_json::json!({
            "listener": [{"listen": "x", "sndhwm": 1}]
        }));
        assert!(bad.is_err());
    }
}
