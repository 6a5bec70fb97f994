"""A full acceptor leaves new connections to the others (issue 16): with
one acceptor's slots all held, every new request is answered by the other
one, none gets 503. The worker here answers with the acceptor index that
the request's identifier carries, so the test knows who took each one."""
from __future__ import annotations

import base64
import json
import select
import threading
import urllib.request

import pytest

from prack.ipc.slots import parse_identifier

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class AcceptorIndexWorker:
    """A v1 worker whose answer body is the index of the acceptor that holds
    the request."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.api + "/api/v1/request", timeout=30) as r:
                    if r.status != 200:
                        continue
                    job = json.loads(r.read())
                index = parse_identifier(job["identifier"])[1]
                msg = {"identifier": job["identifier"], "code": 200, "headers": {},
                       "body": base64.b64encode(b"%d" % index).decode()}
                req = urllib.request.Request(self.api + "/api/v1/response",
                                             json.dumps(msg).encode(),
                                             {"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=30).read()
            except OSError:
                self.stop.wait(0.05)


@pytest.fixture
def index_worker():
    workers = []

    def make(api):
        workers.append(AcceptorIndexWorker(api))
    yield make
    for w in workers:
        w.stop.set()


def _acceptor_of(client) -> int:
    client.send(GET)
    r = client.read_response()
    assert r.status == 200, r
    return int(r.body)


def test_new_requests_go_to_the_acceptor_with_room(start_server, index_worker):
    slots = 4
    s = start_server(acceptors=2, server_max_connections=slots, api_poll_timeout=1)
    index_worker(s.api)
    held = []
    while len(held) < slots:            # fill acceptor 0 with idle keep-alive connections
        c = s.raw()
        if _acceptor_of(c) == 0:
            held.append(c)
        else:
            c.close()
    s.wait_log(r"acceptor 0: all %d connection slots in use" % slots)
    for _ in range(20):                 # each on a new connection, closed after
        with s.raw() as c:
            assert _acceptor_of(c) == 1
    for c in held:                      # the held ones are still served
        assert _acceptor_of(c) == 0
        c.close()


def test_with_every_acceptor_full_a_connection_waits_for_a_free_slot(start_server,
                                                                     index_worker):
    """The documented behaviour at the cap: the connection waits in the listen
    backlog (no 503, no close) and the first acceptor to free a slot takes it."""
    slots = 2
    s = start_server(acceptors=2, server_max_connections=slots, api_poll_timeout=1)
    index_worker(s.api)
    held = [s.raw() for _ in range(2 * slots)]
    where = [_acceptor_of(c) for c in held]     # all answered: every slot is held
    assert sorted(where) == [0] * slots + [1] * slots
    s.wait_log(r"acceptor 0: all %d connection slots in use" % slots)
    s.wait_log(r"acceptor 1: all %d connection slots in use" % slots)
    with s.raw() as waiting:
        waiting.send(GET)
        for c in held:                  # served while the new one waits
            assert _acceptor_of(c) in (0, 1)
        readable, _, _ = select.select([waiting.sock], [], [], 0)
        assert not readable, "a connection over the cap was answered or closed"
        freed = held.pop(where.index(1))
        freed.close()                   # acceptor 1 frees a slot and takes the waiting one
        r = waiting.read_response()
        assert r.status == 200 and int(r.body) == 1
    for c in held:
        c.close()
