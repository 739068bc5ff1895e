//! Durable queue tests, driven by tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::envelope::Origin;
use crate::outbox::{outbox, Outbox, Overflow};
use crate::router::tests::NullStore;
use crate::subject::Subject;

fn queue(config: QueueConfig) -> Arc<DurableQueue> {
    let backing = Backing::new(Arc::new(NullStore));
    DurableQueue::new(QueueName::new("q"), &backing, config, false)
}

fn short() -> QueueConfig {
    QueueConfig {
        msg_timeout: Duration::from_secs(1),
        max_msg_timeout: Duration::from_secs(3),
        max_depth: 100,
        mem_queue_size: 100,
    }
}

fn msg(body: &'static str) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Subject::new("s").unwrap(),
        Bytes::from_static(body.as_bytes()),
        Origin::broker(),
    ))
}

fn member(q: &Arc<DurableQueue>) -> (Member, Outbox) {
    let (sink, out) = outbox(64, Overflow::Drop);
    (q.attach(sink, SubscriptionId(1)), out)
}

fn bodies(out: &mut Outbox) -> Vec<(String, u16)> {
    std::iter::from_fn(|| out.try_recv())
        .map(|d| {
            (
                String::from_utf8_lossy(&d.msg.payload).into_owned(),
                d.attempts,
            )
        })
        .collect()
}

/// Lets the timer task observe the advanced clock.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn buffers_without_members_and_respects_credit() {
    let q = queue(short());
    for body in ["1", "2", "3"] {
        q.put(msg(body)).await.unwrap();
    }
    assert_eq!(q.stats().depth, 3);
    let (m, mut out) = member(&q);
    assert!(bodies(&mut out).is_empty(), "credit starts at zero (RDY 0)");
    m.set_credit(2);
    assert_eq!(bodies(&mut out), [("1".into(), 1), ("2".into(), 1)]);
    assert_eq!(m.in_flight(), 2);
    let first = q.state.lock().in_flight.keys().copied().collect::<Vec<_>>();
    m.fin(&first[0]).unwrap();
    assert_eq!(bodies(&mut out), [("3".into(), 1)], "a FIN frees one slot");
    assert_eq!(q.stats().in_flight, 2);
}

#[tokio::test(start_paused = true)]
async fn timeout_requeues_with_attempts_plus_one() {
    let q = queue(short());
    let (m, mut out) = member(&q);
    m.set_credit(1);
    q.put(msg("a")).await.unwrap();
    assert_eq!(bodies(&mut out), [("a".into(), 1)]);
    advance(Duration::from_millis(1100)).await;
    assert_eq!(bodies(&mut out), [("a".into(), 2)]);
    assert_eq!(q.stats().timeout_count, 1);
}

#[tokio::test(start_paused = true)]
async fn touch_extends_up_to_the_cap() {
    let q = queue(short());
    let (m, mut out) = member(&q);
    m.set_credit(1);
    q.put(msg("a")).await.unwrap();
    bodies(&mut out);
    let id = *q.state.lock().in_flight.keys().next().unwrap();
    for _ in 0..3 {
        advance(Duration::from_millis(800)).await;
        m.touch(&id).unwrap();
        assert!(
            bodies(&mut out).is_empty(),
            "touched messages do not time out"
        );
    }
    // The last touch (at 2.4 s) was capped at max_msg_timeout: 3 s after delivery.
    advance(Duration::from_millis(500)).await;
    assert!(bodies(&mut out).is_empty());
    advance(Duration::from_millis(200)).await;
    assert_eq!(bodies(&mut out), [("a".into(), 2)]);
}

#[tokio::test(start_paused = true)]
async fn requeue_with_delay_defers() {
    let q = queue(short());
    let (m, mut out) = member(&q);
    m.set_credit(5);
    q.put(msg("a")).await.unwrap();
    bodies(&mut out);
    let id = *q.state.lock().in_flight.keys().next().unwrap();
    m.requeue(&id, Duration::from_millis(500)).unwrap();
    assert_eq!(q.stats().deferred, 1);
    assert!(bodies(&mut out).is_empty());
    advance(Duration::from_millis(600)).await;
    assert_eq!(bodies(&mut out), [("a".into(), 2)]);
    assert_eq!(q.stats().requeue_count, 1);
}

#[tokio::test(start_paused = true)]
async fn deferred_publish_waits() {
    let q = queue(short());
    let (m, mut out) = member(&q);
    m.set_credit(5);
    q.put_deferred(msg("later"), Duration::from_secs(2))
        .await
        .unwrap();
    q.put(msg("now")).await.unwrap();
    assert_eq!(bodies(&mut out), [("now".into(), 1)]);
    let now_id = *q.state.lock().in_flight.keys().next().unwrap();
    m.fin(&now_id).unwrap();
    advance(Duration::from_millis(2100)).await;
    assert_eq!(bodies(&mut out), [("later".into(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn acks_check_ownership() {
    let q = queue(short());
    let (a, mut out_a) = member(&q);
    let (b, _out_b) = member(&q);
    a.set_credit(1);
    q.put(msg("x")).await.unwrap();
    bodies(&mut out_a);
    let id = *q.state.lock().in_flight.keys().next().unwrap();
    assert_eq!(b.fin(&id), Err(AckError::NotOwner));
    assert_eq!(b.touch(&id), Err(AckError::NotOwner));
    assert_eq!(a.fin(&MessageId::from_u64(1)), Err(AckError::NotInFlight));
    assert_eq!(a.fin(&id), Ok(()));
    assert_eq!(a.fin(&id), Err(AckError::NotInFlight));
}

#[tokio::test(start_paused = true)]
async fn detached_member_messages_go_to_the_next() {
    let q = queue(short());
    let (a, mut out_a) = member(&q);
    let (b, mut out_b) = member(&q);
    a.set_credit(2);
    q.put(msg("1")).await.unwrap();
    q.put(msg("2")).await.unwrap();
    assert_eq!(bodies(&mut out_a).len(), 2);
    drop(a);
    b.set_credit(5);
    assert_eq!(bodies(&mut out_b), [("1".into(), 2), ("2".into(), 2)]);
}

#[tokio::test(start_paused = true)]
async fn pause_empty_and_depth_limit() {
    let q = queue(QueueConfig {
        max_depth: 2,
        ..short()
    });
    let (m, mut out) = member(&q);
    q.pause();
    m.set_credit(5);
    q.put(msg("1")).await.unwrap();
    q.put(msg("2")).await.unwrap();
    assert!(matches!(
        q.put(msg("3")).await,
        Err(RouteError::QueueFull(_))
    ));
    assert!(bodies(&mut out).is_empty(), "paused queues keep messages");
    q.unpause();
    assert_eq!(bodies(&mut out).len(), 2);
    q.pause();
    q.put(msg("4")).await.unwrap();
    q.empty();
    assert_eq!(q.stats().depth, 0);
    assert_eq!(q.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn members_share_round_robin() {
    let q = queue(short());
    let (a, mut out_a) = member(&q);
    let (b, mut out_b) = member(&q);
    a.set_credit(10);
    b.set_credit(10);
    for _ in 0..10 {
        q.put(msg("m")).await.unwrap();
    }
    assert_eq!(bodies(&mut out_a).len(), 5);
    assert_eq!(bodies(&mut out_b).len(), 5);
}

/// A durable in-memory store: records survive as long as the value (tests of spilling).
#[derive(Debug, Default)]
struct RecordingStore {
    queues: Mutex<std::collections::BTreeMap<u64, Bytes>>,
}

#[async_trait::async_trait]
impl Store for RecordingStore {
    fn is_durable(&self) -> bool {
        true
    }
    async fn append(
        &self,
        _: &QueueName,
        batch: &[Bytes],
    ) -> Result<Vec<Offset>, crate::StoreError> {
        let mut q = self.queues.lock();
        let next = q.keys().next_back().map_or(0, |k| k + 1);
        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, b)| {
                q.insert(next + i as u64, b.clone());
                Offset(next + i as u64)
            })
            .collect())
    }
    async fn read(
        &self,
        _: &QueueName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<(Offset, Bytes)>, crate::StoreError> {
        let q = self.queues.lock();
        Ok(q.range(from.0..)
            .take(max)
            .map(|(k, v)| (Offset(*k), v.clone()))
            .collect())
    }
    async fn release(&self, _: &QueueName, acked: &[Offset]) -> Result<(), crate::StoreError> {
        let mut q = self.queues.lock();
        acked.iter().for_each(|o| {
            q.remove(&o.0);
        });
        Ok(())
    }
    async fn remove_queue(&self, _: &QueueName) -> Result<(), crate::StoreError> {
        Ok(())
    }
    async fn queues(&self) -> Result<Vec<QueueName>, crate::StoreError> {
        Ok(Vec::new())
    }
    async fn put_meta(&self, _: &str, _: Option<Bytes>) -> Result<(), crate::StoreError> {
        Ok(())
    }
    async fn load_meta(&self, _: &str) -> Result<Vec<(String, Bytes)>, crate::StoreError> {
        Ok(Vec::new())
    }
    async fn persist(&self, _: crate::PersistMode) -> Result<(), crate::StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn past_mem_queue_size_messages_live_in_the_store_and_come_back_in_order() {
    let store = Arc::new(RecordingStore::default());
    let backing = Backing::new(store.clone());
    let config = QueueConfig {
        mem_queue_size: 4,
        ..short()
    };
    let q = DurableQueue::new(QueueName::new("spill"), &backing, config, false);
    let bodies_in: Vec<&'static str> = vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    for body in &bodies_in {
        q.put(msg(body)).await.unwrap();
    }
    let stats = q.stats();
    assert_eq!(
        (stats.depth, stats.backend_depth),
        (10, 6),
        "4 in memory, 6 only in the store"
    );
    assert_eq!(q.state.lock().ready.len(), 4);

    let (m, mut out) = member(&q);
    m.set_credit(100);
    let mut got = Vec::new();
    for _ in 0..200 {
        while let Some(d) = out.try_recv() {
            m.fin(&d.msg.id).unwrap();
            got.push(String::from_utf8_lossy(&d.msg.payload).into_owned());
        }
        if got.len() == bodies_in.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(got, bodies_in, "every message, in publish order");
    assert_eq!(q.stats().backend_depth, 0);
    for _ in 0..200 {
        if store.queues.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        store.queues.lock().is_empty(),
        "finished records are released"
    );
}

#[tokio::test(start_paused = true)]
async fn a_limited_queue_drops_the_newest_and_counts() {
    let q = queue(short());
    q.set_limit(2);
    for body in ["1", "2", "3", "4"] {
        q.put(msg(body)).await.unwrap();
    }
    assert_eq!(q.stats().depth, 2);
    assert_eq!(q.dropped(), 2);
    let (m, mut out) = member(&q);
    m.set_credit(10);
    assert_eq!(bodies(&mut out), [("1".into(), 1), ("2".into(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn ephemeral_queues_drop_past_mem_queue_size() {
    let backing = Backing::new(Arc::new(NullStore));
    let config = QueueConfig {
        mem_queue_size: 2,
        ..short()
    };
    let q = DurableQueue::new(QueueName::new("e#ephemeral"), &backing, config, true);
    for body in ["1", "2", "3"] {
        q.put(msg(body)).await.unwrap();
    }
    q.put_deferred(msg("later"), Duration::from_secs(1))
        .await
        .unwrap();
    let stats = q.stats();
    assert_eq!(
        (stats.depth, stats.deferred),
        (2, 1),
        "deferred messages do not count"
    );
    assert_eq!(q.dropped(), 1);
}

#[tokio::test]
async fn flush_writes_waits_for_releases_handed_to_the_writer() {
    let store = Arc::new(RecordingStore::default());
    let backing = Backing::new(store.clone());
    let q = DurableQueue::new(QueueName::new("acked"), &backing, short(), false);
    let (m, mut out) = member(&q);
    m.set_credit(2);
    q.put(msg("a")).await.unwrap();
    q.put(msg("b")).await.unwrap();
    let ids: Vec<MessageId> = std::iter::from_fn(|| out.try_recv())
        .map(|d| d.msg.id)
        .collect();
    assert_eq!(ids.len(), 2);
    ids.iter().for_each(|id| m.fin(id).unwrap());
    // The releases are only handed to the writer so far.
    assert_eq!(store.queues.lock().len(), 2);
    q.flush_writes().await;
    assert!(store.queues.lock().is_empty());
}
