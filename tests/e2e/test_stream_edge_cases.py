"""Review of issue 7's streamed responses and client-gone notices: each test
reproduces a defect found by review (real server, real clients)."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import time

from conftest import read_chunk, read_head

GET = b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n"


class Api:
    """Worker API calls over one raw keep-alive connection."""

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
    api = Api(s)
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
    api = Api(s)
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
    api = Api(s)
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
    api = Api(s)
    sock, _ = client(s)
    rid = api.pull()
    watcher = Api(s, timeout=30)
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
    api = Api(s)
    rid = api.pull()
    api.raw.close()
    [acceptor] = s.pids("acceptor")
    [apipid] = s.pids("API process")
    mark = s.log_mark()
    os.kill(acceptor, signal.SIGSTOP)       # cannot link to the next API process yet
    try:
        os.kill(apipid, signal.SIGKILL)
        s.wait_log(r"API process ready \(pid (?!%d\))" % apipid, since=mark)
        watcher = Api(s)
        watcher.send("GET", "/api/v2/requests/%s/state" % rid)
        if select.select([watcher.raw.sock], [], [], 0.5)[0]:
            # Answered while the acceptor is away: it must not say "gone".
            assert watcher.answer() == (200, {"state": "open"})
            watcher = None
    finally:
        os.kill(acceptor, signal.SIGCONT)
    if watcher is not None:
        assert watcher.answer() == (200, {"state": "open"})
    api = Api(s)
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
    api = Api(s, timeout=30)
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
    api = Api(s, timeout=30)
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
    api = Api(s)
    raw, f = client(s, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                       b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")
    rid = api.pull()
    assert api.call("POST", "/api/v2/requests/%s/head" % rid, {"status": 101})[0] == 200
    assert read_head(f)[0].startswith(b"HTTP/1.1 101")
    poll = Api(s, timeout=30)
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
    api = Api(s)
    sock, f = client(s)
    rid = api.pull()
    watch = Api(s, timeout=30)
    watch.send("GET", "/api/v2/requests/%s/state?wait=15" % rid)
    assert select.select([watch.raw.sock], [], [], 0.3)[0] == []     # waiting
    t0 = time.monotonic()
    assert api.call("POST", "/api/v2/responses",
                    {"responses": [{"id": rid, "status": 200, "body": "aGk="}]})[1] == \
        {"results": [{"id": rid, "status": "ok"}]}
    assert read_head(f)[0].startswith(b"HTTP/1.1 200")
    status, body = watch.answer()
    assert status == 404 and time.monotonic() - t0 < 5, (status, body)
