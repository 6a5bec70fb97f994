"""Review findings in the API process (src/prack/api.py, apilife.py, forward.py)."""
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
        # Kernel buffers take a few MiB; the API process itself no more
        # than max_request_size + max_header_size (+ one read).
        assert sent < (32 << 20), "the API process read %d MiB behind a long poll" % (sent >> 20)
        assert _api_rss_kib(s) - before < 16 << 10
    finally:
        sock.close()
