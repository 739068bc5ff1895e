//! polymq-nsq: nsqd's TCP protocol V2 and HTTP API on the polymq core.
//!
//! # Modules
//! - [`frame`]: pure V2 codec (commands, frames, limits, nsqd's error texts).
//! - [`config`]: the `[nsq]` section of config.toml.

pub mod config;
pub mod frame;
