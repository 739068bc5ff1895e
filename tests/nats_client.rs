//! The broker's NATS listener driven by a real client (async-nats): pub/sub, wildcards, queue
//! groups, request-reply, headers, no-responders, max payload, auth, a bad protocol line next
//! to healthy clients, and 500 concurrent connections.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use common::{TestServer, STEP};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn client(server: &TestServer) -> Client {
    timeout(STEP, async_nats::connect(server.nats.to_string()))
        .await
        .unwrap()
        .unwrap()
}

async fn next(sub: &mut Subscriber) -> Message {
    timeout(STEP, sub.next())
        .await
        .unwrap()
        .expect("subscription ended")
}

/// Asserts nothing more arrives on `sub` within a short grace period (or it has ended).
async fn nothing_more(sub: &mut Subscriber) {
    if let Ok(Some(msg)) = timeout(Duration::from_millis(150), sub.next()).await {
        panic!("unexpected message on {}", msg.subject);
    }
}

#[tokio::test]
async fn publish_subscribe() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nc = client(&server).await;
        let info = nc.server_info();
        assert!(info.headers);
        assert_eq!(info.max_payload, 1_048_576);
        let mut sub = nc.subscribe("greet.joe").await.unwrap();
        let publisher = client(&server).await;
        publisher
            .publish("greet.joe", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let msg = next(&mut sub).await;
        assert_eq!(msg.subject.as_str(), "greet.joe");
        assert_eq!(&msg.payload[..], b"hello");
        assert!(msg.reply.is_none());
        // Order is kept per publisher.
        for i in 0..100u32 {
            publisher
                .publish("greet.joe", Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        for i in 0..100u32 {
            assert_eq!(next(&mut sub).await.payload, Bytes::from(i.to_string()));
        }
        // After UNSUB nothing arrives.
        sub.unsubscribe().await.unwrap();
        nc.flush().await.unwrap();
        publisher.publish("greet.joe", Bytes::new()).await.unwrap();
        publisher.flush().await.unwrap();
        nothing_more(&mut sub).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wildcards() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nc = client(&server).await;
        let mut one = nc.subscribe("orders.*.created").await.unwrap();
        let mut all = nc.subscribe("orders.>").await.unwrap();
        nc.flush().await.unwrap();
        for subject in [
            "orders.eu.created",
            "orders.eu.deleted",
            "orders.us.created.late",
            "orders",
        ] {
            nc.publish(subject, Bytes::from(subject)).await.unwrap();
        }
        nc.flush().await.unwrap();
        assert_eq!(next(&mut one).await.subject.as_str(), "orders.eu.created");
        nothing_more(&mut one).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(next(&mut all).await.subject.to_string());
        }
        assert_eq!(
            got,
            [
                "orders.eu.created",
                "orders.eu.deleted",
                "orders.us.created.late"
            ]
        );
        nothing_more(&mut all).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn queue_groups_deliver_each_message_once() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut workers = Vec::new();
        for _ in 0..3 {
            let nc = client(&server).await;
            let sub = nc.queue_subscribe("jobs", "workers".into()).await.unwrap();
            nc.flush().await.unwrap();
            workers.push((nc, sub));
        }
        let publisher = client(&server).await;
        for i in 0..60u32 {
            publisher
                .publish("jobs", Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let mut seen = HashSet::new();
        let mut busy = 0;
        while seen.len() < 60 {
            let mut progress = false;
            for (_, sub) in &mut workers {
                if let Ok(Some(msg)) = timeout(Duration::from_millis(50), sub.next()).await {
                    assert!(seen.insert(msg.payload), "delivered twice");
                    progress = true;
                }
            }
            if !progress {
                busy += 1;
                assert!(busy < 40, "only {} of 60 delivered", seen.len());
            }
        }
        for (_, sub) in &mut workers {
            nothing_more(sub).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn request_reply_through_inboxes() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let responder = client(&server).await;
        let mut requests = responder.subscribe("svc.upper").await.unwrap();
        responder.flush().await.unwrap();
        let service = tokio::spawn(async move {
            while let Some(req) = requests.next().await {
                let reply = req.reply.expect("request carries a reply subject");
                assert!(reply.as_str().starts_with("_INBOX."));
                let upper = Bytes::from(req.payload.to_ascii_uppercase());
                responder.publish(reply, upper).await.unwrap();
            }
        });
        let requester = client(&server).await;
        for word in ["abc", "polymq", "nats"] {
            let answer = requester
                .request("svc.upper", Bytes::from(word))
                .await
                .unwrap();
            assert_eq!(answer.payload, Bytes::from(word.to_ascii_uppercase()));
        }
        service.abort();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn headers_round_trip() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nc = client(&server).await;
        let mut sub = nc.subscribe("with.headers").await.unwrap();
        nc.flush().await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Trace-Id", "abc123");
        headers.append("Multi", "1");
        headers.append("Multi", "2");
        nc.publish_with_headers("with.headers", headers, Bytes::from_static(b"body"))
            .await
            .unwrap();
        let msg = next(&mut sub).await;
        assert_eq!(&msg.payload[..], b"body");
        let got = msg.headers.expect("headers");
        assert_eq!(got.get("Trace-Id").map(|v| v.as_str()), Some("abc123"));
        let multi: Vec<&str> = got.get_all("Multi").map(|v| v.as_str()).collect();
        assert_eq!(multi, ["1", "2"]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn requests_without_responders_fail_fast() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nc = client(&server).await;
        let started = tokio::time::Instant::now();
        let err = nc
            .request("nobody.listens", Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), RequestErrorKind::NoResponders);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "503 status, not a timeout"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn max_payload_from_info_is_honoured() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nmax_payload = 1024\n").await;
        let nc = client(&server).await;
        assert_eq!(nc.server_info().max_payload, 1024);
        let mut sub = nc.subscribe("big").await.unwrap();
        nc.publish("big", Bytes::from(vec![1u8; 1024]))
            .await
            .unwrap();
        assert_eq!(next(&mut sub).await.payload.len(), 1024);
        let err = nc
            .publish("big", Bytes::from(vec![1u8; 1025]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::MaxPayloadExceeded);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn authentication() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nauth_token = \"s3cret\"\n").await;
        let url = server.nats.to_string();
        let err = ConnectOptions::with_token("wrong".into())
            .connect(&url)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
        let nc = ConnectOptions::with_token("s3cret".into())
            .connect(&url)
            .await
            .unwrap();
        let mut sub = nc.subscribe("private").await.unwrap();
        nc.publish("private", Bytes::from_static(b"ok"))
            .await
            .unwrap();
        assert_eq!(&next(&mut sub).await.payload[..], b"ok");

        let users = "[nats]\nusers = [{ user = \"app\", password = \"pw\" }]\n";
        let server = TestServer::start(users).await;
        let url = server.nats.to_string();
        let bad = ConnectOptions::with_user_and_password("app".into(), "nope".into());
        assert_eq!(
            bad.connect(&url).await.unwrap_err().kind(),
            ConnectErrorKind::AuthorizationViolation
        );
        let good = ConnectOptions::with_user_and_password("app".into(), "pw".into());
        good.connect(&url).await.unwrap().flush().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_protocol_line_only_closes_its_own_connection() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nc = client(&server).await;
        let mut sub = nc.subscribe("still.alive").await.unwrap();
        nc.flush().await.unwrap();
        let mut raw = TcpStream::connect(server.nats).await.unwrap();
        raw.write_all(b"CONNECT {\"verbose\":false}\r\nGARBAGE\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        timeout(STEP, raw.read_to_end(&mut seen))
            .await
            .unwrap()
            .unwrap();
        assert!(
            seen.ends_with(b"-ERR 'Unknown Protocol Operation'\r\n"),
            "{seen:?}"
        );
        nc.publish("still.alive", Bytes::from_static(b"yes"))
            .await
            .unwrap();
        assert_eq!(&next(&mut sub).await.payload[..], b"yes");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections() {
    timeout(STEP * 6, async {
        let server = TestServer::start("").await;
        let url = server.nats.to_string();
        // Waves of 100 keep within the listener's accept backlog; all 500 stay connected.
        let mut clients = Vec::new();
        for _ in 0..5 {
            let wave = (0..100).map(|_| {
                let url = url.clone();
                async move {
                    let nc = async_nats::connect(url).await.unwrap();
                    let sub = nc.subscribe("broadcast").await.unwrap();
                    nc.flush().await.unwrap();
                    (nc, sub)
                }
            });
            clients.extend(futures::future::join_all(wave).await);
        }
        let varz: serde_json::Value = reqwest::get(format!("http://{}/varz", server.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(varz["connections"], 500);
        assert_eq!(varz["subscriptions"], 500);
        let (publisher, _) = &clients[0];
        publisher
            .publish("broadcast", Bytes::from_static(b"all"))
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let received =
            futures::future::join_all(clients.into_iter().map(|(nc, mut sub)| async move {
                let msg = timeout(STEP, sub.next()).await.unwrap().unwrap();
                drop(nc);
                msg.payload
            }))
            .await;
        assert_eq!(received.len(), 500);
        assert!(received.iter().all(|p| &p[..] == b"all"));
    })
    .await
    .unwrap();
}
