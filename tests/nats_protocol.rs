//! NATS wire behaviour against the real broker with raw bytes: INFO, CONNECT options, every
//! op, the exact error texts and whether the connection survives them, limits, auth,
//! keepalive, slow consumers and the monitoring endpoints.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::{TestServer, STEP};
use polymq_nats::frame::{ClientCodec, Limits, ServerOp};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::Decoder;

/// A raw NATS client: bytes out, decoded server ops in.
struct Raw {
    stream: TcpStream,
    codec: ClientCodec,
    buf: BytesMut,
    info: Value,
}

impl Raw {
    /// Opens a connection and reads the INFO line.
    async fn open(addr: SocketAddr) -> Self {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self::over(stream).await
    }

    async fn over(stream: TcpStream) -> Self {
        let limits = Limits {
            max_control_line: 1 << 20,
            max_payload: 1 << 26,
        };
        let mut raw = Self {
            stream,
            codec: ClientCodec::new(limits),
            buf: BytesMut::new(),
            info: Value::Null,
        };
        match raw.recv().await {
            ServerOp::Info(json) => raw.info = serde_json::from_slice(&json).unwrap(),
            other => panic!("expected INFO, got {other:?}"),
        }
        raw
    }

    /// Opens a connection, sends `CONNECT <json>` and waits for the PONG of a PING.
    async fn connect(addr: SocketAddr, json: &str) -> Self {
        let mut raw = Self::open(addr).await;
        raw.send(format!("CONNECT {json}\r\n").as_bytes()).await;
        let before = raw.sync().await;
        assert!(before.iter().all(|op| *op == ServerOp::Ok), "{before:?}");
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(STEP, self.stream.write_all(bytes))
            .await
            .unwrap()
            .unwrap();
    }

    /// Reads more bytes; false on EOF or a reset.
    async fn fill(&mut self) -> bool {
        matches!(timeout(STEP, self.stream.read_buf(&mut self.buf)).await.unwrap(), Ok(n) if n > 0)
    }

    /// The next op other than a server PING (answered), or `None` once the server closed.
    async fn next(&mut self) -> Option<ServerOp> {
        loop {
            match self.codec.decode(&mut self.buf).unwrap() {
                Some(ServerOp::Ping) => self.send(b"PONG\r\n").await,
                Some(op) => return Some(op),
                None if !self.fill().await => return None,
                None => {}
            }
        }
    }

    async fn recv(&mut self) -> ServerOp {
        self.next().await.expect("connection closed")
    }

    /// Sends PING and returns what arrived before its PONG.
    async fn sync(&mut self) -> Vec<ServerOp> {
        self.send(b"PING\r\n").await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                ServerOp::Pong => return before,
                op => before.push(op),
            }
        }
    }

    /// Asserts the next bytes are exactly `expected` (server PINGs in between are answered).
    async fn expect_bytes(&mut self, expected: &[u8]) {
        loop {
            if self.buf.starts_with(b"PING\r\n") {
                self.buf.advance(6);
                self.send(b"PONG\r\n").await;
                continue;
            }
            if self.buf.len() >= expected.len() {
                break;
            }
            assert!(
                self.fill().await,
                "closed before {:?}",
                String::from_utf8_lossy(expected)
            );
        }
        let got = self.buf.split_to(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Reads until the server closes; returns every op it sent first.
    async fn closed(&mut self) -> Vec<ServerOp> {
        let mut ops = Vec::new();
        while let Some(op) = self.next().await {
            ops.push(op);
        }
        ops
    }
}

fn err(text: &str) -> ServerOp {
    ServerOp::Err(Bytes::copy_from_slice(text.as_bytes()))
}

fn msg(subject: &str, sid: &str, reply: Option<&str>, payload: &str) -> ServerOp {
    ServerOp::Msg {
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        sid: Bytes::copy_from_slice(sid.as_bytes()),
        reply_to: reply.map(|r| Bytes::copy_from_slice(r.as_bytes())),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;

async fn json(server: &TestServer, path: &str) -> Value {
    let url = format!("http://{}{path}", server.admin);
    let response = timeout(STEP, reqwest::get(&url)).await.unwrap().unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    timeout(STEP, response.json()).await.unwrap().unwrap()
}

#[tokio::test]
async fn info_is_sent_on_connect_with_nats_server_fields() {
    timeout(STEP * 2, async {
        let server = TestServer::start("").await;
        let mut stream = TcpStream::connect(server.nats).await.unwrap();
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            line.push(byte[0]);
        }
        assert!(
            line.starts_with(b"INFO {") && line.ends_with(b"} \r\n"),
            "{line:?}"
        );
        let info: Value = serde_json::from_slice(&line[5..line.len() - 3]).unwrap();
        let id = info["server_id"].as_str().unwrap();
        assert_eq!(id.len(), 56);
        assert_eq!(info["server_name"].as_str(), Some(id));
        assert!(info["version"].as_str().is_some());
        assert_eq!(info["proto"], 1);
        assert_eq!(info["headers"], true);
        assert_eq!(info["max_payload"], 1_048_576);
        assert!(info["client_id"].as_u64().unwrap() > 0);
        assert_eq!(info["client_ip"], "127.0.0.1");
        assert_eq!(info["port"], server.nats.port());
        assert!(info.get("auth_required").is_none());
        assert!(info.get("connect_urls").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_defaults_to_verbose_pedantic_and_echo() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {}\r\n").await;
        c.expect_bytes(b"+OK\r\n").await;
        // The message routed before the UNSUB is still delivered, in nats-server's order.
        c.send(b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nUNSUB 1\r\nUNSUB 99\r\nPING\r\n")
            .await;
        c.expect_bytes(b"+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n+OK\r\n+OK\r\nPONG\r\n")
            .await;
        // Pedantic by default too: a wildcard or empty-token publish subject is reported (and
        // still acknowledged), the connection kept.
        c.send(b"PUB foo.* 2\r\nhi\r\nPUB a..b 0\r\n\r\nPING\r\n").await;
        c.expect_bytes(
            b"-ERR 'Invalid Publish Subject'\r\n+OK\r\n-ERR 'Invalid Publish Subject'\r\n+OK\r\nPONG\r\n",
        )
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pub_sub_exact_bytes() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"SUB foo 1\r\nPUB foo 5\r\nhello\r\n").await;
        c.expect_bytes(b"MSG foo 1 5\r\nhello\r\n").await;
        c.send(b"PUB foo _INBOX.r 0\r\n\r\n").await;
        c.expect_bytes(b"MSG foo 1 _INBOX.r 0\r\n\r\n").await;
        // Split across writes, lowercase op, tabs between arguments.
        c.send(b"pub\tfoo\t3\r\nab").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.send(b"c\r\n").await;
        c.expect_bytes(b"MSG foo 1 3\r\nabc\r\n").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wildcards_match_tokens() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB *.bar.* 3\r\nSUB foo 4\r\n")
            .await;
        c.sync().await;
        c.send(b"PUB foo.bar 1\r\na\r\nPUB foo.bar.baz 1\r\nb\r\nPUB foo 1\r\nc\r\n")
            .await;
        let mut got: Vec<ServerOp> = c.sync().await;
        got.sort_by_key(|op| format!("{op:?}"));
        let mut want = vec![
            msg("foo.bar", "1", None, "a"),
            msg("foo.bar", "2", None, "a"),
            msg("foo.bar.baz", "2", None, "b"),
            msg("foo.bar.baz", "3", None, "b"),
            msg("foo", "4", None, "c"),
        ];
        want.sort_by_key(|op| format!("{op:?}"));
        assert_eq!(got, want);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn queue_group_members_share_messages() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut c = Raw::connect(server.nats, QUIET).await;
            c.send(b"SUB jobs workers 7\r\n").await;
            c.sync().await;
            members.push(c);
        }
        let mut plain = Raw::connect(server.nats, QUIET).await;
        plain.send(b"SUB jobs 1\r\n").await;
        plain.sync().await;
        let mut publisher = Raw::connect(server.nats, QUIET).await;
        for i in 0..30 {
            publisher
                .send(format!("PUB jobs 2\r\n{i:02}\r\n").as_bytes())
                .await;
        }
        publisher.sync().await;
        assert_eq!(plain.sync().await.len(), 30);
        let mut seen = Vec::new();
        for member in &mut members {
            for op in member.sync().await {
                match op {
                    ServerOp::Msg { sid, payload, .. } => {
                        assert_eq!(&sid[..], b"7");
                        seen.push(payload);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 30, "each message exactly once across the group");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn echo_false_suppresses_own_messages() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut quiet = Raw::connect(server.nats, r#"{"verbose":false,"echo":false}"#).await;
        let mut other = Raw::connect(server.nats, QUIET).await;
        quiet.send(b"SUB foo 1\r\n").await;
        other.send(b"SUB foo 1\r\n").await;
        quiet.sync().await;
        other.sync().await;
        quiet.send(b"PUB foo 1\r\nx\r\n").await;
        assert_eq!(other.recv().await, msg("foo", "1", None, "x"));
        assert!(quiet.sync().await.is_empty());
        other.send(b"PUB foo 1\r\ny\r\n").await;
        assert_eq!(quiet.recv().await, msg("foo", "1", None, "y"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn headers_go_to_header_clients_and_are_stripped_for_others() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut with = Raw::connect(server.nats, r#"{"verbose":false,"headers":true}"#).await;
        let mut without = Raw::connect(server.nats, QUIET).await;
        with.send(b"SUB foo 1\r\n").await;
        without.send(b"SUB foo 2\r\n").await;
        with.sync().await;
        without.sync().await;
        with.send(b"HPUB foo r 24 26\r\nNATS/1.0\r\nA: b\r\nC: d\r\n\r\nhi\r\n")
            .await;
        with.expect_bytes(b"HMSG foo 1 r 24 26\r\nNATS/1.0\r\nA: b\r\nC: d\r\n\r\nhi\r\n")
            .await;
        without.expect_bytes(b"MSG foo 2 r 2\r\nhi\r\n").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn header_blocks_are_delivered_as_published() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut with = Raw::connect(server.nats, r#"{"verbose":false,"headers":true}"#).await;
        let mut without = Raw::connect(server.nats, QUIET).await;
        with.send(b"SUB foo 1\r\n").await;
        without.send(b"SUB foo 2\r\n").await;
        with.sync().await;
        without.sync().await;
        // Forms the header list does not reproduce go out byte for byte, as nats-server
        // forwards them: no space after the colon, padding, a line without a colon, an empty
        // block (still HMSG), a block without the version line.
        let blocks: [&[u8]; 4] = [
            b"NATS/1.0\r\nA:b\r\n\r\n",
            b"NATS/1.0\r\nA:  b  \r\nA: c\r\nB\r\n\r\n",
            b"NATS/1.0\r\n\r\n",
            b"abcde",
        ];
        for block in blocks {
            let n = block.len();
            let mut hpub = format!("HPUB foo r {n} {}\r\n", n + 2).into_bytes();
            hpub.extend_from_slice(block);
            hpub.extend_from_slice(b"hi\r\n");
            with.send(&hpub).await;
            let mut hmsg = format!("HMSG foo 1 r {n} {}\r\n", n + 2).into_bytes();
            hmsg.extend_from_slice(block);
            hmsg.extend_from_slice(b"hi\r\n");
            with.expect_bytes(&hmsg).await;
            without.expect_bytes(b"MSG foo 2 r 2\r\nhi\r\n").await;
        }
        // Zero header bytes: nats-server delivers a plain MSG to everyone.
        with.send(b"HPUB foo 0 2\r\nhi\r\n").await;
        with.expect_bytes(b"MSG foo 1 2\r\nhi\r\n").await;
        without.expect_bytes(b"MSG foo 2 2\r\nhi\r\n").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn hpub_without_headers_closes_without_err() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n").await;
        assert_eq!(c.closed().await, vec![]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn no_responders_gets_a_503_status() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let opts = r#"{"verbose":false,"headers":true,"no_responders":true}"#;
        let mut c = Raw::connect(server.nats, opts).await;
        c.send(b"SUB _INBOX.x.* 1\r\nPUB svc.echo _INBOX.x.1 2\r\nhi\r\n")
            .await;
        c.expect_bytes(
            b"HMSG _INBOX.x.1 1 40 40\r\nNATS/1.0 503\r\nNats-Subject: svc.echo\r\n\r\n\r\n",
        )
        .await;
        // With a responder there is no status.
        let mut responder = Raw::connect(server.nats, QUIET).await;
        responder.send(b"SUB svc.echo 9\r\n").await;
        responder.sync().await;
        c.send(b"PUB svc.echo _INBOX.x.2 2\r\nhi\r\n").await;
        assert_eq!(
            responder.recv().await,
            msg("svc.echo", "9", Some("_INBOX.x.2"), "hi")
        );
        assert!(c.sync().await.is_empty());
        // A client that did not ask for no_responders gets nothing.
        let mut plain = Raw::connect(server.nats, r#"{"verbose":false,"headers":true}"#).await;
        plain
            .send(b"SUB _INBOX.y.* 1\r\nPUB nobody _INBOX.y.1 0\r\n\r\n")
            .await;
        assert!(plain.sync().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn no_responders_requires_headers() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {\"no_responders\":true}\r\n").await;
        assert_eq!(
            c.closed().await,
            vec![err("no responders requires headers support")]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn max_payload_is_advertised_and_enforced() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nmax_payload = 1024\n").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        assert_eq!(c.info["max_payload"], 1024);
        c.send(b"SUB big 1\r\n").await;
        let payload = vec![b'x'; 1024];
        c.send(b"PUB big 1024\r\n").await;
        c.send(&payload).await;
        c.send(b"\r\n").await;
        match c.recv().await {
            ServerOp::Msg { payload, .. } => assert_eq!(payload.len(), 1024),
            other => panic!("{other:?}"),
        }
        // Refused as soon as the control line ends, before any payload.
        c.send(b"PUB big 1025\r\n").await;
        assert_eq!(c.closed().await, vec![err("Maximum Payload Violation")]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn control_line_limit_closes_with_lowercase_error() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        let long = format!("SUB {} 1", "a".repeat(5000));
        c.send(long.as_bytes()).await;
        assert_eq!(c.closed().await, vec![err("maximum control line exceeded")]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_operations_close_with_err() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        for line in [
            "FOO bar\r\n",
            "MSG foo 1 1\r\nx\r\n",
            "\r\n",
            "PUBX\r\n",
            "PUB foo 1\r\nxy\r\n",
        ] {
            let mut c = Raw::connect(server.nats, QUIET).await;
            c.send(line.as_bytes()).await;
            assert_eq!(
                c.closed().await,
                vec![err("Unknown Protocol Operation")],
                "{line:?}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn malformed_arguments_close_without_err() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        for line in [
            "PUB foo\r\n",
            "PUB foo bar\r\n",
            "SUB foo\r\n",
            "UNSUB\t\r\n",
            "CONNECT {bad\r\n",
        ] {
            let mut c = Raw::connect(server.nats, QUIET).await;
            c.send(line.as_bytes()).await;
            assert_eq!(c.closed().await, vec![], "{line:?}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_subjects_are_reported_and_the_connection_kept() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"SUB foo..bar 1\r\nSUB foo.>.bar 2\r\n").await;
        assert_eq!(
            c.sync().await,
            vec![err("Invalid Subject"), err("Invalid Subject")]
        );
        // Not pedantic: a wildcard publish is silently unroutable.
        c.send(b"PUB foo.* 0\r\n\r\n").await;
        assert!(c.sync().await.is_empty());
        let mut pedantic = Raw::connect(server.nats, r#"{"verbose":false,"pedantic":true}"#).await;
        pedantic
            .send(b"PUB foo.* 0\r\n\r\nPUB a..b 0\r\n\r\n")
            .await;
        assert_eq!(
            pedantic.sync().await,
            vec![
                err("Invalid Publish Subject"),
                err("Invalid Publish Subject")
            ]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn subscriptions_past_the_limit_are_refused_and_the_connection_kept() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nmax_subscriptions = 2\n").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB a 1\r\n")
            .await;
        assert_eq!(c.sync().await, vec![err("maximum subscriptions exceeded")]);
        c.send(b"UNSUB 2\r\nSUB c 3\r\n").await;
        assert!(c.sync().await.is_empty(), "a freed slot can be used again");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unsub_with_max_msgs_auto_unsubscribes() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"SUB foo 1\r\nUNSUB 1 2\r\n").await;
        c.sync().await;
        for _ in 0..4 {
            c.send(b"PUB foo 1\r\nx\r\n").await;
        }
        assert_eq!(c.sync().await.len(), 2);
        // A limit at or below what was delivered removes at once.
        c.send(b"SUB bar 2\r\nPUB bar 1\r\ny\r\n").await;
        assert_eq!(c.recv().await, msg("bar", "2", None, "y"));
        c.send(b"UNSUB 2 1\r\nPUB bar 1\r\nz\r\n").await;
        assert!(c.sync().await.is_empty());
        // A duplicate sid keeps the first subscription.
        c.send(b"SUB baz 3\r\nSUB other 3\r\nPUB other 1\r\nq\r\nPUB baz 1\r\nw\r\n")
            .await;
        assert_eq!(c.sync().await, vec![msg("baz", "3", None, "w")]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ping_pong_and_connect_info_after_first_ping() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::open(server.nats).await;
        c.send(b"ping\r\n").await;
        c.expect_bytes(b"PONG\r\n").await;
        c.send(b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n")
            .await;
        c.expect_bytes(b"PONG\r\n").await;
        match c.recv().await {
            ServerOp::Info(json) => {
                let info: Value = serde_json::from_slice(&json).unwrap();
                assert_eq!(info["connect_info"], true);
                assert_eq!(info["remote_account"], "$G");
            }
            other => panic!("{other:?}"),
        }
        c.send(b"PING\r\n").await;
        c.expect_bytes(b"PONG\r\n").await;
        c.send(b"+OK\r\nPONG\r\nPING\r\n").await;
        c.expect_bytes(b"PONG\r\n").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_err_and_bad_protocol_close_the_connection() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let mut c = Raw::connect(server.nats, QUIET).await;
        c.send(b"-ERR 'boom'\r\n").await;
        assert_eq!(c.closed().await, vec![]);
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {\"protocol\":2}\r\n").await;
        assert_eq!(c.closed().await, vec![err("invalid client protocol")]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn token_auth() {
    timeout(STEP, async {
        let config = "[nats]\nauth_token = \"s3cret\"\nauth_timeout_ms = 300\n";
        let server = TestServer::start(config).await;
        let mut c = Raw::open(server.nats).await;
        assert_eq!(c.info["auth_required"], true);
        c.send(b"CONNECT {\"auth_token\":\"wrong\"}\r\n").await;
        assert_eq!(c.closed().await, vec![err("Authorization Violation")]);
        // Anything but CONNECT first is a violation, even PING.
        let mut c = Raw::open(server.nats).await;
        c.send(b"PING\r\n").await;
        assert_eq!(c.closed().await, vec![err("Authorization Violation")]);
        // Silence past the auth timeout.
        let mut c = Raw::open(server.nats).await;
        assert_eq!(c.closed().await, vec![err("Authentication Timeout")]);
        // The right token, pipelined with more ops.
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {\"auth_token\":\"s3cret\"}\r\nSUB a 1\r\nPUB a 1\r\nx\r\n")
            .await;
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(c.recv().await);
        }
        assert_eq!(got[..3], [ServerOp::Ok, ServerOp::Ok, ServerOp::Ok]);
        assert_eq!(got[3], msg("a", "1", None, "x"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn user_password_auth() {
    timeout(STEP, async {
        let config = "[nats]\nusers = [{ user = \"alice\", password = \"pw\" }]\n";
        let server = TestServer::start(config).await;
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"nope\"}\r\n")
            .await;
        assert_eq!(c.closed().await, vec![err("Authorization Violation")]);
        let c = Raw::connect(
            server.nats,
            r#"{"verbose":false,"user":"alice","pass":"pw"}"#,
        )
        .await;
        let find = |connz: &Value| {
            let conns = connz["connections"].as_array().unwrap();
            conns
                .iter()
                .find(|conn| conn["cid"] == c.info["client_id"])
                .unwrap()
                .clone()
        };
        assert!(find(&json(&server, "/connz").await)
            .get("authorized_user")
            .is_none());
        assert_eq!(
            find(&json(&server, "/connz?auth=true").await)["authorized_user"],
            "alice"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unanswered_pings_close_a_stale_connection() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nping_interval_ms = 100\n").await;
        let mut c = Raw::open(server.nats).await;
        c.send(b"CONNECT {\"verbose\":false}\r\n").await;
        let mut ops = Vec::new();
        loop {
            match c.codec.decode(&mut c.buf).unwrap() {
                Some(op) => ops.push(op),
                None if !c.fill().await => break,
                None => {}
            }
        }
        assert_eq!(
            ops,
            vec![ServerOp::Ping, ServerOp::Ping, err("Stale Connection")]
        );
        let varz = json(&server, "/varz").await;
        assert_eq!(varz["stale_connections"], 1);
        // A client that answers stays.
        let mut alive = Raw::connect(server.nats, QUIET).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Some(left) = until.checked_duration_since(tokio::time::Instant::now()) {
            // `next` answers the server's PINGs; nothing else may arrive.
            assert!(timeout(left, alive.next()).await.is_err());
        }
        assert!(alive.sync().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    timeout(STEP, async {
        let server = TestServer::start("[nats]\nmax_connections = 2\n").await;
        let _a = Raw::connect(server.nats, QUIET).await;
        let _b = Raw::connect(server.nats, QUIET).await;
        let mut c = Raw::open(server.nats).await;
        assert_eq!(c.closed().await, vec![err("maximum connections exceeded")]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_consumers_are_disconnected_and_counted() {
    timeout(STEP * 3, async {
        let server = TestServer::start("[nats]\nmax_pending = 65536\n").await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = timeout(STEP, socket.connect(server.nats))
            .await
            .unwrap()
            .unwrap();
        let mut slow = Raw::over(stream).await;
        slow.send(b"CONNECT {\"verbose\":false}\r\nSUB firehose 1\r\n")
            .await;
        slow.sync().await;
        let mut publisher = Raw::connect(server.nats, QUIET).await;
        let chunk = format!("PUB firehose 16384\r\n{}\r\n", "x".repeat(16384));
        let mut slow_seen = false;
        for _ in 0..200 {
            for _ in 0..16 {
                publisher.send(chunk.as_bytes()).await;
            }
            publisher.sync().await;
            if json(&server, "/varz").await["slow_consumers"] == 1 {
                slow_seen = true;
                break;
            }
        }
        assert!(slow_seen, "no slow consumer detected");
        // The slow client's connection ends (EOF or a reset) with no -ERR: nats-server skips
        // the flush and the error for slow consumers.
        let mut drained = Vec::new();
        loop {
            match timeout(STEP, slow.stream.read_buf(&mut drained))
                .await
                .unwrap()
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(!drained.windows(4).any(|w| w == b"-ERR"));
        // The publisher is unaffected.
        assert!(publisher.sync().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn monitoring_endpoints_report_nats_fields() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let opts = r#"{"verbose":false,"name":"watcher","lang":"rust","version":"1.2.3"}"#;
        let mut a = Raw::connect(server.nats, opts).await;
        a.send(b"SUB foo 1\r\nSUB bar q 2\r\n").await;
        a.sync().await;
        let mut b = Raw::connect(server.nats, QUIET).await;
        b.send(b"PUB foo 5\r\nhello\r\n").await;
        b.sync().await;
        assert_eq!(a.recv().await, msg("foo", "1", None, "hello"));

        let varz = json(&server, "/varz").await;
        assert_eq!(varz["connections"], 2);
        assert!(varz["total_connections"].as_u64().unwrap() >= 2);
        assert_eq!(varz["in_msgs"], 1);
        assert_eq!(varz["in_bytes"], 5);
        assert_eq!(varz["out_msgs"], 1);
        assert_eq!(varz["out_bytes"], 5);
        assert_eq!(varz["subscriptions"], 2);
        assert_eq!(varz["max_payload"], 1_048_576);
        assert_eq!(varz["http_port"], server.admin.port());
        assert_eq!(varz["http_host"], server.admin.ip().to_string());
        assert!(varz["uptime"].as_str().unwrap().ends_with('s'));
        assert_eq!(varz["server_id"], a.info["server_id"]);

        let connz = json(&server, "/connz?subs=1").await;
        assert_eq!(connz["num_connections"], 2);
        let conns = connz["connections"].as_array().unwrap();
        let watcher = conns.iter().find(|c| c["name"] == "watcher").unwrap();
        assert_eq!(watcher["cid"], a.info["client_id"]);
        assert_eq!(watcher["lang"], "rust");
        assert_eq!(watcher["version"], "1.2.3");
        assert_eq!(watcher["subscriptions"], 2);
        assert_eq!(watcher["out_msgs"], 1);
        let mut subs: Vec<&str> = watcher["subscriptions_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        subs.sort_unstable();
        assert_eq!(subs, ["bar", "foo"]);
        let sender = conns
            .iter()
            .find(|c| c["cid"] == b.info["client_id"])
            .unwrap();
        assert_eq!(
            (sender["in_msgs"].as_u64(), sender["in_bytes"].as_u64()),
            (Some(1), Some(5))
        );

        let subsz = json(&server, "/subsz?subs=1").await;
        assert_eq!(subsz["num_subscriptions"], 2);
        let list = subsz["subscriptions_list"].as_array().unwrap();
        let queued = list.iter().find(|s| s["subject"] == "bar").unwrap();
        assert_eq!(queued["qgroup"], "q");
        assert_eq!(queued["sid"], "2");
        let detail = json(&server, "/connz?subs=detail&sort=msgs_to&limit=1").await;
        assert_eq!(
            detail["connections"][0]["subscriptions_list_detail"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        drop(a);
        drop(b);
        // Closed connections keep counting in the server totals.
        for _ in 0..100 {
            if json(&server, "/varz").await["connections"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let varz = json(&server, "/varz").await;
        assert_eq!(varz["connections"], 0);
        assert_eq!(varz["in_msgs"], 1);
        assert_eq!(varz["subscriptions"], 0);
    })
    .await
    .unwrap();
}
