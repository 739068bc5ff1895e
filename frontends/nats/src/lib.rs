//! polymq-nats: the NATS client-protocol frontend.
//!
//! # Layout
//! - [`frame`]: the pure wire codec (ops, limits, `ServerCodec`/`ClientCodec`).
//! - [`config`]: the `[nats]` section of config.toml.

pub mod config;
pub mod frame;
