//! polymq-core: the protocol-agnostic routing core every frontend stands on.
//!
//! # Layout
//! - [`subject`]: canonical [`Subject`]/[`Filter`] and the per-protocol name mappings.
//! - [`envelope`]: the one message type, built once at ingress and shared by `Arc`.
//! - [`router`]: subscribe / unsubscribe / publish, the subscription index and match cache,
//!   volatile groups.
//! - [`outbox`]: the bounded per-session queue the router `try_send`s into.
//! - [`queue`]: durable queues (NSQ channels, MQTT persistent sessions): credit, in-flight,
//!   requeue, deferral.
//! - [`topic`]: nsqd topics (channel fan-out, buffering until the first channel).
//! - [`store`]: `trait Store`, implemented by the `polymq-storage` crate; [`record`] encodes
//!   envelopes for it.
//! - [`metrics`]: per-protocol counters; [`net`]: the shared accept loop; [`gotime`]: Go's text
//!   forms of times and durations for nsqd/nats-server-compatible monitoring output.
//!
//! # Dependency rule
//! Depends on no frontend and no storage crate; frontends and storage depend on this crate.

pub mod envelope;
pub mod error;
pub mod gotime;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod queue;
pub mod record;
pub mod router;
pub mod store;
pub mod subject;
pub mod topic;

pub use envelope::{ConnId, Envelope, Headers, MessageId, Origin, Protocol, Qos};
pub use error::RouteError;
pub use outbox::{outbox, Delivery, Outbox, Overflow, Sink};
pub use router::{Routed, Router, RouterConfig, SubscriptionId, SubscriptionSpec};
pub use store::{Offset, PersistMode, QueueName, Store, StoreError};
pub use subject::{Filter, Subject, SubjectError};
