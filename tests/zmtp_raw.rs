//! ZMTP wire behaviour with hand-written bytes: greeting, NULL and PLAIN handshakes, ERROR
//! texts, ZMTP 3.0 and 3.1 subscriptions, PING/PONG, limits, and the request-reply error
//! replies. Peers here are raw TCP streams, so every byte the broker sends is checked.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, STEP};
use futures::StreamExt;
use polymq_core::{Envelope, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// A greeting as libzmq sends it: version 3.`minor`, `mechanism`, as-server 0.
fn greeting(minor: u8, mechanism: &[u8]) -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[8] = 0x01;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = minor;
    g[12..12 + mechanism.len()].copy_from_slice(mechanism);
    g
}

fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    if body.len() > 255 {
        out.push(flags | LONG);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
    out
}

fn command(name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    frame(COMMAND, &body)
}

fn metadata(props: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in props {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn message(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let flags = if i + 1 < parts.len() { MORE } else { 0 };
        out.extend(frame(flags, part));
    }
    out
}

/// One raw peer.
struct Raw {
    stream: TcpStream,
}

/// What a raw peer reads after the handshake.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Command(Vec<u8>),
    Message(Vec<Vec<u8>>),
}

impl Raw {
    /// Connects and reads the broker's greeting, which must come at once and unprompted.
    async fn connect(addr: SocketAddr) -> (Raw, [u8; 64]) {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let mut raw = Raw { stream };
        let mut theirs = [0u8; 64];
        raw.read_exact(&mut theirs).await;
        (raw, theirs)
    }

    /// A NULL peer of `socket_type` speaking 3.`minor`, with extra READY properties; returns
    /// after the broker's READY, whose Socket-Type must be `expect`.
    async fn null(
        addr: SocketAddr,
        minor: u8,
        socket_type: &str,
        extra: &[(&str, &[u8])],
        expect: &str,
    ) -> Raw {
        let (mut raw, _) = Raw::connect(addr).await;
        raw.send(&greeting(minor, b"NULL")).await;
        let mut props = vec![("Socket-Type", socket_type.as_bytes())];
        props.extend_from_slice(extra);
        raw.send(&command("READY", &metadata(&props))).await;
        let ready = raw.read_command().await;
        assert_eq!(ready, ready_body(expect), "READY for {socket_type}");
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(STEP, self.stream.write_all(bytes))
            .await
            .unwrap()
            .unwrap();
    }

    async fn read_exact(&mut self, buf: &mut [u8]) {
        timeout(STEP, self.stream.read_exact(buf))
            .await
            .expect("read timed out")
            .unwrap();
    }

    async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.read_exact(&mut head).await;
        let size = if head[0] & LONG != 0 {
            let mut rest = [0u8; 7];
            self.read_exact(&mut rest).await;
            let mut size = [0u8; 8];
            size[0] = head[1];
            size[1..].copy_from_slice(&rest);
            u64::from_be_bytes(size) as usize
        } else {
            usize::from(head[1])
        };
        let mut body = vec![0u8; size];
        self.read_exact(&mut body).await;
        (head[0], body)
    }

    async fn read_item(&mut self) -> Item {
        let mut parts = Vec::new();
        loop {
            let (flags, body) = self.read_frame().await;
            if flags & COMMAND != 0 {
                assert!(parts.is_empty(), "command inside a message");
                return Item::Command(body);
            }
            parts.push(body);
            if flags & MORE == 0 {
                return Item::Message(parts);
            }
        }
    }

    async fn read_command(&mut self) -> Vec<u8> {
        match self.read_item().await {
            Item::Command(body) => body,
            other @ Item::Message(_) => panic!("expected a command, got {other:?}"),
        }
    }

    async fn read_message(&mut self) -> Vec<Vec<u8>> {
        match self.read_item().await {
            Item::Message(parts) => parts,
            other @ Item::Command(_) => panic!("expected a message, got {other:?}"),
        }
    }

    /// PING with a context, then wait for its PONG: proof that everything sent before was
    /// processed by the broker (it handles a connection's frames in order).
    async fn sync(&mut self) {
        self.send(&command("PING", b"\x00\x00sync")).await;
        loop {
            match self.read_item().await {
                Item::Command(body) if body == b"\x04PONGsync" => return,
                Item::Command(_) => {}
                Item::Message(parts) => panic!("unexpected message {parts:?}"),
            }
        }
    }

    /// Reads until the broker closes the connection; returns what it sent before.
    async fn until_closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let read = self.stream.read_to_end(&mut rest);
        match timeout(STEP, read).await.expect("connection not closed") {
            Ok(_) => rest,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => rest,
            Err(err) => panic!("{err}"),
        }
    }
}

fn ready_body(socket_type: &str) -> Vec<u8> {
    let mut props = vec![("Socket-Type", socket_type.as_bytes())];
    if matches!(socket_type, "ROUTER" | "DEALER") {
        props.push(("Identity", b""));
    }
    let mut body = b"\x05READY".to_vec();
    body.extend(metadata(&props));
    body
}

fn error_command(reason: &[u8]) -> Vec<u8> {
    let mut data = vec![reason.len() as u8];
    data.extend_from_slice(reason);
    command("ERROR", &data)
}

async fn server(extra: &str) -> TestServer {
    TestServer::start(extra).await
}

#[tokio::test]
async fn broker_greets_first_with_zmtp_3_1_null() {
    timeout(STEP, async {
        let server = server("").await;
        let (_raw, theirs) = Raw::connect(server.zmtp).await;
        assert_eq!(theirs[0], 0xFF);
        assert_eq!(theirs[9], 0x7F);
        assert_eq!(&theirs[10..12], &[3, 1]);
        assert_eq!(&theirs[12..32], b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(theirs[32], 0, "NULL requires as-server 0");
        assert!(theirs[33..].iter().all(|&b| b == 0));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_socket_type_gets_its_compatible_peer() {
    timeout(STEP, async {
        let server = server("").await;
        let pairs = [
            ("PUB", "XSUB"),
            ("XPUB", "XSUB"),
            ("SUB", "XPUB"),
            ("XSUB", "XPUB"),
            ("PUSH", "PULL"),
            ("PULL", "PUSH"),
            ("REQ", "ROUTER"),
            ("DEALER", "ROUTER"),
            ("REP", "DEALER"),
            ("ROUTER", "DEALER"),
        ];
        for (peer, broker) in pairs {
            Raw::null(server.zmtp, 1, peer, &[], broker).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unsupported_socket_types_get_error_then_close() {
    timeout(STEP, async {
        let server = server("").await;
        for socket_type in ["PAIR", "CLIENT", "DISH", "sub", ""] {
            let (mut raw, _) = Raw::connect(server.zmtp).await;
            raw.send(&greeting(1, b"NULL")).await;
            let ready = metadata(&[("Socket-Type", socket_type.as_bytes())]);
            raw.send(&command("READY", &ready)).await;
            let rest = raw.until_closed().await;
            assert_eq!(
                rest,
                error_command(b"Unsupported-Socket-Type"),
                "{socket_type:?}"
            );
        }
        // No Socket-Type at all is the same.
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        raw.send(&command("READY", &[])).await;
        assert_eq!(
            raw.until_closed().await,
            error_command(b"Unsupported-Socket-Type")
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn garbage_greetings_are_rejected_without_harming_other_peers() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"")).await;
        sub.sync().await;
        let garbage: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            // ZMTP 1.0 (unversioned): short identity frame.
            b"\x01\x00",
            // Signature whose tenth octet has bit 0 clear.
            b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x00",
            // ZMTP 2.0 peer.
            b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x01\x05",
        ];
        for bytes in garbage {
            let (mut raw, _) = Raw::connect(server.zmtp).await;
            raw.send(bytes).await;
            assert!(raw.until_closed().await.is_empty(), "{bytes:?}");
        }
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        assert_eq!(publisher.read_command().await, b"\x09SUBSCRIBE");
        publisher.send(&message(&[b"still.alive", b"yes"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"still.alive".to_vec(), b"yes".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn mechanism_mismatch_closes_without_error() {
    timeout(STEP, async {
        let server = server("").await;
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"PLAIN")).await;
        assert!(raw.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn commands_other_than_ready_during_the_null_handshake_close() {
    timeout(STEP, async {
        let server = server("").await;
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        raw.send(&command("PING", b"\x00\x00")).await;
        assert!(raw.until_closed().await.is_empty());
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        raw.send(&message(&[b"too early"])).await;
        assert!(raw.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn handshake_must_finish_within_handshake_ivl() {
    timeout(STEP, async {
        let server = server("[zmtp]\nhandshake_ivl_ms = 100\n").await;
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        assert!(raw.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

const PLAIN: &str =
    "[zmtp]\nmechanism = \"plain\"\nusers = [{ username = \"admin\", password = \"s3cret\" }]\n";

fn hello(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut data = vec![user.len() as u8];
    data.extend_from_slice(user);
    data.push(pass.len() as u8);
    data.extend_from_slice(pass);
    command("HELLO", &data)
}

#[tokio::test]
async fn plain_accepts_configured_users() {
    timeout(STEP, async {
        let server = server(PLAIN).await;
        let (mut raw, theirs) = Raw::connect(server.zmtp).await;
        assert_eq!(&theirs[12..17], b"PLAIN");
        assert_eq!(theirs[32], 1, "the PLAIN server sets as-server");
        raw.send(&greeting(1, b"PLAIN")).await;
        raw.send(&hello(b"admin", b"s3cret")).await;
        assert_eq!(raw.read_command().await, b"\x07WELCOME");
        let props = metadata(&[("Socket-Type", b"SUB")]);
        raw.send(&command("INITIATE", &props)).await;
        assert_eq!(raw.read_command().await, ready_body("XPUB"));
        raw.sync().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn plain_rejects_bad_credentials_with_error_400() {
    timeout(STEP, async {
        let server = server(PLAIN).await;
        for (user, pass) in [
            (&b"admin"[..], &b"wrong"[..]),
            (b"nobody", b"s3cret"),
            (b"", b""),
        ] {
            let (mut raw, _) = Raw::connect(server.zmtp).await;
            raw.send(&greeting(1, b"PLAIN")).await;
            raw.send(&hello(user, pass)).await;
            // Byte for byte what libzmq's PLAIN server sends: its "\x05ERROR" literal is read
            // by C as "\x05E" (`^`) + "RROR", and libzmq PLAIN clients expect exactly that.
            assert_eq!(raw.until_closed().await, b"\x04\x09^RROR\x03400");
        }
        // A NULL peer never gets in.
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        assert!(raw.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ping_gets_pong_with_the_context() {
    timeout(STEP, async {
        let server = server("").await;
        let mut raw = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        raw.send(&command("PING", b"\x00\x0aabc")).await;
        assert_eq!(raw.read_command().await, b"\x04PONGabc");
        raw.send(&command("PING", b"\x00\x00")).await;
        assert_eq!(raw.read_command().await, b"\x04PONG");
        // Contexts longer than 16 octets are truncated, as libzmq does.
        raw.send(&command("PING", b"\x00\x000123456789abcdefXYZ"))
            .await;
        assert_eq!(raw.read_command().await, b"\x04PONG0123456789abcdef");
        // Unknown commands are ignored after the handshake.
        raw.send(&command("JOIN", b"group")).await;
        raw.sync().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ping_ttl_closes_a_silent_peer() {
    timeout(STEP, async {
        let server = server("").await;
        let mut raw = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        // TTL 1 = 100 ms: the broker may close if nothing else arrives by then.
        raw.send(&command("PING", b"\x00\x01")).await;
        assert_eq!(raw.read_command().await, b"\x04PONG");
        assert!(raw.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_message_still_arriving_keeps_a_ping_ttl_alive() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"slow")).await;
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        // TTL 2 = 200 ms, then a message trickling in over 600 ms: every octet is traffic,
        // as libzmq counts it, so the connection stays up.
        publisher.send(&command("PING", b"\x00\x02")).await;
        assert_eq!(publisher.read_command().await, b"\x04PONG");
        let body = [b'x'; 1200];
        let wire = message(&[b"slow", &body]);
        for chunk in wire.chunks(100) {
            publisher.send(chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let parts = sub.read_message().await;
        assert_eq!((parts[0].as_slice(), parts[1].len()), (&b"slow"[..], 1200));
        publisher.sync().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn broker_pings_3_1_peers_and_closes_when_they_go_silent() {
    timeout(STEP, async {
        let config =
            "[zmtp]\nheartbeat_ivl_ms = 50\nheartbeat_timeout_ms = 200\nheartbeat_ttl_ms = 1000\n";
        let server = server(config).await;
        let mut raw = Raw::null(server.zmtp, 1, "PULL", &[], "PUSH").await;
        assert_eq!(raw.read_command().await, b"\x04PING\x00\x0a");
        // Any traffic counts as life: answer, then the next PING still comes.
        raw.send(&command("PONG", b"")).await;
        assert_eq!(raw.read_command().await, b"\x04PING\x00\x0a");
        // Now stay silent: more PINGs, then the close.
        let rest = raw.until_closed().await;
        assert!(
            rest.chunks(9).all(|c| c == b"\x04\x07\x04PING\x00\x0a"),
            "{rest:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn zmtp_3_0_subscriber_uses_subscription_messages() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 0, "SUB", &[], "XPUB").await;
        sub.send(&message(&[b"\x01sensors."])).await;
        sub.send(&message(&[b"\x01marker"])).await;
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        assert_eq!(publisher.read_command().await, b"\x09SUBSCRIBE");
        publisher.send(&message(&[b"other.x", b"no"])).await;
        publisher
            .send(&message(&[b"sensors.kitchen", b"21.5", b"C"]))
            .await;
        let parts = sub.read_message().await;
        assert_eq!(
            parts,
            vec![b"sensors.kitchen".to_vec(), b"21.5".to_vec(), b"C".to_vec()]
        );
        // Cancel with a 0x00 message: the next message the SUB sees is the marker.
        sub.send(&message(&[b"\x00sensors."])).await;
        sub.sync().await;
        publisher.send(&message(&[b"sensors.kitchen", b"22"])).await;
        publisher.send(&message(&[b"marker", b"m"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"marker".to_vec(), b"m".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn zmtp_3_0_publisher_gets_a_subscription_message() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"")).await;
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 0, "PUB", &[], "XSUB").await;
        assert_eq!(publisher.read_message().await, vec![b"\x01".to_vec()]);
        publisher.send(&message(&[b"old.peer", b"hi"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"old.peer".to_vec(), b"hi".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn subscriptions_are_refcounted_byte_prefixes() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"foo")).await;
        sub.send(&command("SUBSCRIBE", b"foo")).await;
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        // A prefix matches byte-wise, across token boundaries.
        publisher.send(&message(&[b"foobar", b"1"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"foobar".to_vec(), b"1".to_vec()]
        );
        // One CANCEL of two SUBSCRIBEs keeps the subscription.
        sub.send(&command("CANCEL", b"foo")).await;
        sub.sync().await;
        publisher.send(&message(&[b"foo.x", b"2"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"foo.x".to_vec(), b"2".to_vec()]
        );
        // The second CANCEL removes it; an unknown CANCEL is ignored.
        sub.send(&command("CANCEL", b"foo")).await;
        sub.send(&command("CANCEL", b"nope")).await;
        sub.sync().await;
        assert!(!server.router().has_subscribers(&subject("foo.x")));
        // The empty prefix does not match `$` subjects.
        sub.send(&command("SUBSCRIBE", b"")).await;
        sub.sync().await;
        publisher.send(&message(&[b"$app.x", b"hidden"])).await;
        publisher.send(&message(&[b"plain", b"seen"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"plain".to_vec(), b"seen".to_vec()]
        );
    })
    .await
    .unwrap();
}

fn subject(text: &str) -> polymq_core::Subject {
    polymq_core::Subject::new(text).unwrap()
}

#[tokio::test]
async fn subscriber_disconnect_removes_its_subscriptions() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"gone")).await;
        sub.sync().await;
        assert!(server.router().has_subscribers(&subject("gone.x")));
        drop(sub);
        while server.router().has_subscribers(&subject("gone.x")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_subject_frames_are_dropped() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"")).await;
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        for bad in [&b""[..], b"a..b", b"has\ttab", b"\xff\xfe", b"wild.*"] {
            publisher.send(&message(&[bad, b"x"])).await;
        }
        publisher.send(&message(&[b"good", b"x"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"good".to_vec(), b"x".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn oversized_frames_disconnect_before_the_body_arrives() {
    timeout(STEP, async {
        let server = server("[zmtp]\nmax_msg_size = 1024\n").await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        let mut header = vec![LONG];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        publisher.send(&header).await;
        assert!(publisher.until_closed().await.is_empty());
        // Parts of one message count together.
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        publisher.send(&frame(MORE, &[b'a'; 600])).await;
        publisher.send(&frame(0, &[b'b'; 600])).await;
        assert!(publisher.until_closed().await.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn push_uses_x_subject_for_single_part_messages() {
    timeout(STEP, async {
        let server = server("").await;
        let mut pull = Raw::null(server.zmtp, 1, "PULL", &[("X-Subject", b"jobs.>")], "PUSH").await;
        pull.sync().await;
        let mut push = Raw::null(
            server.zmtp,
            1,
            "PUSH",
            &[("X-Subject", b"jobs.new")],
            "PULL",
        )
        .await;
        push.send(&message(&[b"payload"])).await;
        push.send(&message(&[b"jobs.urgent", b"a", b"b"])).await;
        assert_eq!(
            pull.read_message().await,
            vec![b"jobs.new".to_vec(), b"payload".to_vec()]
        );
        let parts = pull.read_message().await;
        assert_eq!(
            parts,
            vec![b"jobs.urgent".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_x_subject_is_refused_with_error() {
    timeout(STEP, async {
        let server = server("").await;
        let (mut raw, _) = Raw::connect(server.zmtp).await;
        raw.send(&greeting(1, b"NULL")).await;
        let props = metadata(&[("Socket-Type", b"PUSH"), ("X-Subject", b"a.>")]);
        raw.send(&command("READY", &props)).await;
        assert_eq!(
            raw.until_closed().await,
            error_command(b"Invalid-X-Subject")
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pull_peers_may_get_the_body_alone() {
    timeout(STEP, async {
        let server = server("[zmtp]\npull_subject_frame = false\n").await;
        let mut pull = Raw::null(server.zmtp, 1, "PULL", &[("X-Subject", b"raw")], "PUSH").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"raw")).await;
        sub.sync().await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        push.send(&message(&[b"raw", b"a", b"b"])).await;
        assert_eq!(
            pull.read_message().await,
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        // SUB peers keep frame 0: libzmq filters on it.
        let expected = vec![b"raw".to_vec(), b"a".to_vec(), b"b".to_vec()];
        assert_eq!(sub.read_message().await, expected);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pull_group_members_share_the_work() {
    timeout(STEP, async {
        let server = server("").await;
        let group = [("X-Subject", &b"work"[..]), ("X-Group", b"crew")];
        let mut a = Raw::null(server.zmtp, 1, "PULL", &group, "PUSH").await;
        let mut b = Raw::null(server.zmtp, 1, "PULL", &group, "PUSH").await;
        a.sync().await;
        b.sync().await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        for i in 0..10u8 {
            push.send(&message(&[b"work", &[i]])).await;
        }
        let mut seen = Vec::new();
        // Each member gets 5 (round-robin among members with room); nobody gets a copy.
        for _ in 0..5 {
            seen.push(a.read_message().await[1][0]);
            seen.push(b.read_message().await[1][0]);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn req_with_no_responder_gets_the_503_error_reply() {
    timeout(STEP, async {
        let server = server("").await;
        let mut req = Raw::null(server.zmtp, 1, "REQ", &[], "ROUTER").await;
        req.send(&message(&[b"", b"nobody.home", b"hello"])).await;
        let reply = req.read_message().await;
        assert_eq!(
            reply,
            vec![
                b"".to_vec(),
                b"$ERR".to_vec(),
                b"503".to_vec(),
                b"No Responders".to_vec()
            ]
        );
        // REQ_CORRELATE envelopes ([id][""]) are echoed whole.
        req.send(&message(&[b"\x00\x00\x00\x07", b"", b"nobody.home", b"x"]))
            .await;
        let reply = req.read_message().await;
        assert_eq!(reply[..2], [b"\x00\x00\x00\x07".to_vec(), b"".to_vec()]);
        assert_eq!(reply[2], b"$ERR");
        // A request whose subject frame is invalid gets 400.
        req.send(&message(&[b"", b"bad..subject", b"x"])).await;
        let reply = req.read_message().await;
        assert_eq!(
            reply,
            vec![
                b"".to_vec(),
                b"$ERR".to_vec(),
                b"400".to_vec(),
                b"Bad Request".to_vec()
            ]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn req_without_a_reply_gets_the_408_error_reply() {
    timeout(STEP, async {
        let server = server("[zmtp]\nrequest_timeout_ms = 100\n").await;
        // A subscriber that sees the request but never replies.
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"slow")).await;
        sub.sync().await;
        let mut req = Raw::null(server.zmtp, 1, "REQ", &[], "ROUTER").await;
        req.send(&message(&[b"", b"slow.service", b"ping"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"slow.service".to_vec(), b"ping".to_vec()]
        );
        let reply = req.read_message().await;
        assert_eq!(
            reply,
            vec![
                b"".to_vec(),
                b"$ERR".to_vec(),
                b"408".to_vec(),
                b"Request Timeout".to_vec()
            ]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn requests_reach_rep_workers_and_replies_come_back() {
    timeout(STEP, async {
        let server = server("").await;
        let mut rep = Raw::null(
            server.zmtp,
            1,
            "REP",
            &[("X-Subject", b"svc.echo")],
            "DEALER",
        )
        .await;
        rep.sync().await;
        let mut req = Raw::null(server.zmtp, 1, "REQ", &[], "ROUTER").await;
        req.send(&message(&[b"", b"svc.echo", b"hi", b"there"]))
            .await;
        let request = rep.read_message().await;
        assert_eq!(request.len(), 5, "{request:?}");
        assert_eq!(request[0].len(), 8, "broker request id");
        assert_eq!(
            request[1..],
            [
                b"".to_vec(),
                b"svc.echo".to_vec(),
                b"hi".to_vec(),
                b"there".to_vec()
            ]
        );
        let id = request[0].clone();
        rep.send(&message(&[&id, b"", b"svc.echo", b"HI", b"THERE"]))
            .await;
        let reply = req.read_message().await;
        assert_eq!(
            reply,
            vec![
                b"".to_vec(),
                b"svc.echo".to_vec(),
                b"HI".to_vec(),
                b"THERE".to_vec()
            ]
        );
        // A second reply to the same request goes nowhere: exactly one reply per request.
        rep.send(&message(&[&id, b"", b"svc.echo", b"again"])).await;
        req.send(&message(&[b"", b"svc.echo", b"2"])).await;
        let request = rep.read_message().await;
        rep.send(&message(&[&request[0], b"", b"two"])).await;
        assert_eq!(
            req.read_message().await,
            vec![b"".to_vec(), b"svc.echo".to_vec(), b"two".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dealer_requests_and_publishes() {
    timeout(STEP, async {
        let server = server("").await;
        let mut worker = Raw::null(
            server.zmtp,
            1,
            "ROUTER",
            &[("X-Subject", b"calc.>")],
            "DEALER",
        )
        .await;
        worker.sync().await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"events")).await;
        sub.sync().await;
        let mut dealer = Raw::null(server.zmtp, 1, "DEALER", &[], "ROUTER").await;
        // Two requests outstanding at once.
        dealer.send(&message(&[b"", b"calc.add", b"1"])).await;
        dealer.send(&message(&[b"", b"calc.mul", b"2"])).await;
        let first = worker.read_message().await;
        let second = worker.read_message().await;
        worker
            .send(&message(&[&second[0], b"", b"calc.mul", b"r2"]))
            .await;
        worker
            .send(&message(&[&first[0], b"", b"calc.add", b"r1"]))
            .await;
        assert_eq!(
            dealer.read_message().await,
            vec![b"".to_vec(), b"calc.mul".to_vec(), b"r2".to_vec()]
        );
        assert_eq!(
            dealer.read_message().await,
            vec![b"".to_vec(), b"calc.add".to_vec(), b"r1".to_vec()]
        );
        // Without the empty delimiter a DEALER message is a plain publish.
        dealer.send(&message(&[b"events.x", b"e"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"events.x".to_vec(), b"e".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn large_messages_cross_intact() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 0, "SUB", &[], "XPUB").await;
        sub.send(&message(&[b"\x01big"])).await;
        sub.sync().await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        let body: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        push.send(&message(&[b"big", &body])).await;
        let parts = sub.read_message().await;
        assert_eq!(parts[0], b"big");
        assert!(parts[1] == body, "1 MiB body differs");
    })
    .await
    .unwrap();
}

/// A counter from the broker's Prometheus text, e.g. `polymq_routed_dropped_total`.
fn metric(server: &TestServer, name: &str) -> u64 {
    let mut text = String::new();
    server.router().metrics().render(&mut text);
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .expect("metric present");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn slow_subscribers_lose_messages_beyond_the_hwm() {
    timeout(STEP, async {
        let server = server("[zmtp]\nsndhwm = 4\n").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        sub.send(&command("SUBSCRIBE", b"flood")).await;
        sub.sync().await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        // Large messages fill the socket buffers, then the outbox, while the SUB reads nothing.
        let body = vec![7u8; 256 * 1024];
        let sent = 200;
        for _ in 0..sent {
            push.send(&message(&[b"flood", &body])).await;
        }
        // After the PONG every publish has been routed (routing is synchronous).
        push.sync().await;
        let dropped = metric(&server, "polymq_routed_dropped_total");
        assert!(dropped > 0, "the SUB's outbox never overflowed");
        // Backed up as it is, the SUB is still read: a new subscription takes effect.
        sub.send(&command("SUBSCRIBE", b"later")).await;
        while !server.router().has_subscribers(&subject("later.x")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..sent - dropped {
            let parts = sub.read_message().await;
            assert_eq!(
                (parts[0].as_slice(), parts[1].len()),
                (&b"flood"[..], body.len())
            );
        }
        let zmtp_dropped = "polymq_dropped_messages_total{protocol=\"zmtp\"}";
        assert_eq!(metric(&server, zmtp_dropped), dropped);
        // The subscriber is still served.
        push.send(&message(&[b"flood", b"after"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"flood".to_vec(), b"after".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn overlapping_prefixes_deliver_each_message_once() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        for prefix in [&b"ab"[..], b"a", b"abc", b"marker"] {
            sub.send(&command("SUBSCRIBE", prefix)).await;
        }
        sub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        // As from a libzmq XPUB: one copy however many prefixes match.
        publisher.send(&message(&[b"abcd", b"1"])).await;
        publisher.send(&message(&[b"marker", b"m"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"abcd".to_vec(), b"1".to_vec()]
        );
        assert_eq!(
            sub.read_message().await,
            vec![b"marker".to_vec(), b"m".to_vec()]
        );
        // Without `a`, the covered prefixes still match, still once.
        sub.send(&command("CANCEL", b"a")).await;
        sub.sync().await;
        publisher.send(&message(&[b"axe", b"no"])).await;
        publisher.send(&message(&[b"abcd", b"2"])).await;
        publisher.send(&message(&[b"marker", b"m"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"abcd".to_vec(), b"2".to_vec()]
        );
        assert_eq!(
            sub.read_message().await,
            vec![b"marker".to_vec(), b"m".to_vec()]
        );
        // The empty prefix covers the others but not `$` subjects.
        sub.send(&command("SUBSCRIBE", b"$app")).await;
        sub.send(&command("SUBSCRIBE", b"")).await;
        sub.sync().await;
        publisher.send(&message(&[b"$app.x", b"3"])).await;
        publisher.send(&message(&[b"abcd", b"4"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"$app.x".to_vec(), b"3".to_vec()]
        );
        assert_eq!(
            sub.read_message().await,
            vec![b"abcd".to_vec(), b"4".to_vec()]
        );
        publisher.send(&message(&[b"marker", b"m"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"marker".to_vec(), b"m".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn zmtp_3_1_subscribers_may_use_subscription_messages() {
    timeout(STEP, async {
        let server = server("").await;
        // libzmq's XPUB accepts 0x01/0x00 messages on 3.1 connections too.
        let mut sub = Raw::null(server.zmtp, 1, "XSUB", &[], "XPUB").await;
        sub.send(&message(&[b"\x01news"])).await;
        sub.sync().await;
        assert!(server.router().has_subscribers(&subject("news.x")));
        sub.send(&message(&[b"\x00news"])).await;
        sub.sync().await;
        assert!(!server.router().has_subscribers(&subject("news.x")));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn xsub_messages_that_are_not_subscriptions_are_discarded() {
    timeout(STEP, async {
        let server = server("").await;
        let mut watcher = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        watcher.send(&command("SUBSCRIBE", b"up")).await;
        watcher.sync().await;
        let mut xsub = Raw::null(server.zmtp, 1, "XSUB", &[], "XPUB").await;
        xsub.send(&message(&[b"up.stream", b"not published"])).await;
        xsub.sync().await;
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        publisher.send(&message(&[b"up.marker", b"m"])).await;
        assert_eq!(
            watcher.read_message().await,
            vec![b"up.marker".to_vec(), b"m".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rep_workers_receive_requests_only() {
    timeout(STEP, async {
        let server = server("").await;
        let props = [("X-Subject", &b"svc.only"[..])];
        let mut rep = Raw::null(server.zmtp, 1, "REP", &props, "DEALER").await;
        rep.sync().await;
        // A plain publish on the worker's subject is not a request: it reaches nobody.
        let plain = Envelope::new(
            subject("svc.only"),
            Bytes::from_static(b"plain"),
            Origin::broker(),
        );
        assert_eq!(server.router().publish(Arc::new(plain)).matched(), 0);
        let mut req = Raw::null(server.zmtp, 1, "REQ", &[], "ROUTER").await;
        req.send(&message(&[b"", b"svc.only", b"request"])).await;
        let first = rep.read_message().await;
        assert_eq!(
            first[1..],
            [b"".to_vec(), b"svc.only".to_vec(), b"request".to_vec()]
        );
        rep.send(&message(&[&first[0], b"", b"svc.only", b"done"]))
            .await;
        assert_eq!(
            req.read_message().await,
            vec![b"".to_vec(), b"svc.only".to_vec(), b"done".to_vec()]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn plain_publishes_skip_rep_members_of_a_shared_group() {
    timeout(STEP, async {
        let server = server("").await;
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        let mut member = nats
            .queue_subscribe("svc.mixed", "mixed".into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        let props = [("X-Subject", &b"svc.mixed"[..]), ("X-Group", b"mixed")];
        let mut rep = Raw::null(server.zmtp, 1, "REP", &props, "DEALER").await;
        rep.sync().await;
        // Every plain message goes to the NATS member, none to the REP worker.
        for i in 0..6u8 {
            nats.publish("svc.mixed", vec![i].into()).await.unwrap();
        }
        nats.flush().await.unwrap();
        for i in 0..6u8 {
            let msg = member.next().await.unwrap();
            assert_eq!(msg.payload.as_ref(), [i]);
        }
        rep.sync().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn peers_cannot_publish_into_the_sys_tree() {
    timeout(STEP, async {
        let server = server("").await;
        let mut sub = Raw::null(server.zmtp, 1, "SUB", &[], "XPUB").await;
        // (Not `$SYS.broker`: the MQTT frontend publishes its status there.)
        sub.send(&command("SUBSCRIBE", b"$SYS.x")).await;
        sub.send(&command("SUBSCRIBE", b"$app")).await;
        sub.sync().await;
        let dropped = "polymq_dropped_messages_total{protocol=\"zmtp\"}";
        let before = metric(&server, dropped);
        // As mosquitto keeps clients out of `$SYS`: dropped and counted, from any producer.
        let mut publisher = Raw::null(server.zmtp, 1, "PUB", &[], "XSUB").await;
        publisher.read_command().await;
        publisher.send(&message(&[b"$SYS.x", b"forged"])).await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        push.send(&message(&[b"$SYS.x", b"forged"])).await;
        push.sync().await;
        publisher.send(&message(&[b"$app.x", b"fine"])).await;
        assert_eq!(
            sub.read_message().await,
            vec![b"$app.x".to_vec(), b"fine".to_vec()]
        );
        assert_eq!(metric(&server, dropped), before + 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pull_members_share_a_group_with_nats() {
    timeout(STEP, async {
        let server = server("").await;
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        let mut member = nats
            .queue_subscribe("jobs", "workers".into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        // DESIGN.md: a ZMQ PULL with group `workers` on `jobs` joins NATS `SUB jobs workers`.
        let props = [("X-Subject", &b"jobs"[..]), ("X-Group", b"workers")];
        let mut pull = Raw::null(server.zmtp, 1, "PULL", &props, "PUSH").await;
        pull.sync().await;
        for i in 0..10u8 {
            nats.publish("jobs", vec![i].into()).await.unwrap();
        }
        nats.flush().await.unwrap();
        let mut seen = Vec::new();
        // Round-robin among members with room: five each, none twice.
        for _ in 0..5 {
            seen.push(member.next().await.unwrap().payload[0]);
            let parts = pull.read_message().await;
            assert_eq!(parts[0], b"jobs");
            seen.push(parts[1][0]);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_of_one_read_are_each_counted_in_and_out() {
    timeout(STEP, async {
        let server = server("").await;
        let mut pull = Raw::null(server.zmtp, 1, "PULL", &[("X-Subject", b"tally")], "PUSH").await;
        pull.sync().await;
        let mut push = Raw::null(server.zmtp, 1, "PUSH", &[], "PULL").await;
        // One write: the broker handles all three messages from one read.
        let burst: Vec<u8> = [&b"x"[..], b"yy", b"zzz"]
            .iter()
            .flat_map(|body| message(&[b"tally", body]))
            .collect();
        push.send(&burst).await;
        for body in [&b"x"[..], b"yy", b"zzz"] {
            assert_eq!(
                pull.read_message().await,
                vec![b"tally".to_vec(), body.to_vec()]
            );
        }
        let metrics = server.router().metrics();
        let zmtp = polymq_core::Protocol::Zmtp;
        // The publisher adds its read's tally just after routing the last message.
        while metrics.messages_in(zmtp) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            (metrics.messages_in(zmtp), metrics.bytes_in(zmtp)),
            (3, 3 * 5 + 6)
        );
        assert_eq!(
            (metrics.messages_out(zmtp), metrics.bytes_out(zmtp)),
            (3, 6)
        );
    })
    .await
    .unwrap();
}
