//! The broker against rumqttc, an unmodified MQTT client, in 3.1.1 (v4) and 5.0 (v5) mode:
//! publish/subscribe at every QoS, retained messages, wills of killed clients, persistent
//! sessions across reconnects, user properties.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, STEP};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The parts of a test client that read the same with both rumqttc APIs (their types differ,
/// so each version module instantiates these with its own): the struct, starting the event
/// loop and waiting for CONNACK, receiving, subscribing with a round trip, killing.
macro_rules! client_common {
    ($version:literal) => {
        #[doc = concat!("A connected rumqttc ", $version, " client; its publishes arrive on the channel.")]
        pub struct Client {
            pub client: AsyncClient,
            pub inbox: mpsc::UnboundedReceiver<Publish>,
            pub session_present: bool,
            task: JoinHandle<()>,
        }

        impl Client {
            /// Connects with `options`, waiting for CONNACK.
            async fn start(options: MqttOptions) -> Self {
                let (client, mut eventloop) = AsyncClient::new(options, 64);
                let (tx, inbox) = mpsc::unbounded_channel();
                let (ready_tx, ready) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(async move {
                    let mut ready_tx = Some(ready_tx);
                    while let Ok(event) = eventloop.poll().await {
                        match event {
                            Event::Incoming(Packet::ConnAck(ack)) => {
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(ack.session_present);
                                }
                            }
                            Event::Incoming(Packet::Publish(p)) => {
                                let _ = tx.send(p);
                            }
                            _ => {}
                        }
                    }
                });
                let session_present = timeout(STEP, ready)
                    .await
                    .expect("CONNACK")
                    .expect("connected");
                Self {
                    client,
                    inbox,
                    session_present,
                    task,
                }
            }

            pub async fn recv(&mut self) -> Publish {
                timeout(STEP, self.inbox.recv())
                    .await
                    .expect("no message in time")
                    .expect("open")
            }

            /// Subscribes and waits until the broker has the subscription (a round trip).
            pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
                self.client.subscribe(filter, qos).await.unwrap();
                let probe = format!("probe/{}", fastrand_suffix());
                self.client
                    .subscribe(&probe, QoS::AtMostOnce)
                    .await
                    .unwrap();
                self.client
                    .publish(&probe, QoS::AtMostOnce, false, "x")
                    .await
                    .unwrap();
                loop {
                    let publish = self.recv().await;
                    if AsRef::<[u8]>::as_ref(&publish.topic) == probe.as_bytes() {
                        break;
                    }
                }
            }

            /// Kills the connection without DISCONNECT.
            pub fn kill(self) {
                self.task.abort();
            }
        }
    };
}

mod v4 {
    use super::*;
    pub use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, Publish, QoS};

    client_common!("3.1.1");

    impl Client {
        pub async fn connect(
            addr: SocketAddr,
            id: &str,
            clean: bool,
            will: Option<LastWill>,
        ) -> Self {
            let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            options
                .set_clean_session(clean)
                .set_keep_alive(Duration::from_secs(30));
            if let Some(will) = will {
                options.set_last_will(will);
            }
            Self::start(options).await
        }
    }
}

mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, Publish, PublishProperties};
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    client_common!("5.0");

    impl Client {
        pub async fn connect(
            addr: SocketAddr,
            id: &str,
            clean: bool,
            expiry: Option<u32>,
            will: Option<LastWill>,
        ) -> Self {
            let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            options
                .set_clean_start(clean)
                .set_keep_alive(Duration::from_secs(30));
            options.set_session_expiry_interval(expiry);
            if let Some(will) = will {
                options.set_last_will(will);
            }
            Self::start(options).await
        }
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    timeout(Duration::from_secs(30), test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn v4_publish_subscribe_every_qos() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut sub = v4::Client::connect(server.mqtt, "v4-sub", true, None).await;
        sub.subscribe("v4/+/data", v4::QoS::ExactlyOnce).await;
        let publ = v4::Client::connect(server.mqtt, "v4-pub", true, None).await;
        for qos in [
            v4::QoS::AtMostOnce,
            v4::QoS::AtLeastOnce,
            v4::QoS::ExactlyOnce,
        ] {
            let body = format!("{qos:?}");
            publ.client
                .publish("v4/a/data", qos, false, body.clone())
                .await
                .unwrap();
            let got = sub.recv().await;
            assert_eq!((got.topic.as_str(), got.qos), ("v4/a/data", qos));
            assert_eq!(got.payload, body.as_bytes());
        }
    })
    .await;
}

#[tokio::test]
async fn v5_publish_subscribe_with_user_properties() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut sub = v5::Client::connect(server.mqtt, "v5-sub", true, None, None).await;
        sub.subscribe("v5/#", v5::QoS::AtLeastOnce).await;
        let publ = v5::Client::connect(server.mqtt, "v5-pub", true, None, None).await;
        let props = v5::PublishProperties {
            user_properties: vec![("trace".into(), "abc".into())],
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        publ.client
            .publish_with_properties("v5/x", v5::QoS::ExactlyOnce, false, "hi", props)
            .await
            .unwrap();
        let got = sub.recv().await;
        assert_eq!(&got.topic[..], b"v5/x");
        assert_eq!(got.qos, v5::QoS::AtLeastOnce);
        let props = got.properties.expect("properties");
        assert_eq!(
            props.user_properties,
            vec![("trace".to_owned(), "abc".to_owned())]
        );
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    })
    .await;
}

#[tokio::test]
async fn retained_messages_with_both_versions() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut publ = v4::Client::connect(server.mqtt, "ret-pub", true, None).await;
        publ.client
            .publish("ret/a", v4::QoS::AtLeastOnce, true, "kept")
            .await
            .unwrap();
        // A round trip on the same connection: the retained publish has been handled.
        publ.subscribe("sync/ret", v4::QoS::AtMostOnce).await;
        let mut s4 = v4::Client::connect(server.mqtt, "ret-v4", true, None).await;
        s4.client
            .subscribe("ret/#", v4::QoS::AtLeastOnce)
            .await
            .unwrap();
        let got = s4.recv().await;
        assert!(got.retain);
        assert_eq!(got.payload, "kept");
        let mut s5 = v5::Client::connect(server.mqtt, "ret-v5", true, None, None).await;
        s5.client
            .subscribe("ret/#", v5::QoS::AtLeastOnce)
            .await
            .unwrap();
        let got = s5.recv().await;
        assert!(got.retain);
        assert_eq!(got.payload, "kept");
    })
    .await;
}

#[tokio::test]
async fn will_of_a_killed_client_v4_and_v5() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut watcher = v4::Client::connect(server.mqtt, "watch", true, None).await;
        watcher.subscribe("status/#", v4::QoS::AtLeastOnce).await;
        let will = v4::LastWill::new("status/dev4", "offline", v4::QoS::AtLeastOnce, false);
        let dev = v4::Client::connect(server.mqtt, "dev4", true, Some(will)).await;
        dev.kill();
        let got = watcher.recv().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("status/dev4", &b"offline"[..])
        );
        let will = v5::LastWill::new("status/dev5", "gone", v5::QoS::AtLeastOnce, false, None);
        let dev = v5::Client::connect(server.mqtt, "dev5", true, None, Some(will)).await;
        dev.kill();
        let got = watcher.recv().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("status/dev5", &b"gone"[..])
        );
        // A clean disconnect sends no will.
        let will = v4::LastWill::new("status/polite", "x", v4::QoS::AtLeastOnce, false);
        let dev = v4::Client::connect(server.mqtt, "polite", true, Some(will)).await;
        dev.client.disconnect().await.unwrap();
        watcher.subscribe("status/sync", v4::QoS::AtMostOnce).await;
        assert!(watcher.inbox.try_recv().is_err());
    })
    .await;
}

#[tokio::test]
async fn persistent_session_delivery_after_reconnect_v4() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut dev = v4::Client::connect(server.mqtt, "persist4", false, None).await;
        assert!(!dev.session_present);
        dev.subscribe("cmd/persist4", v4::QoS::AtLeastOnce).await;
        dev.client.disconnect().await.unwrap();
        drop(dev);
        let publ = v4::Client::connect(server.mqtt, "ctl4", true, None).await;
        for i in 0..3 {
            publ.client
                .publish("cmd/persist4", v4::QoS::AtLeastOnce, false, format!("c{i}"))
                .await
                .unwrap();
        }
        // Wait until the queue holds them.
        let queue = server.router().durable_queue("mqtt/persist4");
        while queue.stats().depth < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut dev = v4::Client::connect(server.mqtt, "persist4", false, None).await;
        assert!(dev.session_present);
        for i in 0..3 {
            assert_eq!(dev.recv().await.payload, format!("c{i}").as_bytes());
        }
    })
    .await;
}

#[tokio::test]
async fn persistent_session_delivery_after_reconnect_v5() {
    let server = TestServer::start("").await;
    bounded(async {
        let mut dev = v5::Client::connect(server.mqtt, "persist5", false, Some(600), None).await;
        dev.subscribe("cmd/persist5", v5::QoS::ExactlyOnce).await;
        dev.kill();
        let publ = v5::Client::connect(server.mqtt, "ctl5", true, None, None).await;
        publ.client
            .publish("cmd/persist5", v5::QoS::ExactlyOnce, false, "later")
            .await
            .unwrap();
        let queue = server.router().durable_queue("mqtt/persist5");
        while queue.stats().depth < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut dev = v5::Client::connect(server.mqtt, "persist5", false, Some(600), None).await;
        assert!(dev.session_present);
        let got = dev.recv().await;
        assert_eq!(
            (&got.payload[..], got.qos),
            (&b"later"[..], v5::QoS::ExactlyOnce)
        );
    })
    .await;
}
