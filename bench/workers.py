#!/usr/bin/env python3
"""Worker API v1 (one request per pull) against v2 (batched pulls, msgpack),
with the same number of worker processes and threads and the same trivial
application. Reports requests/s of each and the ratio v2/v1; the machine is
shared and noisy, so the modes alternate and each keeps its best round.

    python bench/workers.py [--quick] [--workers 2] [--threads 8] [--connections 64]

Writes bench/results/workers-<date>.json. The load comes from wrk when it is
installed, else from a single-threaded keep-alive client in this process.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BODY = b"Hello from a Prack worker!\n"


# -- the two workers (run as subprocesses of this script) ----------------------

def v1_worker(api: str, threads: int) -> None:
    """The v1 loop every pre-v2 client runs: GET one request, POST one response."""
    host, port = api.split("//", 1)[1].rsplit(":", 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    answer_body = base64.b64encode(BODY).decode()

    def loop():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while not stop.is_set():
            try:
                conn.request("GET", "/api/v1/request")
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    continue
                job = json.loads(data)
                msg = json.dumps({"identifier": job["identifier"], "code": 200,
                                  "headers": {"Content-Type": "text/plain"},
                                  "body": answer_body})
                conn.request("POST", "/api/v1/response", msg,
                             {"Content-Type": "application/json"})
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                stop.wait(0.1)

    for _ in range(threads):
        threading.Thread(target=loop, daemon=True).start()
    while not stop.wait(1):
        pass


def v2_worker(api: str, threads: int) -> None:
    from prack.worker import Response, serve

    def app(req):
        return Response(200, [("Content-Type", "text/plain")], BODY)

    sys.exit(serve(app, [api], concurrency=threads, wait=1.0))


# -- the server and the load -----------------------------------------------------

def start_server(acceptors: int):
    exe = os.path.join(os.path.dirname(sys.executable), "prack-server")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "prack.cli"]
    proc = subprocess.Popen(cmd + ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0",
                                   "-a", str(acceptors)],
                            stderr=subprocess.PIPE, text=True)
    ready = re.compile(r"ready: public=http://([^ ]+):(\d+) api=(http://[^ ]+)")
    for line in proc.stderr:
        m = ready.search(line)
        if m:
            break
    else:
        raise SystemExit("prack-server did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, m.group(1), int(m.group(2)), m.group(3)


def python_load(host: str, port: int, connections: int, seconds: float) -> float:
    """Keep-alive GETs on `connections` sockets from one thread; requests/s."""
    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    sel = selectors.DefaultSelector()
    bufs = {}
    for _ in range(connections):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        s.send(request)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
    done = 0
    start = time.monotonic()
    stop = start + seconds
    while time.monotonic() < stop:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            buf = bufs[s] + s.recv(65536)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                m = re.search(rb"\r\ncontent-length: *(\d+)", buf[:end], re.I)
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) < total:
                    break
                buf = buf[total:]
                done += 1
                s.send(request)
            bufs[s] = buf
    elapsed = time.monotonic() - start
    for s in bufs:
        sel.unregister(s)
        s.close()
    return done / elapsed


def wrk_load(wrk: str, host: str, port: int, connections: int, seconds: float) -> float:
    out = subprocess.run([wrk, "-t1", "-c%d" % connections, "-d%ds" % max(1, round(seconds)),
                          "http://%s:%d/hello" % (host, port)],
                         capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit("wrk gave no figure:\n" + out)
    return float(m.group(1))


def one_round(mode: str, args) -> float:
    proc, host, port, api = start_server(args.acceptors)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(ROOT, "src")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", mode,
                                 "--api", api, "--threads", str(args.threads)],
                                env=env, stderr=subprocess.DEVNULL)
               for _ in range(args.workers)]
    try:
        # Warm up until every worker answers.
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for _ in range(50):
            conn.request("GET", "/warmup")
            conn.getresponse().read()
        conn.close()
        wrk = shutil.which("wrk")
        if wrk:
            return wrk_load(wrk, host, port, args.connections, args.seconds)
        return python_load(host, port, args.connections, args.seconds)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["v1", "v2"], help=argparse.SUPPRESS)
    ap.add_argument("--api", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="short rounds")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=8, help="threads per worker process")
    ap.add_argument("--connections", type=int, default=64, help="client connections")
    ap.add_argument("--acceptors", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.role == "v1":
        return v1_worker(args.api, args.threads)
    if args.role == "v2":
        return v2_worker(args.api, args.threads)
    args.seconds = 3.0 if args.quick else 8.0
    best = {"v1": 0.0, "v2": 0.0}
    rounds = {"v1": [], "v2": []}
    for _ in range(args.rounds):
        for mode in ("v1", "v2"):
            rps = one_round(mode, args)
            rounds[mode].append(round(rps, 1))
            best[mode] = max(best[mode], rps)
            print("%s: %.0f requests/s" % (mode, rps), flush=True)
    ratio = best["v2"] / best["v1"] if best["v1"] else None
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "setup": {"worker_processes": args.workers, "threads_per_worker": args.threads,
                  "connections": args.connections, "acceptors": args.acceptors,
                  "seconds_per_round": args.seconds,
                  "client": "wrk" if shutil.which("wrk") else "python selectors client",
                  "v1": "GET /api/v1/request + POST /api/v1/response per request (JSON)",
                  "v2": "prack.worker SDK: batched GET /api/v2/requests + POST /api/v2/responses "
                        "(msgpack)"},
        "requests_per_s": {"v1": round(best["v1"], 1), "v2": round(best["v2"], 1)},
        "rounds": rounds,
        "ratio_v2_over_v1": round(ratio, 3) if ratio else None,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "workers-%s.json" % datetime.date.today().isoformat())
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print("v2/v1 ratio: %.2f  (written to %s)" % (ratio or 0, os.path.relpath(path, ROOT)))


if __name__ == "__main__":
    main()
