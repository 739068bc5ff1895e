"""pynsq against polymq's NSQ frontend: a Writer, Readers on two channels with several
messages in flight, requeue (with and without backoff), touch, nsq_tail-style consumption on an
ephemeral channel, deflate and snappy (when python-snappy is installed), and the HTTP API. The broker address comes from INTEROP_NSQ_TCP / INTEROP_NSQ_HTTP."""

import asyncio
import json
import os
import urllib.request
import uuid

import nsq
import pytest

TCP = os.environ.get("INTEROP_NSQ_TCP", "127.0.0.1:4150")
HTTP = os.environ.get("INTEROP_NSQ_HTTP", "127.0.0.1:4151")
TIMEOUT = 20


def http(path, body=b""):
    req = urllib.request.Request(f"http://{HTTP}{path}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


def stats(topic):
    with urllib.request.urlopen(f"http://{HTTP}/stats?format=json&topic={topic}", timeout=5) as resp:
        return json.loads(resp.read())


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def close(client):
    """Closes a Reader, or every connection of a Writer (which has no close())."""
    if hasattr(client, "close"):
        client.close()
    else:
        for conn in list(client.conns.values()):
            conn.close()


def run(scenario):
    """Runs `scenario(done)` on a fresh event loop until it resolves `done` or times out."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main():
        done = loop.create_future()
        cleanup = scenario(done)
        try:
            return await asyncio.wait_for(done, TIMEOUT)
        finally:
            for item in cleanup or []:
                close(item)

    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(asyncio.sleep(0.1))
        loop.close()
        asyncio.set_event_loop(None)


def publish_when_connected(writer, topic, bodies, on_done):
    """Publishes with retries until the Writer has a connection (pynsq connects lazily)."""

    def attempt():
        def callback(_conn, data):
            if isinstance(data, nsq.Error):
                asyncio.get_event_loop().call_later(0.05, attempt)
            else:
                on_done()

        if len(bodies) == 1:
            writer.pub(topic, bodies[0], callback=callback)
        else:
            writer.mpub(topic, bodies, callback=callback)

    attempt()


def when(predicate, action):
    """Runs `action` once `predicate()` holds, polling every 50 ms on the running loop."""
    loop = asyncio.get_event_loop()

    def poll():
        if predicate():
            action()
        else:
            loop.call_later(0.05, poll)

    poll()


def channel_stats(topic, channel):
    """The channel's /stats entry, or None while it does not exist."""
    topics = stats(topic)["topics"] or []
    for entry in topics:
        for candidate in entry["channels"]:
            if candidate["channel_name"] == channel:
                return candidate
    return None


def test_writer_and_readers_on_two_channels():
    topic = unique("py")
    assert http(f"/topic/create?topic={topic}")[0] == 200
    for channel in ("a", "b"):
        assert http(f"/channel/create?topic={topic}&channel={channel}")[0] == 200
    bodies = [b"one", b"two", b"three"]
    received = {"a": [], "b": []}

    def scenario(done):
        def handler_for(channel):
            def handler(message):
                received[channel].append(message.body)
                if all(len(v) == len(bodies) for v in received.values()) and not done.done():
                    done.set_result(True)
                return True

            return handler

        readers = [
            nsq.Reader(
                message_handler=handler_for(channel),
                nsqd_tcp_addresses=[TCP],
                topic=topic,
                channel=channel,
                max_in_flight=10,
            )
            for channel in ("a", "b")
        ]
        writer = nsq.Writer([TCP])
        publish_when_connected(
            writer, topic, [bodies[0]], lambda: publish_when_connected(writer, topic, bodies[1:], lambda: None)
        )
        return readers + [writer]

    run(scenario)
    assert sorted(received["a"]) == sorted(bodies)
    assert sorted(received["b"]) == sorted(bodies)
    topic_stats = stats(topic)["topics"][0]
    assert topic_stats["message_count"] == 3
    assert sorted(c["channel_name"] for c in topic_stats["channels"]) == ["a", "b"]


def test_requeue_and_touch():
    topic = unique("req")
    attempts = []

    def scenario(done):
        def handler(message):
            message.enable_async()
            attempts.append(message.attempts)
            if message.attempts == 1:
                message.requeue(backoff=False, delay=0)
            else:
                message.touch()
                message.finish()
                done.set_result(True)

        reader = nsq.Reader(
            message_handler=handler,
            nsqd_tcp_addresses=[TCP],
            topic=topic,
            channel="worker",
            max_in_flight=1,
        )
        status, body = http(f"/pub?topic={topic}", b"retry me")
        assert (status, body) == (200, b"OK")
        return [reader]

    run(scenario)
    assert attempts == [1, 2]
    channel = stats(topic)["topics"][0]["channels"][0]
    assert channel["requeue_count"] == 1
    assert channel["in_flight_count"] == 0


def test_http_errors_match_nsqd():
    with pytest.raises(urllib.error.HTTPError) as err:
        http("/pub?topic=bad*name", b"x")
    assert err.value.code == 400
    assert json.loads(err.value.read()) == {"message": "INVALID_TOPIC"}
    with pytest.raises(urllib.error.HTTPError) as err:
        http("/topic/delete?topic=does_not_exist")
    assert err.value.code == 404
    assert json.loads(err.value.read()) == {"message": "TOPIC_NOT_FOUND"}
    with urllib.request.urlopen(f"http://{HTTP}/ping", timeout=5) as resp:
        assert resp.read() == b"OK"


def test_max_in_flight_above_one_on_two_channels():
    """Each Reader holds all five messages unfinished at once: RDY is a level, per channel."""
    topic = unique("mif")
    bodies = [b"m%d" % i for i in range(5)]
    held = {"a": [], "b": []}
    in_flight_seen = {}

    def scenario(done):
        def handler_for(channel):
            def handler(message):
                message.enable_async()
                held[channel].append(message)
                if len(held[channel]) == len(bodies):
                    in_flight_seen[channel] = channel_stats(topic, channel)["in_flight_count"]
                    for m in held[channel]:
                        m.finish()
                if all(len(v) == len(bodies) for v in held.values()) and not done.done():
                    done.set_result(True)

            return handler

        readers = [
            nsq.Reader(
                message_handler=handler_for(channel),
                nsqd_tcp_addresses=[TCP],
                topic=topic,
                channel=channel,
                max_in_flight=5,
            )
            for channel in ("a", "b")
        ]

        def subscribed():
            return all((channel_stats(topic, c) or {}).get("client_count") == 1 for c in ("a", "b"))

        writer = nsq.Writer([TCP])
        when(subscribed, lambda: publish_when_connected(writer, topic, bodies, lambda: None))
        return readers + [writer]

    run(scenario)
    assert in_flight_seen == {"a": 5, "b": 5}
    for channel in ("a", "b"):
        assert sorted(m.body for m in held[channel]) == sorted(bodies)
        assert len({m.id for m in held[channel]}) == len(bodies)


def test_requeue_with_backoff():
    """REQ with backoff: pynsq drops to RDY 0, tests the water with RDY 1, then resumes."""
    topic = unique("backoff")
    attempts = {}

    def scenario(done):
        def handler(message):
            attempts.setdefault(message.body, []).append(message.attempts)
            if message.attempts == 1:
                message.requeue(backoff=True, delay=0)
                return None
            message.finish()
            if len(attempts) == 2 and all(len(v) == 2 for v in attempts.values()):
                done.set_result(True)
            return None

        def async_handler(message):
            message.enable_async()
            handler(message)

        reader = nsq.Reader(
            message_handler=async_handler,
            nsqd_tcp_addresses=[TCP],
            topic=topic,
            channel="worker",
            max_in_flight=3,
            max_backoff_duration=2,
        )
        for body in (b"x", b"y"):
            assert http(f"/pub?topic={topic}", body) == (200, b"OK")
        return [reader]

    run(scenario)
    assert attempts == {b"x": [1, 2], b"y": [1, 2]}
    channel = channel_stats(topic, "worker")
    assert channel["requeue_count"] == 2
    assert channel["in_flight_count"] == 0
    assert channel["depth"] == 0


def test_tail_on_an_ephemeral_channel():
    """nsq_tail's way: a Reader on `tail<n>#ephemeral`; the channel goes when the Reader does."""
    topic = unique("tail")
    channel = "tail%06d#ephemeral" % (uuid.uuid4().int % 1000000)
    assert http(f"/topic/create?topic={topic}")[0] == 200
    bodies = [b"line1", b"line2", b"line3"]
    printed = []

    def scenario(done):
        def handler(message):
            printed.append(message.body)
            if len(printed) == len(bodies) and not done.done():
                done.set_result(True)
            return True

        reader = nsq.Reader(
            message_handler=handler,
            nsqd_tcp_addresses=[TCP],
            topic=topic,
            channel=channel,
            max_in_flight=200,
        )

        def subscribed():
            return (channel_stats(topic, channel) or {}).get("client_count") == 1

        def publish():
            status, body = http(f"/mpub?topic={topic}", b"\n".join(bodies))
            assert (status, body) == (200, b"OK")

        when(subscribed, publish)
        return [reader]

    run(scenario)
    assert printed == bodies

    def gone():
        return channel_stats(topic, channel) is None

    def wait_gone(done):
        when(gone, lambda: done.set_result(True))

    run(wait_gone)


def compressed_round_trip(**compression):
    topic = unique("zip")
    bodies = [(b"%02d" % i) * 5000 for i in range(10)]
    received = []

    def scenario(done):
        def handler(message):
            received.append(message.body)
            if len(received) == len(bodies) and not done.done():
                done.set_result(True)
            return True

        reader = nsq.Reader(
            message_handler=handler,
            nsqd_tcp_addresses=[TCP],
            topic=topic,
            channel="z",
            max_in_flight=10,
            **compression,
        )

        def subscribed():
            return (channel_stats(topic, "z") or {}).get("client_count") == 1

        writer = nsq.Writer([TCP], **compression)
        when(subscribed, lambda: publish_when_connected(writer, topic, bodies, lambda: None))
        return [reader, writer]

    run(scenario)
    assert sorted(received) == sorted(bodies)


def test_deflate():
    compressed_round_trip(deflate=True, deflate_level=3)


def test_snappy():
    pytest.importorskip("snappy")
    compressed_round_trip(snappy=True)
