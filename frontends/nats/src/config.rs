//! The `[nats]` section of config.toml.
//!
//! Defaults are nats-server's (`server/const.go`): 1 MiB `max_payload`, 4 KiB
//! `max_control_line`, PING every 2 minutes with 2 unanswered allowed, 64 MiB `max_pending`,
//! 2 s auth timeout, 10 s write deadline, 64K connections.
//!
//! # Invariants
//! - [`Config::validate`] rejects what nats-server refuses to start with: a token together with
//!   a users list, duplicate user names, and zero sizes or intervals that would make the
//!   listener unusable.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One entry of `users`: a name and password a client may send in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// CONNECT `user`.
    pub user: String,
    /// CONNECT `pass` (compared as plain text, in constant time).
    pub password: String,
}

/// Settings for the NATS listener; defaults follow nats-server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// Listener address.
    pub listen: String,
    /// Largest message (headers plus payload) a client may publish; advertised in INFO.
    pub max_payload: usize,
    /// Longest argument part of a protocol line.
    pub max_control_line: usize,
    /// How often the server PINGs an idle client, in milliseconds.
    pub ping_interval_ms: u64,
    /// Unanswered server PINGs tolerated; one more closes with `Stale Connection`.
    pub max_pings_out: u32,
    /// Bytes of outbound data a client may have pending before it is disconnected as a slow
    /// consumer (counted in the session's write buffer). The outbox between the router and
    /// the session holds `max_pending / 128` messages (1024 to 1Mi) to absorb bursts;
    /// overflowing it is a slow consumer too.
    pub max_pending: usize,
    /// How long a write may make no progress before the client is a slow consumer, in
    /// milliseconds (nats-server `write_deadline`).
    pub write_deadline_ms: u64,
    /// Token clients must send as CONNECT `auth_token`.
    pub auth_token: Option<String>,
    /// Users clients must authenticate as (CONNECT `user`/`pass`).
    pub users: Vec<User>,
    /// Time a client has to send CONNECT when authentication is required, in milliseconds.
    pub auth_timeout_ms: u64,
    /// Name in INFO and `/varz`; the generated server id when unset.
    pub server_name: Option<String>,
    /// Most client connections at once; the next gets `-ERR 'maximum connections exceeded'`.
    pub max_connections: usize,
    /// Most subscriptions per connection; 0 is unlimited (nats-server `max_subscriptions`).
    /// A SUB past it gets `-ERR 'maximum subscriptions exceeded'` and the connection stays.
    pub max_subscriptions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:4222".into(),
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            ping_interval_ms: 120_000,
            max_pings_out: 2,
            max_pending: 64 * 1024 * 1024,
            write_deadline_ms: 10_000,
            auth_token: None,
            users: Vec::new(),
            auth_timeout_ms: 2_000,
            server_name: None,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
        }
    }
}

/// A setting nats-server would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `auth_token` and `users` together.
    #[error("[nats] can not have a token and a users list")]
    TokenAndUsers,
    /// The same user name twice.
    #[error("[nats] duplicate user {0:?}")]
    DuplicateUser(String),
    /// A size or interval of zero.
    #[error("[nats] {0} must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    /// Checks the settings; see the module invariants.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth_token.is_some() && !self.users.is_empty() {
            return Err(ConfigError::TokenAndUsers);
        }
        let mut names: Vec<&str> = self.users.iter().map(|u| u.user.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w.first() == w.get(1)) {
            return Err(ConfigError::DuplicateUser(
                pair.first().copied().unwrap_or("").into(),
            ));
        }
        let positive = [
            ("max_payload", self.max_payload as u64),
            ("max_control_line", self.max_control_line as u64),
            ("ping_interval_ms", self.ping_interval_ms),
            ("max_pending", self.max_pending as u64),
            ("write_deadline_ms", self.write_deadline_ms),
            ("auth_timeout_ms", self.auth_timeout_ms),
            ("max_connections", self.max_connections as u64),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }

    /// True when clients must authenticate (INFO `auth_required`).
    pub fn auth_required(&self) -> bool {
        self.auth_token.is_some() || !self.users.is_empty()
    }

    /// `ping_interval_ms` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// `auth_timeout_ms` as a duration.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// `write_deadline_ms` as a duration.
    pub fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.write_deadline_ms)
    }

    /// Outbox capacity in messages derived from `max_pending`: one slot per 128 bytes (a
    /// small message), clamped to 1024..=1Mi. Slots are allocated only as they fill.
    pub fn outbox_capacity(&self) -> usize {
        (self.max_pending / 128).clamp(1024, 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nats_servers() {
        let c = Config::default();
        assert_eq!(c.max_payload, 1_048_576);
        assert_eq!(c.max_control_line, 4096);
        assert_eq!(c.ping_interval(), Duration::from_secs(120));
        assert_eq!(c.max_pings_out, 2);
        assert_eq!(c.max_pending, 67_108_864);
        assert_eq!(c.auth_timeout(), Duration::from_secs(2));
        assert_eq!(c.outbox_capacity(), 524_288);
        assert!(!c.auth_required());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validation() {
        let both = Config {
            auth_token: Some("t".into()),
            users: vec![User {
                user: "a".into(),
                password: "p".into(),
            }],
            ..Config::default()
        };
        assert_eq!(both.validate(), Err(ConfigError::TokenAndUsers));
        let dup = Config {
            users: vec![
                User {
                    user: "a".into(),
                    password: "p".into(),
                },
                User {
                    user: "a".into(),
                    password: "q".into(),
                },
            ],
            ..Config::default()
        };
        assert_eq!(dup.validate(), Err(ConfigError::DuplicateUser("a".into())));
        let zero = Config {
            max_payload: 0,
            ..Config::default()
        };
        assert_eq!(zero.validate(), Err(ConfigError::Zero("max_payload")));
        assert_eq!(
            Config {
                max_pending: 1,
                ..Config::default()
            }
            .outbox_capacity(),
            1024
        );
    }
}
