"""paho-mqtt (MQTT 3.1.1 and 5.0) against polymq's MQTT listener.

The broker address comes from INTEROP_MQTT (host:port), the MQTT-over-WebSocket listener from
INTEROP_MQTT_WS. Every wait is bounded.
"""

import os
import queue
import socket
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT = os.environ.get("INTEROP_MQTT", "127.0.0.1:1883").rsplit(":", 1)
PORT = int(PORT)
WS_HOST, WS_PORT = os.environ.get("INTEROP_MQTT_WS", "127.0.0.1:8080").rsplit(":", 1)
WS_PORT = int(WS_PORT)
WAIT = 10

VERSIONS = [mqtt.MQTTv311, mqtt.MQTTv5]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Client:
    """A paho client running its network loop in a thread; messages land in a queue."""

    def __init__(
        self, protocol, client_id=None, clean=True, expiry=None, will=None, transport="tcp"
    ):
        self.protocol = protocol
        kwargs = {
            "client_id": client_id or unique("c"),
            "protocol": protocol,
            "transport": transport,
        }
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.messages = queue.Queue()
        self.sub_acks = queue.Queue()
        self.connacks = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.sub_acks.put((mid, rcs))
        if will:
            self.client.will_set(*will)
        connect_kwargs = {}
        if protocol == mqtt.MQTTv5:
            connect_kwargs["clean_start"] = clean
            if expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = expiry
                connect_kwargs["properties"] = props
        host, port = (WS_HOST, WS_PORT) if transport == "websockets" else (HOST, PORT)
        self.client.connect(host, port, keepalive=30, **connect_kwargs)
        self.client.loop_start()
        self.flags, self.reason = self.connacks.get(timeout=WAIT)
        assert not self.reason.is_failure, self.reason

    @property
    def session_present(self):
        return self.flags.session_present

    def subscribe(self, topic, qos=0, **kwargs):
        _, mid = self.client.subscribe(topic, qos, **kwargs)
        got, codes = self.sub_acks.get(timeout=WAIT)
        assert got == mid
        assert all(not c.is_failure for c in codes), codes
        return codes

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()

    def recv(self):
        return self.messages.get(timeout=WAIT)

    def expect_nothing(self, wait=0.3):
        with pytest.raises(queue.Empty):
            self.messages.get(timeout=wait)

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self):
        """Drops the TCP connection without DISCONNECT."""
        sock = self.client.socket()
        self.client.loop_stop()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.mark.parametrize("protocol", VERSIONS)
def test_publish_subscribe_every_qos(protocol):
    sub = Client(protocol)
    pub = Client(protocol)
    topic = unique("interop/qos")
    sub.subscribe(topic + "/#", 2)
    for qos in (0, 1, 2):
        pub.publish(f"{topic}/{qos}", f"payload-{qos}".encode(), qos)
        msg = sub.recv()
        assert msg.topic == f"{topic}/{qos}"
        assert msg.payload == f"payload-{qos}".encode()
        assert msg.qos == qos
        assert not msg.retain
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("protocol", VERSIONS)
def test_websocket_clients_talk_to_tcp_clients(protocol):
    ws = Client(protocol, transport="websockets")
    tcp = Client(protocol)
    topic = unique("interop/ws") + "/living room"
    ws.subscribe(topic + "/#", 2)
    tcp.subscribe(topic + "/#", 2)
    for qos in (0, 1, 2):
        tcp.publish(f"{topic}/from-tcp", f"t{qos}".encode(), qos)
        msg = ws.recv()
        assert (msg.topic, msg.payload, msg.qos) == (f"{topic}/from-tcp", f"t{qos}".encode(), qos)
        assert tcp.recv().payload == f"t{qos}".encode()
        ws.publish(f"{topic}/from-ws", f"w{qos}".encode(), qos)
        msg = tcp.recv()
        assert (msg.topic, msg.payload, msg.qos) == (f"{topic}/from-ws", f"w{qos}".encode(), qos)
        assert ws.recv().payload == f"w{qos}".encode()
    big = bytes(range(256)) * 1024
    tcp.publish(f"{topic}/big", big, 1)
    assert ws.recv().payload == big
    assert tcp.recv().payload == big
    ws.disconnect()
    tcp.disconnect()


@pytest.mark.parametrize("protocol", VERSIONS)
def test_retained_set_replace_clear(protocol):
    pub = Client(protocol)
    topic = unique("interop/retained")
    pub.publish(topic, b"one", 1, retain=True)
    pub.publish(topic, b"two", 1, retain=True)
    sub = Client(protocol)
    sub.subscribe(topic, 1)
    msg = sub.recv()
    assert (msg.payload, msg.retain) == (b"two", True)
    pub.publish(topic, b"", 1, retain=True)
    assert sub.recv().payload == b""
    late = Client(protocol)
    late.subscribe(topic, 1)
    late.expect_nothing()
    for c in (pub, sub, late):
        c.disconnect()


@pytest.mark.parametrize("protocol", VERSIONS)
def test_will_on_killed_client_only(protocol):
    watcher = Client(protocol)
    base = unique("interop/will")
    watcher.subscribe(base + "/#", 1)
    dying = Client(protocol, will=(base + "/dead", b"offline", 1, False))
    dying.kill()
    msg = watcher.recv()
    assert (msg.topic, msg.payload) == (base + "/dead", b"offline")
    polite = Client(protocol, will=(base + "/polite", b"x", 1, False))
    polite.disconnect()
    watcher.expect_nothing(0.5)
    watcher.disconnect()


@pytest.mark.parametrize("protocol", VERSIONS)
def test_persistent_session_gets_messages_sent_while_offline(protocol):
    client_id = unique("persistent")
    topic = unique("interop/offline")
    first = Client(protocol, client_id, clean=False, expiry=300)
    assert not first.session_present
    first.subscribe(topic, 1)
    first.disconnect()
    pub = Client(protocol)
    for i in range(3):
        pub.publish(topic, f"m{i}".encode(), 1)
    pub.disconnect()
    again = Client(protocol, client_id, clean=False, expiry=300)
    assert again.session_present
    assert [again.recv().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    again.disconnect()
    fresh = Client(protocol, client_id, clean=True, expiry=0)
    assert not fresh.session_present
    fresh.disconnect()


def test_v5_properties_are_forwarded():
    sub = Client(mqtt.MQTTv5)
    pub = Client(mqtt.MQTTv5)
    topic = unique("interop/props")
    sub.subscribe(topic, 1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "1"), ("a", "2")]
    props.ResponseTopic = topic + "/reply"
    props.CorrelationData = b"\x01\x02"
    props.ContentType = "text/plain"
    props.PayloadFormatIndicator = 1
    pub.publish(topic, b"req", 1, properties=props)
    msg = sub.recv()
    got = msg.properties
    assert got.UserProperty == [("a", "1"), ("a", "2")]
    assert got.ResponseTopic == topic + "/reply"
    assert got.CorrelationData == b"\x01\x02"
    assert got.ContentType == "text/plain"
    assert got.PayloadFormatIndicator == 1
    sub.disconnect()
    pub.disconnect()


def test_v5_shared_subscription_delivers_each_message_once():
    topic = unique("interop/shared")
    workers = [Client(mqtt.MQTTv5) for _ in range(2)]
    for w in workers:
        w.subscribe(f"$share/grp/{topic}", 1)
    pub = Client(mqtt.MQTTv5)
    for i in range(10):
        pub.publish(topic, str(i).encode(), 1)
    got = []
    for w in workers:
        while True:
            try:
                got.append(int(w.messages.get(timeout=0.5).payload))
            except queue.Empty:
                break
    assert sorted(got) == list(range(10))
    for c in workers + [pub]:
        c.disconnect()


def test_v5_subscription_identifier_and_no_local():
    c = Client(mqtt.MQTTv5)
    topic = unique("interop/subid")
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = 17
    opts = mqtt.SubscribeOptions(qos=1, noLocal=False)
    c.subscribe(topic, options=opts, properties=props)
    c.publish(topic, b"x", 1)
    msg = c.recv()
    assert msg.properties.SubscriptionIdentifier == [17]
    c.subscribe(topic, options=mqtt.SubscribeOptions(qos=1, noLocal=True))
    c.publish(topic, b"mine", 1)
    c.expect_nothing()
    c.disconnect()
