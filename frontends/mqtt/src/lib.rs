//! polymq-mqtt: the MQTT 3.1.1 and 5.0 frontend.
//!
//! # Module map
//! - [`frame`]: pure codec for MQTT 3.1, 3.1.1 and 5.0 (no async, no core types).
//! - [`config`]: the `[mqtt]` section of config.toml.

pub mod config;
pub mod frame;
