//! The `[mqtt]` section of config.toml.
//!
//! Defaults are mosquitto's, except `max_packet_size`: mosquitto accepts packets up to the
//! protocol's 256 MiB and advertises no Maximum Packet Size, polymq bounds what one client can
//! make it buffer to 16 MiB (and advertises it to 5.0 clients). Then: 20 QoS 1/2 messages
//! in flight per client (`max_inflight_messages`), 1000 queued messages per session
//! (`max_queued_messages`), QoS 0 not queued for offline sessions, retained messages on,
//! `$SYS` every 10 s, anonymous clients allowed.
//!
//! # Invariants
//! - Once [`Config::normalised`] ran, `max_packet_size` is within 1..=[`MAX_PACKET_SIZE`]
//!   (0 read as the protocol's limit) and `max_inflight` and `receive_maximum` are at
//!   least 1 (0 would make the listener unusable).

use serde::{Deserialize, Serialize};

use crate::frame::MAX_PACKET_SIZE;

/// One user of the `users` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User Name in CONNECT.
    pub username: String,
    /// Password in CONNECT (compared as bytes).
    pub password: String,
}

/// Settings for the MQTT listener; defaults follow mosquitto.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// Listener address.
    pub listen: String,
    /// MQTT over WebSocket listener address (subprotocol `mqtt`); empty = not served, as a
    /// mosquitto `listener … protocol websockets` that is not configured.
    pub websocket_listen: String,
    /// Largest packet accepted from a client, fixed header included (advertised to 5.0
    /// clients as Maximum Packet Size). 0 means the protocol's own limit (256 MiB), which
    /// is not advertised. mosquitto: `max_packet_size`.
    pub max_packet_size: u32,
    /// Messages a persistent session queues while its client is offline (and a clean session
    /// beyond its in-flight window); newer ones are dropped. mosquitto: `max_queued_messages`.
    pub max_queued_messages: usize,
    /// Queue QoS 0 messages for offline persistent sessions too. mosquitto:
    /// `queue_qos0_messages`.
    pub queue_qos0: bool,
    /// QoS 1/2 messages in flight to a client at once, unless a 5.0 client sends its own
    /// Receive Maximum. mosquitto: `max_inflight_messages`.
    pub max_inflight: u16,
    /// Receive Maximum advertised to 5.0 clients: QoS 1/2 PUBLISHes they may have
    /// unacknowledged towards the broker.
    pub receive_maximum: u16,
    /// Topic Alias Maximum advertised to 5.0 clients (0 = no aliases from clients).
    pub topic_alias_maximum: u16,
    /// Largest keep alive accepted; a 5.0 client asking for more (or for 0) gets this as
    /// Server Keep Alive, a 3.1.1 client is refused. mosquitto: `max_keepalive`.
    pub max_keepalive: Option<u16>,
    /// Server Keep Alive imposed on every 5.0 client, if set.
    pub server_keep_alive: Option<u16>,
    /// Retained messages supported (else RETAIN=1 is refused). mosquitto: `retain_available`.
    pub retain_available: bool,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off. mosquitto:
    /// `sys_interval`.
    pub sys_interval_secs: u64,
    /// Accepted user names and passwords.
    pub users: Vec<User>,
    /// Accept clients that send no user name. mosquitto: `allow_anonymous`.
    pub allow_anonymous: bool,
    /// Milliseconds a new connection has to complete CONNECT.
    pub connect_timeout_ms: u64,
    /// Most concurrent connections.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:1883".into(),
            websocket_listen: String::new(),
            max_packet_size: 16 * 1024 * 1024,
            max_queued_messages: 1000,
            queue_qos0: false,
            max_inflight: 20,
            receive_maximum: 20,
            topic_alias_maximum: 10,
            max_keepalive: None,
            server_keep_alive: None,
            retain_available: true,
            sys_interval_secs: 10,
            users: Vec::new(),
            allow_anonymous: true,
            connect_timeout_ms: 10_000,
            max_connections: 100_000,
        }
    }
}

impl Config {
    /// The config with zero limits raised to their smallest usable value.
    pub fn normalised(&self) -> Self {
        let mut config = self.clone();
        config.max_packet_size = match config.max_packet_size {
            0 => MAX_PACKET_SIZE,
            size => size.min(MAX_PACKET_SIZE),
        };
        config.max_inflight = config.max_inflight.max(1);
        config.receive_maximum = config.receive_maximum.max(1);
        config
    }

    /// Checks a user name and password against `users` and `allow_anonymous`.
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        let Some(username) = username else {
            return self.allow_anonymous;
        };
        if self.users.is_empty() {
            return self.allow_anonymous;
        }
        self.users
            .iter()
            .any(|u| u.username == username && Some(u.password.as_bytes()) == password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_follows_mosquitto() {
        let mut config = Config::default();
        assert!(config.authenticate(None, None));
        assert!(config.authenticate(Some("anyone"), None));
        config.users = vec![User {
            username: "u".into(),
            password: "p".into(),
        }];
        assert!(config.authenticate(Some("u"), Some(b"p")));
        assert!(!config.authenticate(Some("u"), Some(b"x")));
        assert!(!config.authenticate(Some("u"), None));
        assert!(!config.authenticate(Some("v"), Some(b"p")));
        assert!(config.authenticate(None, None));
        config.allow_anonymous = false;
        assert!(!config.authenticate(None, None));
    }

    #[test]
    fn zero_packet_size_means_the_protocol_limit() {
        let config = Config {
            max_packet_size: 0,
            ..Config::default()
        };
        assert_eq!(config.normalised().max_packet_size, MAX_PACKET_SIZE);
        let config = Config {
            max_packet_size: u32::MAX,
            ..Config::default()
        };
        assert_eq!(config.normalised().max_packet_size, MAX_PACKET_SIZE);
        assert_eq!(Config::default().normalised().max_packet_size, 16 << 20);
    }
}
