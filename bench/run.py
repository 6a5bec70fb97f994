#!/usr/bin/env python3
"""Prack benchmarks (first cut): parser, ring, and one end-to-end run.

Reports ratios against a peer measured in the same run where there is one
(httptools/llhttp for the parser, a plain memcpy-like bytes copy for the
ring), because these machines are noisy. Results go to
bench/results/<date>.json. The side-by-side comparison with nginx, uvicorn,
gunicorn and Mongrel2 is a later issue (see docs/architecture.md).

    python bench/run.py [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

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
    from prack import http
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
    from prack.ring import RingFull, Segment
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


def bench_end_to_end(seconds: float, connections: int) -> dict:
    exe = os.path.join(os.path.dirname(sys.executable), "prack-server")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "prack.cli"]
    proc = subprocess.Popen(cmd + ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", "2"],
                            stderr=subprocess.PIPE, text=True)
    ready = re.compile(r"ready: public=http://([^ ]+):(\d+) api=(http://[^ ]+)")
    m = None
    for line in proc.stderr:
        m = ready.search(line)
        if m:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    host, port, api = m.group(1), int(m.group(2)), m.group(3)
    workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "demo_worker.py"),
                                 "--api", api, "--threads", "4"], stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        result = {"workers": "2 processes x 4 threads (examples/demo_worker.py)",
                  "connections": connections}
        wrk = shutil.which("wrk")
        if wrk:
            out = subprocess.run([wrk, "-t1", "-c%d" % connections, "-d%ds" % int(seconds),
                                  "http://%s:%d/hello" % (host, port)],
                                 capture_output=True, text=True).stdout
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
            result.update(client="wrk", requests_per_s=float(rps.group(1)) if rps else None)
        else:
            counts = [0] * connections
            stop = time.monotonic() + seconds

            def client(i):
                c = http.client.HTTPConnection(host, port, timeout=30)
                while time.monotonic() < stop:
                    c.request("GET", "/hello")
                    c.getresponse().read()
                    counts[i] += 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
            t = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            result.update(client="python http.client threads",
                          requests_per_s=sum(counts) / (time.monotonic() - t))
        return result
    finally:
        for w in workers:
            w.terminate()
            w.wait()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20000 if args.quick else 200000
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "parser": bench_parser(n),
        "ring": bench_ring(n * 5),
        "end_to_end": bench_end_to_end(3 if args.quick else 10, 32),
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", datetime.date.today().isoformat() + ".json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print("written to", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
