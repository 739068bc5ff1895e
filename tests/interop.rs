//! Interop suites: real third-party Python clients (nats-py, paho-mqtt, pynsq, pyzmq) against
//! the broker started in-process. Each suite is `tests/interop/test_<proto>.py`, run by pytest
//! with the broker's addresses in `INTEROP_NATS`, `INTEROP_MQTT`, `INTEROP_NSQ_TCP`,
//! `INTEROP_NSQ_HTTP`, `INTEROP_ZMTP` and `INTEROP_ADMIN`.
//!
//! `scripts/test.sh` installs the Python packages (tests/interop/requirements.txt).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestServer;

/// Upper bound for one whole suite.
const SUITE_TIMEOUT: Duration = Duration::from_secs(240);

async fn run_suite(file: &str) {
    let server = TestServer::start("").await;
    let path = format!("{}/tests/interop/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", &path])
        .env("INTEROP_NATS", server.nats.to_string())
        .env("INTEROP_MQTT", server.mqtt.to_string())
        .env("INTEROP_MQTT_WS", server.mqtt_websocket.to_string())
        .env("INTEROP_NSQ_TCP", server.nsq_tcp.to_string())
        .env("INTEROP_NSQ_HTTP", server.nsq_http.to_string())
        .env("INTEROP_ZMTP", server.zmtp.to_string())
        .env("INTEROP_ADMIN", server.admin.to_string())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m pytest (run scripts/test.sh setup to install the interop clients)");
    let status = tokio::time::timeout(SUITE_TIMEOUT, child.wait())
        .await
        .expect("interop suite timed out")
        .expect("waiting for pytest");
    assert!(status.success(), "{file} failed: {status}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py() {
    run_suite("test_nats.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqtt() {
    run_suite("test_mqtt.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq() {
    run_suite("test_nsq.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzmq() {
    run_suite("test_zmtp.py").await;
}
