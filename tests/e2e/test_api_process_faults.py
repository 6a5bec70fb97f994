"""The API process under faults: a worker's calls, a retiring generation and the forward to the other generation (prack.api.process, lifecycle, forward)."""
from __future__ import annotations

import socket


def _api_rss_kib(s) -> int:
    [line] = [l for l in s.log if "API process ready (pid" in l][-1:]
    pid = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
    with open("/proc/%d/status" % pid) as f:
        for row in f:
            if row.startswith("VmRSS:"):
                return int(row.split()[1])
    raise AssertionError("no VmRSS")


def test_bytes_pipelined_behind_a_long_poll_are_bounded(start_server):
    """While a call is in progress (a long poll here; also a held or a
    forwarded post), the API process went on reading whatever the worker sent
    and buffered all of it: memory grew without bound. It now keeps at most
    one more request's worth and stops reading (TCP pushes back)."""
    s = start_server("--log-level", "debug", api_poll_timeout=60, api_max_request_size="64K")
    s.wait_log(r"API process ready \(pid")
    before = _api_rss_kib(s)
    sock = socket.create_connection((s.api_host, s.api_port), timeout=10)
    try:
        sock.sendall(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(3)
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            while sent < (96 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
        except socket.timeout:
            pass
        # Kernel buffers take some (at most tcp_rmem's 32 MiB + tcp_wmem's
        # 4 MiB by default); the API process itself no more than
        # max_request_size + max_header_size (+ one read).
        assert sent < (48 << 20), "the API process read %d MiB behind a long poll" % (sent >> 20)
        assert _api_rss_kib(s) - before < 16 << 10
    finally:
        sock.close()


def test_worker_sock_accept_failure_pauses_instead_of_spinning(tmp_path):
    """accept() on worker.sock failing with EMFILE: the listener stays
    readable, so returning without pausing (as the worker port does) made the
    API loop spin, silently, until a descriptor came free."""
    import errno
    import selectors

    from prack import config
    from prack.api.process import ApiServer

    class FullListener:
        """worker.sock of a process out of descriptors."""

        def __init__(self, sock):
            self.sock = sock

        def fileno(self):
            return self.sock.fileno()

        def accept(self):
            raise OSError(errno.EMFILE, "Too many open files")

    class Segment:
        nrings = 1
        nslots = 4

        def ring(self, i):
            return None

    real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    real.bind(str(tmp_path / "worker.sock"))
    real.listen(1)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(str(tmp_path / "worker.sock"))     # readable from now on
    cfg = config.load(None)
    api = ApiServer(cfg, 1, real, real, Segment(), -1, forward_listener=FullListener(real))
    try:
        api.sel.register(api.forward_listener, selectors.EVENT_READ, api._on_accept_forwarded)
        for key, mask in api.sel.select(1):
            key.data(mask)
        assert all(key.fileobj is not api.forward_listener
                   for key in api.sel.get_map().values()), "still watched: the loop spins"
        assert [lst for lst, _ in api._paused] == [api.forward_listener]
    finally:
        api.sel.close()
        peer.close()
        real.close()


def test_health_methods(start_server):
    """/livez and /readyz: GET and HEAD; any other method is the routes
    table's 405 with Allow (the handler's own method check was dead code)."""
    import http.client
    s = start_server()
    for path in ("/livez", "/readyz"):
        c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
        c.request("POST", path, b"{}")
        r = c.getresponse()
        assert (r.status, r.getheader("Allow")) == (405, "GET, HEAD"), path
        assert b"error" in r.read()
        c.request("HEAD", path)
        r = c.getresponse()
        assert r.status in (200, 503) and r.read() == b""
        assert int(r.getheader("Content-Length")) > 0
        c.close()


def test_a_worker_that_does_not_read_cannot_pull_everything(start_server):
    """A worker pipelining pulls without reading the answers: the API process
    answered one call after another into its send buffer, so that worker
    took every queued request (and held it in the API's memory) while the
    workers that do read got nothing. Now the next pipelined call waits
    until the previous answer has left."""
    import http.client
    import json
    import time

    # Answers of 4 MiB (3 MB bodies in base64): the socket buffers between
    # the API process and that worker hold only a few of them.
    n = 16
    # (The bodies stay inline: spooled ones would make the answers small.)
    s = start_server(acceptors=1, limits_ring_size="64M", limits_max_body_size="4M",
                     limits_inline_body_size="4M", api_poll_timeout=30,
                     timeouts_graceful_timeout=1)
    bad = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    bad.connect((s.api_host, s.api_port))
    try:
        bad.sendall(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        body = b"x" * 3_000_000
        for i in range(n):
            s.raw(timeout=30).send(b"POST /r%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                   % (i, len(body)) + body)
        got = 0
        deadline = time.monotonic() + 15
        c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
        while got < n // 2 and time.monotonic() < deadline:
            c.request("GET", "/api/v2/requests?max=%d&wait=1" % n)
            r = c.getresponse()
            assert r.status == 200
            got += len(json.loads(r.read())["requests"])
        c.close()
        assert got >= n // 2, "the worker that reads got %d of %d requests" % (got, n)
    finally:
        bad.close()
