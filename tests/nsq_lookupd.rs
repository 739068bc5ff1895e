//! nsqlookupd registration: a fake nsqlookupd on a loopback port records what the broker
//! sends (magic, IDENTIFY, REGISTER, UNREGISTER) and answers as nsqlookupd does.

mod common;

use std::time::Duration;

use common::{TestServer, STEP};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Accepts one broker connection and reports each command line (IDENTIFY with its JSON).
async fn fake_lookupd(listener: TcpListener, seen: mpsc::Sender<String>) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).await.unwrap();
    seen.send(String::from_utf8_lossy(&magic).into_owned())
        .await
        .unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_owned();
        let reply: Vec<u8> = if line == "IDENTIFY" {
            let size = reader.read_u32().await.unwrap();
            let mut body = vec![0; size as usize];
            reader.read_exact(&mut body).await.unwrap();
            seen.send(format!("IDENTIFY {}", String::from_utf8_lossy(&body)))
                .await
                .unwrap();
            br#"{"tcp_port":4160,"http_port":4161,"version":"1.3.0","broadcast_address":"lookupd"}"#
                .to_vec()
        } else {
            seen.send(line).await.unwrap();
            b"OK".to_vec()
        };
        let stream = reader.get_mut();
        stream.write_u32(reply.len() as u32).await.unwrap();
        stream.write_all(&reply).await.unwrap();
    }
}

async fn next(seen: &mut mpsc::Receiver<String>) -> String {
    timeout(STEP, seen.recv())
        .await
        .expect("nothing sent to nsqlookupd")
        .unwrap()
}

#[tokio::test]
async fn registers_topics_and_channels() {
    timeout(Duration::from_secs(60), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut seen) = mpsc::channel(64);
        tokio::spawn(fake_lookupd(listener, tx));
        let server = TestServer::start(&format!(
            "[nsq]\nlookupd_tcp_addresses = [\"{addr}\"]\nbroadcast_address = \"node1\"\n"
        ))
        .await;
        assert_eq!(next(&mut seen).await, "  V1");
        let identify = next(&mut seen).await;
        let json: serde_json::Value =
            serde_json::from_str(identify.strip_prefix("IDENTIFY ").unwrap()).unwrap();
        assert_eq!(json["broadcast_address"], "node1");
        assert_eq!(json["tcp_port"], server.nsq_tcp.port());
        assert_eq!(json["version"], "1.3.0");

        let http = format!("http://{}", server.nsq_http);
        let client = reqwest::Client::new();
        client
            .post(format!("{http}/topic/create?topic=reg"))
            .send()
            .await
            .unwrap();
        assert_eq!(next(&mut seen).await, "REGISTER reg");
        client
            .post(format!("{http}/channel/create?topic=reg&channel=ch"))
            .send()
            .await
            .unwrap();
        assert_eq!(next(&mut seen).await, "REGISTER reg ch");
        client
            .post(format!("{http}/channel/delete?topic=reg&channel=ch"))
            .send()
            .await
            .unwrap();
        assert_eq!(next(&mut seen).await, "UNREGISTER reg ch");
        client
            .post(format!("{http}/topic/delete?topic=reg"))
            .send()
            .await
            .unwrap();
        assert_eq!(next(&mut seen).await, "UNREGISTER reg");
    })
    .await
    .expect("test timed out");
}
