"""End to end: streamed responses, server-sent events and client lifecycle
notices, driven through the worker API by hand against a real server, with
real clients (raw sockets, http.client); and how a stream and those notices
end under faults: an error reported mid-stream, a whole response posted to a
stream, a graceful stop, a killed acceptor or API process, a slow client."""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from conftest import read_chunk, read_head

GET = b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def srv_settings():
    """`srv`: one acceptor, no workers (each test pulls and answers by hand),
    a short SSE keep-alive and a small stream buffer."""
    return {"acceptors": 1, "api_poll_timeout": 5,
            "timeouts_sse_keepalive": 1, "limits_stream_buffer": "16k"}


class Api:
    """Worker API calls over one keep-alive connection (as a worker would)."""

    def __init__(self, server):
        self.conn = server.api_client(timeout=15)

    def call(self, method, path, body=None, ctype="application/json"):
        headers = {}
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        if body is not None:
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        assert r.getheader("Content-Type") == "application/json", (r.status, data)
        return r.status, json.loads(data)

    def pull(self):
        status, batch = self.call("GET", "/api/v2/requests?max=1&wait=5")
        assert status == 200 and len(batch["requests"]) == 1, batch
        return batch["requests"][0]

    def head(self, rid, status=200, headers=None):
        return self.call("POST", "/api/v2/requests/%s/head" % rid,
                         {"status": status, "headers": headers or {}})

    def chunk(self, rid, data):
        return self.call("POST", "/api/v2/requests/%s/body" % rid, data,
                         "application/octet-stream")

    def end(self, rid, body=None):
        return self.call("POST", "/api/v2/requests/%s/end" % rid, body)

    def close(self):
        self.conn.close()


_opened = []


@pytest.fixture(autouse=True)
def _close_clients():
    """Close every client socket and its file object after each test (the
    descriptor stays open while either does, and an open client holds up
    the server's graceful stop)."""
    yield
    while _opened:
        _opened.pop().close()


def hang_up(sock):
    """The client goes away (shutdown first: its file object keeps the
    descriptor open)."""
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def open_client(server, request):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    f = sock.makefile("rb")
    _opened.extend((sock, f))
    return sock, f


def small_window_client(port, rcvbuf):
    """A client with a small receive window (set before connecting, so the
    window is negotiated small)."""
    sock = socket.socket()
    sock.settimeout(30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    _opened.append(sock)
    return sock


def test_chunks_leave_as_they_are_posted(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    assert api.head(item["id"], 200, {"Content-Type": "text/plain", "X-A": "1"}) == \
        (200, {"result": "ok"})
    status, headers = read_head(f)
    assert status.startswith(b"HTTP/1.1 200")
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["x-a"] == "1"
    for i in range(5):
        # Each chunk reaches the client before the next is posted.
        assert api.chunk(item["id"], b"part %d\n" % i) == (200, {"result": "ok"})
        assert read_chunk(f) == (7, b"part %d\n" % i)
    assert api.end(item["id"]) == (200, {"result": "ok"})
    assert read_chunk(f) == (0, b"")      # the last chunk, no trailers
    # The connection is kept alive: the next request is served on it.
    sock.sendall(GET)
    item = api.pull()
    api.call("POST", "/api/v2/responses",
             {"responses": [{"id": item["id"], "status": 200, "body": "aGk="}]})
    status, headers = read_head(f)
    assert status.startswith(b"HTTP/1.1 200") and f.read(2) == b"hi"
    sock.close()
    api.close()


def test_http10_client_gets_a_close_delimited_body(srv):
    api = Api(srv)
    sock, f = open_client(srv, b"GET /old HTTP/1.0\r\n\r\n")
    item = api.pull()
    api.head(item["id"], 200, {"Content-Type": "text/plain"})
    for part in (b"one ", b"two ", b"three"):
        assert api.chunk(item["id"], part)[0] == 200
    assert api.end(item["id"])[0] == 200
    data = f.read()         # until the server closes
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"one two three"
    sock.close()
    api.close()


def test_declared_length_is_passed_through_raw(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    api.head(item["id"], 200, {"Content-Length": "10"})
    api.chunk(item["id"], b"01234")
    api.chunk(item["id"], b"56789")
    api.end(item["id"])
    status, headers = read_head(f)
    assert headers["content-length"] == "10" and "transfer-encoding" not in headers
    assert f.read(10) == b"0123456789"
    sock.close()
    api.close()


def test_head_request_gets_the_head_only(srv):
    api = Api(srv)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.request("HEAD", "/h")
    item = api.pull()
    api.head(item["id"], 200, {"Content-Type": "text/plain"})
    assert api.chunk(item["id"], b"ignored")[0] == 200
    api.end(item["id"])
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    # Still usable afterwards: nothing stray was written.
    c.request("GET", "/after")
    item = api.pull()
    api.call("POST", "/api/v2/responses", {"responses": [{"id": item["id"], "status": 204}]})
    assert c.getresponse().status == 204
    c.close()
    api.close()


def test_trailers_and_abort(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    api.head(item["id"])
    api.chunk(item["id"], b"data")
    assert api.end(item["id"], {"trailers": {"X-Checksum": "abc"}})[0] == 200
    read_head(f)
    assert read_chunk(f) == (4, b"data")
    assert f.readline() == b"0\r\n"
    assert f.readline() == b"X-Checksum: abc\r\n"
    assert f.readline() == b"\r\n"
    sock.close()
    # A worker that fails mid-stream: no last chunk, the connection closes.
    sock, f = open_client(srv, GET)
    item = api.pull()
    api.head(item["id"])
    api.chunk(item["id"], b"half")
    assert api.end(item["id"], {"error": "database went away"})[0] == 200
    read_head(f)
    assert read_chunk(f) == (4, b"half")
    assert f.read() == b""      # closed without the terminating chunk
    sock.close()
    api.close()


def test_calls_out_of_order_and_invalid(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    rid = item["id"]
    status, body = api.chunk(rid, b"x")
    assert status == 409 and "head" in body["error"]
    assert api.end(rid)[0] == 409
    status, body = api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": "x"})
    assert status == 400 and "status" in body["error"]
    # The invalid head answered the client 502: the request is done.
    status, _ = read_head(f)
    assert status.startswith(b"HTTP/1.1 502")
    assert api.head(rid)[0] == 404
    assert api.call("POST", "/api/v2/requests/nothex/head", {"status": 200})[0] == 400
    assert api.call("GET", "/api/v2/requests/%s/state?wait=x" % rid)[0] == 400
    sock.close()
    api.close()


def test_trailer_fields_that_are_not_allowed(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    api.head(item["id"])
    status, body = api.end(item["id"], {"trailers": {"Content-Length": "5"}})
    assert status == 400 and "Content-Length may not be sent as a trailer" in body["error"]
    # The response could not be completed as asked: it ends incomplete.
    read_head(f)
    assert f.read() == b""
    assert api.end(item["id"])[0] == 404
    sock.close()
    api.close()


@pytest.mark.slow
def test_slow_client_holds_back_the_worker(srv):
    """Backpressure: with a client that does not read, the worker's posts
    stop being acknowledged once the acceptor holds stream_buffer (16k here)
    plus the kernel's socket buffers; they resume as the client reads."""
    api = Api(srv)
    sock = small_window_client(srv.port, 4096)
    sock.sendall(GET)
    item = api.pull()
    api.head(item["id"], 200, {"Content-Type": "application/octet-stream"})
    chunk = os.urandom(64 * 1024)
    posted = 0
    blocked = threading.Event()
    done = threading.Event()

    def writer():
        nonlocal posted
        w = Api(srv)
        w.conn.timeout = 60
        for _ in range(200):        # 12.5 MiB in all
            assert w.chunk(item["id"], chunk)[0] == 200
            posted += 1
        assert w.end(item["id"])[0] == 200
        w.close()
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    # Wait until the writer stops making progress (bounded).
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if posted != last:
            last, stable_since = posted, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            blocked.set()
            break
        done.wait(0.05)
    assert blocked.is_set() and not done.is_set(), "the worker was never held back"
    assert posted < 100, "%d chunks acknowledged with a client that reads nothing" % posted
    # Now read everything: the stream completes.
    sock.settimeout(30)
    total = b""
    while not total.endswith(b"\r\n0\r\n\r\n"):
        data = sock.recv(1 << 20)
        assert data, "closed early"
        total += data
    t.join(30)
    assert done.is_set()
    body = total.partition(b"\r\n\r\n")[2]
    # 200 chunks of 64 KiB, each framed as "10000\r\n...\r\n".
    assert body.count(b"10000\r\n") >= 200 and len(body) > 200 * len(chunk)
    sock.close()
    api.close()


def test_client_gone_mid_stream_is_noticed_within_a_second(srv):
    api = Api(srv)
    sock, f = open_client(srv, GET)
    item = api.pull()
    rid = item["id"]
    api.head(rid, 200, {"Content-Type": "text/plain"})
    api.chunk(rid, b"first")
    watcher = Api(srv)
    result = {}

    def watch():
        t0 = time.monotonic()
        result["state"] = watcher.call("GET", "/api/v2/requests/%s/state?wait=5" % rid)
        result["after"] = time.monotonic() - t0

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    status = api.call("GET", "/api/v2/requests/%s/state" % rid)
    assert status == (200, {"state": "open"})
    t0 = time.monotonic()
    hang_up(sock)
    t.join(5)
    assert result["state"] == (200, {"state": "gone"})
    assert time.monotonic() - t0 < 1.0
    status, body = api.chunk(rid, b"more")
    assert status == 410 and body["error"] == "the client has gone"
    assert api.end(rid)[0] == 410
    watcher.close()
    api.close()


def test_state_of_a_taken_request_and_its_disconnect(srv):
    """The cancellation long-poll works for any pulled request, streamed or
    not: the worker learns the client went while it is still working."""
    api = Api(srv)
    sock, _ = open_client(srv, GET)
    item = api.pull()
    assert api.call("GET", "/api/v2/requests/%s/state?wait=0.2" % item["id"]) == \
        (200, {"state": "open"})
    hang_up(sock)
    assert api.call("GET", "/api/v2/requests/%s/state?wait=3" % item["id"]) == \
        (200, {"state": "gone"})
    status, body = api.call("POST", "/api/v2/responses",
                            {"responses": [{"id": item["id"], "status": 200}]})
    assert body["results"][0]["status"] == "gone"
    api.close()


def test_queued_request_of_a_gone_client_is_never_handed_out(start_server):
    server = start_server("--log-level", "debug", acceptors=1)
    api = Api(server)
    mark = server.log_mark()
    sock, _ = open_client(server, b"GET /left HTTP/1.1\r\nHost: x\r\n\r\n")
    hang_up(sock)
    server.wait_log(r"left; its queued request GET /left is withdrawn", since=mark)
    sock2, f2 = open_client(server, b"GET /stayed HTTP/1.1\r\nHost: x\r\n\r\n")
    status, batch = api.call("GET", "/api/v2/requests?max=10&wait=5")
    assert [r["env"]["PATH_INFO"] for r in batch["requests"]] == ["/stayed"]
    status, batch = api.call("GET", "/api/v2/requests?max=10&wait=0")
    assert batch["requests"] == []
    hang_up(sock2)
    api.close()


def test_server_sent_events_with_keepalive_comments(srv):
    api = Api(srv)
    sock, f = open_client(srv, b"GET /events HTTP/1.1\r\nHost: x\r\n"
                               b"Accept: text/event-stream\r\n\r\n")
    item = api.pull()
    rid = item["id"]
    api.head(rid, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    status, headers = read_head(f)
    assert headers["content-type"] == "text/event-stream"
    api.chunk(rid, b"data: one\n\n")
    assert read_chunk(f) == (11, b"data: one\n\n")
    # Nothing from the worker: a comment comes within sse_keepalive (1 s
    # here) plus one housekeeping tick.
    sock.settimeout(5)
    assert read_chunk(f) == (3, b":\n\n")
    api.chunk(rid, b"data: two\n\n")
    assert read_chunk(f) == (11, b"data: two\n\n")
    api.end(rid)
    assert read_chunk(f) == (0, b"")
    sock.close()
    api.close()


@pytest.mark.slow
def test_thousand_events_to_a_slow_reader_stay_bounded(start_server):
    """1,000 SSE events to a client that reads slowly: all arrive in order
    and the front's memory stays bounded (the worker is held back)."""
    server = start_server(acceptors=1, limits_stream_buffer="32k")
    api = Api(server)
    sock = small_window_client(server.port, 8192)
    sock.sendall(b"GET /feed HTTP/1.1\r\nHost: x\r\n\r\n")
    item = api.pull()
    rid = item["id"]
    api.head(rid, 200, {"Content-Type": "text/event-stream"})

    def rss_kb():
        total = 0
        for pid in server.children():
            with open("/proc/%d/status" % pid) as fh:
                total += int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))
        return total

    before = rss_kb()
    pad = b"x" * 20000      # ~20 kB per event: 20 MB in all
    errors = []

    def produce():
        w = Api(server)
        w.conn.timeout = 60
        for i in range(1000):
            status, _ = w.chunk(rid, b"id: %d\ndata: %s\n\n" % (i, pad))
            if status != 200:
                errors.append(status)
                return
        w.end(rid)
        w.close()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    got = b""
    peak = before
    sock.settimeout(30)
    while not got.endswith(b"\r\n0\r\n\r\n"):
        r, _, _ = select.select([sock], [], [], 30)
        assert r, "stream stalled"
        got += sock.recv(4096)      # a slow reader: small reads
        if len(got) % 50 == 0:
            peak = max(peak, rss_kb())
    peak = max(peak, rss_kb())
    t.join(30)
    assert not errors
    ids = [int(m) for m in re.findall(rb"id: (\d+)\n", got)]
    assert ids == list(range(1000))
    assert (peak - before) < 20 * 1024, "front RSS grew by %d kB" % (peak - before)
    sock.close()
    api.close()


def test_stream_idle_timeout_cuts_off_a_silent_worker(start_server):
    server = start_server(acceptors=1, timeouts_stream_idle_timeout=1)
    api = Api(server)
    sock, f = open_client(server, GET)
    item = api.pull()
    api.head(item["id"])
    read_head(f)
    assert f.read() == b""      # closed, without a last chunk
    assert api.chunk(item["id"], b"late")[0] == 410
    server.wait_log(r"sent nothing on the stream")
    sock.close()
    api.close()


# -- streams and notices under faults, stops and slow clients ---------------------

class RawApi:
    """Worker API calls over one raw keep-alive connection: `send` a call
    and read its `answer` later (a long poll, or a post held back)."""

    def __init__(self, server, timeout: float = 15):
        self.raw = server.raw_api(timeout=timeout)

    def send(self, method: str, path: str, body: bytes | dict | None = None,
             ctype: str = "application/json") -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        body = body or b""
        self.raw.send(b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(),
                                                         ctype.encode(), len(body), body))

    def answer(self):
        r = self.raw.read_response()
        assert r.header("Content-Type") == "application/json", r
        return r.status, json.loads(r.body)

    def call(self, method: str, path: str, body=None, ctype: str = "application/json"):
        self.send(method, path, body, ctype)
        return self.answer()

    def pull(self) -> str:
        status, batch = self.call("GET", "/api/v2/requests?max=1&wait=5")
        assert status == 200 and len(batch["requests"]) == 1, batch
        return batch["requests"][0]["id"]


def client(server, request: bytes = GET, timeout: float = 10):
    """A client of a test's own server: its socket and file are closed by
    that server's fixture just before it stops the server (open_client's
    are closed only after, which would hold up the graceful stop)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    server._track(sock)
    sock.sendall(request)
    f = sock.makefile("rb")
    server._track(f)
    return sock, f


def test_error_report_for_a_streaming_request_ends_its_stream(start_server):
    """POST .../error after the head of a streamed response was sent (what an
    SDK does when the app raises mid-stream): the slot was freed and a 502
    frame sent that the acceptor ignored (its connection was streaming), so
    the client hung until stream_idle_timeout with a response that never
    ended, and the API process kept the stream's entry for ever."""
    s = start_server(acceptors=1)
    api = RawApi(s)
    sock, f = client(s)
    rid = api.pull()
    assert api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 200})[0] == 200
    assert api.call("POST", "/api/v2/requests/%s/body" % rid, b"half",
                    "application/octet-stream")[0] == 200
    status, body = api.call("POST", "/api/v2/requests/%s/error" % rid, {"error": "boom"})
    assert (status, body) == (200, {"message": "reported"})
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")
    assert read_chunk(f) == (4, b"half")
    sock.settimeout(5)
    assert f.read() == b"", "the stream was not ended"   # incomplete: no last chunk
    s.wait_log(r"reported an error for request %s: boom" % rid)
    # The request is over for the API too.
    assert api.call("POST", "/api/v2/requests/%s/body" % rid, b"x",
                    "application/octet-stream")[0] == 404
    assert api.call("POST", "/api/v2/requests/%s/end" % rid)[0] == 404


def test_whole_response_posted_for_a_streaming_request(start_server):
    """A whole response posted (v2 batch) after a streamed head: it was
    reported "ok" though the acceptor dropped it, and the stream hung. Now
    it is refused as invalid and the stream ends as failed; a chunk post
    waiting for its acknowledgement is answered too."""
    s = start_server(acceptors=1)
    api = RawApi(s)
    sock, f = client(s)
    rid = api.pull()
    api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 200})
    status, body = api.call("POST", "/api/v2/responses",
                            {"responses": [{"id": rid, "status": 200, "body": "aGk="}]})
    assert status == 200
    [result] = body["results"]
    assert result["status"] == "invalid" and "/end" in result["error"], result
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")
    sock.settimeout(5)
    assert f.read() == b""
    assert api.call("POST", "/api/v2/requests/%s/end" % rid)[0] == 404


def test_a_stream_that_ends_during_a_graceful_stop_closes_its_connection(start_server):
    """A stream whose head went out before SIGTERM and that ends after it:
    its connection went back to keep-alive, idle, and held the acceptor
    (and the whole stop) until graceful_timeout."""
    s = start_server(acceptors=1, timeouts_graceful_timeout=30, timeouts_keepalive_timeout=60)
    api = RawApi(s)
    sock, f = client(s)
    rid = api.pull()
    api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 200})
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")
    mark = s.log_mark()
    os.kill(s.pid, signal.SIGTERM)
    s.wait_log(r"graceful stop", since=mark)
    assert api.call("POST", "/api/v2/requests/%s/body" % rid, b"last",
                    "application/octet-stream")[0] == 200
    assert api.call("POST", "/api/v2/requests/%s/end" % rid)[0] == 200
    assert read_chunk(f) == (4, b"last")
    assert read_chunk(f) == (0, b"")
    sock.settimeout(10)
    assert f.read() == b"", "the connection stayed open"
    api.raw.close()
    assert s.stop(timeout=10) == 0
    assert not any("graceful_timeout passed" in line for line in s.log), s.log


def test_state_long_poll_learns_that_an_acceptor_died(start_server):
    """kill -9 of the acceptor holding the client: a state long-poll of a
    request it held (not streaming) was left to its wait and then answered
    "open", though the client's connection had died with the acceptor."""
    s = start_server("--log-level", "debug", acceptors=1, api_poll_timeout=20)
    api = RawApi(s)
    sock, _ = client(s)
    rid = api.pull()
    watcher = RawApi(s, timeout=30)
    watcher.send("GET", "/api/v2/requests/%s/state?wait=15" % rid)
    assert select.select([watcher.raw.sock], [], [], 0.3)[0] == []   # waiting
    [acceptor] = s.pids("acceptor")
    t0 = time.monotonic()
    os.kill(acceptor, signal.SIGKILL)
    assert watcher.answer() == (200, {"state": "gone"})
    assert time.monotonic() - t0 < 5
    s.wait_log(r"acceptor 0 ready \(pid (?!%d\))" % acceptor)


def test_state_call_waits_for_the_acceptor_to_relink_after_an_api_restart(start_server):
    """A new API process (the old one died) before the acceptor relinked:
    GET .../state said "gone" for a request that is fine (taken requests
    survive an API restart, and the other calls wait for the link), so a
    worker watching for cancellation dropped live work."""
    s = start_server("--log-level", "debug", acceptors=1, timeouts_response_timeout=60)
    sock, f = client(s)
    api = RawApi(s)
    rid = api.pull()
    api.raw.close()
    [acceptor] = s.pids("acceptor")
    [apipid] = s.pids("API process")
    mark = s.log_mark()
    os.kill(acceptor, signal.SIGSTOP)       # cannot link to the next API process yet
    try:
        os.kill(apipid, signal.SIGKILL)
        s.wait_log(r"API process ready \(pid (?!%d\))" % apipid, since=mark)
        watcher = RawApi(s)
        watcher.send("GET", "/api/v2/requests/%s/state" % rid)
        if select.select([watcher.raw.sock], [], [], 0.5)[0]:
            # Answered while the acceptor is away: it must not say "gone".
            assert watcher.answer() == (200, {"state": "open"})
            watcher = None
    finally:
        os.kill(acceptor, signal.SIGCONT)
    if watcher is not None:
        assert watcher.answer() == (200, {"state": "open"})
    api = RawApi(s)
    assert api.call("POST", "/api/v2/responses",
                    {"responses": [{"id": rid, "status": 200, "body": "aGk="}]})[1] == \
        {"results": [{"id": rid, "status": "ok"}]}
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")


def test_a_worker_held_back_by_a_slow_client_is_not_idle(start_server):
    """stream_idle_timeout counted from the worker's last chunk even while
    that chunk's post waited for the client to read (backpressure): a
    client reading a large chunk slowly had its stream cut off as if the
    worker had stopped sending."""
    s = start_server(acceptors=1, timeouts_stream_idle_timeout=2, limits_stream_buffer="4k")
    api = RawApi(s, timeout=30)
    sock = socket.socket()
    s._track(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(GET)
    rid = api.pull()
    api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 200})
    chunk = os.urandom(8 << 20)     # more than the kernel's buffers take
    api.send("POST", "/api/v2/requests/%s/body" % rid, chunk, "application/octet-stream")
    # The client reads nothing for longer than stream_idle_timeout (the
    # worker's post stays unanswered meanwhile: it is held back) ...
    assert select.select([api.raw.sock], [], [], 3.5)[0] == [], api.answer()
    # ... then reads it all: the chunk arrives whole and the stream goes on.
    got = bytearray()
    want = len(chunk) + 64
    while len(got) < want:
        data = sock.recv(1 << 20)
        assert data, "the stream was cut off after %d bytes" % len(got)
        got += data
        if b"\r\n\r\n" in got and len(got) >= got.index(b"\r\n\r\n") + 4 + len(chunk) + 10:
            break
    assert api.answer() == (200, {"result": "ok"})
    assert api.call("POST", "/api/v2/requests/%s/end" % rid)[0] == 200
    while not got.endswith(b"\r\n0\r\n\r\n"):
        data = sock.recv(1 << 20)
        assert data, "closed before the last chunk"
        got += data
    body = bytes(got[got.index(b"\r\n\r\n") + 4:])
    assert body == b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"


def _cpu_seconds(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_buffered_chunks_cost_the_same_however_many_are_buffered(start_server):
    """Each chunk for a client that does not read made the acceptor sum the
    sizes of everything buffered for it (to decide the acknowledgement): a
    worker sending small events to a stalled client cost time growing with
    the buffer, quadratic in all. Measured as a ratio: the acceptor's CPU
    for the last 3,000 chunks over that for the first 3,000 (same sizes,
    same calls; only the amount already buffered differs)."""
    if not os.path.exists("/proc/self/stat"):
        import pytest
        pytest.skip("needs /proc")
    s = start_server("--log-level", "debug", acceptors=1, limits_stream_buffer="64M",
                     api_max_request_size="8M")
    [acceptor] = s.pids("acceptor")
    api = RawApi(s, timeout=30)
    sock = socket.socket()
    s._track(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(GET)
    rid = api.pull()
    api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 200})
    path = "/api/v2/requests/%s/body" % rid
    # Fill the kernel's buffers first: from here on chunks stay in the acceptor.
    assert api.call("POST", path, b"x" * (6 << 20), "application/octet-stream")[0] == 200

    def post(n: int) -> float:
        before = _cpu_seconds(acceptor)
        for _ in range(n):
            assert api.call("POST", path, b"0123456789", "application/octet-stream")[0] == 200
        return _cpu_seconds(acceptor) - before

    first = post(3000)
    post(12000)
    last = post(3000)
    assert last < 3 * first + 0.1, "first 3000 chunks: %.2fs of CPU, last 3000: %.2fs" % (
        first, last)


def test_error_report_for_a_websocket_closes_it_and_answers_its_event_poll(start_server):
    """POST .../error for an accepted WebSocket: it closes with 1011, and a
    worker's events long-poll is answered at once (410), as after the
    worker's own close; it waited out its wait, and the API process kept
    the WebSocket's entry for ever."""
    import base64

    from prack.protocol import websocket as ws

    s = start_server(acceptors=1, api_poll_timeout=20)
    api = RawApi(s)
    raw, f = client(s, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                       b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")
    rid = api.pull()
    assert api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 101})[0] == 200
    assert read_head(f)[0].startswith(b"HTTP/1.1 101")
    poll = RawApi(s, timeout=30)
    poll.send("GET", "/api/v2/requests/%s/events?wait=15" % rid)
    assert select.select([poll.raw.sock], [], [], 0.3)[0] == []     # waiting
    t0 = time.monotonic()
    assert api.call("POST", "/api/v2/requests/%s/error" % rid, {"error": "boom"})[0] == 200
    status, body = poll.answer()
    assert status == 410 and time.monotonic() - t0 < 5, (status, body)
    parser = ws.FrameParser(require_mask=False)
    events = []
    while not events:
        data = f.read1(65536)
        assert data, "closed without a close frame"
        parser.feed(data)
        events = list(parser.events())
    assert isinstance(events[0], ws.Close) and events[0].code == ws.CLOSE_INTERNAL_ERROR


def test_state_long_poll_ends_when_the_request_is_answered(start_server):
    """A state long-poll (a worker's cancellation watch) on a request that
    its worker then answers: it waited out its whole wait and then said
    "open" for a request that was over, so watches piled up, one per
    answered request. Now it ends with the 404 of an answered request."""
    s = start_server(acceptors=1, api_poll_timeout=20)
    api = RawApi(s)
    sock, f = client(s)
    rid = api.pull()
    watch = RawApi(s, timeout=30)
    watch.send("GET", "/api/v2/requests/%s/state?wait=15" % rid)
    assert select.select([watch.raw.sock], [], [], 0.3)[0] == []     # waiting
    t0 = time.monotonic()
    assert api.call("POST", "/api/v2/responses",
                    {"responses": [{"id": rid, "status": 200, "body": "aGk="}]})[1] == \
        {"results": [{"id": rid, "status": "ok"}]}
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")
    status, body = watch.answer()
    assert status == 404 and time.monotonic() - t0 < 5, (status, body)
