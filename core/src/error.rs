//! Errors of the routing layer.

/// Why the core could not accept or route a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The queue or router is shutting down.
    #[error("closed")]
    Closed,
    /// A memory queue reached its depth limit.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// The store refused the write.
    #[error("store: {0}")]
    Store(String),
}
