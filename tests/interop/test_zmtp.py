"""pyzmq (libzmq) against polymq's ZMTP frontend: every socket pattern, X- metadata,
multipart and 1 MiB messages, overlapping SUB prefixes, the request-reply error replies,
refused socket types, and the subject space (and groups) shared with NATS. The broker address
comes from INTEROP_ZMTP (and INTEROP_NATS)."""

import asyncio
import os
import threading
import uuid

import pytest
import zmq
import zmq.utils.monitor

ZMTP = os.environ.get("INTEROP_ZMTP", "127.0.0.1:5555")
NATS = os.environ.get("INTEROP_NATS", "127.0.0.1:4222")
TIMEOUT_MS = 5000


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def unique(prefix):
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def handshake(sock, endpoint):
    """Connects and waits for the ZMTP handshake; returns the monitor events seen."""
    monitor = sock.get_monitor_socket()
    monitor.rcvtimeo = TIMEOUT_MS
    sock.connect(endpoint)
    events = []
    try:
        while True:
            event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
            events.append(event)
            if event in (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED):
                return events
    except zmq.Again:
        return events
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


def connect(ctx, kind, **metadata):
    """A libzmq socket of `kind` connected to the broker, handshake done. Keyword arguments
    become X- metadata (`x_subject="a"` sends `X-Subject: a`)."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.rcvtimeo = TIMEOUT_MS
    sock.sndtimeo = TIMEOUT_MS
    for key, value in metadata.items():
        name = "-".join(part.capitalize() for part in key.split("_"))
        sock.setsockopt(zmq.METADATA, f"{name}:{value}".encode())
    events = handshake(sock, f"tcp://{ZMTP}")
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED in events, events
    return sock


def probe_until_received(send, sock, attempts=500):
    """Sends probes until `sock` receives one (a PUB or SUB needs its subscription to travel
    first), then drains the probes."""
    for _ in range(attempts):
        send()
        if sock.poll(10):
            break
    assert sock.poll(0), "no probe arrived"
    while sock.poll(50):
        sock.recv_multipart()


def test_pub_sub_multipart_and_large(ctx):
    topic = unique("weather")
    sub = connect(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    xpub = connect(ctx, zmq.XPUB)
    # The broker subscribes to everything as soon as the XPUB joins.
    assert xpub.recv() == b"\x01"
    probe_until_received(lambda: xpub.send_multipart([topic.encode(), b"probe"]), sub)
    xpub.send_multipart([b"other.topic", b"no"])
    xpub.send_multipart([f"{topic}.paris".encode(), b"12", b"C"])
    assert sub.recv_multipart() == [f"{topic}.paris".encode(), b"12", b"C"]
    big = os.urandom(1 << 20)
    xpub.send_multipart([f"{topic}.big".encode(), big])
    assert sub.recv_multipart() == [f"{topic}.big".encode(), big]


def test_unsubscribe_stops_delivery(ctx):
    topic = unique("ticker")
    sub = connect(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sub.setsockopt(zmq.SUBSCRIBE, f"{topic}.marker".encode())
    pub = connect(ctx, zmq.PUB)
    probe_until_received(lambda: pub.send_multipart([f"{topic}.probe".encode(), b"p"]), sub)
    sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
    # The marker subscription stays: once the marker arrives the cancel was applied, and
    # nothing for the cancelled prefix may precede a later marker.
    probe_until_received(lambda: pub.send_multipart([f"{topic}.marker".encode(), b"m"]), sub)
    pub.send_multipart([f"{topic}.quote".encode(), b"gone"])
    pub.send_multipart([f"{topic}.marker".encode(), b"last"])
    assert sub.recv_multipart() == [f"{topic}.marker".encode(), b"last"]


def test_overlapping_prefixes_deliver_once(ctx):
    topic = unique("quote")
    sub = connect(ctx, zmq.SUB)
    for prefix in (topic, f"{topic}.eur", f"{topic}.eur.usd"):
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    pub = connect(ctx, zmq.PUB)
    probe_until_received(lambda: pub.send_multipart([f"{topic}.probe".encode(), b"p"]), sub)
    # As through a libzmq XPUB: one copy however many prefixes match.
    pub.send_multipart([f"{topic}.eur.usd".encode(), b"1.08"])
    pub.send_multipart([f"{topic}.end".encode(), b"."])
    assert sub.recv_multipart() == [f"{topic}.eur.usd".encode(), b"1.08"]
    assert sub.recv_multipart() == [f"{topic}.end".encode(), b"."]
    # Cancelling the widest prefix leaves the narrower ones, still one copy each.
    sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
    probe_until_received(lambda: pub.send_multipart([f"{topic}.eur.probe".encode(), b"p"]), sub)
    pub.send_multipart([f"{topic}.end".encode(), b"gone"])
    pub.send_multipart([f"{topic}.eur.usd".encode(), b"1.09"])
    assert sub.recv_multipart() == [f"{topic}.eur.usd".encode(), b"1.09"]
    assert not sub.poll(100)


def test_xsub_subscribes_with_messages(ctx):
    topic = unique("alerts")
    xsub = connect(ctx, zmq.XSUB)
    xsub.send(b"\x01" + topic.encode())
    push = connect(ctx, zmq.PUSH)
    probe_until_received(lambda: push.send_multipart([f"{topic}.probe".encode(), b"p"]), xsub)
    # Anything else an XSUB sends is discarded, as a libzmq XPUB discards it. The broker
    # handles one connection's frames in order, so once the marker subscription works the
    # message before it was routed (and would have reached this XSUB first).
    xsub.send_multipart([f"{topic}.up".encode(), b"not published"])
    marker = unique("marker")
    xsub.send(b"\x01" + marker.encode())
    seen = []
    for _ in range(500):
        push.send_multipart([marker.encode(), b"m"])
        if xsub.poll(10):
            break
    while xsub.poll(50):
        seen.append(xsub.recv_multipart()[0])
    assert seen and set(seen) == {marker.encode()}, seen
    # Cancel, then prove it was applied the same way, with a second marker.
    xsub.send(b"\x00" + topic.encode())
    second = unique("marker")
    xsub.send(b"\x01" + second.encode())
    probe_until_received(lambda: push.send_multipart([second.encode(), b"m"]), xsub)
    push.send_multipart([f"{topic}.fire".encode(), b"gone"])
    push.send_multipart([second.encode(), b"last"])
    assert xsub.recv_multipart() == [second.encode(), b"last"]


def test_push_pull_group_with_metadata(ctx):
    subject = unique("jobs")
    group = unique("crew")
    pulls = [connect(ctx, zmq.PULL, x_subject=subject, x_group=group) for _ in range(2)]
    push = connect(ctx, zmq.PUSH, x_subject=subject)
    for i in range(10):
        # Single-part messages go to the PUSH peer's X-Subject.
        push.send(str(i).encode())
    got = []
    for pull in pulls:
        for _ in range(5):
            frames = pull.recv_multipart()
            assert frames[0] == subject.encode()
            got.append(int(frames[1]))
    assert sorted(got) == list(range(10))


def worker(sock, count, transform):
    """Answers `count` requests on a REP socket in a thread."""

    def serve():
        for _ in range(count):
            request = sock.recv_multipart()
            sock.send_multipart([request[0]] + [transform(part) for part in request[1:]])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_req_rep(ctx):
    subject = unique("svc.upper")
    rep = connect(ctx, zmq.REP, x_subject=subject)
    thread = worker(rep, 3, bytes.upper)
    req = connect(ctx, zmq.REQ)
    req.send_multipart([subject.encode(), b"hello"])
    assert req.recv_multipart() == [subject.encode(), b"HELLO"]
    req.send_multipart([subject.encode(), b"multi", b"part"])
    assert req.recv_multipart() == [subject.encode(), b"MULTI", b"PART"]
    big = bytes(range(256)) * 4096
    req.send_multipart([subject.encode(), b"big", big])
    assert req.recv_multipart() == [subject.encode(), b"BIG", big.upper()]
    thread.join(timeout=5)


def test_router_worker_and_dealer_requester(ctx):
    subject = unique("svc.len")
    router = connect(ctx, zmq.ROUTER, x_subject=subject)
    dealer = connect(ctx, zmq.DEALER)
    dealer.send_multipart([b"", subject.encode(), b"abc"])
    dealer.send_multipart([b"", subject.encode(), b"abcdef"])
    for _ in range(2):
        identity, request_id, delimiter, subj, body = router.recv_multipart()
        assert delimiter == b"" and subj == subject.encode()
        router.send_multipart([identity, request_id, b"", subj, str(len(body)).encode()])
    replies = sorted(dealer.recv_multipart()[2] for _ in range(2))
    assert replies == [b"3", b"6"]


def test_rep_workers_in_a_nats_queue_group_take_requests_only(ctx):
    nats = pytest.importorskip("nats")
    subject = unique("svc.mixed")
    group = unique("mixed")
    rep = connect(ctx, zmq.REP, x_subject=subject, x_group=group)
    thread = worker(rep, 1, bytes.upper)

    async def scenario():
        nc = await nats.connect(f"nats://{NATS}")
        try:
            member = await nc.subscribe(subject, queue=group)
            await nc.flush()
            # Plain messages all go to the NATS member: a REP worker takes requests only.
            for i in range(6):
                await nc.publish(subject, str(i).encode())
            await nc.flush()
            got = [(await member.next_msg(timeout=5)).data for _ in range(6)]
            assert got == [str(i).encode() for i in range(6)]
            await member.unsubscribe()
            reply = await nc.request(subject, b"work", timeout=5)
            assert reply.data == b"WORK"
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
    thread.join(timeout=5)


def test_req_without_responder_gets_error_reply(ctx):
    req = connect(ctx, zmq.REQ)
    req.send_multipart([unique("nobody").encode(), b"?"])
    assert req.recv_multipart() == [b"$ERR", b"503", b"No Responders"]
    # Exactly one reply: the REQ can send again at once.
    req.send_multipart([b"bad..subject", b"?"])
    assert req.recv_multipart() == [b"$ERR", b"400", b"Bad Request"]


def test_unsupported_socket_type_is_refused(ctx):
    pair = ctx.socket(zmq.PAIR)
    pair.linger = 0
    events = handshake(pair, f"tcp://{ZMTP}")
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
    assert zmq.EVENT_DISCONNECTED in events


def test_heartbeats_keep_the_connection(ctx):
    topic = unique("beat")
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = TIMEOUT_MS
    sub.heartbeat_ivl = 20
    sub.heartbeat_timeout = 60
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    monitor = sub.get_monitor_socket()
    monitor.rcvtimeo = TIMEOUT_MS
    sub.connect(f"tcp://{ZMTP}")
    while zmq.utils.monitor.recv_monitor_message(monitor)["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
        pass
    # Many heartbeat rounds without a disconnect: every PING was answered.
    monitor.rcvtimeo = 500
    with pytest.raises(zmq.Again):
        zmq.utils.monitor.recv_monitor_message(monitor)
    pub = connect(ctx, zmq.PUB)
    probe_until_received(lambda: pub.send_multipart([topic.encode(), b"p"]), sub)


def test_subject_space_is_shared_with_nats(ctx):
    nats = pytest.importorskip("nats")
    subject = unique("bridge")
    sub = connect(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, subject.encode())
    rep = connect(ctx, zmq.REP, x_subject=f"{subject}.svc")
    thread = worker(rep, 1, lambda part: part[::-1])

    async def scenario():
        nc = await nats.connect(f"nats://{NATS}")
        try:
            # NATS publish -> ZMQ SUB (the subscription exists once a probe arrives).
            for _ in range(500):
                await nc.publish(f"{subject}.probe", b"p")
                await nc.flush()
                if sub.poll(10):
                    break
            while sub.poll(50):
                sub.recv_multipart()
            await nc.publish(f"{subject}.event", b"from nats")
            await nc.flush()
            assert sub.recv_multipart() == [f"{subject}.event".encode(), b"from nats"]
            # ZMQ PUSH -> NATS subscriber.
            inbox = await nc.subscribe(f"{subject}.to_nats")
            await nc.flush()
            push = connect(ctx, zmq.PUSH)
            push.send_multipart([f"{subject}.to_nats".encode(), b"from zmq"])
            msg = await inbox.next_msg(timeout=5)
            assert msg.data == b"from zmq"
            # NATS request -> ZMQ REP worker.
            reply = await nc.request(f"{subject}.svc", b"olleh", timeout=5)
            assert reply.data == b"hello"
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
    thread.join(timeout=5)
