//! polymq-zmtp: the ZMTP 3.0/3.1 (ZeroMQ) frontend.

pub mod config;
pub mod frame;
