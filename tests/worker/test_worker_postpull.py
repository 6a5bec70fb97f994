"""The SDK's lanes post each batch's answers and get the next batch in the
same call (POST /api/v2/responses?max=N&wait=S): one API call per request
for a busy lane, against a real server; the last answers of a stopping lane
go without the parameters; a front older than the call is pulled apart."""
from __future__ import annotations

import threading

import msgspec
from conftest import get, scripted_front

from prack.protocol import messages
from prack.worker import Response, Worker, client, lanes


def test_a_busy_lane_makes_one_call_per_request(start_server, monkeypatch):
    server = start_server(acceptors=1)
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Counting(client.Connection):
        def call(self, method, path, *args):
            with lock:
                calls.append((method, path))
            return super().call(method, path, *args)

    monkeypatch.setattr(client, "Connection", Counting)
    worker = None

    def handler(req):
        if req.env["PATH_INFO"] == "/stop":
            worker.stop()
        return Response(200, [("Content-Type", "text/plain")], req.env["PATH_INFO"].encode())

    worker = Worker(handler, [server.api], concurrency=1, wait=5).start()
    try:
        n = 30
        for i in range(n):
            assert get(server, "/r/%d" % i) == (200, b"/r/%d" % i)
        assert get(server, "/stop") == (200, b"/stop")
    finally:
        worker.stop()
        worker.join(10)
    pulls = [p for m, p in calls if m == "GET"]
    combined = [p for m, p in calls
                if m == "POST" and p.startswith("/api/v2/responses?wait=5&max=")]
    plain = [p for m, p in calls if m == "POST" and p == "/api/v2/responses"]
    # One pull to start (a second if it timed out before the first request),
    # then each answer brings the next request; the stopping lane's last post
    # pulls nothing.
    assert 1 <= len(pulls) <= 2, calls
    assert all(p.startswith("/api/v2/requests?wait=5&max=") for p in pulls)
    assert len(combined) == n, calls
    assert plain == ["/api/v2/responses"], calls
    assert calls[-1] == ("POST", "/api/v2/responses")
    assert len(calls) == len(pulls) + n + 1


def test_streams_and_failures_still_go_their_own_way(start_server):
    """A streamed response has no item in the batch post and a failing
    handler is reported apart: the lane pulls on with a GET, and answers that
    follow still bring their next batch."""
    server = start_server(acceptors=1)

    def handler(req):
        path = req.env["PATH_INFO"]
        if path == "/stream":
            return Response(200, [("Content-Type", "text/plain")], iter([b"a", b"b", b"c"]))
        if path == "/fail":
            raise RuntimeError("nope")
        return Response(200, [], path.encode())

    worker = Worker(handler, [server.api], concurrency=1, wait=2).start()
    try:
        for path, expected in [("/one", (200, b"/one")), ("/stream", (200, b"abc")),
                               ("/fail", 502), ("/two", (200, b"/two")),
                               ("/stream", (200, b"abc")), ("/three", (200, b"/three"))]:
            got = get(server, path)
            assert (got[0] if isinstance(expected, int) else got) == expected, path
    finally:
        worker.stop()
        assert worker.join(10)


def _http(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\nContent-Length: %d\r\n\r\n"
            % len(body) + body)


def test_post_returns_the_next_batch_or_falls_back_for_an_older_front():
    enc = msgspec.msgpack.encode
    item = messages.RequestItem("1" * 32, {"PATH_INFO": "/x"}, b"", 1e10)
    answer = messages.ResponseItem("0" * 32, 200, [], b"hi")
    lst, t, seen = scripted_front([[
        _http(enc(messages.ResultsAndRequests([messages.ItemResult("0" * 32, "ok")], [item]))),
        _http(enc(messages.ResultBatch([messages.ItemResult("0" * 32, "ok")]))),   # an older front
        _http(enc(messages.ResultBatch([messages.ItemResult("0" * 32, "gone")]))),
    ]])
    with lst:
        front = client.Front("http://127.0.0.1:%d" % lst.getsockname()[1], 10)
        pace = lanes.Pace(4)
        while pace.size() < 4:
            pace.took(1e-6, 1)
        codec = lanes.V2(front, 2, pace)
        conn = front.connect()
        assert codec.post(conn, [answer], [], False) == [item]
        assert codec.combined
        assert codec.post(conn, [answer], [], False) is None
        assert not codec.combined
        assert codec.post(conn, [answer], [], True) is None
        conn.close()
        t.join(5)
    assert seen[0][1].startswith(b"POST /api/v2/responses?wait=2&max=4 HTTP/1.1\r\n")
    assert seen[2][1].startswith(b"POST /api/v2/responses HTTP/1.1\r\n")
