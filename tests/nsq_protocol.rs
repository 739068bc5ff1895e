//! NSQ TCP protocol V2 against the whole broker, in raw bytes: every command, every error
//! text and its fatality, flow control, heartbeats, ephemeral channels.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, STEP};
use polymq_nsq::transport::{Compression, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const RESPONSE: u32 = 0;
const ERROR: u32 = 1;
const MESSAGE: u32 = 2;

/// A message frame's fields.
#[derive(Debug)]
struct Msg {
    timestamp: i64,
    attempts: u16,
    id: [u8; 16],
    body: Vec<u8>,
}

/// A raw V2 client.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let mut stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        stream.write_all(b"  V2").await.unwrap();
        Self { stream }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn frame(&mut self) -> (u32, Vec<u8>) {
        timeout(STEP, async {
            let size = self.stream.read_u32().await.unwrap();
            let kind = self.stream.read_u32().await.unwrap();
            let mut data = vec![0; size as usize - 4];
            self.stream.read_exact(&mut data).await.unwrap();
            (kind, data)
        })
        .await
        .expect("no frame in time")
    }

    /// Next non-heartbeat frame.
    async fn reply(&mut self) -> (u32, Vec<u8>) {
        loop {
            let frame = self.frame().await;
            if frame != (RESPONSE, b"_heartbeat_".to_vec()) {
                return frame;
            }
        }
    }

    async fn expect_ok(&mut self) {
        let (kind, data) = self.reply().await;
        assert_eq!(
            (kind, String::from_utf8_lossy(&data).as_ref()),
            (RESPONSE, "OK")
        );
    }

    async fn expect_error(&mut self, text: &str) {
        let (kind, data) = self.reply().await;
        assert_eq!(
            (kind, String::from_utf8_lossy(&data).as_ref()),
            (ERROR, text)
        );
    }

    /// The error, then the server closes the connection.
    async fn expect_fatal(&mut self, text: &str) {
        self.expect_error(text).await;
        self.expect_closed().await;
    }

    async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        let read = timeout(STEP, self.stream.read(&mut buf))
            .await
            .expect("still open");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "expected close, read {read:?}"
        );
    }

    async fn message(&mut self) -> Msg {
        let (kind, data) = self.reply().await;
        assert_eq!(kind, MESSAGE, "{}", String::from_utf8_lossy(&data));
        Msg {
            timestamp: i64::from_be_bytes(data[..8].try_into().unwrap()),
            attempts: u16::from_be_bytes(data[8..10].try_into().unwrap()),
            id: data[10..26].try_into().unwrap(),
            body: data[26..].to_vec(),
        }
    }

    /// Proves the connection is alive and nothing else is pending: NOP has no reply, a PUB
    /// does.
    async fn expect_quiet(&mut self) {
        self.send(b"PUB quiet.check\n\x00\x00\x00\x01x").await;
        self.expect_ok().await;
    }

    async fn publish(&mut self, topic: &str, body: &[u8]) {
        let mut cmd = format!("PUB {topic}\n").into_bytes();
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(body);
        self.send(&cmd).await;
        self.expect_ok().await;
    }

    async fn subscribe(&mut self, topic: &str, channel: &str) {
        self.send(format!("SUB {topic} {channel}\n").as_bytes())
            .await;
        self.expect_ok().await;
    }
}

fn identify(json: &str) -> Vec<u8> {
    let mut cmd = b"IDENTIFY\n".to_vec();
    cmd.extend_from_slice(&(json.len() as u32).to_be_bytes());
    cmd.extend_from_slice(json.as_bytes());
    cmd
}

fn mpub(topic: &str, bodies: &[&[u8]]) -> Vec<u8> {
    let mut body = (bodies.len() as u32).to_be_bytes().to_vec();
    for b in bodies {
        body.extend_from_slice(&(b.len() as u32).to_be_bytes());
        body.extend_from_slice(b);
    }
    let mut cmd = format!("MPUB {topic}\n").into_bytes();
    cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
    cmd.extend_from_slice(&body);
    cmd
}

async fn run(test: impl std::future::Future<Output = ()>) {
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn bad_magic_is_refused() {
    run(async {
        let server = TestServer::start("").await;
        let mut stream = TcpStream::connect(server.nsq_tcp).await.unwrap();
        stream.write_all(b"  V1").await.unwrap();
        let mut raw = Raw { stream };
        raw.expect_fatal("E_BAD_PROTOCOL").await;
    })
    .await;
}

#[tokio::test]
async fn publish_subscribe_finish() {
    run(async {
        let server = TestServer::start("").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer.publish("orders", b"first").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("orders", "billing").await;
        consumer.send(b"RDY 1\n").await;
        let msg = consumer.message().await;
        assert_eq!(
            msg.body, b"first",
            "the topic kept the message until its first channel"
        );
        assert_eq!(msg.attempts, 1);
        assert!(msg.id.iter().all(u8::is_ascii_hexdigit));
        assert!(
            msg.timestamp > 1_600_000_000_000_000_000,
            "nanosecond timestamp"
        );
        consumer
            .send(&[b"FIN ".as_slice(), &msg.id, b"\n"].concat())
            .await;
        consumer.expect_quiet().await;
        // The same id again is no longer in flight: non-fatal.
        consumer
            .send(&[b"FIN ".as_slice(), &msg.id, b"\n"].concat())
            .await;
        let id = String::from_utf8_lossy(&msg.id).into_owned();
        consumer
            .expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight"))
            .await;
        consumer.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn every_channel_gets_every_message_and_consumers_share() {
    run(async {
        let server = TestServer::start("").await;
        let mut a1 = Raw::connect(server.nsq_tcp).await;
        let mut a2 = Raw::connect(server.nsq_tcp).await;
        let mut b = Raw::connect(server.nsq_tcp).await;
        a1.subscribe("jobs", "a").await;
        a2.subscribe("jobs", "a").await;
        b.subscribe("jobs", "b").await;
        for c in [&mut a1, &mut a2, &mut b] {
            c.send(b"RDY 10\n").await;
        }
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer
            .send(&mpub("jobs", &[b"1", b"2", b"3", b"4"]))
            .await;
        producer.expect_ok().await;
        let mut on_b = Vec::new();
        for _ in 0..4 {
            on_b.push(b.message().await.body);
        }
        assert_eq!(on_b, [b"1", b"2", b"3", b"4"]);
        // Channel a's four messages are split between its two consumers.
        let stats = server
            .router()
            .get_topic("jobs")
            .unwrap()
            .get_channel("a")
            .unwrap();
        timeout(STEP, async {
            while stats.stats().in_flight < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let (m1, m2) = (a1.message().await, a2.message().await);
        assert_ne!(m1.id, m2.id);
    })
    .await;
}

#[tokio::test]
async fn rdy_is_a_level() {
    run(async {
        let server = TestServer::start("").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("flow", "c").await;
        producer.send(&mpub("flow", &[b"1", b"2", b"3"])).await;
        producer.expect_ok().await;
        consumer.send(b"RDY 2\n").await;
        let first = consumer.message().await;
        let second = consumer.message().await;
        let channel = server
            .router()
            .get_topic("flow")
            .unwrap()
            .get_channel("c")
            .unwrap();
        assert_eq!(channel.stats().in_flight, 2);
        assert_eq!(
            channel.stats().depth,
            1,
            "no third message while two are in flight"
        );
        consumer
            .send(&[b"FIN ".as_slice(), &first.id, b"\n"].concat())
            .await;
        assert_eq!(consumer.message().await.body, b"3");
        consumer
            .send(&[b"FIN ".as_slice(), &second.id, b"\n"].concat())
            .await;
        consumer.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn requeue_and_touch() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("retry", "c").await;
        consumer.send(b"RDY 1\n").await;
        Raw::connect(server.nsq_tcp)
            .await
            .publish("retry", b"work")
            .await;
        let msg = consumer.message().await;
        consumer
            .send(&[b"TOUCH ".as_slice(), &msg.id, b"\n"].concat())
            .await;
        consumer
            .send(&[b"REQ ".as_slice(), &msg.id, b" 0\n"].concat())
            .await;
        let again = consumer.message().await;
        assert_eq!(
            (again.id, again.attempts, again.body.as_slice()),
            (msg.id, 2, b"work".as_slice())
        );
        // A delayed requeue waits in the channel's deferred set.
        consumer
            .send(&[b"REQ ".as_slice(), &again.id, b" 60000\n"].concat())
            .await;
        consumer.expect_quiet().await;
        let channel = server
            .router()
            .get_topic("retry")
            .unwrap()
            .get_channel("c")
            .unwrap();
        assert_eq!(channel.stats().deferred, 1);
        assert_eq!(channel.stats().requeue_count, 2);
        let id = String::from_utf8_lossy(&msg.id).into_owned();
        consumer
            .send(&[b"TOUCH ".as_slice(), &msg.id, b"\n"].concat())
            .await;
        consumer
            .expect_error(&format!(
                "E_TOUCH_FAILED TOUCH {id} failed ID not in flight"
            ))
            .await;
        consumer
            .send(&[b"REQ ".as_slice(), &msg.id, b" 5\n"].concat())
            .await;
        consumer
            .expect_error(&format!("E_REQ_FAILED REQ {id} failed ID not in flight"))
            .await;
        consumer.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn deferred_publish_waits() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("later", "c").await;
        consumer.send(b"RDY 1\n").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer
            .send(b"DPUB later 300\n\x00\x00\x00\x05defer")
            .await;
        producer.expect_ok().await;
        let channel = server
            .router()
            .get_topic("later")
            .unwrap()
            .get_channel("c")
            .unwrap();
        assert_eq!(channel.stats().deferred, 1);
        assert_eq!(consumer.message().await.body, b"defer");
    })
    .await;
}

#[tokio::test]
async fn identify_negotiates_truthfully() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(
            r#"{"client_id":"x","feature_negotiation":true,"tls_v1":true,"msg_timeout":5000}"#,
        ))
        .await;
        let (kind, data) = c.reply().await;
        assert_eq!(kind, RESPONSE);
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["max_rdy_count"], 2500);
        assert_eq!(json["msg_timeout"], 5000);
        assert_eq!(json["max_msg_timeout"], 900000);
        assert_eq!(json["snappy"], false);
        assert_eq!(json["deflate"], false);
        assert_eq!(json["tls_v1"], false);
        assert_eq!(json["deflate_level"], 6);
        assert_eq!(json["max_deflate_level"], 6);
        assert_eq!(json["auth_required"], false);
        assert_eq!(json["output_buffer_size"], 16384);
        // No upgrade follows: the next command is plain.
        c.expect_quiet().await;
        let mut plain = Raw::connect(server.nsq_tcp).await;
        plain.send(&identify("{}")).await;
        plain.expect_ok().await;
    })
    .await;
}

#[tokio::test]
async fn identify_errors() {
    run(async {
        let server = TestServer::start("").await;
        let cases = [
            (
                r#"{"heartbeat_interval":500}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (500) is invalid",
            ),
            (
                r#"{"output_buffer_size":10}"#,
                "E_BAD_BODY IDENTIFY output buffer size (10) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":1}"#,
                "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid",
            ),
            (
                r#"{"sample_rate":101}"#,
                "E_BAD_BODY IDENTIFY sample rate (101) is invalid",
            ),
            (
                r#"{"msg_timeout":100}"#,
                "E_BAD_BODY IDENTIFY msg timeout (100) is invalid",
            ),
            ("not json", "E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ];
        for (json, text) in cases {
            let mut c = Raw::connect(server.nsq_tcp).await;
            c.send(&identify(json)).await;
            c.expect_fatal(text).await;
        }
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"IDENTIFY\n\x00\x00\x00\x00").await;
        c.expect_fatal("E_BAD_BODY IDENTIFY invalid body size 0")
            .await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"IDENTIFY\n\x00\x50\x00\x01").await;
        c.expect_fatal("E_BAD_BODY IDENTIFY body too big 5242881 > 5242880")
            .await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.subscribe("t", "c").await;
        c.send(&identify("{}")).await;
        c.expect_fatal("E_INVALID cannot IDENTIFY in current state")
            .await;
    })
    .await;
}

#[tokio::test]
async fn command_errors_and_fatality() {
    run(async {
        let server = TestServer::start("[nsq]\nmax_msg_size = 10\nmax_body_size = 100\n").await;
        let fatal: [(&[u8], &str); 22] = [
            (b"HELLO\n", "E_INVALID invalid command HELLO"),
            (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
            (
                b"PUB bad*topic\n",
                "E_BAD_TOPIC PUB topic name \"bad*topic\" is not valid",
            ),
            (
                b"PUB t\n\x00\x00\x00\x00",
                "E_BAD_MESSAGE PUB invalid message body size 0",
            ),
            (
                b"PUB t\n\x00\x00\x00\x0b",
                "E_BAD_MESSAGE PUB message too big 11 > 10",
            ),
            (
                b"MPUB t!\n",
                "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"t!\" is not valid",
            ),
            (
                b"MPUB t\n\x00\x00\x00\x65",
                "E_BAD_BODY MPUB body too big 101 > 100",
            ),
            (
                b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x00",
                "E_BAD_BODY MPUB invalid message count 0",
            ),
            (
                b"MPUB t\n\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x0b",
                "E_BAD_MESSAGE MPUB message too big 11 > 10",
            ),
            (
                b"DPUB t\n",
                "E_INVALID DPUB insufficient number of parameters",
            ),
            (b"DPUB t x\n", "E_INVALID DPUB could not parse timeout x"),
            (
                b"DPUB t 3600001\n",
                "E_INVALID DPUB timeout 3600001 out of range 0-3600000",
            ),
            (
                b"SUB t\n",
                "E_INVALID SUB insufficient number of parameters",
            ),
            (
                b"SUB t! c\n",
                "E_BAD_TOPIC SUB topic name \"t!\" is not valid",
            ),
            (
                b"SUB t c!\n",
                "E_BAD_CHANNEL SUB channel name \"c!\" is not valid",
            ),
            (b"RDY 1\n", "E_INVALID cannot RDY in current state"),
            (
                b"FIN 0123456789abcdef\n",
                "E_INVALID cannot FIN in current state",
            ),
            (
                b"REQ 0123456789abcdef 0\n",
                "E_INVALID cannot REQ in current state",
            ),
            (
                b"TOUCH 0123456789abcdef\n",
                "E_INVALID cannot TOUCH in current state",
            ),
            (b"CLS\n", "E_INVALID cannot CLS in current state"),
            (b"AUTH\n\x00\x00\x00\x01x", "E_AUTH_DISABLED AUTH disabled"),
            (b"AUTH x\n", "E_INVALID AUTH invalid number of parameters"),
        ];
        for (input, text) in fatal {
            let mut c = Raw::connect(server.nsq_tcp).await;
            c.send(input).await;
            c.expect_fatal(text).await;
        }
        let subscribed: [(&[u8], &str); 9] = [
            (b"SUB t c\n", "E_INVALID cannot SUB in current state"),
            (b"RDY x\n", "E_INVALID RDY could not parse count x"),
            (
                b"RDY 2501\n",
                "E_INVALID RDY count 2501 out of range 0-2500",
            ),
            (b"FIN\n", "E_INVALID FIN insufficient number of params"),
            (b"FIN 123\n", "E_INVALID invalid message ID"),
            (
                b"REQ 0123456789abcdef\n",
                "E_INVALID REQ insufficient number of params",
            ),
            (
                b"REQ 0123456789abcdef x\n",
                "E_INVALID REQ could not parse timeout x",
            ),
            (b"TOUCH\n", "E_INVALID TOUCH insufficient number of params"),
            (
                b"AUTH\n\x00\x00\x00\x01x",
                "E_INVALID cannot AUTH in current state",
            ),
        ];
        for (input, text) in subscribed {
            let mut c = Raw::connect(server.nsq_tcp).await;
            c.subscribe("t", "c").await;
            c.send(input).await;
            c.expect_fatal(text).await;
        }
    })
    .await;
}

#[tokio::test]
async fn cls_and_nop() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"NOP\n").await;
        c.subscribe("t", "c").await;
        c.send(b"RDY 5\nCLS\n").await;
        let (kind, data) = c.reply().await;
        assert_eq!(
            (kind, data.as_slice()),
            (RESPONSE, b"CLOSE_WAIT".as_slice())
        );
        // RDY after CLS is ignored, not an error.
        c.send(b"RDY 3\n").await;
        c.expect_quiet().await;
        c.send(b"CLS\n").await;
        c.expect_fatal("E_INVALID cannot CLS in current state")
            .await;
    })
    .await;
}

#[tokio::test]
async fn heartbeats_and_missed_heartbeat_disconnect() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"heartbeat_interval":1000}"#)).await;
        c.expect_ok().await;
        let (kind, data) = c.frame().await;
        assert_eq!(
            (kind, data.as_slice()),
            (RESPONSE, b"_heartbeat_".as_slice())
        );
        // Silent for two intervals: the server hangs up.
        let mut buf = [0u8; 64];
        let closed = timeout(Duration::from_secs(5), async {
            loop {
                match c.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection kept open without heartbeat answers"
        );

        let mut quiet = Raw::connect(server.nsq_tcp).await;
        quiet.send(&identify(r#"{"heartbeat_interval":-1}"#)).await;
        quiet.expect_ok().await;
        quiet.send(b"SUB t c\n").await;
        quiet
            .expect_fatal("E_INVALID cannot SUB with heartbeats disabled")
            .await;
    })
    .await;
}

#[tokio::test]
async fn auth_when_configured() {
    run(async {
        let server = TestServer::start("[nsq]\nauth_secrets = [\"s3cret\"]\n").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"feature_negotiation":true}"#)).await;
        let (_, data) = c.reply().await;
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["auth_required"], true);
        c.send(b"PUB t\n\x00\x00\x00\x01x").await;
        c.expect_fatal("E_AUTH_FIRST AUTH required before PUB")
            .await;

        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"MPUB t\n").await;
        c.expect_fatal("E_AUTH_FIRST AUTH required before MPUB")
            .await;

        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"SUB t c\n").await;
        c.expect_fatal("E_AUTH_FIRST AUTH required before SUB")
            .await;

        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"AUTH\n\x00\x00\x00\x05wrong").await;
        c.expect_fatal("E_AUTH_FAILED AUTH failed").await;

        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(b"AUTH\n\x00\x00\x00\x06s3cret").await;
        let (kind, data) = c.reply().await;
        assert_eq!(kind, RESPONSE);
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["permission_count"], 1);
        c.publish("t", b"x").await;
        c.send(b"AUTH\n\x00\x00\x00\x06s3cret").await;
        c.expect_fatal("E_INVALID AUTH already set").await;
    })
    .await;
}

#[tokio::test]
async fn consumer_limit() {
    run(async {
        let server = TestServer::start("[nsq]\nmax_channel_consumers = 1\n").await;
        let mut first = Raw::connect(server.nsq_tcp).await;
        first.subscribe("t", "c").await;
        let mut second = Raw::connect(server.nsq_tcp).await;
        second.send(b"SUB t c\n").await;
        second
            .expect_fatal("E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 1")
            .await;
    })
    .await;
}

#[tokio::test]
async fn ephemeral_channel_goes_with_its_last_consumer() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.subscribe("eph", "tail#ephemeral").await;
        let topic = server.router().get_topic("eph").unwrap();
        assert!(topic.get_channel("tail#ephemeral").is_some());
        drop(c);
        timeout(STEP, async {
            while topic.get_channel("tail#ephemeral").is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("ephemeral channel outlived its consumer");

        let mut c = Raw::connect(server.nsq_tcp).await;
        c.subscribe("gone#ephemeral", "c#ephemeral").await;
        drop(c);
        timeout(STEP, async {
            while server.router().get_topic("gone#ephemeral").is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("ephemeral topic outlived its last channel");
    })
    .await;
}

#[tokio::test]
async fn in_flight_messages_return_when_a_consumer_leaves() {
    run(async {
        let server = TestServer::start("").await;
        let mut first = Raw::connect(server.nsq_tcp).await;
        first.subscribe("handoff", "c").await;
        first.send(b"RDY 1\n").await;
        Raw::connect(server.nsq_tcp)
            .await
            .publish("handoff", b"m")
            .await;
        let msg = first.message().await;
        drop(first);
        let mut second = Raw::connect(server.nsq_tcp).await;
        second.subscribe("handoff", "c").await;
        second.send(b"RDY 1\n").await;
        let again = second.message().await;
        assert_eq!((again.id, again.attempts), (msg.id, 2));
    })
    .await;
}

fn cmd(verb: &str, id: &[u8], tail: &str) -> Vec<u8> {
    [verb.as_bytes(), b" ", id, tail.as_bytes(), b"\n"].concat()
}

fn channel_of(
    server: &TestServer,
    topic: &str,
    channel: &str,
) -> std::sync::Arc<polymq_core::queue::DurableQueue> {
    server
        .router()
        .get_topic(topic)
        .unwrap()
        .get_channel(channel)
        .unwrap()
}

#[tokio::test]
async fn req_timeouts_are_clamped_while_dpub_range_is_fatal() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("clamp", "c").await;
        consumer.send(b"RDY 1\n").await;
        consumer.publish("clamp", b"m").await;
        let msg = consumer.message().await;
        // 2^64-1 ms wraps to a negative duration in nsqd: clamped to 0, redelivered at once.
        consumer
            .send(&cmd("REQ", &msg.id, " 18446744073709551615"))
            .await;
        let again = consumer.message().await;
        assert_eq!((again.id, again.attempts), (msg.id, 2));
        // Past max-req-timeout: clamped to it, not refused.
        consumer.send(&cmd("REQ", &again.id, " 7200000")).await;
        consumer.expect_quiet().await;
        let channel = channel_of(&server, "clamp", "c");
        assert_eq!(channel.stats().deferred, 1);

        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer
            .send(b"DPUB clamp 3600000\n\x00\x00\x00\x01x")
            .await;
        producer.expect_ok().await;
        producer
            .send(b"DPUB clamp 18446744073709551615\n\x00\x00\x00\x01x")
            .await;
        producer
            .expect_fatal("E_INVALID DPUB timeout 18446744073709551615 out of range 0-3600000")
            .await;
    })
    .await;
}

#[tokio::test]
async fn fin_req_touch_of_another_clients_message_are_not_fatal() {
    run(async {
        let server = TestServer::start("").await;
        let mut owner = Raw::connect(server.nsq_tcp).await;
        let mut other = Raw::connect(server.nsq_tcp).await;
        owner.subscribe("own", "c").await;
        other.subscribe("own", "c").await;
        owner.send(b"RDY 1\n").await;
        owner.publish("own", b"mine").await;
        let msg = owner.message().await;
        let id = String::from_utf8_lossy(&msg.id).into_owned();
        for (verb, tail) in [("FIN", ""), ("REQ", " 0"), ("TOUCH", "")] {
            other.send(&cmd(verb, &msg.id, tail)).await;
            other
                .expect_error(&format!(
                    "E_{verb}_FAILED {verb} {id} failed client does not own message"
                ))
                .await;
        }
        other.expect_quiet().await;
        owner.send(&cmd("FIN", &msg.id, "")).await;
        owner.expect_quiet().await;
        assert_eq!(channel_of(&server, "own", "c").stats().in_flight, 0);
    })
    .await;
}

#[tokio::test]
async fn mpub_is_all_or_nothing() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("batch", "c").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        // The third member declares size 0: nothing of the batch is enqueued.
        let mut bad = mpub("batch", &[b"1", b"2"]);
        let size = u32::from_be_bytes(bad[11..15].try_into().unwrap()) + 4;
        bad[11..15].copy_from_slice(&size.to_be_bytes());
        bad[15..19].copy_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(&0u32.to_be_bytes());
        producer.send(&bad).await;
        producer
            .expect_fatal("E_BAD_MESSAGE MPUB invalid message(2) body size 0")
            .await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer.publish("batch", b"good").await;
        let channel = channel_of(&server, "batch", "c");
        assert_eq!(channel.stats().depth, 1);
        assert_eq!(channel.stats().message_count, 1);
        consumer.send(b"RDY 5\n").await;
        assert_eq!(consumer.message().await.body, b"good");
    })
    .await;
}

#[tokio::test]
async fn rdy_defaults_and_empty_lines() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("rdy", "c").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer.send(&mpub("rdy", &[b"1", b"2"])).await;
        producer.expect_ok().await;
        // No count means 1.
        consumer.send(b"RDY\r\n").await;
        let first = consumer.message().await;
        consumer.expect_quiet().await;
        let channel = channel_of(&server, "rdy", "c");
        assert_eq!((channel.stats().in_flight, channel.stats().depth), (1, 1));
        // An empty count is 0 (nsqd's ByteToBase10): FIN frees a slot but nothing follows.
        consumer.send(b"RDY \n").await;
        consumer.send(&cmd("FIN", &first.id, "")).await;
        consumer.expect_quiet().await;
        assert_eq!((channel.stats().in_flight, channel.stats().depth), (0, 1));
        // The maximum is accepted.
        let mut max = Raw::connect(server.nsq_tcp).await;
        max.subscribe("rdy_max", "c").await;
        max.send(
            b"RDY 2500
",
        )
        .await;
        max.expect_quiet().await;
        // An empty line is an invalid (empty) command.
        consumer.send(b"\n").await;
        consumer.expect_fatal("E_INVALID invalid command ").await;
    })
    .await;
}

#[tokio::test]
async fn cls_stops_delivery_and_in_flight_can_still_finish() {
    run(async {
        let server = TestServer::start("").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("closing", "c").await;
        consumer.send(b"RDY 5\n").await;
        consumer.publish("closing", b"held").await;
        let msg = consumer.message().await;
        consumer.send(b"CLS\n").await;
        let (kind, data) = consumer.reply().await;
        assert_eq!(
            (kind, data.as_slice()),
            (RESPONSE, b"CLOSE_WAIT".as_slice())
        );
        consumer
            .publish("closing", b"not for a closing client")
            .await;
        consumer.send(&cmd("TOUCH", &msg.id, "")).await;
        consumer.send(&cmd("FIN", &msg.id, "")).await;
        consumer.expect_quiet().await;
        let channel = channel_of(&server, "closing", "c");
        assert_eq!((channel.stats().in_flight, channel.stats().depth), (0, 1));
    })
    .await;
}

#[tokio::test]
async fn read_deadline_is_two_heartbeat_intervals() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"heartbeat_interval":1000}"#)).await;
        c.expect_ok().await;
        // Silent for 1.5 intervals: still connected.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.send(b"NOP\n").await;
        c.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn ephemeral_overflow_is_dropped_silently() {
    run(async {
        let server = TestServer::start("[core]\nmax_queue_depth = 2\n").await;
        let mut consumer = Raw::connect(server.nsq_tcp).await;
        consumer.subscribe("burst", "tail#ephemeral").await;
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer.send(&mpub("burst", &[b"1", b"2", b"3"])).await;
        producer.expect_ok().await;
        let channel = channel_of(&server, "burst", "tail#ephemeral");
        assert_eq!(channel.stats().depth, 2);
        consumer.send(b"RDY 5\n").await;
        assert_eq!(consumer.message().await.body, b"1");
        assert_eq!(consumer.message().await.body, b"2");
    })
    .await;
}

/// A raw client whose stream switches to `compression` after the negotiation JSON.
async fn negotiate(
    addr: SocketAddr,
    json: &str,
    compression: Compression,
) -> (serde_json::Value, Transport<TcpStream>) {
    let mut raw = Raw::connect(addr).await;
    raw.send(&identify(json)).await;
    let (kind, data) = raw.reply().await;
    assert_eq!(kind, RESPONSE);
    let mut stream = Transport::new(raw.stream);
    stream.upgrade(compression, bytes::BytesMut::new());
    (serde_json::from_slice(&data).unwrap(), stream)
}

/// The next frame read through a (compressed) stream.
async fn compressed_frame(stream: &mut Transport<TcpStream>) -> (u32, Vec<u8>) {
    timeout(STEP, async {
        let size = stream.read_u32().await.unwrap();
        let kind = stream.read_u32().await.unwrap();
        let mut data = vec![0; size as usize - 4];
        stream.read_exact(&mut data).await.unwrap();
        (kind, data)
    })
    .await
    .expect("no frame in time")
}

#[tokio::test]
async fn snappy_and_deflate_wrap_the_stream_after_the_json() {
    run(async {
        let server = TestServer::start("").await;
        let cases = [
            (
                r#"{"feature_negotiation":true,"snappy":true}"#,
                Compression::Snappy,
            ),
            (
                r#"{"feature_negotiation":true,"deflate":true,"deflate_level":2}"#,
                Compression::Deflate(2),
            ),
        ];
        for (json, compression) in cases {
            let (reply, mut stream) = negotiate(server.nsq_tcp, json, compression).await;
            let snappy = compression == Compression::Snappy;
            assert_eq!(reply["snappy"], snappy);
            assert_eq!(reply["deflate"], !snappy);
            // The upgrade's OK arrives compressed, then commands flow compressed both ways.
            assert_eq!(
                compressed_frame(&mut stream).await,
                (RESPONSE, b"OK".to_vec())
            );
            stream
                .write_all(b"SUB zipped c\nRDY 1\nPUB zipped\n\x00\x00\x00\x04data")
                .await
                .unwrap();
            stream.flush().await.unwrap();
            assert_eq!(
                compressed_frame(&mut stream).await,
                (RESPONSE, b"OK".to_vec())
            );
            let (kind, data) = compressed_frame(&mut stream).await;
            let (kind, data) = if kind == RESPONSE {
                compressed_frame(&mut stream).await
            } else {
                (kind, data)
            };
            assert_eq!((kind, &data[26..]), (MESSAGE, b"data".as_slice()));
            let stats: serde_json::Value = reqwest::get(format!(
                "http://{}/stats?format=json&topic=zipped",
                server.nsq_http
            ))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let client = &stats["topics"][0]["channels"][0]["clients"][0];
            assert_eq!(
                (client["snappy"].clone(), client["deflate"].clone()),
                (snappy.into(), (!snappy).into())
            );
            stream
                .write_all(&[b"FIN ".as_slice(), &data[10..26], b"\n"].concat())
                .await
                .unwrap();
            stream.flush().await.unwrap();
            drop(stream);
            server
                .router()
                .get_topic("zipped")
                .unwrap()
                .delete_channel("c");
        }
        // Both at once is refused; without negotiation nothing is wrapped.
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(
            r#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#,
        ))
        .await;
        c.expect_fatal("E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")
            .await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"snappy":true,"deflate":true}"#)).await;
        c.expect_ok().await;
        c.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn unfinished_messages_time_out_and_return() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"msg_timeout":1000}"#)).await;
        c.expect_ok().await;
        c.subscribe("slow", "c").await;
        c.send(b"RDY 1\n").await;
        c.publish("slow", b"late").await;
        let first = c.message().await;
        // Not finished within msg_timeout: requeued and sent again, attempts counted.
        let again = c.message().await;
        assert_eq!((again.id, again.attempts), (first.id, 2));
        assert_eq!(channel_of(&server, "slow", "c").stats().timeout_count, 1);
        c.send(&cmd("FIN", &first.id, "")).await;
        c.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn sample_rate_skips_messages() {
    run(async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nsq_tcp).await;
        c.send(&identify(r#"{"sample_rate":1}"#)).await;
        c.expect_ok().await;
        c.subscribe("sampled", "c").await;
        c.send(b"RDY 2500\n").await;
        let bodies: Vec<Vec<u8>> = (0..200).map(|i| format!("{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let mut producer = Raw::connect(server.nsq_tcp).await;
        producer.send(&mpub("sampled", &refs)).await;
        producer.expect_ok().await;
        let channel = channel_of(&server, "sampled", "c");
        timeout(STEP, async {
            while channel.stats().depth > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("channel not drained");
        // Each message is kept with probability 2/100; skipped ones are not in flight.
        let mut sent = 0;
        while let Ok(size) = timeout(Duration::from_millis(500), c.stream.read_u32()).await {
            let mut frame = vec![0; size.unwrap() as usize];
            c.stream.read_exact(&mut frame).await.unwrap();
            sent += usize::from(frame[..4] == MESSAGE.to_be_bytes());
        }
        assert!(sent < 50, "{sent} of 200 sent at sample_rate 1");
        assert_eq!(channel.stats().in_flight, sent);
        c.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn channel_copies_keep_the_id_and_timestamp() {
    run(async {
        let server = TestServer::start("").await;
        let mut a = Raw::connect(server.nsq_tcp).await;
        let mut b = Raw::connect(server.nsq_tcp).await;
        a.subscribe("copies", "a").await;
        b.subscribe("copies", "b").await;
        a.send(b"RDY 1\n").await;
        b.send(b"RDY 1\n").await;
        a.publish("copies", b"same").await;
        let (from_a, from_b) = (a.message().await, b.message().await);
        assert_eq!(
            (from_a.id, from_a.timestamp, from_a.attempts),
            (from_b.id, from_b.timestamp, from_b.attempts)
        );
    })
    .await;
}
