//! polymq-core: the protocol-agnostic routing core every frontend stands on.
//!
//! # Layout
//! - [`subject`]: canonical [`Subject`]/[`Filter`] and the per-protocol name mappings.
//! - [`envelope`]: the one message type, built once at ingress and shared by `Arc`.
//! - [`store`]: `trait Store`, implemented by the `polymq-storage` crate.
//!
//! # Dependency rule
//! Depends on no frontend and no storage crate; frontends and storage depend on this crate.

pub mod envelope;
pub mod store;
pub mod subject;

pub use envelope::{ConnId, Envelope, Headers, MessageId, Origin, Protocol, Qos};
pub use store::{Offset, PersistMode, QueueName, Store, StoreError};
pub use subject::{Filter, Subject, SubjectError};
