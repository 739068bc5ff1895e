//! IDENTIFY: the client's JSON, nsqd's range checks, and the feature-negotiation reply.
//!
//! Every integer setting follows nsqd's rule: `0` keeps the default, `-1` disables (where
//! nsqd allows it), anything else must be within the configured range, otherwise
//! `E_BAD_BODY IDENTIFY <setting> (<value>) is invalid`.
//!
//! polymq answers feature negotiation truthfully: TLS, snappy and deflate are not offered, so
//! `tls_v1`, `snappy` and `deflate` are `false` whatever the client asked, and no stream
//! upgrade follows the JSON.
//!
//! # Invariants
//! - A rejected IDENTIFY leaves the client's settings unchanged.
//! - The reply's fields are in nsqd's order with nsqd's names and units (milliseconds).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::NsqError;
use crate::node::NSQD_VERSION;

/// nsqd's default output buffer size, bytes.
pub const DEFAULT_OUTPUT_BUFFER_SIZE: i64 = 16 * 1024;
/// nsqd's default output buffer timeout.
pub const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);
/// nsqd's smallest output buffer timeout, ms.
const MIN_OUTPUT_BUFFER_TIMEOUT_MS: i64 = 25;
/// nsqd's default and maximum deflate level.
const DEFLATE_LEVEL: i64 = 6;

/// The IDENTIFY body. Unknown keys are ignored and `null` keeps the default, as with Go's
/// `encoding/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IdentifyData {
    /// Client-chosen id.
    pub client_id: Option<String>,
    /// Client host name.
    pub hostname: Option<String>,
    /// Heartbeat interval, ms.
    pub heartbeat_interval: Option<i64>,
    /// Output buffer size, bytes.
    pub output_buffer_size: Option<i64>,
    /// Output buffer timeout, ms.
    pub output_buffer_timeout: Option<i64>,
    /// Reply with the negotiation JSON instead of `OK`.
    pub feature_negotiation: Option<bool>,
    /// Asks for TLS.
    pub tls_v1: Option<bool>,
    /// Asks for deflate.
    pub deflate: Option<bool>,
    /// Deflate level.
    pub deflate_level: Option<i64>,
    /// Asks for snappy.
    pub snappy: Option<bool>,
    /// Percentage of messages to receive.
    pub sample_rate: Option<i32>,
    /// Client library and version.
    pub user_agent: Option<String>,
    /// In-flight timeout, ms.
    pub msg_timeout: Option<i64>,
    /// Topology region.
    pub topology_region: Option<String>,
    /// Topology zone.
    pub topology_zone: Option<String>,
}

impl IdentifyData {
    /// Parses the body; any JSON or type error is nsqd's "failed to decode JSON body".
    /// Like Go, the top level must be an object (or `null`).
    pub fn parse(body: &[u8]) -> Result<Self, NsqError> {
        match serde_json::from_slice(body) {
            Ok(serde_json::Value::Null) => Ok(Self::default()),
            Ok(value @ serde_json::Value::Object(_)) => {
                serde_json::from_value(value).map_err(|_| NsqError::IdentifyJson)
            }
            Ok(_) | Err(_) => Err(NsqError::IdentifyJson),
        }
    }
}

/// A client's negotiable settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Heartbeat interval; `None` when disabled.
    pub heartbeat: Option<Duration>,
    /// Output buffer size, bytes.
    pub output_buffer_size: i64,
    /// Output buffer timeout; zero when disabled.
    pub output_buffer_timeout: Duration,
    /// Sample rate, 0 (off) to 99.
    pub sample_rate: i32,
    /// In-flight timeout.
    pub msg_timeout: Duration,
}

impl Settings {
    /// nsqd's defaults for a new client.
    pub fn defaults(config: &Config) -> Self {
        Self {
            heartbeat: Some(config.heartbeat_interval()).filter(|d| !d.is_zero()),
            output_buffer_size: DEFAULT_OUTPUT_BUFFER_SIZE,
            output_buffer_timeout: DEFAULT_OUTPUT_BUFFER_TIMEOUT,
            sample_rate: 0,
            msg_timeout: config.msg_timeout(),
        }
    }

    /// The settings after applying `data`, in nsqd's order of checks.
    pub fn apply(mut self, data: &IdentifyData, config: &Config) -> Result<Self, NsqError> {
        match data.heartbeat_interval.unwrap_or(0) {
            -1 => self.heartbeat = None,
            0 => {}
            ms if (1000..=limit(config.max_heartbeat_interval_ms)).contains(&ms) => {
                self.heartbeat = Some(millis(ms));
            }
            ms => return Err(invalid("heartbeat interval", ms)),
        }
        let size = data.output_buffer_size.unwrap_or(0);
        match data.output_buffer_timeout.unwrap_or(0) {
            -1 => self.output_buffer_timeout = Duration::ZERO,
            0 => {}
            ms if (MIN_OUTPUT_BUFFER_TIMEOUT_MS..=limit(config.max_output_buffer_timeout_ms))
                .contains(&ms) =>
            {
                self.output_buffer_timeout = millis(ms);
            }
            ms => return Err(invalid("output buffer timeout", ms)),
        }
        match size {
            -1 => {
                self.output_buffer_size = 1;
                self.output_buffer_timeout = Duration::ZERO;
            }
            0 => {}
            n if (64..=limit(config.max_output_buffer_size)).contains(&n) => {
                self.output_buffer_size = n;
            }
            n => return Err(invalid("output buffer size", n)),
        }
        let rate = data.sample_rate.unwrap_or(0);
        if !(0..=99).contains(&rate) {
            return Err(invalid("sample rate", i64::from(rate)));
        }
        self.sample_rate = rate;
        match data.msg_timeout.unwrap_or(0) {
            0 => {}
            ms if (1000..=limit(config.max_msg_timeout_ms)).contains(&ms) => {
                self.msg_timeout = millis(ms);
            }
            ms => return Err(invalid("msg timeout", ms)),
        }
        Ok(self)
    }
}

/// The feature-negotiation reply, field for field as nsqd marshals it.
#[derive(Debug, Serialize)]
pub struct Negotiated {
    max_rdy_count: u64,
    version: &'static str,
    max_msg_timeout: u64,
    msg_timeout: u128,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    max_deflate_level: i64,
    snappy: bool,
    sample_rate: i32,
    auth_required: bool,
    output_buffer_size: i64,
    output_buffer_timeout: u128,
    topology_region: String,
    topology_zone: String,
}

impl Negotiated {
    /// The reply for a client with `settings`.
    pub fn new(settings: &Settings, config: &Config) -> Self {
        Self {
            max_rdy_count: config.max_rdy_count,
            version: NSQD_VERSION,
            max_msg_timeout: config.max_msg_timeout_ms,
            msg_timeout: settings.msg_timeout.as_millis(),
            tls_v1: false,
            deflate: false,
            deflate_level: DEFLATE_LEVEL,
            max_deflate_level: DEFLATE_LEVEL,
            snappy: false,
            sample_rate: settings.sample_rate,
            auth_required: config.auth_enabled(),
            output_buffer_size: settings.output_buffer_size,
            output_buffer_timeout: settings.output_buffer_timeout.as_millis(),
            topology_region: String::new(),
            topology_zone: String::new(),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn limit(max: u64) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.unsigned_abs())
}

fn invalid(what: &str, value: i64) -> NsqError {
    NsqError::IdentifyValue(format!("{what} ({value}) is invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(json: &str) -> Result<Settings, String> {
        let config = Config::default();
        let data = IdentifyData::parse(json.as_bytes()).map_err(|e| e.to_string())?;
        Settings::defaults(&config)
            .apply(&data, &config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_disabling() {
        let s = apply("{}").unwrap();
        assert_eq!(s.heartbeat, Some(Duration::from_secs(30)));
        assert_eq!(s.output_buffer_size, 16384);
        let s = apply(r#"{"heartbeat_interval":-1,"output_buffer_size":-1}"#).unwrap();
        assert_eq!(s.heartbeat, None);
        assert_eq!(s.output_buffer_size, 1);
        assert_eq!(s.output_buffer_timeout, Duration::ZERO);
        let s =
            apply(r#"{"msg_timeout":5000,"sample_rate":50,"heartbeat_interval":null}"#).unwrap();
        assert_eq!(s.msg_timeout, Duration::from_secs(5));
        assert_eq!(s.sample_rate, 50);
    }

    #[test]
    fn range_errors_match_nsqd() {
        let cases = [
            (
                r#"{"heartbeat_interval":999}"#,
                "heartbeat interval (999) is invalid",
            ),
            (
                r#"{"heartbeat_interval":60001}"#,
                "heartbeat interval (60001) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":24}"#,
                "output buffer timeout (24) is invalid",
            ),
            (
                r#"{"output_buffer_size":63}"#,
                "output buffer size (63) is invalid",
            ),
            (r#"{"sample_rate":100}"#, "sample rate (100) is invalid"),
            (r#"{"msg_timeout":999}"#, "msg timeout (999) is invalid"),
            (
                r#"{"msg_timeout":900001}"#,
                "msg timeout (900001) is invalid",
            ),
        ];
        for (json, text) in cases {
            assert_eq!(
                apply(json).unwrap_err(),
                format!("E_BAD_BODY IDENTIFY {text}")
            );
        }
        for bad in [
            "{",
            "[]",
            r#"{"msg_timeout":"5"}"#,
            r#"{"msg_timeout":1.5}"#,
        ] {
            assert_eq!(
                apply(bad).unwrap_err(),
                "E_BAD_BODY IDENTIFY failed to decode JSON body"
            );
        }
    }

    #[test]
    fn negotiation_reply_is_truthful() {
        let config = Config::default();
        let json = Negotiated::new(&Settings::defaults(&config), &config).to_json();
        let text = String::from_utf8(json).unwrap();
        assert!(text.starts_with(r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false"#), "{text}");
        assert!(text.contains(r#""snappy":false"#));
        assert!(text.ends_with(r#""output_buffer_size":16384,"output_buffer_timeout":250,"topology_region":"","topology_zone":""}"#), "{text}");
    }
}
