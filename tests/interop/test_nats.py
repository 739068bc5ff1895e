"""nats-py against polymq's NATS frontend: pub/sub, wildcards, queue groups, request-reply,
headers, no-responders, echo, max payload, auth failure, a bad protocol line, many concurrent
connections and the monitoring endpoints.

The broker address comes from INTEROP_NATS (and INTEROP_ADMIN for monitoring). The auth test
starts its own broker from the polymq binary (POLYMQ_BIN, or target/debug/polymq)."""

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import nats
import nats.errors
import pytest

ADDR = os.environ.get("INTEROP_NATS", "127.0.0.1:4222")
ADMIN = os.environ.get("INTEROP_ADMIN")
URL = f"nats://{ADDR}"
TIMEOUT = 20


def run(coro):
    """Runs one scenario on a fresh event loop, bounded by TIMEOUT."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def unique(prefix):
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def connect(url=URL, **options):
    options.setdefault("allow_reconnect", False)
    options.setdefault("connect_timeout", 5)
    return await nats.connect(url, **options)


def varz():
    with urllib.request.urlopen(f"http://{ADMIN}/varz", timeout=5) as resp:
        return json.loads(resp.read())


def test_info_matches_nats_server():
    async def scenario():
        nc = await connect()
        info = nc._server_info
        assert len(info["server_id"]) == 56 and info["server_id"].startswith("N")
        assert info["proto"] == 1
        assert info["headers"] is True
        assert info["max_payload"] == 1048576
        assert info["client_id"] > 0
        assert "auth_required" not in info
        assert nc.max_payload == 1048576
        await nc.close()

    run(scenario())


def test_publish_subscribe():
    async def scenario():
        nc = await connect()
        subject = unique("greet")
        sub = await nc.subscribe(subject)
        await nc.flush()
        for i in range(50):
            await nc.publish(subject, str(i).encode())
        for i in range(50):
            msg = await sub.next_msg(timeout=5)
            assert msg.subject == subject
            assert msg.data == str(i).encode()
        await sub.unsubscribe()
        await nc.close()

    run(scenario())


def test_wildcards():
    async def scenario():
        nc = await connect()
        root = unique("orders")
        one = await nc.subscribe(f"{root}.*.created")
        rest = await nc.subscribe(f"{root}.>")
        await nc.flush()
        for subject in (f"{root}.eu.created", f"{root}.eu.deleted", f"{root}.us.created.late", root):
            await nc.publish(subject, b"x")
        await nc.flush()
        assert (await one.next_msg(timeout=5)).subject == f"{root}.eu.created"
        with pytest.raises(nats.errors.TimeoutError):
            await one.next_msg(timeout=0.2)
        got = [(await rest.next_msg(timeout=5)).subject for _ in range(3)]
        assert got == [f"{root}.eu.created", f"{root}.eu.deleted", f"{root}.us.created.late"]
        with pytest.raises(nats.errors.TimeoutError):
            await rest.next_msg(timeout=0.2)
        await nc.close()

    run(scenario())


def test_queue_group_delivers_each_message_once():
    async def scenario():
        subject = unique("jobs")
        seen = []
        workers = []
        for _ in range(3):
            nc = await connect()

            async def handler(msg):
                seen.append(msg.data)

            await nc.subscribe(subject, queue="workers", cb=handler)
            await nc.flush()
            workers.append(nc)
        publisher = await connect()
        for i in range(60):
            await publisher.publish(subject, str(i).encode())
        await publisher.flush()
        deadline = time.monotonic() + 5
        while len(seen) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert sorted(seen) == sorted(str(i).encode() for i in range(60))
        for nc in workers + [publisher]:
            await nc.close()

    run(scenario())


def test_request_reply():
    async def scenario():
        responder = await connect()
        subject = unique("svc")

        async def upper(msg):
            assert msg.reply.startswith("_INBOX.")
            await responder.publish(msg.reply, msg.data.upper())

        await responder.subscribe(subject, cb=upper)
        await responder.flush()
        requester = await connect()
        for word in (b"abc", b"polymq"):
            answer = await requester.request(subject, word, timeout=5)
            assert answer.data == word.upper()
        await requester.close()
        await responder.close()

    run(scenario())


def test_headers_round_trip_and_are_stripped_for_clients_without_them():
    async def scenario():
        nc = await connect()
        subject = unique("hdr")
        sub = await nc.subscribe(subject)
        await nc.flush()
        # A raw client that did not negotiate headers gets the bare payload.
        host, port = ADDR.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.readline()
        writer.write(f"CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n".encode())
        assert await reader.readline() == b"PONG\r\n"
        await nc.publish(subject, b"body", headers={"Trace-Id": "abc123", "Other": "x"})
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"body"
        assert msg.headers == {"Trace-Id": "abc123", "Other": "x"}
        assert await reader.readline() == f"MSG {subject} 1 4\r\n".encode()
        assert await reader.readline() == b"body\r\n"
        writer.close()
        await nc.close()

    run(scenario())


def test_no_responders():
    async def scenario():
        nc = await connect()
        started = time.monotonic()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(unique("nobody"), b"?", timeout=5)
        assert time.monotonic() - started < 2
        await nc.close()

    run(scenario())


def test_no_echo():
    async def scenario():
        quiet = await connect(no_echo=True)
        other = await connect()
        subject = unique("echo")
        mine = await quiet.subscribe(subject)
        theirs = await other.subscribe(subject)
        await quiet.flush()
        await other.flush()
        await quiet.publish(subject, b"from quiet")
        await quiet.flush()
        assert (await theirs.next_msg(timeout=5)).data == b"from quiet"
        with pytest.raises(nats.errors.TimeoutError):
            await mine.next_msg(timeout=0.2)
        await other.publish(subject, b"from other")
        assert (await mine.next_msg(timeout=5)).data == b"from other"
        await quiet.close()
        await other.close()

    run(scenario())


def test_max_payload():
    async def scenario():
        nc = await connect()
        subject = unique("big")
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"x" * nc.max_payload)
        assert len((await sub.next_msg(timeout=5)).data) == nc.max_payload
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.publish(subject, b"x" * (nc.max_payload + 1))
        await nc.close()

    run(scenario())


def raw_exchange(payload):
    """Sends `payload` on a fresh connection after CONNECT; returns all bytes until close."""
    host, port = ADDR.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.recv(4096)
        sock.sendall(b'CONNECT {"verbose":false}\r\n' + payload)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk


def test_server_enforces_limits_and_rejects_bad_lines():
    assert raw_exchange(b"PUB big 1048577\r\n") == b"-ERR 'Maximum Payload Violation'\r\n"
    assert raw_exchange(b"GARBAGE\r\n") == b"-ERR 'Unknown Protocol Operation'\r\n"
    assert raw_exchange(b"SUB " + b"a" * 5000) == b"-ERR 'maximum control line exceeded'\r\n"
    assert raw_exchange(b"PUB foo\r\n") == b""


def polymq_binary():
    explicit = os.environ.get("POLYMQ_BIN")
    if explicit:
        return pathlib.Path(explicit)
    root = pathlib.Path(__file__).resolve().parents[2]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    return target / "debug" / "polymq"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def auth_broker():
    """A second broker whose NATS listener requires a token."""
    binary = polymq_binary()
    if not binary.exists():
        pytest.skip(f"polymq binary not built at {binary}")
    port = free_port()
    config = f"""
[nats]
listen = "127.0.0.1:{port}"
auth_token = "s3cret"
[nsq]
tcp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[zmtp]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as file:
        file.write(config)
    # POLYMQ_* variables from the outer environment would be read as configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYMQ_")}
    proc = subprocess.Popen([str(binary), "--config", file.name], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "broker exited"
                assert time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(file.name)


def test_authorization_violation(auth_broker):
    async def scenario():
        errors = []

        async def on_error(err):
            errors.append(err)

        with pytest.raises(Exception):
            await connect(auth_broker, token="wrong", error_cb=on_error, max_reconnect_attempts=0)
        assert any("Authorization Violation" in str(e) for e in errors), errors
        nc = await connect(auth_broker, token="s3cret")
        assert nc._server_info["auth_required"] is True
        sub = await nc.subscribe("private")
        await nc.publish("private", b"ok")
        assert (await sub.next_msg(timeout=5)).data == b"ok"
        await nc.close()

    run(scenario())


def test_many_concurrent_connections():
    async def scenario():
        subject = unique("fanout")
        # Waves of 100 keep within the listener's accept backlog; all 500 stay connected.
        clients = []
        for _ in range(5):
            clients += await asyncio.gather(*(connect() for _ in range(100)))
        subs = [await nc.subscribe(subject) for nc in clients]
        await asyncio.gather(*(nc.flush() for nc in clients))
        await clients[0].publish(subject, b"all")
        await clients[0].flush()
        got = await asyncio.gather(*(sub.next_msg(timeout=10) for sub in subs))
        assert all(msg.data == b"all" for msg in got)
        if ADMIN:
            assert varz()["connections"] >= 500
        await asyncio.gather(*(nc.close() for nc in clients))

    run(scenario())


@pytest.mark.skipif(not ADMIN, reason="INTEROP_ADMIN not set")
def test_monitoring_endpoints():
    async def scenario():
        nc = await connect(name="watcher")
        subject = unique("mon")
        sub = await nc.subscribe(subject)
        await nc.flush()
        before = varz()
        await nc.publish(subject, b"12345")
        await sub.next_msg(timeout=5)
        after = varz()
        assert after["in_msgs"] == before["in_msgs"] + 1
        assert after["in_bytes"] == before["in_bytes"] + 5
        assert after["out_msgs"] == before["out_msgs"] + 1
        assert after["connections"] >= 1 and after["subscriptions"] >= 1
        with urllib.request.urlopen(f"http://{ADMIN}/connz?subs=1", timeout=5) as resp:
            connz = json.loads(resp.read())
        mine = [c for c in connz["connections"] if c.get("name") == "watcher"]
        assert len(mine) == 1
        assert mine[0]["lang"] == "python3"
        assert subject in mine[0]["subscriptions_list"]
        with urllib.request.urlopen(f"http://{ADMIN}/subsz", timeout=5) as resp:
            assert json.loads(resp.read())["num_subscriptions"] >= 1
        await nc.close()

    run(scenario())
