//! INFO and CONNECT: what the server announces and what a client asks for.
//!
//! [`Info`] serialises with nats-server's field names and order (`server/server.go` `Info`).
//! [`ClientOpts`] holds the CONNECT options with nats-server's defaults for absent fields
//! (`verbose`, `pedantic` and `echo` true); a later CONNECT only changes the fields it names,
//! as Go's `json.Unmarshal` into the existing options does. [`Auth`] checks the credentials.
//!
//! # Invariants
//! - Secrets are compared in constant time for equal lengths and never logged.
//! - With no token and no users configured, every CONNECT authenticates.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::monitor::{ADVERTISED_VERSION, RUNTIME};

/// The INFO a client sees on connect (and, with `connect_info`, after its first PING).
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Generated once per server.
    pub server_id: String,
    /// Configured name, or the id.
    pub server_name: String,
    /// The nats-server release this frontend speaks as.
    pub version: &'static str,
    /// Client protocol level: 1 (async INFO).
    pub proto: u8,
    /// Build identification (nats-server's Go version field).
    pub go: &'static str,
    /// Listener host.
    pub host: String,
    /// Listener port.
    pub port: u16,
    /// Headers are supported.
    pub headers: bool,
    /// Clients must authenticate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// Largest message a client may publish.
    pub max_payload: usize,
    /// This connection's id.
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// The client's address as the server sees it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Set on the INFO sent after the first PING following CONNECT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub connect_info: bool,
    /// The account the client is bound to (with `connect_info`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_account: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Info {
    /// The INFO template of a listener: everything but the per-connection fields.
    pub fn new(config: &Config, server_id: &str, host: String, port: u16) -> Self {
        Self {
            server_id: server_id.to_owned(),
            server_name: config
                .server_name
                .clone()
                .unwrap_or_else(|| server_id.to_owned()),
            version: ADVERTISED_VERSION,
            proto: 1,
            go: RUNTIME,
            host,
            port,
            headers: true,
            auth_required: config.auth_required(),
            max_payload: config.max_payload,
            client_id: 0,
            client_ip: String::new(),
            connect_info: false,
            remote_account: String::new(),
        }
    }

    /// The JSON text for the wire.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// CONNECT options in force for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOpts {
    /// Acknowledge every op with `+OK`.
    pub verbose: bool,
    /// Validate publish subjects.
    pub pedantic: bool,
    /// Deliver the connection's own publishes back to it.
    pub echo: bool,
    /// The client understands `HMSG` and may send `HPUB`.
    pub headers: bool,
    /// The client wants a 503 status when a request has no responders.
    pub no_responders: bool,
    /// Client protocol level (0 or 1).
    pub protocol: i64,
    /// Client name.
    pub name: String,
    /// Client language.
    pub lang: String,
    /// Client library version.
    pub version: String,
    /// `auth_token`.
    pub auth_token: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `pass`.
    pub pass: Option<String>,
    /// `account` (refused: accounts are not supported).
    pub account: String,
    /// `new_account` (refused).
    pub new_account: bool,
}

impl Default for ClientOpts {
    /// nats-server's `defaultOpts`.
    fn default() -> Self {
        Self {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            auth_token: None,
            user: None,
            pass: None,
            account: String::new(),
            new_account: false,
        }
    }
}

/// The fields of one CONNECT; absent ones leave the current value alone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConnectPatch {
    verbose: Option<bool>,
    pedantic: Option<bool>,
    echo: Option<bool>,
    tls_required: Option<bool>,
    headers: Option<bool>,
    no_responders: Option<bool>,
    protocol: Option<i64>,
    name: Option<String>,
    lang: Option<String>,
    version: Option<String>,
    auth_token: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    account: Option<String>,
    new_account: Option<bool>,
    nkey: Option<String>,
    sig: Option<String>,
    jwt: Option<String>,
}

impl ClientOpts {
    /// Applies a CONNECT argument; an error means nats-server would close silently. Like Go's
    /// `json.Unmarshal` into a struct, `null` changes nothing and anything but an object or
    /// `null` is an error.
    pub fn apply_connect(&mut self, json: &[u8]) -> Result<(), serde_json::Error> {
        let patch: ConnectPatch = match serde_json::from_slice(json)? {
            serde_json::Value::Null => return Ok(()),
            object @ serde_json::Value::Object(_) => serde_json::from_value(object)?,
            _ => {
                return Err(serde::de::Error::custom(
                    "CONNECT options must be a JSON object",
                ))
            }
        };
        let ConnectPatch {
            verbose,
            pedantic,
            echo,
            headers,
            no_responders,
            protocol,
            name,
            lang,
            version,
            auth_token,
            user,
            pass,
            account,
            new_account,
            ..
        } = patch;
        set(&mut self.verbose, verbose);
        set(&mut self.pedantic, pedantic);
        set(&mut self.echo, echo);
        set(&mut self.headers, headers);
        set(&mut self.no_responders, no_responders);
        set(&mut self.protocol, protocol);
        set(&mut self.name, name);
        set(&mut self.lang, lang);
        set(&mut self.version, version);
        set(&mut self.account, account);
        set(&mut self.new_account, new_account);
        if auth_token.is_some() {
            self.auth_token = auth_token;
        }
        if user.is_some() {
            self.user = user;
        }
        if pass.is_some() {
            self.pass = pass;
        }
        Ok(())
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The credential check configured for the listener.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone may connect.
    Open,
    /// CONNECT `auth_token` must match.
    Token(String),
    /// CONNECT `user`/`pass` must match an entry.
    Users(HashMap<String, String>),
}

impl Auth {
    /// The check `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        match &config.auth_token {
            Some(token) => Self::Token(token.clone()),
            None if config.users.is_empty() => Self::Open,
            None => Self::Users(
                config
                    .users
                    .iter()
                    .map(|u| (u.user.clone(), u.password.clone()))
                    .collect(),
            ),
        }
    }

    /// True when a client must CONNECT before anything else.
    pub fn required(&self) -> bool {
        !matches!(self, Self::Open)
    }

    /// Checks `opts`; `Ok(Some(user))` names the authenticated user.
    pub fn check(&self, opts: &ClientOpts) -> Result<Option<String>, AuthFailed> {
        match self {
            Self::Open => Ok(None),
            Self::Token(token) => match &opts.auth_token {
                Some(given) if secret_eq(given, token) => Ok(None),
                _ => Err(AuthFailed),
            },
            Self::Users(users) => {
                let user = opts.user.as_deref().ok_or(AuthFailed)?;
                let expected = users.get(user).ok_or(AuthFailed)?;
                let given = opts.pass.as_deref().unwrap_or_default();
                if secret_eq(given, expected) {
                    Ok(Some(user.to_owned()))
                } else {
                    Err(AuthFailed)
                }
            }
        }
    }
}

/// Credentials did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

/// Compares secrets without an early exit on the first differing byte.
fn secret_eq(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;

    #[test]
    fn info_json_has_nats_servers_names_and_order() {
        let config = Config {
            server_name: Some("polymq".into()),
            ..Config::default()
        };
        let mut info = Info::new(&config, "NABC", "127.0.0.1".into(), 4222);
        info.client_id = 7;
        info.client_ip = "127.0.0.1".into();
        let json = String::from_utf8(info.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"server_id\":\"NABC\",\"server_name\":\"polymq\",\"version\":\"{ADVERTISED_VERSION}\",\
                 \"proto\":1,\"go\":\"{RUNTIME}\",\"host\":\"127.0.0.1\",\"port\":4222,\
                 \"headers\":true,\"max_payload\":1048576,\"client_id\":7,\"client_ip\":\"127.0.0.1\"}}"
            )
        );
        let auth = Config {
            auth_token: Some("s".into()),
            ..Config::default()
        };
        let json = String::from_utf8(Info::new(&auth, "N", String::new(), 1).to_json()).unwrap();
        assert!(json.contains("\"auth_required\":true"), "{json}");
        assert!(json.contains("\"server_name\":\"N\""), "{json}");
    }

    #[test]
    fn connect_defaults_and_patching() {
        let mut opts = ClientOpts::default();
        assert!(opts.verbose && opts.pedantic && opts.echo && !opts.headers);
        opts.apply_connect(
            br#"{"verbose":false,"headers":true,"name":"svc","lang":"go","protocol":1}"#,
        )
        .unwrap();
        assert!(!opts.verbose && opts.pedantic && opts.headers);
        assert_eq!((opts.name.as_str(), opts.protocol), ("svc", 1));
        opts.apply_connect(br#"{"echo":false,"unknown_field":[1,2]}"#)
            .unwrap();
        assert!(!opts.echo && !opts.verbose && opts.headers);
        assert!(opts.apply_connect(b"").is_err());
        assert!(opts.apply_connect(b"[]").is_err());
        assert!(opts.apply_connect(b"1").is_err());
        assert!(opts.apply_connect(b"null").is_ok());
        assert!(!opts.echo && opts.headers);
        assert!(opts.apply_connect(br#"{"verbose":"yes"}"#).is_err());
        assert!(opts.apply_connect(br#"{"protocol":1.5}"#).is_err());
    }

    #[test]
    fn auth_checks() {
        let token = Auth::from_config(&Config {
            auth_token: Some("s3cret".into()),
            ..Config::default()
        });
        let mut opts = ClientOpts::default();
        assert_eq!(token.check(&opts), Err(AuthFailed));
        opts.auth_token = Some("s3cre".into());
        assert_eq!(token.check(&opts), Err(AuthFailed));
        opts.auth_token = Some("s3cret".into());
        assert_eq!(token.check(&opts), Ok(None));

        let users = Auth::from_config(&Config {
            users: vec![User {
                user: "alice".into(),
                password: "pw".into(),
            }],
            ..Config::default()
        });
        assert!(users.required());
        let mut opts = ClientOpts {
            user: Some("alice".into()),
            ..ClientOpts::default()
        };
        assert_eq!(users.check(&opts), Err(AuthFailed));
        opts.pass = Some("pw".into());
        assert_eq!(users.check(&opts), Ok(Some("alice".into())));
        opts.user = Some("bob".into());
        assert_eq!(users.check(&opts), Err(AuthFailed));

        assert!(!Auth::Open.required());
        assert_eq!(Auth::Open.check(&ClientOpts::default()), Ok(None));
    }
}
