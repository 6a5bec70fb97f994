"""Slow and hostile clients against the real server: slowloris-style drips,
slow bodies, and pipelining floods. Limits are the ones in docs/security.md."""
from __future__ import annotations

import resource
import select
import socket
import statistics
import threading
import time

import pytest

from conftest import Recorder, rss_kib


def _want_descriptors(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.fail("this test needs %d open files; the hard limit is %d" % (n, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def test_drip_connections_do_not_starve_normal_clients(start_server, worker_factory):
    """2,000 connections each send one byte of a request head per second while
    a normal client makes 1,000 requests: every one succeeds, none waits long,
    and every drip connection is still held (not refused, not timed out)."""
    drips, requests, clients = 2000, 1000, 4
    _want_descriptors(drips + 200)
    s = start_server(acceptors=2, server_max_connections=drips + 100, server_backlog=4096,
                     timeouts_header_timeout=120, api_poll_timeout=1)
    for _ in range(2):
        worker_factory(s.api)
    head = b"GET /drip HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"d" * 200
    socks = []
    try:
        for _ in range(drips):
            socks.append(socket.create_connection((s.host, s.port), timeout=10))
        stop = threading.Event()
        rounds = [0]

        def drip():
            # Client pacing: one byte per connection, once a second.
            while True:
                i = rounds[0]
                for sock in socks:
                    sock.send(head[i:i + 1])
                rounds[0] += 1
                if stop.wait(1.0):
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client(n: int):
            c = s.client(timeout=10)
            for i in range(n):
                t0 = time.monotonic()
                try:
                    c.request("GET", "/normal/%d" % i)
                    r = c.getresponse()
                    r.read()
                    ok = r.status == 200
                except OSError as exc:
                    ok = False
                    r = exc
                dt = time.monotonic() - t0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        failures.append(repr(r))

        threads = [threading.Thread(target=client, args=(requests // clients,))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        # At least three drip rounds overlapped the normal traffic.
        while rounds[0] < 3:
            stop.wait(0.1)
        stop.set()
        dripper.join(10)
        assert not failures, failures[:5]
        assert len(latencies) == requests
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print("normal client under %d drips: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (drips, p50 * 1e3, p99 * 1e3, latencies[-1] * 1e3))
        # A drip round is one second: a starved client would wait rounds.
        assert latencies[-1] < 2.0
        # Every drip connection is still open and has been told nothing.
        for sock in socks:
            sock.setblocking(False)
            try:
                got = sock.recv(1024)
            except BlockingIOError:
                continue
            pytest.fail("a drip connection got %r" % got[:80])
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.slow
def test_body_below_min_rate_gets_408_and_fast_enough_is_served(start_server, worker_factory):
    """min_body_rate: after a 5 s grace, a body arriving at 100 bytes/s is cut
    off with 408 (body_timeout alone would let it run for days), while one at
    4 kB/s on the same server is served."""
    s = start_server(acceptors=1, timeouts_min_body_rate="1k", api_poll_timeout=1)
    app = Recorder()
    worker_factory(s.api, app)
    slow, fast = s.raw(timeout=20), s.raw(timeout=20)
    total = 40_000
    for c, path in ((slow, b"/slow"), (fast, b"/fast")):
        c.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, total))
    sent = {slow: 0, fast: 0}
    rate = {slow: 100, fast: 4000}
    t0 = time.monotonic()
    answered = {}
    while len(answered) < 2 and time.monotonic() - t0 < 15:
        for c in (slow, fast):
            if c in answered:
                continue
            due = min(total, int(rate[c] * (time.monotonic() - t0)) + 1)
            if due > sent[c]:
                try:
                    c.send(b"b" * (due - sent[c]))
                except OSError:
                    pass
                sent[c] = due
        ready, _, _ = select.select([c.sock for c in (slow, fast) if c not in answered],
                                    [], [], 0.05)       # client pacing
        for c in (slow, fast):
            if c.sock in ready:
                answered[c] = (c.read_response(), time.monotonic() - t0)
    assert len(answered) == 2, "no answer within 15 s: %r" % answered
    r_slow, t_slow = answered[slow]
    r_fast, t_fast = answered[fast]
    assert r_slow.status == 408, r_slow
    assert 5.0 <= t_slow < 10.0
    slow.assert_closed()
    assert r_fast.status == 200, r_fast
    assert [env["PATH_INFO"] for env, _ in app.seen] == ["/fast"]
    assert app.seen[0][1] == b"b" * total
    slow.close()
    fast.close()


def test_pipelining_flood_is_pushed_back(start_server, worker_factory):
    """A client that pipelines tens of megabytes of requests while the first
    waits for a worker: the acceptor stops reading (limits.max_pipelined and
    max_header_size), so TCP pushes back instead of the server buffering it."""
    # The flooder's queued requests are still in the acceptor when the test
    # ends and its worker is gone: a short graceful_timeout bounds the stop.
    s = start_server("--log-level", "debug", acceptors=1, limits_max_pipelined=4,
                     timeouts_queue_timeout=30, timeouts_graceful_timeout=3)
    acceptor = s.pids("acceptor")[0]
    before = rss_kib(acceptor)
    one = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"
    flood = one * (48 * 1024 * 1024 // len(one))
    with s.raw(timeout=20) as c:
        c.sock.setblocking(False)
        sent = 0
        while sent < len(flood):
            _, writable, _ = select.select([], [c.sock], [], 1.0)
            if not writable:
                break       # pushed back for a whole second
            try:
                sent += c.sock.send(flood[sent:sent + 65536])
            except BlockingIOError:
                continue
        # What was sent sits in the two kernels' socket buffers, not in Prack.
        assert sent < len(flood), "the server read all %d bytes" % sent
        grown = rss_kib(acceptor) - before
        print("flood: %d bytes accepted by the kernels, acceptor RSS grew %d kB" % (sent, grown))
        assert grown < 8 * 1024
    # The flooder has gone; the server serves the next client.
    worker_factory(s.api)
    with s.raw() as c:
        c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200


def test_huge_chunk_size_refused_before_its_data(start_server):
    """A chunk declared larger than max_body_size gets 413 as soon as its
    size line is read; the client need not upload the limit's worth first."""
    s = start_server(acceptors=1, limits_max_body_size="64k")
    with s.raw() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"7fffffffffffffff\r\nabc")
        r = c.read_response()
        assert r.status == 413
        c.assert_closed()
    with s.raw() as c:       # the limit counts earlier chunks too
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"8000\r\n" + b"a" * 0x8000 + b"\r\n8001\r\n")
        assert c.read_response().status == 413
