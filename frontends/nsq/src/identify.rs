//! IDENTIFY: the client's JSON, nsqd's range checks, and the feature-negotiation reply.
//!
//! Every integer setting follows nsqd's rule: `0` keeps the default, `-1` disables (where
//! nsqd allows it), anything else must be within the configured range, otherwise
//! `E_BAD_BODY IDENTIFY <setting> (<value>) is invalid`.
//!
//! Feature negotiation offers what nsqd offers by default except TLS: snappy and deflate
//! (levels 1..=6, default 6) are granted when asked for, `tls_v1` is always `false`. Asking
//! for both compressions is nsqd's fatal `E_IDENTIFY_FAILED`.
//!
//! # Invariants
//! - A rejected IDENTIFY leaves the client's settings unchanged.
//! - The reply's fields are in nsqd's order with nsqd's names and units (milliseconds).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::NsqError;
use crate::node::NSQD_VERSION;
use crate::transport::Compression;

/// nsqd's default output buffer size, bytes.
pub const DEFAULT_OUTPUT_BUFFER_SIZE: i64 = 16 * 1024;
/// nsqd's default output buffer timeout.
pub const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);
/// nsqd's smallest output buffer timeout, ms.
const MIN_OUTPUT_BUFFER_TIMEOUT_MS: i64 = 25;
/// nsqd's default deflate level, and its default `--max-deflate-level`.
pub const DEFLATE_LEVEL: u32 = 6;

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

    /// The compression granted (with feature negotiation), by nsqd's rules: deflate at the
    /// requested level when it is positive, capped at [`DEFLATE_LEVEL`].
    pub fn compression(&self) -> Result<Option<Compression>, NsqError> {
        let deflate = self.deflate.unwrap_or(false);
        let snappy = self.snappy.unwrap_or(false);
        match (deflate, snappy) {
            (true, true) => Err(NsqError::CompressionConflict),
            (true, false) => Ok(Some(Compression::Deflate(self.deflate_level()))),
            (false, true) => Ok(Some(Compression::Snappy)),
            (false, false) => Ok(None),
        }
    }

    /// The deflate level nsqd reports and uses.
    fn deflate_level(&self) -> u32 {
        let asked = self.deflate_level.unwrap_or(0);
        let level = if self.deflate.unwrap_or(false) && asked > 0 {
            u32::try_from(asked).unwrap_or(u32::MAX)
        } else {
            DEFLATE_LEVEL
        };
        level.min(DEFLATE_LEVEL)
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
    deflate_level: u32,
    max_deflate_level: u32,
    snappy: bool,
    sample_rate: i32,
    auth_required: bool,
    output_buffer_size: i64,
    output_buffer_timeout: u128,
    topology_region: String,
    topology_zone: String,
}

impl Negotiated {
    /// The reply for a client with `settings` that asked for `data`.
    pub fn new(settings: &Settings, config: &Config, data: &IdentifyData) -> Self {
        let compression = data.compression().ok().flatten();
        Self {
            max_rdy_count: config.max_rdy_count,
            version: NSQD_VERSION,
            max_msg_timeout: config.max_msg_timeout_ms,
            msg_timeout: settings.msg_timeout.as_millis(),
            tls_v1: false,
            deflate: matches!(compression, Some(Compression::Deflate(_))),
            deflate_level: data.deflate_level(),
            max_deflate_level: DEFLATE_LEVEL,
            snappy: compression == Some(Compression::Snappy),
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
    fn range_bounds_are_accepted() {
        let s = apply(
            r#"{"heartbeat_interval":60000,"output_buffer_size":65536,"output_buffer_timeout":30000,"sample_rate":99,"msg_timeout":900000}"#,
        )
        .unwrap();
        assert_eq!(s.heartbeat, Some(Duration::from_secs(60)));
        assert_eq!(s.output_buffer_size, 65536);
        assert_eq!(s.output_buffer_timeout, Duration::from_secs(30));
        assert_eq!(s.sample_rate, 99);
        assert_eq!(s.msg_timeout, Duration::from_secs(900));
        let s = apply(
            r#"{"heartbeat_interval":1000,"output_buffer_size":64,"output_buffer_timeout":25,"msg_timeout":1000}"#,
        )
        .unwrap();
        assert_eq!(s.heartbeat, Some(Duration::from_secs(1)));
        assert_eq!(s.output_buffer_size, 64);
        assert_eq!(s.output_buffer_timeout, Duration::from_millis(25));
        assert_eq!(s.msg_timeout, Duration::from_secs(1));
        assert_eq!(
            apply(r#"{"output_buffer_timeout":-1}"#)
                .unwrap()
                .output_buffer_timeout,
            Duration::ZERO
        );
        assert_eq!(
            apply(r#"{"output_buffer_size":65537}"#).unwrap_err(),
            "E_BAD_BODY IDENTIFY output buffer size (65537) is invalid"
        );
        assert_eq!(
            apply(r#"{"msg_timeout":-1}"#).unwrap_err(),
            "E_BAD_BODY IDENTIFY msg timeout (-1) is invalid"
        );
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
    fn compression_follows_nsqd() {
        let granted = |json: &str| IdentifyData::parse(json.as_bytes()).unwrap().compression();
        assert_eq!(granted("{}").unwrap(), None);
        assert_eq!(
            granted(r#"{"snappy":true}"#).unwrap(),
            Some(Compression::Snappy)
        );
        assert_eq!(
            granted(r#"{"deflate":true}"#).unwrap(),
            Some(Compression::Deflate(6))
        );
        assert_eq!(
            granted(r#"{"deflate":true,"deflate_level":1}"#).unwrap(),
            Some(Compression::Deflate(1))
        );
        assert_eq!(
            granted(r#"{"deflate":true,"deflate_level":9}"#).unwrap(),
            Some(Compression::Deflate(6))
        );
        assert_eq!(
            granted(r#"{"deflate":true,"snappy":true}"#)
                .unwrap_err()
                .to_string(),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        );
        let data = IdentifyData::parse(br#"{"deflate":true,"deflate_level":3}"#).unwrap();
        let config = Config::default();
        let json = Negotiated::new(&Settings::defaults(&config), &config, &data).to_json();
        let text = String::from_utf8(json).unwrap();
        assert!(
            text.contains(
                r#""deflate":true,"deflate_level":3,"max_deflate_level":6,"snappy":false"#
            ),
            "{text}"
        );
    }

    #[test]
    fn negotiation_reply_is_truthful() {
        let config = Config::default();
        let data = IdentifyData::default();
        let json = Negotiated::new(&Settings::defaults(&config), &config, &data).to_json();
        let text = String::from_utf8(json).unwrap();
        assert!(text.starts_with(r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false"#), "{text}");
        assert!(text.contains(r#""snappy":false"#));
        assert!(text.ends_with(r#""output_buffer_size":16384,"output_buffer_timeout":250,"topology_region":"","topology_zone":""}"#), "{text}");
    }
}
