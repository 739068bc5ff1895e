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
    let backing = Backing {
        store: Arc::new(NullStore),
        background: Default::default(),
    };
    DurableQueue::new(QueueName::new("q"), &backing, config, false)
}

fn short() -> QueueConfig {
    QueueConfig {
        msg_timeout: Duration::from_secs(1),
        max_msg_timeout: Duration::from_secs(3),
        max_depth: 100,
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
