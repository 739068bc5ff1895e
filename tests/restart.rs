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
