//! The `polymq` binary as an operator runs it: start-up, health, signals, bad configuration.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_polymq");

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Every protocol listener on an ephemeral port; admin on `admin`.
fn spawn(admin: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.env("POLYMQ_NSQ__TCP_LISTEN", "127.0.0.1:0")
        .env("POLYMQ_NSQ__HTTP_LISTEN", "127.0.0.1:0")
        .env("POLYMQ_NATS__LISTEN", "127.0.0.1:0")
        .env("POLYMQ_MQTT__LISTEN", "127.0.0.1:0")
        .env("POLYMQ_ZMTP__LISTEN", "127.0.0.1:0")
        .env("POLYMQ_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .args(extra)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn polymq")
}

/// GET `path` on the admin port, retrying until the listener is up (bounded).
fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
            let mut body = String::new();
            s.read_to_string(&mut body).expect("read");
            return body;
        }
        assert!(Instant::now() < deadline, "admin listener never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("polymq did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn answers_healthz_and_metrics_then_exits_zero_on_sigterm() {
    let admin = free_port();
    let mut child = spawn(admin, &[]);
    let health = http_get(admin, "/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(health.contains(r#"{"status":"ok"}"#), "{health}");
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("polymq_connections{protocol=\"nats\"}"),
        "{metrics}"
    );
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "clean shutdown exits 0");
}

#[test]
fn unknown_key_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[nats]\nlisten = \"127.0.0.1:0\"\nmax_paylod = 5\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_paylod"), "{stderr}");
}

#[test]
fn bad_value_exits_2_and_names_the_key() {
    let out = Command::new(BIN)
        .args(["--set", "admin.enabled=maybe"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("enabled"), "{stderr}");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("polymq "));
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn environment_overrides_the_file_and_cli_overrides_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[nats]\nmax_payload = 100\n").expect("write");
    let run = |env: Option<&str>, set: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path).arg("--print-config");
        if let Some(v) = env {
            cmd.env("POLYMQ_NATS__MAX_PAYLOAD", v);
        }
        if let Some(s) = set {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["nats"]["max_payload"].as_u64().expect("max_payload")
    };
    assert_eq!(run(None, None), 100);
    assert_eq!(run(Some("200"), None), 200);
    assert_eq!(run(Some("200"), Some("nats.max_payload=300")), 300);
}

#[test]
fn config_toml_documents_every_key_with_its_default() {
    let root = env!("CARGO_MANIFEST_DIR");
    let print = |args: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let shipped = format!("{root}/config.toml");
    let from_file = print(&["--config", &shipped, "--print-config"]);
    let defaults = print(&["--print-config"]);
    assert_eq!(
        from_file, defaults,
        "config.toml states the built-in defaults"
    );
    let text = std::fs::read_to_string(&shipped).expect("config.toml");
    for (section, keys) in defaults.as_object().expect("sections") {
        assert!(
            text.contains(&format!("[{section}]")),
            "section [{section}] missing"
        );
        for key in keys.as_object().expect("keys").keys() {
            let documented = text.contains(&format!("\n{key} = "))
                || text.contains(&format!("\n# {key} = "))
                || text.contains(&format!("[[{section}.{key}]]"));
            assert!(documented, "{section}.{key} is not in config.toml");
        }
    }
}
