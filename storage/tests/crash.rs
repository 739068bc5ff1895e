//! Crash test: `kill -9` of a process appending with `fsync = always` loses no acknowledged
//! record.
//!
//! The test binary re-executes itself as the child (the `crash_child` test does the work only
//! when `POLYMQ_CRASH_CHILD_DIR` is set). The child appends batches to a fresh store and prints
//! `ack <offset>` for every offset once `append` returned. The parent SIGKILLs it after a
//! varying number of acks (`Child::kill` sends SIGKILL on Unix), reopens the store and checks:
//! every acknowledged record is present, in order, exactly once, with its exact payload, and
//! whatever else is there is a contiguous suffix of whole, correct records.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use polymq_core::{Offset, QueueName, Store};
use polymq_storage::{DiskConfig, DiskStore, FsyncPolicy};

const CHILD_ENV: &str = "POLYMQ_CRASH_CHILD_DIR";
/// The child stops by itself after this many records if nobody kills it.
const CHILD_MAX_RECORDS: u64 = 200_000;

fn config(dir: &Path) -> DiskConfig {
    DiskConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 32 * 1024,
        ..DiskConfig::new(dir)
    }
}

fn queue() -> QueueName {
    QueueName::new("crash/orders")
}

/// The payload of the record at `offset`: its own number, padded to a size that varies.
fn payload(offset: u64) -> Bytes {
    let mut p = format!("record {offset};").into_bytes();
    p.resize(
        p.len() + (offset as usize * 37) % 300,
        b'a' + (offset % 26) as u8,
    );
    Bytes::from(p)
}

/// The child: appends until killed, acknowledging on stdout.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = DiskStore::open(config(Path::new(&dir))).unwrap();
        let mut out = std::io::stdout();
        // libtest may have printed "test crash_child ... " without a newline.
        out.write_all(b"\n").unwrap();
        let mut next = 0;
        while next < CHILD_MAX_RECORDS {
            let size = 1 + next % 9;
            let batch: Vec<Bytes> = (next..next + size).map(payload).collect();
            let offsets = store.append(&queue(), &batch).await.unwrap();
            assert_eq!(offsets, (next..next + size).map(Offset).collect::<Vec<_>>());
            let mut acks = String::new();
            for offset in offsets {
                acks.push_str(&format!("ack {}\n", offset.0));
            }
            out.write_all(acks.as_bytes()).unwrap();
            out.flush().unwrap();
            next += size;
        }
    });
}

/// Runs the child in `dir`, kills it after `kill_after` acks; returns the acked offsets.
fn run_child_until(dir: &Path, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(offset) = line.strip_prefix("ack ") {
                if tx.send(offset.parse::<u64>().unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut acked = Vec::with_capacity(kill_after);
    while acked.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(offset) => acked.push(offset),
            Err(err) => {
                let _ = child.kill();
                panic!("child stopped acking after {} acks: {err}", acked.len());
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child was killed, not finished: {status}"
    );
    drop(rx);
    reader.join().unwrap();
    acked
}

/// Reopens the store in `dir` and checks it against the acknowledged offsets.
fn check_recovered(dir: &Path, acked: &[u64]) {
    let out_of_order = acked.iter().enumerate().find(|&(i, &o)| o != i as u64);
    assert_eq!(out_of_order, None, "acks are 0..n in order");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = DiskStore::open(config(dir)).unwrap();
        let records = store.read(&queue(), Offset(0), usize::MAX).await.unwrap();
        assert!(
            records.len() >= acked.len(),
            "lost acks: {} < {}",
            records.len(),
            acked.len()
        );
        for (i, (offset, body)) in records.iter().enumerate() {
            assert_eq!(offset.0, i as u64, "offsets contiguous from 0, each once");
            assert_eq!(body, &payload(offset.0), "record {i} intact");
        }
        let next = records.len() as u64;
        let again = store.append(&queue(), &[payload(next)]).await.unwrap();
        assert_eq!(
            again,
            [Offset(next)],
            "appends continue after the recovered tail"
        );
    });
}

#[test]
fn acknowledged_records_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    for round in 0..3 {
        let kill_after = 200 + (nanos / (round + 1) + round * 613) % 1800;
        let dir = tempfile::tempdir().unwrap();
        let acked = run_child_until(dir.path(), kill_after);
        assert!(acked.len() >= kill_after);
        check_recovered(dir.path(), &acked);
    }
}
