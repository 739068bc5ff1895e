//! Graceful restart with the disk backend: topics, channels, pause flags and queued messages
//! come back as they were.

mod common;

use common::TestServer;

#[tokio::test]
async fn topics_channels_and_pause_flags_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_disk(dir.path(), "").await;
    let router = server.router().clone();
    let orders = router.topic("orders").expect("topic");
    orders.channel("billing").pause();
    orders.channel("audit");
    router.topic("paused").expect("topic").pause();
    let msg = polymq_core::Envelope::new(
        polymq_core::Subject::new("orders").expect("subject"),
        bytes::Bytes::from_static(b"queued"),
        polymq_core::Origin::broker(),
    );
    router
        .publish_durable(std::sync::Arc::new(msg))
        .await
        .expect("publish");
    drop((router, orders));
    server.stop().await;

    let server = TestServer::start_disk(dir.path(), "").await;
    let router = server.router();
    let orders = router.get_topic("orders").expect("topic recovered");
    let names: Vec<String> = orders
        .channels()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    assert!(orders.get_channel("billing").expect("billing").is_paused());
    assert!(!orders.get_channel("audit").expect("audit").is_paused());
    assert!(router
        .get_topic("paused")
        .expect("topic recovered")
        .is_paused());
    for (name, channel) in orders.channels() {
        assert_eq!(channel.stats().depth, 1, "channel {name} kept its message");
    }
    server.stop().await;
}

#[tokio::test]
async fn past_mem_queue_size_a_channel_spills_to_disk_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_disk(dir.path(), "[nsq]\nmem_queue_size = 2\n").await;
    let router = server.router().clone();
    let channel = router.topic("spill").expect("topic").channel("c");
    for i in 0..10 {
        let msg = polymq_core::Envelope::new(
            polymq_core::Subject::new("spill").expect("subject"),
            bytes::Bytes::from(format!("m{i}")),
            polymq_core::Origin::broker(),
        );
        router
            .publish_durable(std::sync::Arc::new(msg))
            .await
            .expect("publish");
    }
    let stats = channel.stats();
    assert_eq!((stats.depth, stats.backend_depth), (10, 8));
    drop((router, channel));
    server.stop().await;

    let server = TestServer::start_disk(dir.path(), "[nsq]\nmem_queue_size = 2\n").await;
    let channel = server
        .router()
        .get_topic("spill")
        .expect("topic")
        .channel("c");
    assert_eq!(channel.stats().depth, 10);
    let (sink, mut outbox) = polymq_core::outbox(64, polymq_core::Overflow::Drop);
    let member = channel.attach(sink, polymq_core::SubscriptionId(u64::MAX));
    member.set_credit(100);
    let mut got = Vec::new();
    while got.len() < 10 {
        let delivery = tokio::time::timeout(common::STEP, outbox.recv())
            .await
            .expect("delivery")
            .expect("open");
        member.fin(&delivery.msg.id).expect("fin");
        got.push(String::from_utf8_lossy(&delivery.msg.payload).into_owned());
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(
        got, want,
        "in publish order, memory part first, then the store"
    );
    drop(member);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_recovery_chunk_comes_back_whole_and_in_order() {
    const COUNT: usize = 5000;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[nsq]\nmem_queue_size = 100\n";
    let server = TestServer::start_disk(dir.path(), config).await;
    let router = server.router().clone();
    router.topic("backlog").expect("topic").channel("c");
    let subject = polymq_core::Subject::new("backlog").expect("subject");
    let publishes = (0..COUNT).map(|i| {
        let msg = polymq_core::Envelope::new(
            subject.clone(),
            bytes::Bytes::from(i.to_string()),
            polymq_core::Origin::broker(),
        );
        let router = router.clone();
        async move { router.publish_durable(std::sync::Arc::new(msg)).await }
    });
    for publish in publishes {
        publish.await.expect("publish");
    }
    drop(router);
    server.stop().await;

    let server = TestServer::start_disk(dir.path(), config).await;
    let channel = server
        .router()
        .get_topic("backlog")
        .expect("topic")
        .channel("c");
    assert_eq!(channel.stats().depth, COUNT);
    let (sink, mut outbox) = polymq_core::outbox(4096, polymq_core::Overflow::Drop);
    let member = channel.attach(sink, polymq_core::SubscriptionId(u64::MAX));
    member.set_credit(2500);
    for want in 0..COUNT {
        let delivery = tokio::time::timeout(common::STEP, outbox.recv())
            .await
            .expect("delivery")
            .expect("open");
        assert_eq!(delivery.msg.payload, want.to_string(), "in publish order");
        member.fin(&delivery.msg.id).expect("fin");
    }
    drop(member);
    server.stop().await;
}
