"""End to end: idle worker connections cannot exhaust the API process
(issue 14). A connection with no call in progress for api.idle_timeout is
closed, a long poll never is; and a worker that opens a new connection for
every request and never closes one (Go's client, when it leaves response
bodies unclosed) is served without end under a 1024-descriptor limit: near
api.max_connections, fitted to that limit, the longest-idle connections are
closed to make room. The idle rules alone, on a fake clock, are in
tests/api/test_idle_workers.py."""
from __future__ import annotations

import re
import resource
import time

from conftest import RawClient

PULL = b"GET /api/v1/request HTTP/1.1\r\nHost: api\r\n\r\n"


def post(ident: str, body: bytes) -> bytes:
    import base64
    import json
    payload = json.dumps({"identifier": ident, "code": 200,
                          "headers": {"Content-Type": "text/plain"},
                          "body": base64.b64encode(body).decode()}).encode()
    return (b"POST /api/v1/response HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)) + payload


def test_idle_connection_closed_and_long_poll_kept(start_server):
    s = start_server(acceptors=1, api_poll_timeout=2, api_idle_timeout=0.5)
    used = s.raw_api()
    used.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert used.read_response().status == 404
    fresh = s.raw_api()                 # never sends anything
    polling = s.raw_api()
    t0 = time.monotonic()
    polling.send(PULL)
    used.assert_closed()
    fresh.assert_closed()
    closed_after = time.monotonic() - t0
    assert 0.3 < closed_after < 2.0, closed_after
    # The long poll (2 s, four idle timeouts) runs to its end, answered.
    r = polling.read_response()
    assert r.status == 404 and r.json() == {"error": "There are no requests pending"}
    assert time.monotonic() - t0 >= 1.8
    # Idle again after its call: closed in its turn.
    polling.assert_closed()


def _nofile(pid: int) -> tuple[int, int]:
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit for %d" % pid)


def test_a_new_connection_per_request_never_closed_under_1024_descriptors(start_server):
    """10,000 requests, each pulled and answered on a new API connection
    that the worker never closes: 10,000 connections through an API process
    that may hold 1024 descriptors, none refused, every client answered."""
    total = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= total + 200, "the test itself keeps %d sockets open" % total
    if soft < total + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s = start_server("--log-level", "debug", acceptors=1, nofile=1024, api_poll_timeout=5)
    api_pid = s.pids("API process")[-1]
    assert _nofile(api_pid) == (1024, 1024)
    client = s.raw()
    kept: list[RawClient] = []
    t0 = time.monotonic()
    try:
        for n in range(total):
            body = b"answer %d" % n
            client.send(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            worker = RawClient(s.api_host, s.api_port, 20)
            kept.append(worker)
            worker.send(PULL)
            job = worker.read_response()
            assert job.status == 200, (n, job)
            ident = job.json()["identifier"]
            worker.send(post(ident, body))
            assert worker.read_response().status == 200, n
            answer = client.read_response()
            assert (answer.status, answer.body) == (200, body), n
        elapsed = time.monotonic() - t0
        closed = sum(1 for w in kept[:total - 2000] if w.closed_by_peer())
    finally:
        for w in kept:
            w.close()
    # The API process made room by closing the oldest idle connections,
    # and never stopped accepting (no EMFILE, no pause for want of room).
    assert closed == total - 2000, closed
    log = "\n".join(s.log)
    assert not re.search(r"Too many open files|none idle|pausing accepts", log), log[-3000:]
    assert "idle worker connections to make room" in log
    assert re.search(r"the open-file limit allows \d+ worker connections", log)
    assert _nofile(api_pid) == (1024, 1024)
    print("%d requests, one API connection each, in %.1f s" % (total, elapsed))
