"""In-process timing of an acceptor's whole per-request path: 32 keep-alive
clients on loopback each send a request; the acceptor reads, parses and
queues them in its shared-memory ring (one event each, as its loop would
call it); a stand-in API process takes the records and answers them all in
one read of frames; the acceptor writes the answers. Only the acceptor's
calls are timed (its recv and sendmsg included), per request, best of 5.

    PYTHONPATH=src python bench/acceptor_path.py [--rounds 400] [--profile]

Steadier than an end-to-end run on a shared machine: no other process is
scheduled in between, so a change to the hot path shows as microseconds.
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import tempfile
import time

import inprocess  # bench/, next to this script

from prack import config
from prack.acceptor.process import Acceptor
from prack.ipc import frames, slots
from prack.ipc.ring import Segment

CLIENTS = 32
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
ANSWER_BLOCK = b"Content-Type: text/plain\r\n"
ANSWER_BODY = b"Hello, World!"


class Rig:
    def __init__(self, work: str):
        self.seg = Segment.create(1, 256, 1 << 22)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        api_path = os.path.join(work, "api.sock")
        self.api_listener = socket.socket(socket.AF_UNIX)
        self.api_listener.bind(api_path)
        self.api_listener.listen(1)
        self.status_r, self.status_w = os.pipe()
        self.acc = Acceptor(config.load(None, env={}), 0, 1, self.listener, self.seg,
                            api_path, self.status_w)
        self.acc._connect_api()
        self.api, _ = self.api_listener.accept()
        self.api.setblocking(False)
        self.clients = []
        for i in range(CLIENTS):
            c = socket.create_connection(self.listener.getsockname())
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.clients.append(c)
            while len(self.acc.conns) < i + 1:
                self.acc._on_accept(selectors.EVENT_READ)
        self.conns = list(self.acc.conns.values())
        self.ring = self.seg.ring(0)

    def round(self) -> float:
        """One request per client; seconds spent in the acceptor."""
        acc, clock = self.acc, time.perf_counter
        for c in self.clients:
            c.send(REQUEST)
        t0 = clock()
        for conn in self.conns:
            acc._on_conn(conn, selectors.EVENT_READ)
        spent = clock() - t0
        answers = []
        unpack = slots.RECORD.unpack_from
        while True:
            view = self.ring.peek()
            if view is None:
                break
            _, _, slot, key = unpack(view)[:4]
            view.release()
            self.ring.release()
            answers += frames.response_frame(slot, key, 200, 0, ANSWER_BLOCK, ANSWER_BODY)
        try:
            while self.api.recv(65536):     # HELLO and WAKE frames
                pass
        except BlockingIOError:
            pass
        self.api.sendall(b"".join(answers))
        t0 = clock()
        acc._on_api(selectors.EVENT_READ)
        spent += clock() - t0
        for c in self.clients:
            if not c.recv(65536).endswith(ANSWER_BODY):
                raise RuntimeError("a client did not get its answer")
        return spent

    def close(self) -> None:
        for conn in list(self.acc.conns.values()):
            self.acc.close(conn)
        for s in self.clients + [self.api, self.api_listener, self.listener]:
            s.close()
        if self.acc.api is not None:
            self.acc.api.close()
        self.acc.sel.close()
        self.seg.close()
        os.close(self.status_r)
        os.close(self.status_w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--profile", action="store_true", help="cProfile one pass (slower)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rig = Rig(work)
        try:
            results = inprocess.passes(rig.round, args.rounds, CLIENTS, args.profile)
        finally:
            rig.close()
    print(inprocess.report("acceptor, per request", results))


if __name__ == "__main__":
    main()
