#!/usr/bin/env python3
"""The libzmq reference for the ZMTP side-by-side runs: the stock devices built on zmq.proxy.

    zmq_proxy.py forwarder FRONT BACK   XSUB on FRONT (publishers), XPUB on BACK (subscribers)
    zmq_proxy.py streamer  FRONT BACK   PULL on FRONT (pushers),    PUSH on BACK (workers)
    zmq_proxy.py queue     FRONT BACK   ROUTER on FRONT (requesters), DEALER on BACK (workers)

Each device runs in its own process, binds 127.0.0.1 only, and queues without limit (high-water
marks 0), as the load runner's own sockets do, so a run measures forwarding, not drops. It runs
until it is terminated.
"""

import sys

import zmq

DEVICES = {
    "forwarder": (zmq.XSUB, zmq.XPUB),
    "streamer": (zmq.PULL, zmq.PUSH),
    "queue": (zmq.ROUTER, zmq.DEALER),
}


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in DEVICES:
        print(__doc__, file=sys.stderr)
        return 2
    front_type, back_type = DEVICES[sys.argv[1]]
    context = zmq.Context()
    sockets = []
    for kind, port in ((front_type, sys.argv[2]), (back_type, sys.argv[3])):
        socket = context.socket(kind)
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(f"tcp://127.0.0.1:{int(port)}")
        sockets.append(socket)
    zmq.proxy(*sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
