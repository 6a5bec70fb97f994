"""End to end: protocol errors, limits and timeouts, over raw sockets.

Every error Prack answers for a broken request closes the connection
(RFC 9112 9.6: after a framing error the next request cannot be found), so
the tests read the status and then expect EOF."""
from __future__ import annotations

import select
import time

import pytest


@pytest.fixture(scope="module")
def srv_settings():
    """`srv`, without workers, is shared by the tests that only need a
    request refused (nothing here may reach a worker)."""
    return {"acceptors": 1}


def bad_request(server, data: bytes, status: int, *, head: bool = False):
    """Send `data`, expect `status` then the connection closed."""
    with server.raw() as c:
        c.send(data)
        r = c.read_response(head=head)
        assert r.status == status, r
        assert r.header("Connection") == "close", r
        c.assert_closed()
    return r


@pytest.mark.parametrize("data", [
    b"GET\r\n\r\n",
    b"GET /\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/x.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",   # TLS on the plain port
], ids=["no-target", "no-version", "extra-token", "bad-method", "double-space",
        "space-in-target", "bad-version", "tls-hello"])
def test_malformed_request_line(srv, data):
    r = bad_request(srv, data, 400)
    assert r.header("Content-Type", "").startswith("text/plain")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n  folded\r\n\r\n",          # obs-fold
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Tab: a\r\n\tfolded\r\n\r\n",           # obs-fold (tab)
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Space : a\r\n\r\n",                    # space before colon
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Tab\t: a\r\n\r\n",                     # tab before colon
    b"GET / HTTP/1.1\nHost: x\n\n",                                         # bare LF
    b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",                           # bare LF in headers
    b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",                           # bare CR
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",                  # NUL in a value
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",                    # space in a name
    b"GET / HTTP/1.1\r\nHost: x\r\n: no name\r\n\r\n",                      # empty name
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
], ids=["obs-fold", "obs-fold-tab", "space-before-colon", "tab-before-colon", "bare-lf",
        "bare-lf-in-headers", "bare-cr", "nul-in-value", "space-in-name", "empty-name",
        "no-colon"])
def test_malformed_header_section(srv, data):
    bad_request(srv, data, 400)


def test_header_section_too_large(srv):
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 900) for i in range(40))   # ~37 kB
    bad_request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n", 431)


def test_header_section_too_large_without_end(srv):
    """Never-ending headers are refused once over the limit, not buffered."""
    with srv.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        r = None
        for i in range(100):
            try:
                c.send(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000))
            except (BrokenPipeError, ConnectionResetError):
                break
        r = c.read_response()
        assert r.status == 431


def test_too_many_headers(start_server, worker_factory):
    s = start_server(acceptors=1, limits_max_headers=5, api_poll_timeout=1)
    worker_factory(s.api)
    with s.raw() as c:   # 5 fields are allowed
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
        assert c.read_response().status == 200
    bad_request(s, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
                431)


def test_uri_too_long(srv):
    bad_request(srv, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_uri_too_long_without_end(srv):
    with srv.raw() as c:
        c.send(b"GET /" + b"a" * 20000)
        assert c.read_response().status == 414
        c.assert_closed()


def test_body_too_large_answered_before_body(start_server):
    s = start_server(acceptors=1, limits_max_body_size="1k")
    with s.raw() as c:
        # Only the head: the 413 must come without the body being sent.
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n")
        r = c.read_response()
        assert r.status == 413
        assert r.header("Connection") == "close"
        c.assert_closed()
    with s.raw() as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert r.status == 413, "a 100 Continue must not be sent for a body we refuse"
        c.assert_closed()


def test_chunked_body_too_large(start_server):
    s = start_server(acceptors=1, limits_max_body_size="1k")
    with s.raw() as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"200\r\n" + b"a" * 512 + b"\r\n")
        c.send(b"200\r\n" + b"b" * 512 + b"\r\n")
        c.send(b"1\r\nc\r\n")
        r = c.read_response()
        assert r.status == 413
        c.assert_closed()


@pytest.mark.parametrize("te,status", [
    (b"gzip, chunked", 501),
    (b"gzip", 400),
    (b"chunked, gzip", 400),
    (b"chunked, chunked", 400),
    (b"identity", 400),
])
def test_transfer_encoding_codings(srv, te, status):
    bad_request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
                b"0\r\n\r\n", status)


def test_content_length_and_transfer_encoding(srv):
    # The classic smuggling shape: whatever follows must never be a request.
    bad_request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
                400)


@pytest.mark.parametrize("lengths", [
    [b"5", b"6"], [b"5, 6"], [b"+5"], [b"5 5"], [b"0x5"], [b"-1"], [b"5.0"], [b""],
    [b"99999999999999999999"],
], ids=["two-different", "list-different", "plus", "inner-space", "hex", "negative",
        "decimal", "empty", "huge"])
def test_bad_content_length(srv, lengths):
    fields = b"".join(b"Content-Length: " + v + b"\r\n" for v in lengths)
    bad_request(srv, b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\nhello", 400)


def test_http10_with_transfer_encoding(srv):
    bad_request(srv, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0"])
def test_unsupported_version(srv, version):
    bad_request(srv, b"GET / " + version + b"\r\nHost: x\r\n\r\n", 505)


def test_missing_host(srv):
    bad_request(srv, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400)


def test_two_host_headers(srv):
    bad_request(srv, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"a@b", b"a\"b"])
def test_invalid_host(srv, host):
    bad_request(srv, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400)


def test_unsupported_expectation(srv):
    bad_request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
                417)


def test_connect_and_target_forms(srv):
    bad_request(srv, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501)
    bad_request(srv, b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    bad_request(srv, b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    bad_request(srv, b"GET http://user@host/ HTTP/1.1\r\nHost: x\r\n\r\n", 400)


def test_error_response_to_head(srv):
    with srv.raw() as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 400
        assert r.header("Connection") == "close"
        # Prack's error page may follow (the request failed to parse, so it is
        # not treated as a HEAD); then the connection must end.
        while not c.closed_by_peer():
            c.buf = b""


def test_request_after_error_is_never_processed(start_server, worker_factory, recorder):
    s = start_server(acceptors=1, api_poll_timeout=1)
    app = recorder()
    worker_factory(s.api, app)
    with s.raw() as c:
        c.send(b"GET /bad HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n"
               b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        c.assert_closed()
        assert c.buf == b"", "more than the error response came back: %r" % c.buf
    # A later request on the same (single) acceptor and ring: the worker gets
    # it, and nothing before it.
    with s.raw() as c:
        c.send(b"GET /marker HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
    assert app.paths == ["/marker"]


def test_good_then_bad_pipelined(start_server, worker_factory, recorder):
    s = start_server(acceptors=1, api_poll_timeout=1)
    app = recorder()
    worker_factory(s.api, app)
    with s.raw() as c:
        c.send(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /bad HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"
               b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
        assert c.read_response().status == 400
        c.assert_closed()
    with s.raw() as c:
        c.send(b"GET /marker HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
    assert app.paths == ["/good", "/marker"]


# -- the queue and timeouts ------------------------------------------------------------

def test_ring_full_gives_503(start_server):
    # The smallest ring these limits allow: 2 * (1k + 2 * 1k) + 64k = 70k.
    s = start_server(acceptors=1, limits_max_body_size="1k", limits_max_header_size="1k",
                     limits_ring_size=2 * (1024 + 2 * 1024) + 65536,
                     timeouts_queue_timeout=1)
    n = 100     # each record is > 1 kB (the body alone), so at most ~70 fit
    clients = [s.raw(timeout=15) for _ in range(n)]
    for i, c in enumerate(clients):
        c.send(b"POST /fill/%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" % i
               + b"x" * 1000)
    statuses = []
    for c in clients:
        r = c.read_response()
        statuses.append(r.status)
        if r.status == 503:
            assert r.header("Retry-After") == "1"
            assert r.header("Connection") is None      # not a protocol error: kept
    # Queued ones wait for a worker (none) and time out; the rest are refused.
    assert set(statuses) <= {503, 504}, statuses
    assert statuses.count(503) >= 20, statuses
    assert statuses.count(504) >= 20, statuses
    # First come, first queued: no request is refused before one is queued.
    assert statuses[0] == 504 and statuses[-1] == 503
    for c in clients:
        c.close()


def test_queue_timeout_without_worker(start_server):
    s = start_server(acceptors=1, timeouts_queue_timeout=0.5)
    with s.raw() as c:
        t0 = time.monotonic()
        c.send(b"GET /q HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        waited = time.monotonic() - t0
        assert r.status == 504
        assert 0.4 <= waited < 5, waited
        # A timeout is not a protocol error: the connection stays usable.
        assert r.header("Connection") is None
        c.send(b"GET /q2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 504
    s.wait_log(r"no worker took GET /q within")


def test_response_timeout(start_server, worker_factory, recorder):
    s = start_server(acceptors=1, timeouts_response_timeout=0.5, api_poll_timeout=1)
    app = recorder(lambda env, body: None if env["PATH_INFO"] == "/silent" else
                   (200, {}, b"late"))
    worker_factory(s.api, app)
    with s.raw() as c:
        t0 = time.monotonic()
        c.send(b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 504
        assert 0.4 <= time.monotonic() - t0 < 5
        c.send(b"GET /answered HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"late")
    assert app.paths == ["/silent", "/answered"]
    s.wait_log(r"no response to GET /silent within")


def test_slow_header_sender_gets_408(start_server):
    s = start_server(acceptors=1, timeouts_header_timeout=0.5)
    with s.raw() as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHo")
        r = c.read_response()
        assert r.status == 408
        assert 0.4 <= time.monotonic() - t0 < 5
        c.assert_closed()


def test_header_timeout_not_reset_by_trickle(start_server):
    """A byte every 0.1 s does not buy more time: the deadline is for the
    whole head, not between reads."""
    s = start_server(acceptors=1, timeouts_header_timeout=1)
    trickle = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"x" * 300
    with s.raw() as c:
        t0 = time.monotonic()
        for byte in trickle:
            c.send(bytes([byte]))
            ready, _, _ = select.select([c.sock], [], [], 0.1)   # client pacing
            if ready:
                break
        else:
            pytest.fail("no answer while trickling for %.1fs" % (time.monotonic() - t0))
        assert c.read_response().status == 408
        assert time.monotonic() - t0 < 5
        c.assert_closed()


def test_slow_body_gets_408(start_server):
    s = start_server(acceptors=1, timeouts_body_timeout=0.5)
    with s.raw() as c:
        t0 = time.monotonic()
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        r = c.read_response()
        assert r.status == 408
        assert 0.4 <= time.monotonic() - t0 < 5
        c.assert_closed()


def test_body_timeout_not_header_timeout_after_the_head(start_server, worker_factory):
    """Once the head is in, body_timeout (long here) applies, not header_timeout."""
    s = start_server(acceptors=1, timeouts_header_timeout=0.5, timeouts_body_timeout=10,
                     api_poll_timeout=1)
    worker_factory(s.api)
    with s.raw() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        ready, _, _ = select.select([c.sock], [], [], 1.5)    # pause past header_timeout
        assert not ready, "cut off: %r" % c.sock.recv(300)
        c.send(b"67890")
        r = c.read_response()
        assert r.status == 200


def test_body_timeout_is_between_reads(start_server, worker_factory):
    """A body that keeps coming (a byte every 0.05 s, 3 s in all, with a
    body_timeout of 2 s) is not cut off."""
    s = start_server(acceptors=1, timeouts_body_timeout=2, api_poll_timeout=1)
    worker_factory(s.api)
    body = b"x" * 60
    with s.raw() as c:
        c.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        t0 = time.monotonic()
        for byte in body:
            ready, _, _ = select.select([c.sock], [], [], 0.05)    # client pacing
            assert not ready, "answered before the body was complete: %r" % c.sock.recv(200)
            c.send(bytes([byte]))
        assert time.monotonic() - t0 > 2.5      # longer than body_timeout in total
        assert c.read_response().status == 200


def test_idle_keepalive_closed(start_server, worker_factory):
    s = start_server(acceptors=1, timeouts_keepalive_timeout=1, api_poll_timeout=1)
    worker_factory(s.api)
    with s.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()   # a little after the server's clock started
        c.assert_closed()       # silently: no 408 for an idle connection
        assert 0.5 <= time.monotonic() - t0 < 6
    with s.raw() as c:          # a connection that never sends anything
        t0 = time.monotonic()
        c.assert_closed()
        assert 0.4 <= time.monotonic() - t0 < 5


def test_max_connections(start_server, worker_factory):
    """Over server.max_connections (every acceptor full) a connection waits
    in the listen backlog, is not refused, and is answered once a slot frees."""
    s = start_server(acceptors=1, server_max_connections=2, api_poll_timeout=1)
    worker_factory(s.api)
    held = [s.raw(), s.raw()]
    for c in held:             # both accepted and served: their slots are taken
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
    s.wait_log(r"acceptor 0: all 2 connection slots in use")
    with s.raw() as waiting:
        waiting.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in held:         # the held ones still work; the waiting one is not answered
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().status == 200
        readable, _, _ = select.select([waiting.sock], [], [], 0)
        assert not readable, "a connection over the cap was answered or closed"
        held[0].close()        # a slot frees: the waiting connection is taken
        assert waiting.read_response().status == 200
    held[1].send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held[1].read_response().status == 200
    held[1].close()


def test_out_of_file_descriptors(start_server, worker_factory):
    """At the descriptor limit the acceptor pauses accepting (one warning per
    pause) instead of spinning on accept(); it recovers once some close."""
    s = start_server(acceptors=1, api_poll_timeout=1, nofile=40)
    worker_factory(s.api)
    t0 = time.monotonic()
    clients = [s.raw() for _ in range(60)]          # more than 40 descriptors allow
    s.wait_log(r"accept: Too many open files")
    for c in clients[:5]:                          # the first ones were accepted
        for _ in range(10):
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().status == 200
    for c in clients:
        c.close()
    with s.raw() as c:                             # accepted after the pause
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
    elapsed = time.monotonic() - t0
    warnings = sum("Too many open files" in line for line in s.log)
    assert warnings <= 3 + 2 * elapsed, "%d warnings in %.1fs" % (warnings, elapsed)
