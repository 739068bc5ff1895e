//! Router tests: behaviour tables and a proptest against a naive matcher.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::envelope::{ConnId, Protocol};
use crate::outbox::{outbox, Outbox, Overflow};
use crate::store::{Offset, PersistMode};

/// A store that keeps nothing (the core skips it for queue bodies).
#[derive(Debug)]
pub(crate) struct NullStore;

#[async_trait]
impl Store for NullStore {
    fn is_durable(&self) -> bool {
        false
    }
    async fn append(&self, _: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        Ok((0..batch.len() as u64).map(Offset).collect())
    }
    async fn read(
        &self,
        _: &QueueName,
        _: Offset,
        _: usize,
    ) -> Result<Vec<(Offset, Bytes)>, StoreError> {
        Ok(Vec::new())
    }
    async fn release(&self, _: &QueueName, _: &[Offset]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn remove_queue(&self, _: &QueueName) -> Result<(), StoreError> {
        Ok(())
    }
    async fn queues(&self) -> Result<Vec<QueueName>, StoreError> {
        Ok(Vec::new())
    }
    async fn put_meta(&self, _: &str, _: Option<Bytes>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn load_meta(&self, _: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        Ok(Vec::new())
    }
    async fn persist(&self, _: PersistMode) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A durable store that accepts appends until told to fail them.
#[derive(Debug, Default)]
struct FlakyStore {
    fail: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    fn is_durable(&self) -> bool {
        true
    }
    async fn append(&self, _: &QueueName, batch: &[Bytes]) -> Result<Vec<Offset>, StoreError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(StoreError::Full("test".into()));
        }
        NullStore.append(&QueueName::new("x"), batch).await
    }
    async fn read(&self, q: &QueueName, from: Offset, max: usize) -> StoreResult<Records> {
        NullStore.read(q, from, max).await
    }
    async fn release(&self, q: &QueueName, offsets: &[Offset]) -> Result<(), StoreError> {
        NullStore.release(q, offsets).await
    }
    async fn remove_queue(&self, q: &QueueName) -> Result<(), StoreError> {
        NullStore.remove_queue(q).await
    }
    async fn queues(&self) -> Result<Vec<QueueName>, StoreError> {
        NullStore.queues().await
    }
    async fn put_meta(&self, key: &str, value: Option<Bytes>) -> Result<(), StoreError> {
        NullStore.put_meta(key, value).await
    }
    async fn load_meta(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        NullStore.load_meta(prefix).await
    }
    async fn persist(&self, mode: PersistMode) -> Result<(), StoreError> {
        NullStore.persist(mode).await
    }
}

type Records = Vec<(Offset, Bytes)>;
type StoreResult<T> = Result<T, StoreError>;

fn router() -> Router {
    Router::new(RouterConfig::default(), Arc::new(NullStore))
}

fn origin(conn: u64) -> Origin {
    Origin {
        protocol: Protocol::Nats,
        conn: ConnId(conn),
    }
}

fn msg(subject: &str, conn: u64) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Subject::new(subject).unwrap(),
        Bytes::from_static(b"x"),
        origin(conn),
    ))
}

fn sub(r: &Router, filter: Filter, conn: u64) -> (SubscriptionId, Outbox) {
    let (sink, out) = outbox(64, Overflow::Drop);
    (
        r.subscribe(SubscriptionSpec::new(filter, origin(conn)), sink),
        out,
    )
}

fn drain(out: &mut Outbox) -> Vec<String> {
    std::iter::from_fn(|| out.try_recv())
        .map(|d| d.msg.subject.to_string())
        .collect()
}

#[tokio::test]
async fn plain_subscriptions_get_every_match() {
    let r = router();
    let (_, mut exact) = sub(&r, Filter::new("a.b").unwrap(), 1);
    let (_, mut star) = sub(&r, Filter::new("a.*").unwrap(), 1);
    let (_, mut tail) = sub(&r, Filter::new("a.>").unwrap(), 1);
    let (_, mut prefix) = sub(&r, Filter::prefix(&b"a.b"[..]), 1);
    for s in ["a.b", "a.c", "a.b.c", "b"] {
        r.publish(msg(s, 9));
    }
    assert_eq!(drain(&mut exact), ["a.b"]);
    assert_eq!(drain(&mut star), ["a.b", "a.c"]);
    assert_eq!(drain(&mut tail), ["a.b", "a.c", "a.b.c"]);
    assert_eq!(drain(&mut prefix), ["a.b", "a.b.c"]);
}

#[tokio::test]
async fn unsubscribe_invalidates_the_cache() {
    let r = router();
    let (id, mut out) = sub(&r, Filter::new("a.*").unwrap(), 1);
    assert_eq!(r.publish(msg("a.b", 9)).delivered, 1);
    r.unsubscribe(id);
    assert_eq!(r.publish(msg("a.b", 9)).matched(), 0);
    let (_, mut late) = sub(&r, Filter::new(">").unwrap(), 1);
    assert_eq!(r.publish(msg("a.b", 9)).delivered, 1);
    assert_eq!(drain(&mut out), ["a.b"]);
    assert_eq!(drain(&mut late), ["a.b"]);
    assert_eq!(r.subscription_count(), 1);
}

#[tokio::test]
async fn leading_wildcards_skip_system_subjects() {
    let r = router();
    let (_, mut all) = sub(&r, Filter::new(">").unwrap(), 1);
    let (_, mut zmq_all) = sub(&r, Filter::prefix(Bytes::new()), 1);
    let (_, mut sys) = sub(&r, Filter::new("$SYS.>").unwrap(), 1);
    r.publish(msg("$SYS.broker.uptime", 9));
    r.publish(msg("x", 9));
    assert_eq!(drain(&mut all), ["x"]);
    assert_eq!(drain(&mut zmq_all), ["x"]);
    assert_eq!(drain(&mut sys), ["$SYS.broker.uptime"]);
}

#[tokio::test]
async fn mqtt_hash_matches_the_parent_once() {
    let r = router();
    let (_, mut out) = sub(&r, Filter::with_parent("a.>").unwrap(), 1);
    r.publish(msg("a", 9));
    r.publish(msg("a.b", 9));
    r.publish(msg("ab", 9));
    assert_eq!(drain(&mut out), ["a", "a.b"]);
}

#[tokio::test]
async fn groups_deliver_each_message_once() {
    let r = router();
    let mut outs = Vec::new();
    for conn in 0..3 {
        let (sink, out) = outbox(64, Overflow::Drop);
        let mut spec = SubscriptionSpec::new(Filter::new("jobs.*").unwrap(), origin(conn));
        spec.group = Some(Arc::from("workers"));
        r.subscribe(spec, sink);
        outs.push(out);
    }
    let (_, mut plain) = sub(&r, Filter::new("jobs.*").unwrap(), 7);
    for _ in 0..30 {
        let routed = r.publish(msg("jobs.x", 9));
        assert_eq!(
            routed.delivered, 2,
            "one group member and one plain subscriber"
        );
    }
    let counts: Vec<usize> = outs.iter_mut().map(|o| drain(o).len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30);
    assert!(
        counts.iter().all(|&c| c == 10),
        "round robin spreads evenly: {counts:?}"
    );
    assert_eq!(drain(&mut plain).len(), 30);
}

#[tokio::test]
async fn groups_prefer_members_with_room() {
    let r = router();
    let (full_sink, _full) = outbox(1, Overflow::Drop);
    let (roomy_sink, mut roomy) = outbox(64, Overflow::Drop);
    for sink in [full_sink, roomy_sink] {
        let mut spec = SubscriptionSpec::new(Filter::new("q").unwrap(), origin(1));
        spec.group = Some(Arc::from("g"));
        r.subscribe(spec, sink);
    }
    for _ in 0..10 {
        r.publish(msg("q", 9));
    }
    assert!(
        drain(&mut roomy).len() >= 9,
        "only one message may land in the full member"
    );
}

#[tokio::test]
async fn empty_group_leaves_the_index() {
    let r = router();
    let (sink, _out) = outbox(4, Overflow::Drop);
    let mut spec = SubscriptionSpec::new(Filter::new("q").unwrap(), origin(1));
    spec.group = Some(Arc::from("g"));
    let id = r.subscribe(spec, sink);
    assert!(r.has_subscribers(&Subject::new("q").unwrap()));
    r.unsubscribe(id);
    assert!(!r.has_subscribers(&Subject::new("q").unwrap()));
    assert_eq!(r.subscription_count(), 0);
}

#[tokio::test]
async fn no_local_skips_own_messages() {
    let r = router();
    let (sink, mut out) = outbox(8, Overflow::Drop);
    let mut spec = SubscriptionSpec::new(Filter::new("a").unwrap(), origin(5));
    spec.no_local = true;
    r.subscribe(spec, sink);
    let own = r.publish(msg("a", 5));
    assert_eq!((own.matched(), own.own), (0, 1));
    let other = r.publish(msg("a", 6));
    assert_eq!((other.matched(), other.own), (1, 0));
    assert_eq!(drain(&mut out).len(), 1);
}

#[tokio::test]
async fn full_outbox_drops_and_counts() {
    let r = router();
    let (sink, out) = outbox(2, Overflow::Drop);
    r.subscribe(
        SubscriptionSpec::new(Filter::new("a").unwrap(), origin(1)),
        sink,
    );
    let routed: Vec<Routed> = (0..5).map(|_| r.publish(msg("a", 9))).collect();
    assert_eq!(routed.iter().map(|r| r.delivered).sum::<usize>(), 2);
    assert_eq!(routed.iter().map(|r| r.dropped).sum::<usize>(), 3);
    assert_eq!(out.dropped(), 3);
}

#[tokio::test]
async fn retained_set_replace_clear() {
    let r = router();
    let mut m = Envelope::new(
        Subject::new("t.a").unwrap(),
        Bytes::from_static(b"1"),
        origin(1),
    );
    m.retain = true;
    r.publish(Arc::new(m.clone()));
    m.payload = Bytes::from_static(b"2");
    r.publish(Arc::new(m.clone()));
    let found = r.retained(&Filter::new("t.>").unwrap());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].payload, Bytes::from_static(b"2"));
    m.payload = Bytes::new();
    r.publish(Arc::new(m));
    assert!(r.retained(&Filter::new("t.>").unwrap()).is_empty());
}

/// Waits (bounded) until `check` holds; the topic pump works in its own task.
async fn eventually(check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn topic_buffers_until_first_channel_then_fans_out() {
    let r = router();
    let topic = r.topic("orders").unwrap();
    for _ in 0..3 {
        r.publish_durable(msg("orders", 9)).await.unwrap();
    }
    assert_eq!(topic.stats().depth, 3);
    let a = topic.channel("a");
    eventually(|| a.stats().depth == 3).await;
    assert_eq!(topic.stats().depth, 0, "the first channel took the buffer");
    let b = topic.channel("b");
    r.publish_durable(msg("orders", 9)).await.unwrap();
    assert_eq!(a.stats().depth, 4);
    assert_eq!(b.stats().depth, 1);
    assert_eq!(topic.stats().message_count, 4);
}

#[tokio::test]
async fn paused_topic_holds_messages() {
    let r = router();
    let topic = r.topic("t").unwrap();
    let ch = topic.channel("c");
    topic.pause();
    r.publish(msg("t", 1));
    assert_eq!(ch.stats().depth, 0);
    assert_eq!(topic.stats().depth, 1);
    topic.unpause();
    eventually(|| ch.stats().depth == 1).await;
    assert_eq!(topic.stats().depth, 0);
}

#[tokio::test]
async fn ephemeral_channel_and_topic_go_with_their_last_member() {
    let r = router();
    let topic = r.topic("tmp#ephemeral").unwrap();
    let ch = topic.channel("c#ephemeral");
    let (sink, _out) = outbox(8, Overflow::Drop);
    let member = ch.attach(sink, SubscriptionId(1));
    drop(member);
    assert!(topic.get_channel("c#ephemeral").is_none());
    assert!(r.get_topic("tmp#ephemeral").is_none());
}

/// Naive reference: every subscription checked with `Filter::matches`.
fn naive(filters: &BTreeMap<u64, Filter>, subject: &Subject) -> Vec<u64> {
    filters
        .iter()
        .filter(|(_, f)| f.matches(subject))
        .map(|(k, _)| *k)
        .collect()
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("$s".to_owned()),
        Just("ab".to_owned())
    ]
}

fn subject_strategy() -> impl Strategy<Value = Subject> {
    prop::collection::vec(token(), 1..4).prop_map(|t| Subject::new(&t.join(".")).unwrap())
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    let tokens = prop::collection::vec(prop_oneof![token(), Just("*".to_owned())], 0..3);
    let pattern = (tokens, 0u8..3).prop_map(|(mut t, tail)| {
        match tail {
            1 => t.push(">".into()),
            2 if !t.is_empty() => {
                t.push(">".into());
                return Filter::with_parent(&t.join(".")).unwrap();
            }
            _ if t.is_empty() => t.push("a".into()),
            _ => {}
        }
        Filter::new(&t.join(".")).unwrap()
    });
    prop_oneof![
        pattern,
        prop::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'.'), Just(b'$')],
            0..4
        )
        .prop_map(Filter::prefix),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Sub(Filter),
    Unsub(usize),
    Publish(Subject),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => filter_strategy().prop_map(Op::Sub),
        1 => any::<usize>().prop_map(Op::Unsub),
        4 => subject_strategy().prop_map(Op::Publish),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The router (index + cache, with interleaved changes) agrees with the naive matcher.
    #[test]
    fn router_agrees_with_naive_matcher(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = router();
            let (sink, mut out) = outbox(4096, Overflow::Drop);
            let mut live: BTreeMap<u64, Filter> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Sub(filter) => {
                        let id = r.subscribe(SubscriptionSpec::new(filter.clone(), origin(1)), sink.clone());
                        live.insert(id.0, filter);
                    }
                    Op::Unsub(pick) => {
                        if let Some(&id) = live.keys().nth(pick % live.len().max(1)) {
                            r.unsubscribe(SubscriptionId(id));
                            live.remove(&id);
                        }
                    }
                    Op::Publish(subject) => {
                        let m = Arc::new(Envelope::new(subject.clone(), Bytes::new(), origin(2)));
                        r.publish(m);
                        let mut got: Vec<u64> = std::iter::from_fn(|| out.try_recv()).map(|d| d.sub.0).collect();
                        got.sort_unstable();
                        prop_assert_eq!(got, naive(&live, &subject), "subject {}", subject);
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn requests_only_members_skip_plain_publishes() {
    let r = router();
    let (sink, mut out) = outbox(8, Overflow::Drop);
    let mut spec = SubscriptionSpec::new(Filter::new(">").unwrap(), origin(1));
    spec.group = Some(Arc::from("workers.rep"));
    spec.requests_only = true;
    r.subscribe(spec, sink);
    assert_eq!(
        r.publish(msg("rpc.x", 9)).matched(),
        0,
        "a plain publish is not a request"
    );
    let mut request = Envelope::new(Subject::new("rpc.x").unwrap(), Bytes::new(), origin(9));
    request.reply_to = Some(Subject::new("_INBOX.a").unwrap());
    assert_eq!(r.publish(Arc::new(request)).delivered, 1);
    assert_eq!(drain(&mut out), ["rpc.x"]);
}

#[tokio::test]
async fn durable_group_members_take_what_no_live_member_can() {
    let r = router();
    let queue = r.durable_queue("mqtt/offline");
    let mut durable = SubscriptionSpec::new(Filter::new("jobs").unwrap(), origin(1));
    durable.group = Some(Arc::from("g"));
    r.subscribe_queue(durable, queue.clone());
    // Only the durable member: it buffers every message.
    for _ in 0..3 {
        assert_eq!(r.publish(msg("jobs", 9)).queued, 1);
    }
    assert_eq!(queue.stats().depth, 3);
    // A live member with room comes first.
    let (sink, mut out) = outbox(8, Overflow::Drop);
    let mut live = SubscriptionSpec::new(Filter::new("jobs").unwrap(), origin(2));
    live.group = Some(Arc::from("g"));
    r.subscribe(live, sink);
    assert_eq!(r.publish(msg("jobs", 9)).delivered, 1);
    assert_eq!(drain(&mut out), ["jobs"]);
    assert_eq!(queue.stats().depth, 3);
}

#[tokio::test]
async fn durable_publish_waits_for_the_durable_group_member_it_picks() {
    let store = Arc::new(FlakyStore::default());
    let r = Router::new(RouterConfig::default(), store.clone());
    let queue = r.durable_queue("mqtt/offline");
    let mut durable = SubscriptionSpec::new(Filter::new("jobs").unwrap(), origin(1));
    durable.group = Some(Arc::from("g"));
    r.subscribe_queue(durable, queue.clone());
    // Accepted: the message is in the queue by the time the publisher hears about it.
    let routed = r.publish_durable(msg("jobs", 9)).await.unwrap();
    assert_eq!(routed.queued, 1);
    assert_eq!(queue.stats().depth, 1);
    // Refused by the store: the publisher learns it instead of an ack.
    store.fail.store(true, Ordering::Relaxed);
    assert!(r.publish_durable(msg("jobs", 9)).await.is_err());
    assert_eq!(queue.stats().depth, 1);
}
