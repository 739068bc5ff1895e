#!/usr/bin/env python3
"""Differential MQTT check: run the same scripted client conversation against two brokers
(normally mosquitto and polymq) and print, step by step, every packet each broker sent,
marking the steps where they differ.

    bench/mqtt_diff.py --a 127.0.0.1:1884 --b 127.0.0.1:1885 [--scenario resume-v5 ...]

Brokers to start first (loopback only; stop them by PID afterwards):

    mosquitto -c conf   # listener 1884 127.0.0.1 / allow_anonymous true /
                        # persistence false / sys_interval 1
    polymq --set mqtt.listen=127.0.0.1:1885 --set mqtt.sys_interval_secs=1 \
           --set nats.enabled=false --set nsq.enabled=false --set zmtp.enabled=false ...

A development tool, not part of CI (CI has no mosquitto). Raw sockets, no client library, so
that flags, packet ids, property order and reason codes are seen exactly as sent. Every wait
is bounded; a step ends when its socket stays quiet for `--quiet` seconds. Values that differ
by nature (assigned client ids, `$SYS` counters and version, timestamps) are masked before the
comparison with `--mask` (on by default); the raw packets are printed either way.

Scenarios: resume-v3, resume-v5 (resend order on session resumption), window-v3, window-v5
(Receive Maximum / max_inflight flow), inbound-v5 (the server's Receive Maximum),
sys-v3, sys-v5 ($SYS tree on subscribe), connack (CONNACK of fresh and resumed sessions).
"""

import argparse
import re
import socket
import struct
import sys
import time

V3, V5 = 4, 5
TYPES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}
# Property id -> (name, kind); kinds: b byte, h u16, i u32, v varint, s string, d binary, p pair.
PROPS = {
    0x01: ("PFI", "b"), 0x02: ("Expiry", "i"), 0x03: ("ContentType", "s"),
    0x08: ("ResponseTopic", "s"), 0x09: ("Correlation", "d"), 0x0B: ("SubId", "v"),
    0x11: ("SessionExpiry", "i"), 0x12: ("AssignedId", "s"), 0x13: ("ServerKeepAlive", "h"),
    0x15: ("AuthMethod", "s"), 0x16: ("AuthData", "d"), 0x17: ("ReqProblem", "b"),
    0x18: ("WillDelay", "i"), 0x19: ("ReqResponse", "b"), 0x1A: ("ResponseInfo", "s"),
    0x1C: ("ServerRef", "s"), 0x1F: ("Reason", "s"), 0x21: ("ReceiveMax", "h"),
    0x22: ("TopicAliasMax", "h"), 0x23: ("TopicAlias", "h"), 0x24: ("MaxQoS", "b"),
    0x25: ("RetainAvail", "b"), 0x26: ("User", "p"), 0x27: ("MaxPacket", "i"),
    0x28: ("WildcardAvail", "b"), 0x29: ("SubIdAvail", "b"), 0x2A: ("SharedAvail", "b"),
}


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, pos):
    value, shift = 0, 0
    for _ in range(4):
        if pos >= len(buf):
            return None, pos
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise ValueError("varint too long")


def mqtt_str(s):
    data = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(data)) + data


def props_bytes(props):
    out = b""
    for pid, value in props:
        kind = PROPS[pid][1]
        out += bytes([pid])
        out += {
            "b": lambda v: bytes([v]), "h": lambda v: struct.pack(">H", v),
            "i": lambda v: struct.pack(">I", v), "v": varint, "s": mqtt_str, "d": mqtt_str,
            "p": lambda v: mqtt_str(v[0]) + mqtt_str(v[1]),
        }[kind](value)
    return varint(len(out)) + out


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, v, clean=True, keep_alive=60, props=()):
    flags = 0x02 if clean else 0
    body = mqtt_str("MQTT") + bytes([v, flags]) + struct.pack(">H", keep_alive)
    if v == V5:
        body += props_bytes(props)
    return packet(0x10, body + mqtt_str(client_id))


def publish(topic, payload, v, qos=0, pid=0, retain=False, dup=False, props=()):
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic) + (struct.pack(">H", pid) if qos else b"")
    if v == V5:
        body += props_bytes(props)
    return packet(first, body + (payload.encode() if isinstance(payload, str) else payload))


def subscribe(pid, filters, v, props=()):
    body = struct.pack(">H", pid) + (props_bytes(props) if v == V5 else b"")
    for topic, options in filters:
        body += mqtt_str(topic) + bytes([options])
    return packet(0x82, body)


def ack(kind, pid):
    """PUBACK, PUBREC, PUBREL or PUBCOMP with success (short form in both versions)."""
    first = {"PUBACK": 0x40, "PUBREC": 0x50, "PUBREL": 0x62, "PUBCOMP": 0x70}[kind]
    return packet(first, struct.pack(">H", pid))


def disconnect(v, reason=0, props=()):
    if v == V5 and (reason or props):
        return packet(0xE0, bytes([reason]) + props_bytes(props))
    return packet(0xE0, b"")


def parse_props(buf, pos):
    length, pos = read_varint(buf, pos)
    end = pos + length
    out = []
    while pos < end:
        pid = buf[pos]
        pos += 1
        name, kind = PROPS.get(pid, (f"0x{pid:02x}", "?"))
        if kind == "b":
            value, pos = buf[pos], pos + 1
        elif kind == "h":
            value, pos = struct.unpack_from(">H", buf, pos)[0], pos + 2
        elif kind == "i":
            value, pos = struct.unpack_from(">I", buf, pos)[0], pos + 4
        elif kind == "v":
            value, pos = read_varint(buf, pos)
        elif kind in "sd":
            n = struct.unpack_from(">H", buf, pos)[0]
            value, pos = bytes(buf[pos + 2:pos + 2 + n]), pos + 2 + n
            value = value.decode(errors="replace") if kind == "s" else value.hex()
        elif kind == "p":
            n = struct.unpack_from(">H", buf, pos)[0]
            k = bytes(buf[pos + 2:pos + 2 + n]).decode(errors="replace")
            pos += 2 + n
            n = struct.unpack_from(">H", buf, pos)[0]
            val = bytes(buf[pos + 2:pos + 2 + n]).decode(errors="replace")
            value, pos = f"{k}={val}", pos + 2 + n
        else:
            return out + [(name, "?")], end
        out.append((name, value))
    return out, end


def describe(first, body, v):
    """One packet as a short text line."""
    kind = TYPES.get(first >> 4, f"type{first >> 4}")
    if kind == "CONNACK":
        text = f"CONNACK sp={body[0] & 1} rc=0x{body[1]:02x}"
        if v == V5 and len(body) > 2:
            text += f" props={parse_props(body, 2)[0]}"
        return text
    if kind == "PUBLISH":
        qos = (first >> 1) & 3
        n = struct.unpack_from(">H", body, 0)[0]
        topic = bytes(body[2:2 + n]).decode(errors="replace")
        pos = 2 + n
        pid = None
        if qos:
            pid = struct.unpack_from(">H", body, pos)[0]
            pos += 2
        props = []
        if v == V5:
            props, pos = parse_props(body, pos)
        payload = bytes(body[pos:]).decode(errors="replace")
        text = f"PUBLISH d{(first >> 3) & 1} q{qos} r{first & 1}"
        text += f" pid={pid}" if qos else ""
        text += f" {topic!r} {payload!r}"
        return text + (f" props={props}" if props else "")
    if kind in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "UNSUBACK", "SUBACK"):
        pid = struct.unpack_from(">H", body, 0)[0]
        text = f"{kind} flags={first & 15:x} pid={pid}"
        rest = body[2:]
        if kind in ("SUBACK", "UNSUBACK") and v == V5:
            props, pos = parse_props(body, 2)
            rest = body[pos:]
            text += f" props={props}" if props else ""
            return text + f" codes={bytes(rest).hex()}"
        if kind == "SUBACK":
            return text + f" codes={bytes(rest).hex()}"
        if rest:
            text += f" rc=0x{rest[0]:02x}"
            if len(rest) > 1:
                text += f" props={parse_props(body, 3)[0]}"
        return text
    if kind == "DISCONNECT":
        text = "DISCONNECT"
        if body:
            text += f" rc=0x{body[0]:02x}"
        if len(body) > 1:
            text += f" props={parse_props(body, 1)[0]}"
        return text
    return f"{kind} flags={first & 15:x} body={bytes(body).hex()}"


class Client:
    """One raw connection; `read` returns the decoded packets that arrived."""

    def __init__(self, addr, v):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.v = v
        self.buf = bytearray()
        self.closed = False

    def send(self, *packets):
        for p in packets:
            self.sock.sendall(p)

    def read(self, quiet, limit=5.0, until=None, auto_ack=False):
        """Packets until `quiet` seconds pass without one (or `until(packets)` holds), at
        most `limit` seconds. Each is (first byte, body, text). With `auto_ack`, QoS 1/2
        PUBLISHes and PUBRELs are acknowledged as they arrive."""
        out = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            parsed = self._take()
            if parsed:
                out.append(parsed)
                if auto_ack:
                    self._ack(parsed)
                if until and until(out):
                    break
                continue
            if self.closed:
                break
            self.sock.settimeout(min(quiet, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                out.append((0, b"", "<closed>"))
                break
            self.buf += data
        return out

    def _ack(self, parsed):
        kind = TYPES.get(parsed[0] >> 4)
        if kind == "PUBREL":
            self.send(ack("PUBCOMP", pids([parsed], "PUBREL")[0]))
        for pid, qos in pids([parsed], "PUBLISH"):
            self.send(ack("PUBACK" if qos == 1 else "PUBREC", pid))

    def _take(self):
        if len(self.buf) < 2:
            return None
        length, pos = read_varint(self.buf, 1)
        if length is None or len(self.buf) < pos + length:
            return None
        first, body = self.buf[0], bytes(self.buf[pos:pos + length])
        del self.buf[:pos + length]
        return first, body, describe(first, body, self.v)

    def close(self):
        self.sock.close()


def pids(packets, kind):
    """Packet ids of the PUBLISHes (with their QoS) or acks named `kind` in `packets`."""
    out = []
    for first, body, _ in packets:
        if TYPES.get(first >> 4) != kind:
            continue
        if kind == "PUBLISH":
            qos = (first >> 1) & 3
            if qos:
                n = struct.unpack_from(">H", body, 0)[0]
                out.append((struct.unpack_from(">H", body, 2 + n)[0], qos))
        else:
            out.append(struct.unpack_from(">H", body, 0)[0])
    return out


def session_props(v):
    return [(0x11, 300)] if v == V5 else []


# Each scenario takes an address and a `log(step, packets)` callback.

def scenario_resume(addr, log, v, tag):
    """Sent-unacked QoS 1, QoS 2 PUBREC'd (awaiting PUBCOMP), QoS 2 unacked, then QoS 1/2/0
    queued while offline; the client resumes and everything in flight is resent."""
    cid = f"diff-resume-{tag}"
    clean = Client(addr, v)
    clean.send(connect(cid, v, clean=True))
    clean.read(0.2, until=lambda p: True)
    clean.send(disconnect(v))
    clean.close()
    sub = Client(addr, v)
    sub.send(connect(cid, v, clean=False, props=session_props(v)))
    log("sub CONNECT clean=0", sub.read(0.3, until=lambda p: True))
    sub.send(subscribe(1, [("diff/r/#", 2)], v))
    log("sub SUBSCRIBE diff/r/# q2", sub.read(0.3))
    pub = Client(addr, v)
    pub.send(connect(f"diff-pub-{tag}", v))
    pub.read(0.3, until=lambda p: True)
    pub.send(publish("diff/r/a", "m1-q1", v, qos=1, pid=1))
    pub.send(publish("diff/r/a", "m2-q2", v, qos=2, pid=2))
    pub.send(publish("diff/r/b", "m3-q2", v, qos=2, pid=3))
    pub.read(0.3)
    pub.send(ack("PUBREL", 2), ack("PUBREL", 3))
    pub.read(0.3)
    got = sub.read(0.5)
    log("sub gets m1..m3", got)
    qos2 = [pid for pid, qos in pids(got, "PUBLISH") if qos == 2]
    if qos2:
        sub.send(ack("PUBREC", qos2[0]))
        log("sub PUBREC first QoS 2 (no PUBCOMP)", sub.read(0.3))
    sub.close()
    time.sleep(0.3)
    pub.send(publish("diff/r/a", "m4-q1-offline", v, qos=1, pid=4))
    pub.send(publish("diff/r/c", "m5-q2-offline", v, qos=2, pid=5))
    pub.read(0.3)
    # mosquitto routes an inbound QoS 2 message at PUBREL: release it before m6 and m7.
    pub.send(ack("PUBREL", 5))
    pub.read(0.3)
    pub.send(publish("diff/r/a", "m6-q0-offline", v, qos=0))
    pub.send(publish("diff/r/a", "m7-q1-offline", v, qos=1, pid=6))
    pub.read(0.3)
    sub = Client(addr, v)
    sub.send(connect(cid, v, clean=False, props=session_props(v)))
    got = sub.read(0.6)
    log("sub reconnects: CONNACK and resends (no acks yet)", got)
    for pid, qos in pids(got, "PUBLISH"):
        sub.send(ack("PUBACK" if qos == 1 else "PUBREC", pid))
    got2 = sub.read(0.5)
    log("sub acks every PUBLISH (PUBACK / PUBREC)", got2)
    for pid in pids(got, "PUBREL") + pids(got2, "PUBREL"):
        sub.send(ack("PUBCOMP", pid))
    log("sub PUBCOMPs every PUBREL", sub.read(0.4))
    pub.send(publish("diff/r/a", "m8-q1-live", v, qos=1, pid=7))
    pub.read(0.2)
    log("live QoS 1 after resume (packet id continues)", sub.read(0.4))
    sub.send(disconnect(v))
    sub.close()
    end = Client(addr, v)
    end.send(connect(cid, v, clean=True))
    end.read(0.2, until=lambda p: True)
    end.send(disconnect(v))
    end.close()
    pub.send(disconnect(v))
    pub.close()


def scenario_window(addr, log, v, tag, window, total):
    """A subscriber with a window of `window` gets `total` QoS 1 messages with QoS 0 ones
    in between; it then acks one message at a time."""
    sub = Client(addr, v)
    props = [(0x21, window)] if v == V5 else []
    sub.send(connect(f"diff-win-{tag}", v, props=props))
    log("sub CONNECT", sub.read(0.3, until=lambda p: True))
    sub.send(subscribe(1, [("diff/w", 1)], v))
    log("sub SUBSCRIBE diff/w q1", sub.read(0.3))
    pub = Client(addr, v)
    pub.send(connect(f"diff-winpub-{tag}", v))
    pub.read(0.3, until=lambda p: True)
    for i in range(total):
        pub.send(publish("diff/w", f"q1-{i}", v, qos=1, pid=i + 1))
        if i % 3 == 2:
            pub.send(publish("diff/w", f"q0-after-{i}", v))
    pub.read(0.4)
    got = sub.read(0.6)
    log(f"in flight before any ack ({total} QoS 1 sent)", got)
    pending = [pid for pid, _ in pids(got, "PUBLISH")]
    for _ in range(total):
        if not pending:
            break
        pid = pending.pop(0)
        sub.send(ack("PUBACK", pid))
        more = sub.read(0.25)
        pending += [p for p, _ in pids(more, "PUBLISH")]
        log(f"after PUBACK {pid}", more)
    sub.send(disconnect(v))
    sub.close()
    pub.send(disconnect(v))
    pub.close()


def scenario_inbound(addr, log, v, tag):
    """A 5.0 publisher exceeds the server's Receive Maximum with QoS 2 PUBLISHes that it
    never releases, then with QoS 1."""
    pub = Client(addr, v)
    pub.send(connect(f"diff-in-{tag}", v))
    got = pub.read(0.3, until=lambda p: True)
    log("CONNACK", got)
    for i in range(22):
        pub.send(publish("diff/in", f"q2-{i}", v, qos=2, pid=i + 1))
    log("22 QoS 2 PUBLISHes, no PUBREL", pub.read(0.5))
    if not pub.closed:
        for i in range(22):
            pub.send(ack("PUBREL", i + 1))
        log("PUBREL all 22", pub.read(0.5))
    if not pub.closed:
        pub.send(disconnect(v))
    pub.close()


def scenario_sys(addr, log, v, tag, qos):
    """$SYS/# right after connect, then what one update interval brings."""
    sub = Client(addr, v)
    sub.send(connect(f"diff-sys-{tag}", v))
    sub.read(0.3, until=lambda p: True)
    sub.send(subscribe(1, [("$SYS/#", qos)], v))
    log(f"SUBSCRIBE $SYS/# q{qos}: SUBACK and retained", sub.read(0.3, limit=0.8, auto_ack=True))
    log("the next 2.5 s", sub.read(2.5, limit=2.5, auto_ack=True))
    sub.send(disconnect(v))
    sub.close()


def scenario_connack(addr, log, v, tag):
    """CONNACK for a fresh session, an assigned id, and a resumed session."""
    cid = f"diff-ca-{tag}"
    c = Client(addr, v)
    c.send(connect(cid, v, clean=True))  # no session left from an earlier run
    c.read(0.3, until=lambda p: True)
    c.send(disconnect(v))
    c.close()
    c = Client(addr, v)
    c.send(connect(cid, v, clean=False, props=session_props(v)))
    log("fresh persistent session", c.read(0.3, until=lambda p: True))
    c.send(disconnect(v))
    c.close()
    time.sleep(0.2)
    c = Client(addr, v)
    c.send(connect(cid, v, clean=False, props=session_props(v)))
    log("resumed session", c.read(0.3, until=lambda p: True))
    c.send(disconnect(v, props=[(0x11, 0)] if v == V5 else []))
    c.close()
    c = Client(addr, v)
    c.send(connect(cid, v, clean=True))
    c.read(0.3, until=lambda p: True)
    c.send(disconnect(v))
    c.close()
    c = Client(addr, v)
    c.send(connect("", v, clean=True))
    log("empty client id, clean", c.read(0.3, until=lambda p: True))
    c.send(disconnect(v))
    c.close()


SCENARIOS = {
    "connack-v3": lambda a, log: scenario_connack(a, log, V3, "c3"),
    "connack-v5": lambda a, log: scenario_connack(a, log, V5, "c5"),
    "resume-v3": lambda a, log: scenario_resume(a, log, V3, "r3"),
    "resume-v5": lambda a, log: scenario_resume(a, log, V5, "r5"),
    "window-v3": lambda a, log: scenario_window(a, log, V3, "w3", 0, 24),
    "window-v5": lambda a, log: scenario_window(a, log, V5, "w5", 2, 10),
    "inbound-v5": lambda a, log: scenario_inbound(a, log, V5, "i5"),
    "sys-v3": lambda a, log: scenario_sys(a, log, V3, "s3", 0),
    "sys-v5": lambda a, log: scenario_sys(a, log, V5, "s5", 1),
    "sys-v5-q2": lambda a, log: scenario_sys(a, log, V5, "s52", 2),
}

MASKS = [
    # Deliberate: polymq advertises its 16 MiB packet limit (DESIGN.md), mosquitto none.
    (re.compile(r"\('MaxPacket', \d+\), "), ""),
    (re.compile(r"'auto-[0-9A-F-]{36}'"), "'auto-<id>'"),
    (re.compile(r"('\$SYS/[^']*') '[^']*'"), r"\1 <value>"),
    (re.compile(r"\('Expiry', \d+\)"), "('Expiry', <n>)"),
]


def mask(text):
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def run(addr, scenario):
    steps = []
    SCENARIOS[scenario](addr, lambda step, packets: steps.append((step, packets)))
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="reference broker, host:port (mosquitto)")
    ap.add_argument("--b", required=True, help="broker under test, host:port (polymq)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--no-mask", dest="mask", action="store_false")
    ap.add_argument("--sort-sys", action="store_true",
                    help="compare $SYS steps as sorted sets of topics")
    args = ap.parse_args()
    differing = 0
    for scenario in args.scenario or list(SCENARIOS):
        print(f"=== {scenario}")
        a, b = run(args.a, scenario), run(args.b, scenario)
        for (step, pa), (_, pb) in zip(a, b):
            ta = [p[2] for p in pa]
            tb = [p[2] for p in pb]
            ma = [mask(t) for t in ta] if args.mask else ta
            mb = [mask(t) for t in tb] if args.mask else tb
            if args.sort_sys and scenario.startswith("sys"):
                ma, mb = sorted(set(ma)), sorted(set(mb))
            same = ma == mb
            differing += not same
            print(f"--- {step}: {'same' if same else 'DIFFERENT'}")
            if same:
                for t in ta:
                    print(f"    {t}")
                continue
            for i in range(max(len(ta), len(tb))):
                left = ta[i] if i < len(ta) else "-"
                right = tb[i] if i < len(tb) else "-"
                mark = " " if i < len(ma) and i < len(mb) and ma[i] == mb[i] else "!"
                print(f"  {mark} A {left}")
                if mark == "!":
                    print(f"  {mark} B {right}")
    print(f"=== {differing} step(s) differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
