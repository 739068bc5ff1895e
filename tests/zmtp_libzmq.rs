//! Real libzmq peers (the `zmq` crate over Debian's libzmq) against the broker: every socket
//! pattern, multipart and 1 MiB messages, PLAIN success and failure, heartbeats, a refused
//! socket type, an extra listener's own defaults and topic syntax, and a libzmq REQ answered
//! by a NATS responder.
//!
//! The `zmq` API blocks, so each peer runs on a blocking thread with receive and send timeouts,
//! and the whole test is bounded by `tokio::time::timeout`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, STEP};
use futures::StreamExt;
use polymq_core::subject::zmtp::TopicSyntax;
use polymq_core::Subject;
use polymq_zmtp::config::{Config, ListenerConfig};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Receive/send timeout of every libzmq socket, in milliseconds.
const IO_TIMEOUT_MS: i32 = 5000;

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, addr: SocketAddr) -> zmq::Socket {
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(IO_TIMEOUT_MS).unwrap();
    socket.set_sndtimeo(IO_TIMEOUT_MS).unwrap();
    socket.connect(&format!("tcp://{addr}")).unwrap();
    socket
}

/// Starts blocking libzmq code on its own thread at once; the future yields its result.
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let handle = tokio::task::spawn_blocking(work);
    async move { handle.await.expect("peer thread panicked") }
}

/// Waits (bounded by the test's timeout) until the router has a subscriber for `subject`.
async fn wait_for_subscriber(server: &TestServer, subject: &str) {
    let subject = Subject::new(subject).unwrap();
    while !server.router().has_subscribers(&subject) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn parts(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|p| p.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_multipart_and_1_mib() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"weather.").unwrap();
        wait_for_subscriber(&server, "weather.x").await;
        // An XPUB peer sees the broker's subscription to everything before it publishes.
        let xpub = socket(&ctx, zmq::XPUB, server.zmtp);
        let xpub = blocking(move || {
            assert_eq!(xpub.recv_bytes(0).unwrap(), b"\x01");
            xpub
        })
        .await;
        let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
        let expected_big = big.clone();
        blocking(move || {
            xpub.send_multipart([&b"sports.x"[..], b"no"], 0).unwrap();
            xpub.send_multipart([&b"weather.paris"[..], b"12", b"C"], 0)
                .unwrap();
            xpub.send_multipart([&b"weather.big"[..], &big], 0).unwrap();
            let first = sub.recv_multipart(0).unwrap();
            assert_eq!(first, parts(&[b"weather.paris", b"12", b"C"]));
            let second = sub.recv_multipart(0).unwrap();
            assert_eq!(second.len(), 2);
            assert_eq!(second[0], b"weather.big");
            assert!(second[1] == expected_big, "1 MiB body differs");
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_only_messages_arrive_as_one_frame() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"tick").unwrap();
        wait_for_subscriber(&server, "tick").await;
        let xpub = socket(&ctx, zmq::XPUB, server.zmtp);
        blocking(move || {
            assert_eq!(xpub.recv_bytes(0).unwrap(), b"\x01");
            // As through a libzmq proxy: a one-frame message stays one frame.
            xpub.send(&b"tick"[..], 0).unwrap();
            xpub.send_multipart([&b"tick"[..], b""], 0).unwrap();
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"tick"]));
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"tick", b""]));
        })
        .await;
    })
    .await
    .unwrap();
}

/// The zguide weather-update pattern: one frame `"10001 23 45"`, filtered by the prefix
/// `"10001 "`, passes through as through a libzmq proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zguide_single_frame_updates_are_prefix_filtered() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"10001 ").unwrap();
        wait_for_subscriber(&server, "10001 1 1").await;
        let xpub = socket(&ctx, zmq::XPUB, server.zmtp);
        blocking(move || {
            assert_eq!(xpub.recv_bytes(0).unwrap(), b"\x01");
            xpub.send(&b"10002 40 10"[..], 0).unwrap();
            xpub.send(&b"10001 23 45"[..], 0).unwrap();
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"10001 23 45"]));
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pub_reaches_sub_once_subscribed() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"").unwrap();
        wait_for_subscriber(&server, "news").await;
        let publisher = socket(&ctx, zmq::PUB, server.zmtp);
        blocking(move || {
            // A PUB drops everything until the broker's SUBSCRIBE reaches it: probe until a
            // message arrives, as any libzmq publisher has to.
            for _ in 0..500 {
                publisher
                    .send_multipart([&b"news"[..], b"probe"], 0)
                    .unwrap();
                if sub.poll(zmq::POLLIN, 10).unwrap() > 0 {
                    break;
                }
            }
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"news", b"probe"]));
            while sub.poll(zmq::POLLIN, 0).unwrap() > 0 {
                sub.recv_multipart(0).unwrap();
            }
            publisher
                .send_multipart([&b"news"[..], b"real"], 0)
                .unwrap();
            let got = sub.recv_multipart(0).unwrap();
            assert_eq!(got, parts(&[b"news", b"real"]));
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsub_subscribes_and_unsubscribes_with_messages() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let xsub = socket(&ctx, zmq::XSUB, server.zmtp);
        xsub.send(&b"\x01alerts"[..], 0).unwrap();
        wait_for_subscriber(&server, "alerts.x").await;
        let push = socket(&ctx, zmq::PUSH, server.zmtp);
        let xsub = blocking(move || {
            push.send_multipart([&b"alerts.fire"[..], b"!"], 0).unwrap();
            assert_eq!(
                xsub.recv_multipart(0).unwrap(),
                parts(&[b"alerts.fire", b"!"])
            );
            xsub.send(&b"\x00alerts"[..], 0).unwrap();
            xsub
        })
        .await;
        let subject = Subject::new("alerts.x").unwrap();
        while server.router().has_subscribers(&subject) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(xsub);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_group_of_pulls_round_robin() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let push = socket(&ctx, zmq::PUSH, server.zmtp);
        let pulls = [
            socket(&ctx, zmq::PULL, server.zmtp),
            socket(&ctx, zmq::PULL, server.zmtp),
        ];
        blocking(move || {
            // Probe until both PULLs have joined the default group (each got one message).
            let mut joined = [false, false];
            for _ in 0..500 {
                push.send_multipart([&b"probe"[..], b"p"], 0).unwrap();
                for (pull, seen) in pulls.iter().zip(joined.iter_mut()) {
                    if pull.poll(zmq::POLLIN, 10).unwrap() > 0 {
                        pull.recv_multipart(0).unwrap();
                        *seen = true;
                    }
                }
                if joined == [true, true] {
                    break;
                }
            }
            assert_eq!(joined, [true, true]);
            for i in 0..10u8 {
                push.send_multipart([&b"jobs.build"[..], &[i]], 0).unwrap();
            }
            // Members with room alternate: each PULL gets five, no job twice.
            let mut jobs = Vec::new();
            for pull in &pulls {
                let mut mine = 0;
                while mine < 5 {
                    let msg = pull.recv_multipart(0).unwrap();
                    if msg[0] == b"jobs.build" {
                        jobs.push(msg[1][0]);
                        mine += 1;
                    }
                }
            }
            jobs.sort_unstable();
            assert_eq!(jobs, (0..10).collect::<Vec<u8>>());
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_rep_through_the_broker() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let rep = socket(&ctx, zmq::REP, server.zmtp);
        wait_for_subscriber(&server, "svc.upper").await;
        let worker = blocking(move || {
            for _ in 0..3 {
                let request = rep.recv_multipart(0).unwrap();
                assert_eq!(request[0], b"svc.upper");
                let body: Vec<Vec<u8>> = request[1..]
                    .iter()
                    .map(|p| p.to_ascii_uppercase())
                    .collect();
                let mut reply = vec![request[0].clone()];
                reply.extend(body);
                rep.send_multipart(reply, 0).unwrap();
            }
        });
        let req = socket(&ctx, zmq::REQ, server.zmtp);
        let client = blocking(move || {
            req.send_multipart([&b"svc.upper"[..], b"hello"], 0)
                .unwrap();
            assert_eq!(
                req.recv_multipart(0).unwrap(),
                parts(&[b"svc.upper", b"HELLO"])
            );
            req.send_multipart([&b"svc.upper"[..], b"multi", b"part"], 0)
                .unwrap();
            let reply = req.recv_multipart(0).unwrap();
            assert_eq!(reply, parts(&[b"svc.upper", b"MULTI", b"PART"]));
        });
        client.await;
        // A DEALER requester with an explicit empty delimiter.
        let dealer = socket(&ctx, zmq::DEALER, server.zmtp);
        blocking(move || {
            dealer
                .send_multipart([&b""[..], b"svc.upper", b"dealer"], 0)
                .unwrap();
            let reply = dealer.recv_multipart(0).unwrap();
            assert_eq!(reply, parts(&[b"", b"svc.upper", b"DEALER"]));
        })
        .await;
        worker.await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_worker_echoes_the_envelope() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let ctx = zmq::Context::new();
        let router = socket(&ctx, zmq::ROUTER, server.zmtp);
        wait_for_subscriber(&server, "svc.len").await;
        let worker = blocking(move || {
            let request = router.recv_multipart(0).unwrap();
            // [broker identity][request id][""][subject][body]
            assert_eq!(request.len(), 5, "{request:?}");
            assert!(request[2].is_empty());
            assert_eq!(request[3], b"svc.len");
            let len = request[4].len().to_string().into_bytes();
            let reply = vec![
                request[0].clone(),
                request[1].clone(),
                vec![],
                request[3].clone(),
                len,
            ];
            router.send_multipart(reply, 0).unwrap();
        });
        let req = socket(&ctx, zmq::REQ, server.zmtp);
        blocking(move || {
            req.send_multipart([&b"svc.len"[..], b"12345"], 0).unwrap();
            assert_eq!(req.recv_multipart(0).unwrap(), parts(&[b"svc.len", b"5"]));
        })
        .await;
        worker.await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_always_gets_exactly_one_reply() {
    timeout(STEP, async {
        let server = TestServer::start("[zmtp]\nrequest_timeout_ms = 200\n").await;
        let ctx = zmq::Context::new();
        let req = socket(&ctx, zmq::REQ, server.zmtp);
        let req = blocking(move || {
            req.send_multipart([&b"nobody.here"[..], b"?"], 0).unwrap();
            let reply = req.recv_multipart(0).unwrap();
            assert_eq!(reply, parts(&[b"$ERR", b"503", b"No Responders"]));
            req
        })
        .await;
        // A subscriber that never answers: the REQ gets the timeout reply, then can go on.
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"silent").unwrap();
        wait_for_subscriber(&server, "silent.svc").await;
        blocking(move || {
            req.send_multipart([&b"silent.svc"[..], b"?"], 0).unwrap();
            assert_eq!(
                sub.recv_multipart(0).unwrap(),
                parts(&[b"silent.svc", b"?"])
            );
            let reply = req.recv_multipart(0).unwrap();
            assert_eq!(reply, parts(&[b"$ERR", b"408", b"Request Timeout"]));
            req.send_multipart([&b"nobody.here"[..], b"again"], 0)
                .unwrap();
            assert_eq!(req.recv_multipart(0).unwrap()[1], b"503");
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_correlated_req_matches_replies() {
    timeout(STEP, async {
        let server = TestServer::start("[zmtp]\nrequest_timeout_ms = 200\n").await;
        let ctx = zmq::Context::new();
        let sub = socket(&ctx, zmq::SUB, server.zmtp);
        sub.set_subscribe(b"lost").unwrap();
        wait_for_subscriber(&server, "lost.svc").await;
        let req = socket(&ctx, zmq::REQ, server.zmtp);
        req.set_req_relaxed(true).unwrap();
        req.set_req_correlate(true).unwrap();
        blocking(move || {
            // The first request is abandoned by the second; only the second is answered.
            req.send_multipart([&b"lost.svc"[..], b"1"], 0).unwrap();
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"lost.svc", b"1"]));
            req.send_multipart([&b"nobody.home"[..], b"2"], 0).unwrap();
            let reply = req.recv_multipart(0).unwrap();
            assert_eq!(reply, parts(&[b"$ERR", b"503", b"No Responders"]));
        })
        .await;
    })
    .await
    .unwrap();
}

const PLAIN: &str =
    "[zmtp]\nmechanism = \"plain\"\nusers = [{ username = \"app\", password = \"pw\" }]\n";

/// A socket's handshake and disconnect events.
struct Monitor {
    pair: zmq::Socket,
}

impl Monitor {
    fn attach(ctx: &zmq::Context, socket: &zmq::Socket, name: &str) -> Monitor {
        let endpoint = format!("inproc://monitor-{name}");
        let events = [
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH,
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
            zmq::SocketEvent::DISCONNECTED,
        ];
        let mask = events
            .iter()
            .fold(0, |mask, e| mask | i32::from(e.to_raw()));
        socket.monitor(&endpoint, mask).unwrap();
        let pair = ctx.socket(zmq::PAIR).unwrap();
        pair.set_rcvtimeo(IO_TIMEOUT_MS).unwrap();
        pair.connect(&endpoint).unwrap();
        Monitor { pair }
    }

    /// The next event and its value, or `None` if none comes within `wait_ms`.
    fn next(&self, wait_ms: i32) -> Option<(zmq::SocketEvent, u32)> {
        self.pair.set_rcvtimeo(wait_ms).unwrap();
        let event = self.pair.recv_multipart(0).ok()?;
        let id = u16::from_le_bytes([event[0][0], event[0][1]]);
        let value = u32::from_le_bytes([event[0][2], event[0][3], event[0][4], event[0][5]]);
        Some((zmq::SocketEvent::from_raw(id), value))
    }
}

/// A PLAIN SUB's first handshake event and its value.
fn plain_handshake(
    ctx: &zmq::Context,
    addr: SocketAddr,
    password: &str,
) -> (zmq::SocketEvent, u32) {
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_plain_username(Some("app")).unwrap();
    sub.set_plain_password(Some(password)).unwrap();
    let monitor = Monitor::attach(ctx, &sub, password);
    sub.connect(&format!("tcp://{addr}")).unwrap();
    monitor.next(IO_TIMEOUT_MS).expect("no handshake event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_success_and_failure() {
    timeout(STEP, async {
        let server = TestServer::start(PLAIN).await;
        let addr = server.zmtp;
        blocking(move || {
            let ctx = zmq::Context::new();
            let (event, _) = plain_handshake(&ctx, addr, "pw");
            assert_eq!(event, zmq::SocketEvent::HANDSHAKE_SUCCEEDED);
            let (event, status) = plain_handshake(&ctx, addr, "wrong");
            assert_eq!(
                (event, status),
                (zmq::SocketEvent::HANDSHAKE_FAILED_AUTH, 400)
            );
        })
        .await;
        // Authenticated peers exchange messages.
        let ctx = zmq::Context::new();
        let plain = |kind| {
            let socket = ctx.socket(kind).unwrap();
            socket.set_linger(0).unwrap();
            socket.set_rcvtimeo(IO_TIMEOUT_MS).unwrap();
            socket.set_plain_username(Some("app")).unwrap();
            socket.set_plain_password(Some("pw")).unwrap();
            socket
        };
        let sub = plain(zmq::SUB);
        sub.set_subscribe(b"secure").unwrap();
        sub.connect(&format!("tcp://{addr}")).unwrap();
        wait_for_subscriber(&server, "secure.x").await;
        let push = plain(zmq::PUSH);
        push.connect(&format!("tcp://{addr}")).unwrap();
        blocking(move || {
            push.send_multipart([&b"secure.x"[..], b"ok"], 0).unwrap();
            assert_eq!(sub.recv_multipart(0).unwrap(), parts(&[b"secure.x", b"ok"]));
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libzmq_heartbeats_are_answered() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let addr = server.zmtp;
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_linger(0).unwrap();
        sub.set_rcvtimeo(IO_TIMEOUT_MS).unwrap();
        // libzmq PINGs every 20 ms and drops the connection after 60 ms without traffic.
        sub.set_heartbeat_ivl(20).unwrap();
        sub.set_heartbeat_timeout(60).unwrap();
        sub.set_subscribe(b"beat").unwrap();
        let monitor = Monitor::attach(&ctx, &sub, "heartbeat");
        sub.connect(&format!("tcp://{addr}")).unwrap();
        let (sub, monitor) = blocking(move || {
            let first = monitor.next(IO_TIMEOUT_MS).map(|(event, _)| event);
            assert_eq!(first, Some(zmq::SocketEvent::HANDSHAKE_SUCCEEDED));
            // Many heartbeat rounds pass without a disconnect: every PING got its PONG.
            assert_eq!(monitor.next(500), None);
            (sub, monitor)
        })
        .await;
        wait_for_subscriber(&server, "beat.x").await;
        let push = socket(&ctx, zmq::PUSH, addr);
        blocking(move || {
            push.send_multipart([&b"beat.x"[..], b"alive"], 0).unwrap();
            assert_eq!(
                sub.recv_multipart(0).unwrap(),
                parts(&[b"beat.x", b"alive"])
            );
            drop(monitor);
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_socket_types_are_disconnected() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let addr = server.zmtp;
        blocking(move || {
            let ctx = zmq::Context::new();
            let pair = ctx.socket(zmq::PAIR).unwrap();
            pair.set_linger(0).unwrap();
            let monitor = Monitor::attach(&ctx, &pair, "pair");
            pair.connect(&format!("tcp://{addr}")).unwrap();
            // The broker's ERROR carries no ZAP status, so libzmq reports only the close.
            let event = monitor.next(IO_TIMEOUT_MS).map(|(event, _)| event);
            assert_eq!(event, Some(zmq::SocketEvent::DISCONNECTED));
        })
        .await;
    })
    .await
    .unwrap();
}

/// Serves the first `[[zmtp.listener]]` of `config` on an ephemeral port, as the binary does.
async fn serve_extra(server: &TestServer, config: &Config, stop: &CancellationToken) -> SocketAddr {
    let extra = config.extra_listeners().remove(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router().clone();
    let stop = stop.clone();
    tokio::spawn(polymq_zmtp::serve(listener, router, Arc::new(extra), stop));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_listener_defaults_and_topic_syntax() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let config = Config {
            listeners: vec![ListenerConfig {
                listen: "127.0.0.1:0".into(),
                default_subject: Some("jobs.build".into()),
                default_group: Some("builders".into()),
                topic_syntax: Some(TopicSyntax::Mqtt),
            }],
            ..Config::default()
        };
        let stop = CancellationToken::new();
        let extra = serve_extra(&server, &config, &stop).await;
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        let mut from_mqtt_syntax = nats.subscribe("site.a").await.unwrap();
        nats.flush().await.unwrap();

        let ctx = zmq::Context::new();
        // No metadata: the PULL joins group `builders` on `jobs.build`.
        let pull = socket(&ctx, zmq::PULL, extra);
        wait_for_subscriber(&server, "jobs.build").await;
        let push = socket(&ctx, zmq::PUSH, extra);
        tokio::task::spawn_blocking(move || {
            // A single part goes to the listener's default subject.
            push.send(&b"compile"[..], 0).unwrap();
            assert_eq!(
                pull.recv_multipart(0).unwrap(),
                [b"jobs.build".to_vec(), b"compile".to_vec()]
            );
            // Frame 0 is read as an MQTT topic on this listener.
            push.send_multipart([&b"site/a"[..], b"mqtt syntax"], 0)
                .unwrap();
        })
        .await
        .unwrap();
        let msg = from_mqtt_syntax.next().await.unwrap();
        assert_eq!(msg.payload.as_ref(), b"mqtt syntax");
        stop.cancel();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libzmq_req_is_answered_by_a_nats_responder() {
    timeout(STEP, async {
        let server = TestServer::start("").await;
        let nats = async_nats::connect(server.nats.to_string()).await.unwrap();
        let mut requests = nats.subscribe("svc.time").await.unwrap();
        nats.flush().await.unwrap();
        let responder = {
            let nats = nats.clone();
            tokio::spawn(async move {
                let request = requests.next().await.unwrap();
                assert_eq!(request.payload.as_ref(), b"now?");
                nats.publish(request.reply.unwrap(), "noon".into())
                    .await
                    .unwrap();
                nats.flush().await.unwrap();
            })
        };
        let ctx = zmq::Context::new();
        let req = socket(&ctx, zmq::REQ, server.zmtp);
        tokio::task::spawn_blocking(move || {
            req.send_multipart([&b"svc.time"[..], b"now?"], 0).unwrap();
            assert_eq!(
                req.recv_multipart(0).unwrap(),
                [b"svc.time".to_vec(), b"noon".to_vec()]
            );
        })
        .await
        .unwrap();
        responder.await.unwrap();
    })
    .await
    .unwrap();
}
