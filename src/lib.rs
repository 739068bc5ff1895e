//! polymq: one broker for NSQ, NATS, MQTT and ZMTP on one routing core.
//!
//! This crate is the binary's library half: configuration loading, wiring of storage, router
//! and frontends, the admin listener and logging. Embedders and tests call [`app::start`].
//!
//! # Layout
//! - [`config`]: the whole `config.toml`, layered defaults < file < env < CLI.
//! - [`app`]: start-up, listeners, graceful shutdown.
//! - [`admin`]: `/healthz`, `/metrics` and NATS monitoring over HTTP.
//! - [`telemetry`]: `tracing` subscriber set-up.

pub mod admin;
pub mod app;
pub mod config;
pub mod telemetry;
