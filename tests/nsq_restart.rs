//! With the disk backend, queued channel messages (and topic-buffered ones) survive a restart.

mod common;

use std::time::Duration;

use common::{TestServer, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn connect(server: &TestServer) -> TcpStream {
    let mut stream = timeout(STEP, TcpStream::connect(server.nsq_tcp))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(b"  V2").await.unwrap();
    stream
}

async fn frame(stream: &mut TcpStream) -> (u32, Vec<u8>) {
    timeout(STEP, async {
        loop {
            let size = stream.read_u32().await.unwrap();
            let kind = stream.read_u32().await.unwrap();
            let mut data = vec![0; size as usize - 4];
            stream.read_exact(&mut data).await.unwrap();
            if data != b"_heartbeat_" {
                return (kind, data);
            }
        }
    })
    .await
    .expect("no frame")
}

async fn publish(stream: &mut TcpStream, topic: &str, body: &[u8]) {
    let mut cmd = format!("PUB {topic}\n").into_bytes();
    cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
    cmd.extend_from_slice(body);
    stream.write_all(&cmd).await.unwrap();
    assert_eq!(frame(stream).await, (0, b"OK".to_vec()));
}

#[tokio::test]
async fn queued_channel_messages_survive_restart() {
    timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_disk(dir.path(), "").await;
        let mut c = connect(&server).await;
        c.write_all(b"SUB durable keep\n").await.unwrap();
        assert_eq!(frame(&mut c).await, (0, b"OK".to_vec()));
        drop(c);
        let mut p = connect(&server).await;
        for body in [b"m1".as_slice(), b"m2", b"m3"] {
            publish(&mut p, "durable", body).await;
        }
        publish(&mut p, "waiting", b"no channel yet").await;
        drop(p);
        server.stop().await;

        let server = TestServer::start_disk(dir.path(), "").await;
        let mut c = connect(&server).await;
        c.write_all(b"SUB durable keep\nRDY 10\n").await.unwrap();
        assert_eq!(frame(&mut c).await, (0, b"OK".to_vec()));
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let (kind, data) = frame(&mut c).await;
            assert_eq!(kind, 2);
            bodies.push(data[26..].to_vec());
            let fin = [b"FIN ".as_slice(), &data[10..26], b"\n"].concat();
            c.write_all(&fin).await.unwrap();
        }
        assert_eq!(bodies, [b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]);

        let mut late = connect(&server).await;
        late.write_all(b"SUB waiting first\nRDY 1\n").await.unwrap();
        assert_eq!(frame(&mut late).await, (0, b"OK".to_vec()));
        let (kind, data) = frame(&mut late).await;
        assert_eq!((kind, &data[26..]), (2, b"no channel yet".as_slice()));
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

/// POSTs an nsqd admin endpoint and expects 200.
async fn admin(server: &TestServer, path: &str) {
    let url = format!("http://{}{path}", server.nsq_http);
    let resp = timeout(STEP, reqwest::Client::new().post(url).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "{path}");
}

#[tokio::test]
async fn paused_channels_hold_messages_across_a_restart() {
    timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_disk(dir.path(), "").await;
        let mut c = connect(&server).await;
        c.write_all(b"SUB held c\nRDY 5\n").await.unwrap();
        assert_eq!(frame(&mut c).await, (0, b"OK".to_vec()));
        admin(&server, "/channel/pause?topic=held&channel=c").await;
        admin(&server, "/topic/create?topic=frozen").await;
        admin(&server, "/topic/pause?topic=frozen").await;
        let mut p = connect(&server).await;
        publish(&mut p, "held", b"waits").await;
        let channel = server
            .router()
            .get_topic("held")
            .unwrap()
            .get_channel("c")
            .unwrap();
        let stats = channel.stats();
        assert_eq!(
            (stats.depth, stats.in_flight),
            (1, 0),
            "paused: not delivered"
        );
        drop((c, p));
        server.stop().await;

        let server = TestServer::start_disk(dir.path(), "").await;
        let topic = server.router().get_topic("held").unwrap();
        assert!(topic.get_channel("c").unwrap().stats().paused);
        assert!(server.router().get_topic("frozen").unwrap().stats().paused);
        let mut c = connect(&server).await;
        c.write_all(b"SUB held c\nRDY 5\n").await.unwrap();
        assert_eq!(frame(&mut c).await, (0, b"OK".to_vec()));
        admin(&server, "/channel/unpause?topic=held&channel=c").await;
        let (kind, data) = frame(&mut c).await;
        assert_eq!((kind, &data[26..]), (2, b"waits".as_slice()));
        server.stop().await;
    })
    .await
    .expect("test timed out");
}
