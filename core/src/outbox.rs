//! The bounded per-connection queue between the router and a session's writer.
//!
//! The router and durable queues push [`Delivery`]s into a [`Sink`] with `try_send`; they never
//! await a subscriber. The session drains its [`Outbox`] into one write buffer.
//!
//! # Overflow policy
//! When the outbox is full, the sink's [`Overflow`] decides:
//! - [`Overflow::Drop`]: the delivery is dropped and counted (MQTT QoS 0, ZMTP).
//! - [`Overflow::Disconnect`]: the delivery is dropped and the outbox is marked overflowed; the
//!   session sees [`Outbox::overflowed`] fire and closes as a slow consumer (NATS).
//!
//! # Invariants
//! - [`Sink::offer`] never blocks and never awaits.
//! - At most `capacity` deliveries wait in an outbox: the channel itself is unbounded, and a
//!   shared counter admits a delivery only while below capacity (cheaper per message than a
//!   bounded channel's semaphore, which takes a lock on every receive).
//! - Payloads are shared (`Arc<Envelope>`), never copied per subscriber.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::envelope::Envelope;
use crate::router::SubscriptionId;

/// One message on its way to one subscription of a session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Envelope>,
    /// The subscription it matched (the session maps it to its sid / packet options).
    pub sub: SubscriptionId,
    /// Delivery attempts including this one (durable queues); 0 for plain subscriptions.
    pub attempts: u16,
}

/// What to do when a sink's outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the delivery and count it.
    Drop,
    /// Drop the delivery and signal the session to disconnect (slow consumer).
    Disconnect,
}

/// Result of offering a delivery to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the session.
    Queued,
    /// The outbox was full; the delivery was dropped per the overflow policy.
    Dropped,
    /// The session is gone.
    Closed,
}

#[derive(Debug)]
struct Shared {
    dropped: AtomicU64,
    overflowed: CancellationToken,
    /// Deliveries in the channel.
    queued: AtomicUsize,
    capacity: usize,
}

impl Shared {
    /// Takes one slot; false when the outbox is full.
    fn reserve(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) < self.capacity {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        false
    }

    fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router's end of a session outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sink {
    tx: mpsc::UnboundedSender<Delivery>,
    overflow: Overflow,
    shared: Arc<Shared>,
}

/// The session's end of its outbox.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Delivery>,
    shared: Arc<Shared>,
}

/// Creates a bounded outbox holding at most `capacity` deliveries.
pub fn outbox(capacity: usize, overflow: Overflow) -> (Sink, Outbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        overflowed: CancellationToken::new(),
        queued: AtomicUsize::new(0),
        capacity: capacity.max(1),
    });
    (
        Sink {
            tx,
            overflow,
            shared: shared.clone(),
        },
        Outbox { rx, shared },
    )
}

impl Sink {
    /// Queues a delivery without waiting; applies the overflow policy when full.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        match self.try_offer(delivery) {
            Ok(()) => Offer::Queued,
            Err(_) if self.tx.is_closed() => Offer::Closed,
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if self.overflow == Overflow::Disconnect {
                    self.shared.overflowed.cancel();
                }
                Offer::Dropped
            }
        }
    }

    /// Queues a delivery only if there is room; gives it back otherwise. Used by durable queues,
    /// which keep a message rather than drop it.
    pub fn try_offer(&self, delivery: Delivery) -> Result<(), Delivery> {
        if !self.shared.reserve() {
            return Err(delivery);
        }
        self.tx.send(delivery).map_err(|mpsc::error::SendError(d)| {
            self.shared.release();
            d
        })
    }

    /// True when a delivery would be queued right now.
    pub fn has_room(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) < self.shared.capacity
    }

    /// True when the session has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True when both sinks feed the same outbox.
    pub fn same_outbox(&self, other: &Sink) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

impl Outbox {
    /// Waits for the next delivery; `None` once every sink is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await;
        if delivery.is_some() {
            self.shared.release();
        }
        delivery
    }

    /// Takes a delivery if one is ready.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok();
        if delivery.is_some() {
            self.shared.release();
        }
        delivery
    }

    /// Resolves when a [`Overflow::Disconnect`] sink overflowed (slow consumer).
    pub fn overflowed(&self) -> WaitForCancellationFutureOwned {
        self.shared.overflowed.clone().cancelled_owned()
    }

    /// True once a disconnect-on-overflow sink overflowed.
    pub fn is_overflowed(&self) -> bool {
        self.shared.overflowed.is_cancelled()
    }

    /// Deliveries dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Deliveries waiting in the outbox.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Origin;
    use crate::subject::Subject;
    use bytes::Bytes;

    fn delivery() -> Delivery {
        let msg = Envelope::new(Subject::new("a").unwrap(), Bytes::new(), Origin::broker());
        Delivery {
            msg: Arc::new(msg),
            sub: SubscriptionId(1),
            attempts: 0,
        }
    }

    #[test]
    fn drop_policy_counts_and_keeps_the_session() {
        let (sink, mut out) = outbox(1, Overflow::Drop);
        assert_eq!(sink.offer(delivery()), Offer::Queued);
        assert_eq!(sink.offer(delivery()), Offer::Dropped);
        assert_eq!(out.dropped(), 1);
        assert!(!out.is_overflowed());
        assert!(out.try_recv().is_some());
        assert!(out.try_recv().is_none());
    }

    #[test]
    fn disconnect_policy_signals_overflow() {
        let (sink, out) = outbox(1, Overflow::Disconnect);
        sink.offer(delivery());
        assert!(!out.is_overflowed());
        sink.offer(delivery());
        assert!(out.is_overflowed());
    }

    #[test]
    fn closed_outbox_reports_closed() {
        let (sink, out) = outbox(1, Overflow::Drop);
        drop(out);
        assert_eq!(sink.offer(delivery()), Offer::Closed);
        assert!(sink.is_closed());
    }
}
