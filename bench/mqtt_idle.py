#!/usr/bin/env python3
"""Memory per idle MQTT connection: open N MQTT 3.1.1 connections (CONNECT, wait for
CONNACK), then report the broker's resident memory growth per connection.

    bench/mqtt_idle.py --pid <broker pid> --addr 127.0.0.1:1883 --connections 10000

Prints one JSON line. Talks to the given loopback address only; every wait is bounded.
The caller must allow enough open files (ulimit -n) for the connections on both sides.
"""

import argparse
import json
import resource
import selectors
import socket
import struct
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_packet(client_id):
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", 600)  # clean session, 600 s keep alive
    payload = struct.pack(">H", len(cid)) + cid
    body = variable + payload
    return bytes([0x10, len(body)]) + body


def open_connections(addr, count, batch, deadline):
    host, port = addr.rsplit(":", 1)
    sockets = []
    sel = selectors.DefaultSelector()
    pending = 0
    for i in range(count):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(connect_packet(f"idle-{i}"))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        sockets.append(s)
        pending += 1
        if pending >= batch or i == count - 1:
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError("CONNACKs did not arrive in time")
                for key, _ in sel.select(timeout=1):
                    ack = key.fileobj.recv(4)
                    if ack[:2] != b"\x20\x02" or ack[3:4] != b"\x00":
                        raise RuntimeError(f"unexpected CONNACK {ack!r}")
                    sel.unregister(key.fileobj)
                    pending -= 1
    return sockets


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--target", default="broker")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    before = rss_kib(args.pid)
    deadline = time.monotonic() + 120
    sockets = open_connections(args.addr, args.connections, args.batch, deadline)
    time.sleep(1)  # let the broker settle its buffers after the burst
    after = rss_kib(args.pid)
    print(json.dumps({
        "target": args.target,
        "scenario": "mqtt_idle_connections",
        "connections": len(sockets),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": round((after - before) * 1024 / len(sockets)),
    }))
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
