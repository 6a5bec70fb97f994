"""Micro benchmarks: the C parser against httptools (llhttp) on a realistic
browser request, and ring records/s between two processes against a plain
copy of the same bytes."""
from __future__ import annotations

import os
import platform
import time
import zlib

BROWSER_REQUEST = (
    b"GET /articles/2024/11/how-prack-works?utm_source=feed&ref=home HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b"sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
    b"sec-ch-ua-mobile: ?0\r\n"
    b"sec-ch-ua-platform: \"Linux\"\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    b"*/*;q=0.8\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\n"
    b"Cookie: session=8f2a9c1e77b34d0f; theme=dark; _ga=GA1.1.123456789.1700000000\r\n\r\n"
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_of(fn, rounds=3):
    return min(fn() for _ in range(rounds))


def bench_parser(n: int) -> dict:
    from prack._native import ffi, lib
    from prack.protocol import http
    req = ffi.new("prk_request *")
    hdrs = ffi.new("prk_header[]", 100)
    buf = ffi.from_buffer(BROWSER_REQUEST)
    size = len(BROWSER_REQUEST)
    parse = lib.prk_parse_request

    def c_parser():
        t = time.perf_counter()
        for _ in range(n):
            parse(buf, size, req, hdrs, 100)
        return (time.perf_counter() - t) / n * 1e9

    limits = http.Limits(1 << 20, 32768, 8192, 100)

    def reader():
        t = time.perf_counter()
        for _ in range(n):
            r = http.RequestReader(limits)
            r.feed(BROWSER_REQUEST)
            r.maybe_read_request()
        return (time.perf_counter() - t) / n * 1e9

    # prack_c_ns: the C parser alone (one cffi call); prack_reader_ns: the
    # whole sans-IO reader (C parse, framing rules, header list);
    # httptools_ns: llhttp with a Python header callback, the nearest peer.
    out = {"prack_c_ns": best_of(c_parser), "prack_reader_ns": best_of(reader)}
    try:
        import httptools
    except ImportError:
        return out

    class Proto:
        __slots__ = ("headers",)

        def __init__(self):
            self.headers = []

        def on_header(self, name, value):
            self.headers.append((name, value))

    def llhttp():
        t = time.perf_counter()
        for _ in range(n):
            p = httptools.HttpRequestParser(Proto())
            p.feed_data(BROWSER_REQUEST)
        return (time.perf_counter() - t) / n * 1e9

    out["httptools_ns"] = best_of(llhttp)
    out["ratio_c_vs_httptools"] = out["httptools_ns"] / out["prack_c_ns"]
    out["ratio_reader_vs_httptools"] = out["httptools_ns"] / out["prack_reader_ns"]
    return out


def bench_ring(n: int) -> dict:
    from prack.ipc.ring import RingFull, Segment
    payload = bytes(range(256)) * 2     # 512-byte records
    seg = Segment.create(1, 16, 1 << 20)
    ring = seg.ring(0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sent = 0
        while sent < n:
            try:
                ring.push(payload)
                sent += 1
            except RingFull:
                pass
        os._exit(0)
    os.close(w)
    t = time.perf_counter()
    got = 0
    crc = 0
    while got < n:
        view = ring.peek()
        if view is None:
            continue
        crc = zlib.crc32(view, crc) if got % 1024 == 0 else crc
        view.release()
        ring.release()
        got += 1
    elapsed = time.perf_counter() - t
    os.waitpid(pid, 0)
    os.close(r)
    seg.close()
    # The bound: a plain copy of the same bytes in one process.
    t = time.perf_counter()
    buf = bytearray(len(payload))
    for _ in range(n):
        buf[:] = payload
    copy = time.perf_counter() - t
    return {"records_per_s": n / elapsed, "copy_per_s": n / copy,
            "ratio_ring_vs_copy": (n / elapsed) / (n / copy), "record_bytes": len(payload)}
