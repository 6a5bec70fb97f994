"""In-process timing of the API process's per-request path on API v2: a
stand-in acceptor queues 32 requests in its ring and wakes the API
process; a stand-in worker holds a post-and-pull call (msgpack), gets the
batch, and posts the 32 answers with the next pull; the API process routes
them back to the acceptor as frames. Only the API process's calls are
timed (its recv and sendmsg included), per request, best of 5.

    PYTHONPATH=src python bench/api_path.py [--rounds 300] [--batch 32] [--profile]
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import tempfile
import time

import inprocess  # bench/, next to this script
import msgspec

from prack import config
from prack.api.process import ApiServer
from prack.ipc import frames, slots
from prack.ipc.ring import Segment
from prack.protocol import messages

ENV = msgspec.msgpack.encode({
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "rack.url_scheme": "http",
    "HTTP_HOST": "127.0.0.1:8080"})
HEADERS = [["Content-Type", "text/plain"]]
MSGPACK = "application/msgpack"


class Rig:
    def __init__(self, work: str, batch: int):
        self.batch = batch
        self.seg = Segment.create(1, 1024, 1 << 22)
        self.ring = self.seg.ring(0)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.setblocking(False)
        path = os.path.join(work, "link.sock")
        self.link_listener = socket.socket(socket.AF_UNIX)
        self.link_listener.bind(path)
        self.link_listener.listen(1)
        self.link_listener.setblocking(False)
        self.status_r, self.status_w = os.pipe()
        self.api = ApiServer(config.load(None, env={}), 1, self.listener, self.link_listener,
                             self.seg, self.status_w)
        # The acceptor's end of the link, introduced by its HELLO.
        self.acceptor = socket.socket(socket.AF_UNIX)
        self.acceptor.connect(path)
        self.api._on_accept_link(selectors.EVENT_READ)
        self.link = next(iter(self.api.sel.get_map().values())).data
        self.acceptor.sendall(frames.FRAME_LEN.pack(frames.HELLO.size) +
                              frames.HELLO.pack(frames.F_HELLO, 0, 1, os.getpid()))
        self.api._on_link(self.link, selectors.EVENT_READ)
        self.acceptor.setblocking(False)
        # The worker's keep-alive connection.
        self.worker = socket.create_connection(self.listener.getsockname())
        self.worker.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.api._on_accept_worker(selectors.EVENT_READ)
        self.wconn = next(iter(self.api.workers.values()))
        self.key = 1
        self.decode = msgspec.msgpack.Decoder(messages.ResultsAndRequests).decode
        self.query = "/api/v2/responses?max=%d&wait=5" % batch
        self.answers = []
        self.spent = 0.0
        self._send_call()           # the first call: no answers yet, it waits

    def _send_call(self) -> None:
        body = msgspec.msgpack.encode({"responses": self.answers})
        self.worker.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                            b"Accept: %s\r\nContent-Length: %d\r\n\r\n" % (
                                self.query.encode(), MSGPACK.encode(), MSGPACK.encode(),
                                len(body)) + body)
        t0 = time.perf_counter()
        self.api._on_worker(self.wconn, selectors.EVENT_READ)
        self.spent += time.perf_counter() - t0

    def _read_answer(self) -> bytes:
        data = b""
        while True:
            data += self.worker.recv(1 << 20)
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    return rest[:length]

    def round(self) -> float:
        self.spent = 0.0
        ring = self.ring
        for _ in range(self.batch):     # the acceptor queues a batch
            slot = self.key % self.seg.nslots
            ring.mark(slot, self.key, slots.SLOT_QUEUED)
            ring.push(slots.RECORD.pack(1, 0, slot, self.key, time.time(), len(ENV), 0, 0), ENV)
            self.key += 1
        self.acceptor.send(frames.WAKE_FRAME)
        t0 = time.perf_counter()
        self.api._on_link(self.link, selectors.EVENT_READ)
        self.spent += time.perf_counter() - t0
        got = self.decode(self._read_answer())
        if len(got.requests) != self.batch:
            raise RuntimeError("pulled %d of %d" % (len(got.requests), self.batch))
        self.answers = [{"id": item.id, "status": 200, "headers": HEADERS,
                         "body": b"Hello, World!"} for item in got.requests]
        self._send_call()               # answers, and the next pull waits
        received = b""
        while received.count(b"Hello, World!") < self.batch:
            try:
                received += self.acceptor.recv(1 << 20)
            except BlockingIOError:
                raise RuntimeError("the received did not come") from None
        return self.spent

    def close(self) -> None:
        for s in (self.worker, self.acceptor, self.listener, self.link_listener):
            s.close()
        self.api.sel.close()
        self.seg.close()
        os.close(self.status_r)
        os.close(self.status_w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rig = Rig(work, args.batch)
        try:
            results = inprocess.passes(rig.round, args.rounds, args.batch, args.profile)
        finally:
            rig.close()
    print(inprocess.report("API process, batches of %d, per request" % args.batch, results))


if __name__ == "__main__":
    main()
