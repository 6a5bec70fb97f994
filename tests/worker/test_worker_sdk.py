"""The worker SDK and `prack-worker`: reconnection across a front restart,
several fronts, graceful stop, concurrency, handler failures, the CLI."""
from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import threading

import pytest
from conftest import get, scripted_front

from apps.procs import WorkerProcess, free_port, worker_command
from prack.worker import Response, Worker
from prack.worker.sdk import backoff


def test_backoff_is_capped_and_jittered():
    delays = [backoff(n, base=0.05, cap=2.0) for n in range(1, 40)]
    assert all(0 < d <= 2.0 for d in delays)
    assert delays[0] <= 0.1
    assert len({round(backoff(30), 6) for _ in range(20)}) > 1      # jitter


def test_front_restart_mid_run(start_server):
    """The same worker process serves requests after its front is stopped
    and a new one is started on the same API port."""
    port = free_port()
    first = start_server("--api-bind", "127.0.0.1:%d" % port)
    assert first.api_port == port
    with WorkerProcess("--api", first.api, "--wait", "1", "--max-backoff", "0.3",
                       "apps.plain:app") as worker:
        status, body = get(first, "/before")
        assert status == 200
        pid = re.search(rb"pid=(\d+)", body).group(1)
        first.close_clients()
        assert first.stop() == 0
        worker.wait_log(r"front http://127\.0\.0\.1:%d unreachable" % port)
        second = start_server("--api-bind", "127.0.0.1:%d" % port)
        for i in range(3):
            status, body = get(second, "/after/%d" % i)
            assert status == 200 and body.startswith(b"GET /after/%d " % i)
            assert re.search(rb"pid=(\d+)", body).group(1) == pid
        worker.wait_log(r"front http://127\.0\.0\.1:%d back after" % port)
        assert worker.stop() == 0
    # Logged once per outage, not once per retry.
    assert sum("unreachable" in line for line in worker.log) == 1, worker.log


def test_several_fronts(start_server):
    a, b = start_server(), start_server()
    with WorkerProcess("--api", a.api, "--api", b.api, "--concurrency", "2", "--wait", "1",
                       "apps.plain:app") as worker:
        for server in (a, b, a, b):
            assert get(server, "/x")[0] == 200
        assert worker.stop() == 0


def test_graceful_stop_finishes_held_requests(start_server):
    server = start_server()
    with WorkerProcess("--api", server.api, "--wait", "1", "apps.plain:app") as worker:
        assert get(server, "/warm")[0] == 200
        c = server.client()
        c.request("GET", "/slow?1.5")
        worker.wait_log("slow request started")       # the worker holds it
        worker.proc.send_signal(signal.SIGTERM)
        r = c.getresponse()
        assert r.status == 200 and r.read().startswith(b"GET /slow")
        assert worker.stop(None) == 0
    assert any("stopping" in line for line in worker.log)


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_in_process_worker_concurrency_and_failures(start_server, api):
    """concurrency=N runs N handlers at once (a barrier of N would time out
    otherwise); a handler that raises gets its client a 502; repeated
    response fields arrive in order. On API v1 (one JSON request per call)
    too, where a streamed body goes through the v2 stream calls."""
    server = start_server()
    barrier = threading.Barrier(4, timeout=10)

    def handler(req):
        path = req.env["PATH_INFO"]
        if path == "/raise":
            raise ValueError("no luck")
        if path.startswith("/together"):
            barrier.wait()
        if path == "/stream":
            return Response(200, [("Content-Type", "text/plain")], iter([b"one ", b"two"]))
        return Response(200, [("X-Path", path), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
                        req.body[::-1])

    worker = Worker(handler, [server.api], concurrency=4, wait=1, api=api).start()
    try:
        results = []

        def hit(i):
            results.append(get(server, "/together/%d" % i))

        threads = [threading.Thread(target=hit, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(s for s, _ in results) == [200] * 4
        mark = server.log_mark()
        assert get(server, "/raise")[0] == 502
        server.wait_log(r"worker reported an error for request \w+: ValueError: no luck",
                        since=mark)
        c = server.client()
        c.request("POST", "/echo", body=b"abc")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"cba")
        assert r.getheader("X-Path") == "/echo"
        assert [v for n, v in r.getheaders() if n == "Set-Cookie"] == ["a=1", "b=2"]
        c.request("GET", "/stream")
        r = c.getresponse()
        assert (r.status, r.getheader("Transfer-Encoding"), r.read()) == (200, "chunked",
                                                                           b"one two")
    finally:
        worker.stop()
        worker.join()


def test_api_must_be_v1_or_v2():
    with pytest.raises(ValueError, match="api must be"):
        Worker(lambda req: None, ["http://127.0.0.1:9"], api="v3")


def test_worker_started_before_its_front(start_server):
    port = free_port()
    with WorkerProcess("--api", "http://127.0.0.1:%d" % port, "--max-backoff", "0.2",
                       "--wait", "1", "apps.plain:app") as worker:
        worker.wait_log("unreachable")
        server = start_server("--api-bind", "127.0.0.1:%d" % port)
        assert get(server, "/late")[0] == 200
        assert worker.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("args, message", [
    (["nocolon"], "expected module:app"),
    (["no_such_module_xyz:app"], "cannot import module"),
    (["apps.plain:missing"], "has no attribute"),
    (["--api", "ftp://x", "apps.plain:app"], "expected http://host:port"),
    (["--interface", "cgi", "apps.plain:app"], "cgi"),
    (["--interface", "asgi", "apps.plain:bad_lifespan"], "no database"),
    (["--api", "http://a:1", "--api", "http://b:2", "--concurrency", "1", "apps.plain:app"],
     "at least the number of fronts"),
])
def test_cli_errors(args, message):
    with WorkerProcess(*args) as worker:
        code = worker.proc.wait(20)
    assert code == 2, worker.log
    assert any(message in line for line in worker.log), worker.log
    assert not any("Traceback" in line for line in worker.log)


def test_cli_help_and_version():
    out = subprocess.run(worker_command() + ["--help"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0
    for flag in ["--interface", "--api", "--concurrency", "MODULE:APP"]:
        assert flag in out.stdout
    out = subprocess.run(worker_command() + ["--version"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0 and out.stdout.startswith("prack-worker ")


def test_batches_follow_the_handler_speed():
    """A lane takes one request at a time until its handler is known to be
    fast, then batches of about 5 ms of work; a handler that turns slow is
    back to one request at a time within a few batches."""
    from prack.worker.lanes import Pace
    pace = Pace(64)
    assert pace.size() == 1
    for _ in range(40):
        n = pace.size()
        pace.took(n * 20e-6, n)           # 20 µs per request
    assert pace.size() == 64
    sizes = []
    for _ in range(8):
        n = pace.size()
        sizes.append(n)
        pace.took(n * 0.05, n)            # 50 ms per request
    assert sizes[0] == 64 and sizes[-1] == 1


def test_lane_connection_reads_every_framing():
    """The SDK's own HTTP/1.1 client: Content-Length, chunked (with
    extensions and trailers), interim 1xx answers, and an answer ended by the
    close; a front closing an idle kept-alive connection is RemoteDisconnected."""
    from prack.worker.client import Connection

    lst, t, seen = scripted_front([[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"",
    ]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.call("GET", "/a?x=1", None, {"Accept": "application/msgpack"}) == (200, b"hello")
        assert conn.call("POST", "/b", b"payload", {"Content-Type": "x/y"}) == (201, b"abcde")
        assert conn.call("GET", "/c", None, {}) == (204, b"")
        with pytest.raises(http.client.RemoteDisconnected):
            conn.call("GET", "/d", None, {})
        conn.close()
        t.join(5)
    assert seen[0][1].startswith(b"GET /a?x=1 HTTP/1.1\r\nAccept: application/msgpack\r\nHost: 127.0.0.1:")
    assert seen[1][1].endswith(b"Content-Length: 7\r\n\r\npayload")

    lst, t, seen = scripted_front([[b"HTTP/1.0 200 OK\r\n\r\nto the end"]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        # The server closes after its answer (no length): read to the end.
        assert conn.call("GET", "/", None, {}) == (200, b"to the end")
        assert conn.sock is None
        t.join(5)

    for bad in (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"SPDY/3 200 OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"):
        lst, t, _ = scripted_front([[bad]])
        with lst:
            conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
            with pytest.raises(http.client.HTTPException):
                conn.call("GET", "/", None, {})
            conn.close()
            t.join(5)


def test_a_post_met_by_a_closed_kept_alive_connection_is_sent_again():
    """The front closed a reused connection before reading the call (its
    api.idle_timeout or api.max_connections): a lane's posts, answers and
    error reports alike, on v2 and v1, may go once more on a new connection,
    as its pull does (client.Connection retries only the calls that say so,
    and only on a reused connection: tests/worker/test_worker_client.py)."""
    from prack.protocol import messages
    from prack.worker import client, lanes

    class Conn:
        sock = None

        def __init__(self):
            self.calls: list = []

        def call(self, method, path, body=None, headers=None, retry=False, whole=True):
            self.calls.append((method, path.split("?")[0], retry))
            if path.startswith("/api/v2/responses"):
                return 200, lanes._encode(lanes._PostAnswer([], []))
            return 200, b"{}"

        def close(self):
            pass

    front = client.Front("http://127.0.0.1:9", 5.0)
    answer = messages.ResponseItem("0" * 32, 200, [("X-A", "1")], b"hi")
    for codec in (lanes.V2(front, 1, lanes.Pace(8)), lanes.V1(front, 1, lanes.Pace(8))):
        conn = Conn()
        codec.post(conn, [answer], [("1" * 32, "it broke")], False)
        assert conn.calls and all(retry for _, _, retry in conn.calls), conn.calls
