//! nsqd's HTTP API against the whole broker: routes, status codes, bodies, headers, and
//! publishing that NSQ consumers (and other protocols) receive.

mod common;

use std::time::Duration;

use common::{TestServer, STEP};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::time::timeout;

struct Api {
    base: String,
    client: Client,
}

impl Api {
    fn new(server: &TestServer) -> Self {
        Self {
            base: format!("http://{}", server.nsq_http),
            client: Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = timeout(STEP, self.client.get(format!("{}{path}", self.base)).send())
            .await
            .unwrap()
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let resp = timeout(
            STEP,
            self.client
                .post(format!("{}{path}", self.base))
                .body(body)
                .send(),
        )
        .await
        .unwrap()
        .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn stats(&self) -> Value {
        let (status, body) = self.get("/stats?format=json").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&body).unwrap()
    }
}

fn err(code: &str) -> String {
    format!("{{\"message\":\"{code}\"}}")
}

async fn run(test: impl std::future::Future<Output = ()>) {
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn ping_info_and_unknown_routes() {
    run(async {
        let server = TestServer::start("").await;
        let api = Api::new(&server);
        assert_eq!(api.get("/ping").await, (StatusCode::OK, "OK".to_owned()));
        let (status, body) = api.get("/info").await;
        assert_eq!(status, StatusCode::OK);
        let info: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(info["version"], "1.3.0");
        assert_eq!(info["tcp_port"], server.nsq_tcp.port());
        assert_eq!(info["http_port"], server.nsq_http.port());
        assert_eq!(info["max_heartbeat_interval"], 60_000_000_000u64);
        assert_eq!(
            api.get("/nope").await,
            (StatusCode::NOT_FOUND, err("NOT_FOUND"))
        );
        assert_eq!(
            api.get("/pub").await,
            (StatusCode::METHOD_NOT_ALLOWED, err("METHOD_NOT_ALLOWED"))
        );
        let resp = api
            .client
            .get(format!("{}/nope", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-nsq-content-type"], "nsq; version=1.0");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json; charset=utf-8"
        );
    })
    .await;
}

#[tokio::test]
async fn pub_and_mpub() {
    run(async {
        let server = TestServer::start("[nsq]\nmax_msg_size = 8\nmax_body_size = 64\n").await;
        let api = Api::new(&server);
        assert_eq!(
            api.post("/pub?topic=h", "hello").await,
            (StatusCode::OK, "OK".to_owned())
        );
        assert_eq!(
            api.post("/pub?topic=h", "").await,
            (StatusCode::BAD_REQUEST, err("MSG_EMPTY"))
        );
        assert_eq!(
            api.post("/pub?topic=h", "123456789").await,
            (StatusCode::PAYLOAD_TOO_LARGE, err("MSG_TOO_BIG"))
        );
        assert_eq!(
            api.post("/pub", "x").await,
            (StatusCode::BAD_REQUEST, err("MISSING_ARG_TOPIC"))
        );
        assert_eq!(
            api.post("/pub?topic=a*", "x").await,
            (StatusCode::BAD_REQUEST, err("INVALID_TOPIC"))
        );
        assert_eq!(
            api.post("/pub?topic=h&defer=x", "x").await,
            (StatusCode::BAD_REQUEST, err("INVALID_DEFER"))
        );
        assert_eq!(
            api.post("/pub?topic=h&defer=-1", "x").await,
            (StatusCode::BAD_REQUEST, err("INVALID_DEFER"))
        );
        assert_eq!(
            api.post("/pub?topic=h&defer=60000", "later").await,
            (StatusCode::OK, "OK".to_owned())
        );
        assert_eq!(
            api.post("/mpub?topic=m", "a\n\nb\nc").await,
            (StatusCode::OK, "OK".to_owned())
        );
        assert_eq!(
            api.post("/mpub?topic=m", "a\n123456789").await,
            (StatusCode::PAYLOAD_TOO_LARGE, err("MSG_TOO_BIG"))
        );
        assert_eq!(
            api.post("/mpub?topic=m", vec![b'a'; 65]).await,
            (StatusCode::PAYLOAD_TOO_LARGE, err("BODY_TOO_BIG"))
        );
        let binary = b"\x00\x00\x00\x02\x00\x00\x00\x01x\x00\x00\x00\x02yz".to_vec();
        assert_eq!(
            api.post("/mpub?topic=m&binary=true", binary).await,
            (StatusCode::OK, "OK".to_owned())
        );
        let bad = b"\x00\x00\x00\x00".to_vec();
        assert_eq!(
            api.post("/mpub?topic=m&binary=true", bad).await,
            (StatusCode::PAYLOAD_TOO_LARGE, err("BAD_BODY"))
        );
        let short = b"\x00\x00\x00\x01\x00\x00\x00\x05ab".to_vec();
        assert_eq!(
            api.post("/mpub?topic=m&binary=1", short).await,
            (StatusCode::PAYLOAD_TOO_LARGE, err("BAD_MESSAGE"))
        );

        let topics = &api.stats().await["topics"];
        let h = topics
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic_name"] == "h")
            .unwrap();
        assert_eq!(h["message_count"], 2);
        assert_eq!(h["depth"], 1, "the deferred message is not counted yet");
        let m = topics
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic_name"] == "m")
            .unwrap();
        assert_eq!(m["message_count"], 5);
        assert_eq!(m["message_bytes"], 6);
    })
    .await;
}

#[tokio::test]
async fn topic_and_channel_admin() {
    run(async {
        let server = TestServer::start("").await;
        let api = Api::new(&server);
        let ok = (StatusCode::OK, String::new());
        assert_eq!(api.post("/topic/create?topic=t", "").await, ok);
        assert_eq!(
            api.post("/topic/create", "").await,
            (StatusCode::BAD_REQUEST, err("MISSING_ARG_TOPIC"))
        );
        assert_eq!(
            api.post("/topic/create?topic=t!", "").await,
            (StatusCode::BAD_REQUEST, err("INVALID_TOPIC"))
        );
        assert_eq!(
            api.post("/channel/create?topic=none&channel=c", "").await,
            (StatusCode::NOT_FOUND, err("TOPIC_NOT_FOUND"))
        );
        assert_eq!(
            api.post("/channel/create?topic=t!&channel=c", "").await,
            (StatusCode::BAD_REQUEST, err("INVALID_ARG_TOPIC"))
        );
        assert_eq!(
            api.post("/channel/create?topic=t", "").await,
            (StatusCode::BAD_REQUEST, err("MISSING_ARG_CHANNEL"))
        );
        assert_eq!(
            api.post("/channel/create?topic=t&channel=c!", "").await,
            (StatusCode::BAD_REQUEST, err("INVALID_ARG_CHANNEL"))
        );
        assert_eq!(api.post("/channel/create?topic=t&channel=c", "").await, ok);
        assert_eq!(
            api.post("/channel/pause?topic=t&channel=nope", "").await,
            (StatusCode::NOT_FOUND, err("CHANNEL_NOT_FOUND"))
        );
        assert_eq!(api.post("/channel/pause?topic=t&channel=c", "").await, ok);
        assert_eq!(api.post("/pub?topic=t", "held").await.0, StatusCode::OK);
        let topic = server.router().get_topic("t").unwrap();
        let channel = topic.get_channel("c").unwrap();
        assert!(channel.stats().paused);
        assert_eq!(channel.stats().depth, 1, "a paused channel still queues");
        assert_eq!(api.post("/channel/unpause?topic=t&channel=c", "").await, ok);
        assert!(!channel.stats().paused);
        assert_eq!(api.post("/channel/empty?topic=t&channel=c", "").await, ok);
        assert_eq!(channel.stats().depth, 0);

        assert_eq!(api.post("/topic/pause?topic=t", "").await, ok);
        assert_eq!(api.post("/pub?topic=t", "buffered").await.0, StatusCode::OK);
        assert_eq!(topic.stats().depth, 1, "a paused topic holds messages");
        assert_eq!(api.post("/topic/empty?topic=t", "").await, ok);
        assert_eq!(topic.stats().depth, 0);
        assert_eq!(api.post("/topic/unpause?topic=t", "").await, ok);
        assert_eq!(
            api.post("/topic/pause?topic=none", "").await,
            (StatusCode::NOT_FOUND, err("TOPIC_NOT_FOUND"))
        );
        assert_eq!(
            api.post("/topic/empty?topic=t!", "").await,
            (StatusCode::BAD_REQUEST, err("INVALID_TOPIC"))
        );

        assert_eq!(api.post("/channel/delete?topic=t&channel=c", "").await, ok);
        assert!(topic.get_channel("c").is_none());
        assert_eq!(api.post("/topic/delete?topic=t", "").await, ok);
        assert!(server.router().get_topic("t").is_none());
        assert_eq!(
            api.post("/topic/delete?topic=t", "").await,
            (StatusCode::NOT_FOUND, err("TOPIC_NOT_FOUND"))
        );
        assert_eq!(
            api.post("/topic/delete?a=1;b", "").await,
            (StatusCode::BAD_REQUEST, err("INVALID_REQUEST"))
        );
    })
    .await;
}

#[tokio::test]
async fn stats_json_has_nsqd_fields() {
    run(async {
        let server = TestServer::start("").await;
        let api = Api::new(&server);
        api.post("/channel/create?topic=s&channel=c", "").await;
        api.post("/topic/create?topic=s", "").await;
        api.post("/channel/create?topic=s&channel=c", "").await;
        api.post("/pub?topic=s", "x").await;
        let stats = api.stats().await;
        assert_eq!(stats["version"], "1.3.0");
        assert_eq!(stats["health"], "OK");
        assert!(stats["start_time"].as_i64().unwrap() > 0);
        let topic = &stats["topics"][0];
        for key in [
            "topic_name",
            "channels",
            "depth",
            "backend_depth",
            "message_count",
            "message_bytes",
            "paused",
            "e2e_processing_latency",
        ] {
            assert!(topic.get(key).is_some(), "topic field {key}");
        }
        let channel = &topic["channels"][0];
        for key in [
            "channel_name",
            "depth",
            "backend_depth",
            "in_flight_count",
            "deferred_count",
            "message_count",
            "requeue_count",
            "timeout_count",
            "client_count",
            "clients",
            "paused",
            "e2e_processing_latency",
        ] {
            assert!(channel.get(key).is_some(), "channel field {key}");
        }
        assert_eq!(channel["channel_name"], "c");
        assert_eq!(channel["depth"], 1);
        assert_eq!(stats["producers"], Value::Null);
        let missing: Value =
            serde_json::from_str(&api.get("/stats?format=json&topic=none").await.1).unwrap();
        assert_eq!(missing["topics"], Value::Null);
        let (status, text) = api.get("/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.starts_with("nsqd v1.3.0"), "{text}");
        assert!(
            text.contains("[s              ] depth: 0     be-depth: 0     msgs: 1"),
            "{text}"
        );
        assert!(
            text.contains("[c                        ] depth: 1"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn stats_report_messages_held_only_in_the_store() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_disk(dir.path(), "[nsq]\nmem_queue_size = 2\n").await;
        let api = Api::new(&server);
        api.post("/topic/create?topic=spill", "").await;
        api.post("/channel/create?topic=spill&channel=c", "").await;
        assert_eq!(
            api.post("/mpub?topic=spill", "1\n2\n3\n4\n5").await.0,
            StatusCode::OK
        );
        let stats = api.stats().await;
        let channel = &stats["topics"][0]["channels"][0];
        assert_eq!(channel["depth"], 5);
        assert_eq!(channel["backend_depth"], 3, "past mem_queue_size");
        let (_, text) = api.get("/stats?include_mem=false").await;
        assert!(
            text.contains("[c                        ] depth: 5     be-depth: 3     inflt: 0"),
            "{text}"
        );
        assert!(!text.contains("Memory:"), "{text}");
        let (_, text) = api.get("/stats").await;
        for key in ["heap_objects", "heap_in_use_bytes", "gc_total_runs"] {
            assert!(text.contains(&format!("\n   {key:<25}\t")), "{text}");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ephemeral_topic_goes_with_its_last_deleted_channel() {
    run(async {
        let server = TestServer::start("").await;
        let api = Api::new(&server);
        let ok = (StatusCode::OK, String::new());
        assert_eq!(api.post("/topic/create?topic=e%23ephemeral", "").await, ok);
        for channel in ["a", "b"] {
            let path = format!("/channel/create?topic=e%23ephemeral&channel={channel}");
            assert_eq!(api.post(&path, "").await, ok);
        }
        let path = "/channel/delete?topic=e%23ephemeral&channel=a";
        assert_eq!(api.post(path, "").await, ok);
        assert!(server.router().get_topic("e#ephemeral").is_some());
        let path = "/channel/delete?topic=e%23ephemeral&channel=b";
        assert_eq!(api.post(path, "").await, ok);
        assert!(
            server.router().get_topic("e#ephemeral").is_none(),
            "an ephemeral topic is deleted with its last channel"
        );
        // A durable topic stays.
        api.post("/topic/create?topic=d", "").await;
        api.post("/channel/create?topic=d&channel=a", "").await;
        assert_eq!(api.post("/channel/delete?topic=d&channel=a", "").await, ok);
        assert!(server.router().get_topic("d").is_some());
    })
    .await;
}
