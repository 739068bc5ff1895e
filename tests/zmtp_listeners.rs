//! ZMTP listener options with real libzmq peers: an extra listener's own default subject and
//! group (metadata-free peers behave as with a libzmq proxy device), its MQTT topic syntax,
//! and a libzmq REQ answered by a NATS responder.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, STEP};
use futures::StreamExt;
use polymq_core::subject::zmtp::TopicSyntax;
use polymq_core::Subject;
use polymq_zmtp::config::{Config, ListenerConfig};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, addr: std::net::SocketAddr) -> zmq::Socket {
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(5000).unwrap();
    socket.set_sndtimeo(5000).unwrap();
    socket.connect(&format!("tcp://{addr}")).unwrap();
    socket
}

async fn wait_for_subscriber(server: &TestServer, subject: &str) {
    let subject = Subject::new(subject).unwrap();
    while !server.router().has_subscribers(&subject) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves the first `[[zmtp.listener]]` of `config` on an ephemeral port, as the binary does.
async fn serve_extra(
    server: &TestServer,
    config: &Config,
    stop: &CancellationToken,
) -> std::net::SocketAddr {
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
