//! `kill -9` in the middle of a publish load: with the disk backend and `fsync = "always"`,
//! every message acknowledged to an NSQ publisher (`OK`) is in its channel after a restart,
//! in order and exactly once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_polymq");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Ports {
    tcp: u16,
    http: u16,
}

fn spawn(dir: &std::path::Path, ports: &Ports) -> Child {
    Command::new(BIN)
        .env("POLYMQ_STORAGE__BACKEND", "disk")
        .env("POLYMQ_STORAGE__DATA_DIR", dir)
        .env("POLYMQ_STORAGE__FSYNC", "always")
        .env("POLYMQ_NSQ__TCP_LISTEN", format!("127.0.0.1:{}", ports.tcp))
        .env(
            "POLYMQ_NSQ__HTTP_LISTEN",
            format!("127.0.0.1:{}", ports.http),
        )
        .env("POLYMQ_NATS__ENABLED", "false")
        .env("POLYMQ_MQTT__ENABLED", "false")
        .env("POLYMQ_ZMTP__ENABLED", "false")
        .env("POLYMQ_ADMIN__ENABLED", "false")
        .env("POLYMQ_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn polymq")
}

/// Connects, retrying while the broker starts (bounded).
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                return s;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "broker did not come up: {err}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<(u32, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let size = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    let kind = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    let mut data = vec![0; size as usize - 4];
    s.read_exact(&mut data)?;
    Ok((kind, data))
}

fn http_post(port: u16, path: &str) {
    let mut s = connect(port);
    write!(s, "POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
}

/// Publishes numbered messages back to back (pipelined: many PUBs in flight) and SIGKILLs the
/// broker once `kill_after` of them were acknowledged; returns the numbers acknowledged with
/// `OK` (nsqd answers in order, so the k-th `OK` acknowledges the k-th PUB).
fn publish_until_killed(ports: &Ports, mut child: Child, kill_after: usize) -> Vec<u32> {
    let mut writer = connect(ports.tcp);
    let mut reader = writer.try_clone().expect("clone");
    writer.write_all(b"  V2").expect("magic");
    let sender = std::thread::spawn(move || {
        for n in 0..200_000u32 {
            let body = format!("msg-{n:06}");
            let mut cmd = b"PUB crash\n".to_vec();
            cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
            cmd.extend_from_slice(body.as_bytes());
            if writer.write_all(&cmd).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while let Ok((0, ok)) = read_frame(&mut reader) {
        assert_eq!(ok, b"OK");
        acked.push(acked.len() as u32);
        if acked.len() == kill_after {
            child.kill().expect("SIGKILL");
        }
    }
    let _ = child.wait();
    sender.join().expect("sender");
    acked
}

/// Consumes everything in crash/c until it stays quiet; returns the message numbers in order.
fn drain(ports: &Ports) -> Vec<u32> {
    let mut s = connect(ports.tcp);
    s.write_all(b"  V2SUB crash c\nRDY 2500\n").expect("sub");
    assert_eq!(read_frame(&mut s).expect("sub ok"), (0, b"OK".to_vec()));
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut got = Vec::new();
    while let Ok((kind, data)) = read_frame(&mut s) {
        if kind == 2 {
            let body = std::str::from_utf8(&data[26..]).expect("utf-8");
            got.push(body.trim_start_matches("msg-").parse().expect("number"));
            let fin = [&b"FIN "[..], &data[10..26], b"\n"].concat();
            s.write_all(&fin).expect("fin");
        } else if data == b"_heartbeat_" {
            s.write_all(b"NOP\n").expect("nop");
        }
    }
    got
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    for kill_after in [300, 1100] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = Ports {
            tcp: free_port(),
            http: free_port(),
        };
        let child = spawn(dir.path(), &ports);
        http_post(ports.http, "/topic/create?topic=crash");
        http_post(ports.http, "/channel/create?topic=crash&channel=c");
        let acked = publish_until_killed(&ports, child, kill_after);
        assert!(acked.len() >= kill_after, "load ran: {} acks", acked.len());

        let mut child = spawn(dir.path(), &ports);
        let got = drain(&ports);
        let _ = child.kill();
        let _ = child.wait();

        // Every acknowledged message is there, once, in publish order; anything beyond is a
        // message whose OK was lost with the process, and only at the tail.
        assert!(
            got.len() >= acked.len(),
            "lost messages: {} acked, {} recovered",
            acked.len(),
            got.len()
        );
        assert_eq!(
            &got[..acked.len()],
            &acked[..],
            "acked prefix in order, exactly once"
        );
        let extra = &got[acked.len()..];
        let next = acked.last().map_or(0, |n| n + 1);
        assert!(
            extra.iter().copied().eq(next..next + extra.len() as u32),
            "only a contiguous tail: {extra:?}"
        );
    }
}
