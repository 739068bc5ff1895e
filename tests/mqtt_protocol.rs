//! MQTT wire behaviour against the real broker, with raw packets (3.1.1 and 5.0): CONNECT
//! checks, QoS flows, subscriptions, retained messages, wills, sessions, MQTT 5 properties.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::mqtt_client::{connect, publish, Client};
use common::{TestServer, STEP};
use polymq_mqtt::frame::{
    Ack, Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

async fn with_server<F, Fut>(extra: &str, test: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let server = TestServer::start(extra).await;
    timeout(Duration::from_secs(30), test(server.mqtt))
        .await
        .expect("test timed out");
    drop(server);
}

// ---- CONNECT -------------------------------------------------------------------------------

#[tokio::test]
async fn connack_golden_bytes_v311() {
    with_server("", |addr| async move {
        let mut c = Client::raw(addr, V3).await;
        c.send_bytes(&[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', b'1',
        ])
        .await;
        let mut reply = [0u8; 4];
        timeout(STEP, c.stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, [0x20, 2, 0, 0]);
    })
    .await;
}

#[tokio::test]
async fn connack_v5_advertises_capabilities() {
    with_server(
        "[mqtt]\nreceive_maximum = 7\ntopic_alias_maximum = 5\nmax_packet_size = 4096\n",
        |addr| async move {
            let (_c, ack) = Client::connect_with(addr, connect(V5, "caps")).await;
            assert_eq!(ack.code, 0);
            assert!(!ack.session_present);
            let p = ack.properties;
            assert_eq!(p.receive_maximum, Some(7));
            assert_eq!(p.topic_alias_maximum, Some(5));
            assert_eq!(p.maximum_packet_size, Some(4096));
            assert_eq!(p.assigned_client_identifier, None);
            assert_eq!(p.retain_available, None);
        },
    )
    .await;
}

#[tokio::test]
async fn connack_v5_without_packet_limit_advertises_none() {
    // `max_packet_size = 0` is mosquitto's "no limit": only the protocol's own bound applies,
    // and like mosquitto the CONNACK then carries no Maximum Packet Size.
    with_server("[mqtt]\nmax_packet_size = 0\n", |addr| async move {
        let (_c, ack) = Client::connect_with(addr, connect(V5, "nolimit")).await;
        assert_eq!(ack.code, 0);
        assert_eq!(ack.properties.maximum_packet_size, None);
        assert_eq!(ack.properties.receive_maximum, Some(20));
        assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    })
    .await;
}

#[tokio::test]
async fn unknown_protocol_level_gets_connack_1() {
    with_server("", |addr| async move {
        let mut c = Client::raw(addr, V3).await;
        c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0])
            .await;
        let mut reply = [0u8; 4];
        timeout(STEP, c.stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, [0x20, 2, 0, 1]);
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_connect_and_non_connect_first_packet_close() {
    with_server("", |addr| async move {
        // Unknown protocol name: closed without CONNACK.
        let mut c = Client::raw(addr, V3).await;
        c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'X', b'X', 4, 2, 0, 60, 0, 0])
            .await;
        c.expect_closed().await;
        // PINGREQ first.
        let mut c = Client::raw(addr, V3).await;
        c.send_bytes(&[0xc0, 0]).await;
        c.expect_closed().await;
        // Reserved connect flag.
        let mut c = Client::raw(addr, V3).await;
        c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 0])
            .await;
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn empty_client_id_rules() {
    with_server("", |addr| async move {
        // 3.1.1 with CleanSession=0: identifier rejected.
        let mut req = connect(V3, "");
        req.clean_start = false;
        let (mut c, ack) = Client::connect_with(addr, req).await;
        assert_eq!(ack.code, 2);
        c.expect_closed().await;
        // 3.1.1 with CleanSession=1: accepted.
        let (_c, ack) = Client::connect_with(addr, connect(V3, "")).await;
        assert_eq!(ack.code, 0);
        // 5.0: an id is assigned and returned.
        let (_c, ack) = Client::connect_with(addr, connect(V5, "")).await;
        assert_eq!(ack.code, 0);
        let id = ack
            .properties
            .assigned_client_identifier
            .expect("assigned id");
        assert!(id.starts_with("auto-") && id.len() == 41, "{id}");
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_are_refused_per_version() {
    let config =
        "[mqtt]\nallow_anonymous = false\n[[mqtt.users]]\nusername = \"u\"\npassword = \"p\"\n";
    with_server(config, |addr| async move {
        for (v, code) in [(V3, 5), (V5, 0x87)] {
            let mut req = connect(v, "auth");
            req.username = Some("u".into());
            req.password = Some(Bytes::from_static(b"wrong"));
            let (mut c, ack) = Client::connect_with(addr, req).await;
            assert_eq!(ack.code, code, "{v:?}");
            c.expect_closed().await;
            // No credentials at all while anonymous clients are not allowed.
            let (mut c, ack) = Client::connect_with(addr, connect(v, "anon")).await;
            assert_eq!(ack.code, code, "{v:?}");
            c.expect_closed().await;
            let mut req = connect(v, "auth");
            req.username = Some("u".into());
            req.password = Some(Bytes::from_static(b"p"));
            let (_c, ack) = Client::connect_with(addr, req).await;
            assert_eq!(ack.code, 0);
        }
    })
    .await;
}

#[tokio::test]
async fn enhanced_authentication_is_refused() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "scram");
        req.properties.authentication_method = Some("SCRAM-SHA-1".into());
        let (mut c, ack) = Client::connect_with(addr, req).await;
        assert_eq!(ack.code, 0x8c);
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn keep_alive_closes_after_one_and_a_half_periods() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "ka");
        req.keep_alive = 1;
        let (mut c, _) = Client::connect_with(addr, req).await;
        let started = tokio::time::Instant::now();
        // Closed without a DISCONNECT, as mosquitto does.
        c.expect_closed().await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1400), "{waited:?}");
        // Pings keep a connection alive past 1.5 periods.
        let mut req = connect(V3, "ka3");
        req.keep_alive = 1;
        let (mut c, _) = Client::connect_with(addr, req).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            c.sync().await;
        }
    })
    .await;
}

#[tokio::test]
async fn max_keepalive_sets_server_keep_alive_or_refuses_v311() {
    with_server("[mqtt]\nmax_keepalive = 30\n", |addr| async move {
        let (_c, ack) = Client::connect_with(addr, connect(V5, "k5")).await;
        assert_eq!(ack.properties.server_keep_alive, Some(30));
        let (mut c, ack) = Client::connect_with(addr, connect(V3, "k3")).await;
        assert_eq!(ack.code, 2);
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn session_takeover() {
    with_server("", |addr| async move {
        let mut old = Client::connect(addr, V5, "same").await;
        let _new = Client::connect(addr, V5, "same").await;
        assert_eq!(
            old.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x8e)))
        );
        old.expect_closed().await;
        let mut old3 = Client::connect(addr, V3, "same3").await;
        let _new3 = Client::connect(addr, V3, "same3").await;
        old3.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn second_connect_and_server_packets_are_protocol_errors() {
    with_server("", |addr| async move {
        let mut c = Client::connect(addr, V5, "twice").await;
        c.send(Packet::Connect(Box::new(connect(V5, "twice"))))
            .await;
        // mosquitto closes without a DISCONNECT.
        c.expect_closed().await;
        let mut c = Client::connect(addr, V3, "pingresp").await;
        c.send(Packet::PingResp).await;
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_packet_gets_disconnect_0x95() {
    with_server("[mqtt]\nmax_packet_size = 1024\n", |addr| async move {
        let mut c = Client::connect(addr, V5, "big").await;
        c.publish("t", &[0u8; 2000], QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x95)))
        );
        c.expect_closed().await;
        let mut c = Client::connect(addr, V3, "big3").await;
        c.publish("t", &[0u8; 2000], QoS::AtMostOnce, false, 0)
            .await;
        c.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_packets_after_connect() {
    with_server("", |addr| async move {
        // QoS 3 PUBLISH: 5.0 gets DISCONNECT 0x81.
        let mut c = Client::connect(addr, V5, "m5").await;
        c.send_bytes(&[0x36, 5, 0, 1, b'a', 0, 1]).await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x81)))
        );
        c.expect_closed().await;
        // SUBSCRIBE with wrong flags: 3.1.1 is just closed.
        let mut c = Client::connect(addr, V3, "m3").await;
        c.send_bytes(&[0x80, 6, 0, 1, 0, 1, b'a', 0]).await;
        c.expect_closed().await;
        // Invalid filter.
        let mut c = Client::connect(addr, V5, "f5").await;
        c.send_bytes(&[0x82, 8, 0, 1, 0, 0, 2, b'a', b'#', 0]).await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x81)))
        );
    })
    .await;
}

// ---- PUBLISH flows ------------------------------------------------------------------------------

#[tokio::test]
async fn qos_flows_and_granted_qos() {
    with_server("", |addr| async move {
        let mut sub = Client::connect(addr, V3, "sub").await;
        assert_eq!(sub.subscribe("a/+", QoS::ExactlyOnce).await, 2);
        let mut publ = Client::connect(addr, V3, "pub").await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publ.publish_acked("a/b", format!("{qos:?}").as_bytes(), qos, false)
                .await;
            let p = sub.recv_publish().await;
            assert_eq!(
                (p.topic.as_str(), p.qos, p.retain, p.dup),
                ("a/b", qos, false, false)
            );
            assert_eq!(p.payload, format!("{qos:?}").as_bytes());
            match qos {
                QoS::AtMostOnce => assert_eq!(p.packet_id, 0),
                QoS::AtLeastOnce => sub.send(Packet::PubAck(Ack::new(p.packet_id))).await,
                QoS::ExactlyOnce => {
                    sub.send(Packet::PubRec(Ack::new(p.packet_id))).await;
                    assert_eq!(
                        sub.recv().await,
                        Some(Packet::PubRel(Ack::new(p.packet_id)))
                    );
                    sub.send(Packet::PubComp(Ack::new(p.packet_id))).await;
                }
            }
        }
        // Delivered QoS = min(published, granted).
        assert_eq!(sub.subscribe("low/#", QoS::AtMostOnce).await, 0);
        publ.publish_acked("low/x", b"q2", QoS::ExactlyOnce, false)
            .await;
        assert_eq!(sub.recv_publish().await.qos, QoS::AtMostOnce);
    })
    .await;
}

#[tokio::test]
async fn qos2_duplicate_publish_is_routed_once() {
    with_server("", |addr| async move {
        let mut sub = Client::connect(addr, V5, "s2").await;
        sub.subscribe("x", QoS::AtMostOnce).await;
        let mut publ = Client::connect(addr, V5, "p2").await;
        publ.publish("x", b"once", QoS::ExactlyOnce, false, 7).await;
        assert_eq!(publ.recv().await, Some(Packet::PubRec(Ack::new(7))));
        let mut again = publish("x", b"once", QoS::ExactlyOnce, false, 7);
        if let Packet::Publish(p) = &mut again {
            p.dup = true;
        }
        publ.send(again).await;
        assert_eq!(publ.recv().await, Some(Packet::PubRec(Ack::new(7))));
        publ.send(Packet::PubRel(Ack::new(7))).await;
        assert_eq!(publ.recv().await, Some(Packet::PubComp(Ack::new(7))));
        // An unknown PUBREL gets PUBCOMP 0x92 in 5.0.
        publ.send(Packet::PubRel(Ack::new(8))).await;
        assert_eq!(
            publ.recv().await,
            Some(Packet::PubComp(Ack::with_reason(8, 0x92)))
        );
        assert_eq!(&sub.recv_publish().await.payload[..], b"once");
        sub.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn puback_reports_no_matching_subscribers_in_v5() {
    with_server("", |addr| async move {
        let mut c = Client::connect(addr, V5, "nomatch").await;
        c.publish("nobody/here", b"x", QoS::AtLeastOnce, false, 3)
            .await;
        assert_eq!(
            c.recv().await,
            Some(Packet::PubAck(Ack::with_reason(3, 0x10)))
        );
        c.publish("nobody/here", b"x", QoS::ExactlyOnce, false, 4)
            .await;
        assert_eq!(c.recv().await, Some(Packet::PubRec(Ack::new(4))));
        let mut c3 = Client::connect(addr, V3, "nomatch3").await;
        c3.publish("nobody/here", b"x", QoS::AtLeastOnce, false, 3)
            .await;
        assert_eq!(c3.recv().await, Some(Packet::PubAck(Ack::new(3))));
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_and_unsuback() {
    with_server("", |addr| async move {
        let mut c = Client::connect(addr, V5, "unsub").await;
        c.subscribe("u/1", QoS::AtMostOnce).await;
        let filters = vec!["u/1".to_owned(), "u/2".to_owned()];
        c.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: 5,
            properties: Properties::default(),
            filters,
        }))
        .await;
        let expected = UnsubAck {
            packet_id: 5,
            properties: Properties::default(),
            codes: vec![0, 0x11],
        };
        assert_eq!(c.recv().await, Some(Packet::UnsubAck(expected)));
        c.publish("u/1", b"gone", QoS::AtMostOnce, false, 0).await;
        c.sync().await;
        let mut c3 = Client::connect(addr, V3, "unsub3").await;
        let filters = vec!["u/9".to_owned()];
        c3.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            properties: Properties::default(),
            filters,
        }))
        .await;
        let expected = UnsubAck {
            packet_id: 6,
            properties: Properties::default(),
            codes: vec![],
        };
        assert_eq!(c3.recv().await, Some(Packet::UnsubAck(expected)));
    })
    .await;
}

#[tokio::test]
async fn wildcards_levels_and_dollar_topics() {
    with_server("", |addr| async move {
        let mut c = Client::connect(addr, V3, "wild").await;
        let opts = SubscriptionOptions::default();
        let codes = c
            .subscribe_with(
                &[("a/#", opts), ("+/x//y", opts), ("#", opts)],
                Properties::default(),
            )
            .await;
        assert_eq!(codes, vec![0, 0, 0]);
        let mut p = Client::connect(addr, V3, "wildpub").await;
        // `a/#` matches `a`; one copy per session even with overlapping filters.
        p.publish("a", b"parent", QoS::AtMostOnce, false, 0).await;
        assert_eq!(c.recv_publish().await.topic, "a");
        p.publish("v.1/x//y", b"dots", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(c.recv_publish().await.topic, "v.1/x//y");
        // `#` does not match `$` topics.
        p.publish("$custom/x", b"hidden", QoS::AtMostOnce, false, 0)
            .await;
        p.sync().await;
        c.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

// ---- retained -----------------------------------------------------------------------------------

#[tokio::test]
async fn retained_set_replace_clear() {
    with_server("", |addr| async move {
        let mut p = Client::connect(addr, V3, "rpub").await;
        p.publish_acked("r/1", b"first", QoS::AtLeastOnce, true)
            .await;
        p.publish_acked("r/1", b"second", QoS::AtLeastOnce, true)
            .await;
        p.publish_acked("r/2", b"other", QoS::AtMostOnce, true)
            .await;
        p.sync().await;
        let mut s = Client::connect(addr, V3, "rsub").await;
        s.subscribe("r/#", QoS::AtLeastOnce).await;
        let a = s.recv_publish().await;
        assert_eq!(
            (a.topic.as_str(), &a.payload[..], a.retain, a.qos),
            ("r/1", &b"second"[..], true, QoS::AtLeastOnce)
        );
        s.send(Packet::PubAck(Ack::new(a.packet_id))).await;
        let b = s.recv_publish().await;
        assert_eq!(
            (b.topic.as_str(), b.retain, b.qos),
            ("r/2", true, QoS::AtMostOnce)
        );
        // Live forwarding to a 3.1.1 subscriber clears RETAIN.
        p.publish_acked("r/1", b"live", QoS::AtMostOnce, true).await;
        let live = s.recv_publish().await;
        assert!(!live.retain);
        // An empty retained payload clears it.
        p.publish_acked("r/1", b"", QoS::AtMostOnce, true).await;
        assert_eq!(s.recv_publish().await.payload.len(), 0);
        let mut s2 = Client::connect(addr, V3, "rsub2").await;
        s2.subscribe("r/#", QoS::AtMostOnce).await;
        assert_eq!(s2.recv_publish().await.topic, "r/2");
        s2.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn retain_handling_and_retain_as_published() {
    with_server("", |addr| async move {
        let mut p = Client::connect(addr, V5, "rhpub").await;
        p.publish_acked("rh/t", b"kept", QoS::AtLeastOnce, true)
            .await;
        let mut s = Client::connect(addr, V5, "rhsub").await;
        let never = SubscriptionOptions {
            retain_handling: 2,
            ..SubscriptionOptions::default()
        };
        s.subscribe_with(&[("rh/t", never)], Properties::default())
            .await;
        s.expect_silence(Duration::from_millis(150)).await;
        // Retain handling 1: only for a new subscription (this one exists).
        let if_new = SubscriptionOptions {
            retain_handling: 1,
            ..SubscriptionOptions::default()
        };
        s.subscribe_with(&[("rh/t", if_new)], Properties::default())
            .await;
        s.expect_silence(Duration::from_millis(150)).await;
        s.subscribe_with(&[("rh/+", if_new)], Properties::default())
            .await;
        assert!(s.recv_publish().await.retain);
        // Retain As Published keeps RETAIN on live messages.
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::default()
        };
        let mut s2 = Client::connect(addr, V5, "rhsub2").await;
        s2.subscribe_with(&[("rap/#", rap)], Properties::default())
            .await;
        p.publish_acked("rap/x", b"r", QoS::AtMostOnce, true).await;
        assert!(s2.recv_publish().await.retain);
        p.publish_acked("rap/x", b"", QoS::AtMostOnce, true).await;
        assert!(s2.recv_publish().await.retain);
    })
    .await;
}

#[tokio::test]
async fn retain_unavailable() {
    with_server("[mqtt]\nretain_available = false\n", |addr| async move {
        let (mut c, ack) = Client::connect_with(addr, connect(V5, "noret")).await;
        assert_eq!(ack.properties.retain_available, Some(0));
        c.publish("t", b"x", QoS::AtMostOnce, true, 0).await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x9a)))
        );
    })
    .await;
}

// ---- wills ----------------------------------------------------------------------------------------

fn with_will(v: ProtocolVersion, id: &str, topic: &str, delay: Option<u32>) -> Connect {
    let mut req = connect(v, id);
    let properties = Properties {
        will_delay_interval: delay,
        ..Properties::default()
    };
    req.will = Some(Will {
        topic: topic.to_owned(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: if v.is_v5() {
            properties
        } else {
            Properties::default()
        },
    });
    req
}

#[tokio::test]
async fn will_published_on_abrupt_close_not_on_disconnect() {
    with_server("", |addr| async move {
        let mut watcher = Client::connect(addr, V3, "watcher").await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        // Killed client: will published.
        let (c, _) = Client::connect_with(addr, with_will(V3, "dies", "will/dies", None)).await;
        drop(c);
        let w = watcher.recv_publish().await;
        assert_eq!(
            (w.topic.as_str(), &w.payload[..], w.qos),
            ("will/dies", &b"gone"[..], QoS::AtLeastOnce)
        );
        watcher.send(Packet::PubAck(Ack::new(w.packet_id))).await;
        // Normal DISCONNECT: no will.
        let (c, _) = Client::connect_with(addr, with_will(V3, "polite", "will/polite", None)).await;
        c.disconnect().await;
        // 5.0 DISCONNECT 0x04: will.
        let (mut c, _) = Client::connect_with(addr, with_will(V5, "with", "will/with", None)).await;
        c.send(Packet::Disconnect(Disconnect::with_reason(0x04)))
            .await;
        c.expect_closed().await;
        let w = watcher.recv_publish().await;
        assert_eq!(w.topic, "will/with");
        watcher.send(Packet::PubAck(Ack::new(w.packet_id))).await;
        // Protocol error: will.
        let (mut c, _) = Client::connect_with(addr, with_will(V5, "bad", "will/bad", None)).await;
        c.send(publish("will/+", b"", QoS::AtMostOnce, false, 0))
            .await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x82)))
        );
        c.expect_closed().await;
        assert_eq!(watcher.recv_publish().await.topic, "will/bad");
    })
    .await;
}

#[tokio::test]
async fn will_delay_is_cancelled_by_reconnect() {
    with_server("", |addr| async move {
        let mut watcher = Client::connect(addr, V5, "wd-watch").await;
        watcher.subscribe("wd/#", QoS::AtMostOnce).await;
        let mut req = with_will(V5, "wd", "wd/delayed", Some(1));
        req.properties.session_expiry_interval = Some(60);
        let (c, _) = Client::connect_with(addr, req.clone()).await;
        drop(c);
        // Reconnect within the delay: the will is not sent.
        req.will = None;
        req.clean_start = false;
        let (_c, ack) = Client::connect_with(addr, req).await;
        assert!(ack.session_present);
        watcher.expect_silence(Duration::from_millis(1500)).await;
        // Without a reconnect it comes after the delay.
        let mut req = with_will(V5, "wd2", "wd/late", Some(1));
        req.properties.session_expiry_interval = Some(60);
        let (c, _) = Client::connect_with(addr, req).await;
        let started = tokio::time::Instant::now();
        drop(c);
        assert_eq!(watcher.recv_publish().await.topic, "wd/late");
        assert!(started.elapsed() >= Duration::from_millis(900));
    })
    .await;
}

// ---- sessions -------------------------------------------------------------------------------------

/// Connects `req`, subscribes it to `quick/big` and has another client publish more than the
/// socket buffers hold to it while it reads nothing: its connection is then stuck writing,
/// and reads nothing more until it is taken over.
async fn stalled_client(addr: SocketAddr, req: Connect) -> Client {
    let (mut c, _) = Client::connect_with(addr, req).await;
    c.subscribe("quick/big", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(addr, V5, "quick-pub").await;
    let big = vec![b'x'; 1 << 20];
    for _ in 0..32 {
        publisher
            .publish_acked("quick/big", &big, QoS::AtLeastOnce, false)
            .await;
    }
    publisher.disconnect().await;
    c
}

#[tokio::test]
async fn disconnect_just_before_reconnect_takes_effect_first() {
    // A client that sends DISCONNECT and connects again at once (mosquitto's
    // 05-session-expiry-v5 does) is served in that order even when its old connection is
    // busy and the new CONNECT is handled first: Session Expiry 0 in the DISCONNECT leaves no
    // session to resume, and a normal DISCONNECT keeps the will in even when the new
    // connection starts clean.
    with_server("", |addr| async move {
        let mut watcher = Client::connect(addr, V5, "quick-watch").await;
        watcher.subscribe("quick/will", QoS::AtMostOnce).await;
        let mut req = with_will(V5, "quick", "quick/will", None);
        req.clean_start = false;
        req.properties.session_expiry_interval = Some(60);
        let mut c = stalled_client(addr, req.clone()).await;
        let mut bye = Disconnect::default();
        bye.properties.session_expiry_interval = Some(0);
        c.send(Packet::Disconnect(bye)).await;
        let (again, ack) = Client::connect_with(addr, req).await;
        assert!(!ack.session_present, "session resumed");
        again.disconnect().await;

        let mut c = stalled_client(addr, with_will(V5, "quick2", "quick/will", None)).await;
        c.send(Packet::Disconnect(Disconnect::default())).await;
        let (clean, _) = Client::connect_with(addr, connect(V5, "quick2")).await;
        clean.disconnect().await;
        watcher.sync().await;
        watcher.expect_silence(Duration::from_millis(50)).await;
    })
    .await;
}

#[tokio::test]
async fn persistent_session_queues_while_offline_and_resends_with_dup() {
    with_server("", |addr| async move {
        let mut req = connect(V3, "persist");
        req.clean_start = false;
        let (mut c, ack) = Client::connect_with(addr, req.clone()).await;
        assert!(!ack.session_present);
        c.subscribe("p/#", QoS::AtLeastOnce).await;
        let mut p = Client::connect(addr, V3, "ppub").await;
        p.publish_acked("p/1", b"unacked", QoS::AtLeastOnce, false)
            .await;
        let first = c.recv_publish().await;
        assert_eq!(&first.payload[..], b"unacked");
        drop(c); // never acknowledged
        p.publish_acked("p/2", b"offline", QoS::AtLeastOnce, false)
            .await;
        p.publish_acked("p/3", b"qos0", QoS::AtMostOnce, false)
            .await;
        p.sync().await;
        let (mut c, ack) = Client::connect_with(addr, req.clone()).await;
        assert!(ack.session_present);
        let again = c.recv_publish().await;
        assert_eq!(
            (&again.payload[..], again.dup, again.packet_id),
            (&b"unacked"[..], true, first.packet_id)
        );
        c.send(Packet::PubAck(Ack::new(again.packet_id))).await;
        let queued = c.recv_publish().await;
        assert_eq!((&queued.payload[..], queued.dup), (&b"offline"[..], false));
        c.send(Packet::PubAck(Ack::new(queued.packet_id))).await;
        // QoS 0 is not queued for an offline session.
        c.expect_silence(Duration::from_millis(200)).await;
        // Clean session discards it.
        drop(c);
        let (_c, ack) = Client::connect_with(addr, connect(V3, "persist")).await;
        assert!(!ack.session_present);
    })
    .await;
}

#[tokio::test]
async fn offline_queue_limit_and_qos0_switch() {
    with_server(
        "[mqtt]\nmax_queued_messages = 2\nqueue_qos0 = true\n",
        |addr| async move {
            let mut req = connect(V5, "limited");
            req.clean_start = false;
            req.properties.session_expiry_interval = Some(300);
            let (mut c, _) = Client::connect_with(addr, req.clone()).await;
            c.subscribe("l/#", QoS::AtMostOnce).await;
            c.disconnect().await;
            let mut p = Client::connect(addr, V5, "lpub").await;
            for i in 0..4 {
                p.publish_acked("l/x", format!("m{i}").as_bytes(), QoS::AtMostOnce, false)
                    .await;
            }
            p.sync().await;
            let (mut c, ack) = Client::connect_with(addr, req).await;
            assert!(ack.session_present);
            assert_eq!(&c.recv_publish().await.payload[..], b"m0");
            assert_eq!(&c.recv_publish().await.payload[..], b"m1");
            c.expect_silence(Duration::from_millis(200)).await;
        },
    )
    .await;
}

#[tokio::test]
async fn qos2_outbound_resumes_with_pubrel() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "q2resume");
        req.clean_start = false;
        req.properties.session_expiry_interval = Some(300);
        let (mut c, _) = Client::connect_with(addr, req.clone()).await;
        c.subscribe("q2/#", QoS::ExactlyOnce).await;
        let mut p = Client::connect(addr, V5, "q2pub").await;
        p.publish_acked("q2/a", b"x", QoS::ExactlyOnce, false).await;
        let msg = c.recv_publish().await;
        c.send(Packet::PubRec(Ack::new(msg.packet_id))).await;
        assert_eq!(
            c.recv().await,
            Some(Packet::PubRel(Ack::new(msg.packet_id)))
        );
        drop(c);
        let (mut c, ack) = Client::connect_with(addr, req).await;
        assert!(ack.session_present);
        // After PUBREC only PUBREL is resent, never the PUBLISH.
        assert_eq!(
            c.recv().await,
            Some(Packet::PubRel(Ack::new(msg.packet_id)))
        );
        c.send(Packet::PubComp(Ack::new(msg.packet_id))).await;
        c.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn session_expiry_ends_the_session() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "expires");
        req.clean_start = false;
        req.properties.session_expiry_interval = Some(1);
        let (mut c, _) = Client::connect_with(addr, req.clone()).await;
        c.subscribe("e/#", QoS::AtLeastOnce).await;
        c.disconnect().await;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (_c, ack) = Client::connect_with(addr, req).await;
        assert!(!ack.session_present);
        // Expiry 0 in DISCONNECT after a non-zero CONNECT value ends it at once.
        let mut req = connect(V5, "shortens");
        req.clean_start = false;
        req.properties.session_expiry_interval = Some(300);
        let (mut c, _) = Client::connect_with(addr, req.clone()).await;
        let props = Properties {
            session_expiry_interval: Some(0),
            ..Properties::default()
        };
        c.send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: props,
        }))
        .await;
        c.expect_closed().await;
        let (_c, ack) = Client::connect_with(addr, req).await;
        assert!(!ack.session_present);
        // Raising it from 0 is a protocol error.
        let (mut c, _) = Client::connect_with(addr, connect(V5, "raises")).await;
        let props = Properties {
            session_expiry_interval: Some(10),
            ..Properties::default()
        };
        c.send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: props,
        }))
        .await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x82)))
        );
    })
    .await;
}

// ---- MQTT 5 properties ----------------------------------------------------------------------------

#[tokio::test]
async fn publish_properties_are_forwarded() {
    with_server("", |addr| async move {
        let mut s = Client::connect(addr, V5, "props-sub").await;
        let props = Properties {
            subscription_identifiers: vec![42],
            ..Properties::default()
        };
        let opts = SubscriptionOptions::default();
        s.subscribe_with(&[("pr/#", opts)], props).await;
        let props = Properties {
            subscription_identifiers: vec![7],
            ..Properties::default()
        };
        s.subscribe_with(&[("pr/+", opts)], props).await;
        let mut p = Client::connect(addr, V5, "props-pub").await;
        let sent = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(100),
            content_type: Some("application/json".into()),
            response_topic: Some("pr/reply".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![
                ("k".into(), "v1".into()),
                ("k".into(), "v2".into()),
                ("z".into(), "".into()),
            ],
            ..Properties::default()
        };
        let mut packet = publish("pr/x", b"{}", QoS::AtMostOnce, false, 0);
        if let Packet::Publish(publish) = &mut packet {
            publish.properties = sent.clone();
        }
        p.send(packet).await;
        let got = s.recv_publish().await.properties;
        assert_eq!(got.payload_format_indicator, Some(1));
        assert!(
            matches!(got.message_expiry_interval, Some(99 | 100)),
            "{got:?}"
        );
        assert_eq!(got.content_type, sent.content_type);
        assert_eq!(got.response_topic, sent.response_topic);
        assert_eq!(got.correlation_data, sent.correlation_data);
        assert_eq!(got.user_properties, sent.user_properties);
        let mut ids = got.subscription_identifiers;
        ids.sort_unstable();
        assert_eq!(ids, vec![7, 42]);
        s.expect_silence(Duration::from_millis(150)).await;
    })
    .await;
}

#[tokio::test]
async fn message_expiry_counts_down_while_the_message_waits() {
    with_server("", |addr| async move {
        let mut p = Client::connect(addr, V5, "expd-pub").await;
        let mut packet = publish("expd/r", b"kept", QoS::AtLeastOnce, true, 3);
        if let Packet::Publish(publish) = &mut packet {
            publish.properties.message_expiry_interval = Some(10);
        }
        p.send(packet).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
        // The time spent in the broker is what is being measured.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut s = Client::connect(addr, V5, "expd-sub").await;
        s.subscribe("expd/#", QoS::AtLeastOnce).await;
        let got = s.recv_publish().await;
        assert!(got.retain);
        assert!(
            matches!(got.properties.message_expiry_interval, Some(8 | 9)),
            "{got:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    with_server("", |addr| async move {
        let mut p = Client::connect(addr, V5, "exp-pub").await;
        let mut packet = publish("exp/r", b"short-lived", QoS::AtMostOnce, true, 0);
        if let Packet::Publish(publish) = &mut packet {
            publish.properties.message_expiry_interval = Some(1);
        }
        p.send(packet).await;
        p.sync().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut s = Client::connect(addr, V5, "exp-sub").await;
        s.subscribe("exp/#", QoS::AtMostOnce).await;
        s.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn inbound_topic_aliases() {
    with_server("[mqtt]\ntopic_alias_maximum = 2\n", |addr| async move {
        let mut s = Client::connect(addr, V5, "alias-sub").await;
        s.subscribe("al/#", QoS::AtMostOnce).await;
        let mut p = Client::connect(addr, V5, "alias-pub").await;
        let aliased = |topic: &str, alias: u16, body: &[u8]| {
            let mut packet = publish(topic, body, QoS::AtMostOnce, false, 0);
            if let Packet::Publish(publish) = &mut packet {
                publish.properties.topic_alias = Some(alias);
            }
            packet
        };
        p.send(aliased("al/one", 1, b"set")).await;
        p.send(aliased("", 1, b"use")).await;
        assert_eq!(s.recv_publish().await.topic, "al/one");
        let used = s.recv_publish().await;
        assert_eq!(
            (used.topic.as_str(), &used.payload[..]),
            ("al/one", &b"use"[..])
        );
        // Above the maximum: 0x94.
        p.send(aliased("al/two", 3, b"x")).await;
        assert_eq!(
            p.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x94)))
        );
        // Unknown alias with an empty topic: protocol error.
        let mut p = Client::connect(addr, V5, "alias-pub2").await;
        p.send(aliased("", 2, b"x")).await;
        assert_eq!(
            p.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x82)))
        );
        // Alias 0: 0x94.
        let mut p = Client::connect(addr, V5, "alias-pub3").await;
        p.send(aliased("al/z", 0, b"x")).await;
        assert_eq!(
            p.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x94)))
        );
    })
    .await;
}

#[tokio::test]
async fn outbound_topic_aliases_and_maximum_packet_size() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "client-limits");
        req.properties.topic_alias_maximum = Some(1);
        req.properties.maximum_packet_size = Some(64);
        let (mut s, _) = Client::connect_with(addr, req).await;
        s.subscribe("oa/#", QoS::AtMostOnce).await;
        let mut p = Client::connect(addr, V5, "oa-pub").await;
        for body in [&b"1"[..], b"2"] {
            p.publish("oa/first", body, QoS::AtMostOnce, false, 0).await;
        }
        let first = s.recv_publish().await;
        assert_eq!(
            (first.topic.as_str(), first.properties.topic_alias),
            ("oa/first", Some(1))
        );
        let second = s.recv_publish().await;
        assert_eq!(
            (second.topic.as_str(), second.properties.topic_alias),
            ("", Some(1))
        );
        // No alias left: the full topic.
        p.publish("oa/second", b"3", QoS::AtMostOnce, false, 0)
            .await;
        let third = s.recv_publish().await;
        assert_eq!(
            (third.topic.as_str(), third.properties.topic_alias),
            ("oa/second", None)
        );
        // Larger than the client's Maximum Packet Size: dropped as if sent.
        p.publish("oa/first", &[b'x'; 100], QoS::AtLeastOnce, false, 9)
            .await;
        p.publish("oa/first", b"after", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&s.recv_publish().await.payload[..], b"after");
        // A dropped message does not leave behind an alias the client never learnt.
        let mut req = connect(V5, "client-limits2");
        req.properties.topic_alias_maximum = Some(2);
        req.properties.maximum_packet_size = Some(64);
        let (mut s2, _) = Client::connect_with(addr, req).await;
        s2.subscribe("ob/#", QoS::AtMostOnce).await;
        p.publish("ob/t", &[b'x'; 100], QoS::AtMostOnce, false, 0)
            .await;
        p.publish("ob/t", b"small", QoS::AtMostOnce, false, 0).await;
        let small = s2.recv_publish().await;
        assert_eq!(
            (small.topic.as_str(), small.properties.topic_alias),
            ("ob/t", Some(1))
        );
    })
    .await;
}

#[tokio::test]
async fn client_receive_maximum_limits_inflight() {
    with_server("", |addr| async move {
        let mut req = connect(V5, "rm1");
        req.properties.receive_maximum = Some(1);
        let (mut s, _) = Client::connect_with(addr, req).await;
        s.subscribe("rm/#", QoS::AtLeastOnce).await;
        let mut p = Client::connect(addr, V5, "rm-pub").await;
        for i in 0..3 {
            p.publish_acked("rm/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
        let first = s.recv_publish().await;
        s.expect_silence(Duration::from_millis(200)).await;
        s.send(Packet::PubAck(Ack::new(first.packet_id))).await;
        let second = s.recv_publish().await;
        assert_eq!(&second.payload[..], b"1");
        s.expect_silence(Duration::from_millis(100)).await;
        s.send(Packet::PubAck(Ack::new(second.packet_id))).await;
        assert_eq!(&s.recv_publish().await.payload[..], b"2");
    })
    .await;
}

#[tokio::test]
async fn server_receive_maximum_is_enforced() {
    with_server("[mqtt]\nreceive_maximum = 2\n", |addr| async move {
        let mut p = Client::connect(addr, V5, "flood").await;
        for pid in 1..=2 {
            p.publish("rx/t", b"x", QoS::ExactlyOnce, false, pid).await;
            assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
        }
        p.publish("rx/t", b"x", QoS::ExactlyOnce, false, 3).await;
        assert_eq!(
            p.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x93)))
        );
    })
    .await;
}

#[tokio::test]
async fn error_disconnect_survives_a_client_still_sending() {
    // The client keeps sending after the broker decided to close (PUBRELs for the PUBRECs it
    // got, as paho's flow-control test does). The broker reads and drops that input for a
    // moment instead of resetting the connection under it: the client's writes go on
    // succeeding and it reads the DISCONNECT, then a clean end of stream.
    with_server("[mqtt]\nreceive_maximum = 2\n", |addr| async move {
        let mut p = Client::connect(addr, V5, "flood-on").await;
        for pid in 1..=3 {
            p.send(publish("rx/t", b"x", QoS::ExactlyOnce, false, pid))
                .await;
        }
        assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
        assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
        assert_eq!(
            p.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x93)))
        );
        for pid in 1..=2 {
            let pubrel = [0x62, 2, 0, pid];
            p.stream.write_all(&pubrel).await.expect("connection reset");
            // Time for a reset to come back, were the socket closed with input unread.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let end = timeout(STEP, p.stream.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(end.is_ok() && rest.is_empty(), "{end:?} {rest:?}");
    })
    .await;
}

#[tokio::test]
async fn no_local_subscriptions() {
    with_server("", |addr| async move {
        let mut c = Client::connect(addr, V5, "nolocal").await;
        let opts = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::default()
        };
        c.subscribe_with(&[("nl/#", opts)], Properties::default())
            .await;
        c.publish("nl/self", b"mine", QoS::AtMostOnce, false, 0)
            .await;
        // Matched, though declined by No Local: PUBACK 0x00 rather than 0x10, as mosquitto.
        c.publish("nl/self", b"mine", QoS::AtLeastOnce, false, 7)
            .await;
        assert_eq!(c.recv().await, Some(Packet::PubAck(Ack::new(7))));
        c.sync().await;
        c.expect_silence(Duration::from_millis(150)).await;
        let mut other = Client::connect(addr, V5, "nolocal-other").await;
        other
            .publish("nl/other", b"theirs", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&c.recv_publish().await.payload[..], b"theirs");
        // No Local on a shared subscription is a protocol error.
        let shared = [("$share/g/nl/#", opts)];
        let filters = shared.iter().map(|(f, o)| ((*f).to_owned(), *o)).collect();
        c.send(Packet::Subscribe(Subscribe {
            packet_id: 2,
            properties: Properties::default(),
            filters,
        }))
        .await;
        assert_eq!(
            c.recv().await,
            Some(Packet::Disconnect(Disconnect::with_reason(0x82)))
        );
    })
    .await;
}

#[tokio::test]
async fn shared_subscriptions_split_messages_and_skip_retained() {
    with_server("", |addr| async move {
        let mut p = Client::connect(addr, V5, "share-pub").await;
        p.publish_acked("jobs/r", b"retained", QoS::AtMostOnce, true)
            .await;
        let mut a = Client::connect(addr, V5, "share-a").await;
        let mut b = Client::connect(addr, V3, "share-b").await;
        assert_eq!(
            a.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await,
            1
        );
        assert_eq!(
            b.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await,
            1
        );
        for i in 0..10 {
            p.publish_acked("jobs/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
        let mut got = Vec::new();
        for client in [&mut a, &mut b] {
            loop {
                match timeout(Duration::from_millis(300), client.recv_unbounded()).await {
                    Ok(Some(Packet::Publish(msg))) => {
                        assert!(!msg.retain && &msg.payload[..] != b"retained");
                        client.send(Packet::PubAck(Ack::new(msg.packet_id))).await;
                        got.push(String::from_utf8(msg.payload.to_vec()).unwrap());
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(_) => break,
                }
            }
        }
        got.sort_unstable_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn sys_topics_are_published_and_hidden_from_hash() {
    with_server("[mqtt]\nsys_interval_secs = 1\n", |addr| async move {
        let mut all = Client::connect(addr, V3, "hash").await;
        all.subscribe("#", QoS::AtMostOnce).await;
        let mut sys = Client::connect(addr, V3, "sys").await;
        sys.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
        // The retained values come first; the next update counts the two clients above.
        let mut seen = std::collections::HashMap::new();
        let connected = |seen: &std::collections::HashMap<String, String>| {
            seen.get("$SYS/broker/clients/connected")
                .and_then(|v| v.parse::<u64>().ok())
        };
        while connected(&seen).unwrap_or(0) < 2 || !seen.contains_key("$SYS/broker/uptime") {
            let msg = sys.recv_publish().await;
            seen.insert(msg.topic, String::from_utf8(msg.payload.to_vec()).unwrap());
        }
        assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
        all.expect_silence(Duration::from_millis(300)).await;
    })
    .await;
}
