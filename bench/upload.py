#!/usr/bin/env python3
"""Large uploads through Prack: a client posts a body of --size MiB (with
Content-Length, then chunked), the acceptor spools it, and a v2 worker reads
it back with GET /api/v2/requests/{id}/input and hashes it. Reports MiB/s of
the whole round (client send -> worker has every byte -> answer), the same
bytes over a plain loopback socket as the baseline (the ratio is what means
something on a shared machine), and the peak growth of the front's resident
memory (acceptor + API process, from /proc) during the upload.

    python bench/upload.py [--size 100] [--rounds 3]

Writes bench/results/upload-<date>.json.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
PIECE = os.urandom(MiB)


def body(size: int):
    for _ in range(size // MiB):
        yield PIECE


def start_server(runtime: str):
    exe = os.path.join(os.path.dirname(sys.executable), "prack-server")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "prack.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env.update(PRACK_SERVER_RUNTIME_DIR=runtime, PRACK_LIMITS_MAX_BODY_SIZE="1G")
    proc = subprocess.Popen(cmd + ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", "1"],
                            stderr=subprocess.PIPE, text=True, env=env)
    ready = re.compile(r"ready: public=http://([^ ]+):(\d+) api=http://([^ ]+):(\d+)")
    for line in proc.stderr:
        m = ready.search(line)
        if m:
            break
    else:
        raise SystemExit("prack-server did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, (m.group(1), int(m.group(2))), (m.group(3), int(m.group(4)))


def front_rss(master: int) -> int:
    total = 0
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        for pid in f.read().split():
            with open("/proc/%s/status" % pid) as st:
                for line in st:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
    return total


def worker(api, stop: threading.Event) -> None:
    """Pull, read the spooled body, answer with its SHA-256."""
    c = http.client.HTTPConnection(*api, timeout=120)
    while not stop.is_set():
        c.request("GET", "/api/v2/requests?wait=0.5")
        r = c.getresponse()
        data = r.read()
        for item in json.loads(data)["requests"] if r.status == 200 else ():
            h = hashlib.sha256()
            path = item["env"].get("prack.input")
            if path:
                c.request("GET", path)
                resp = c.getresponse()
                while piece := resp.read(MiB):
                    h.update(piece)
            else:
                h.update(base64.b64decode(item["body"]))
            answer = base64.b64encode(h.hexdigest().encode()).decode()
            c.request("POST", "/api/v2/responses", json.dumps(
                {"responses": [{"id": item["id"], "status": 200, "body": answer}]}),
                {"Content-Type": "application/json"})
            c.getresponse().read()
    c.close()


def one_upload(public, size: int, chunked: bool, master: int) -> tuple[float, int]:
    """(seconds, peak RSS growth) of one upload, checked byte-exact."""
    expected = hashlib.sha256()
    for piece in body(size):
        expected.update(piece)
    c = http.client.HTTPConnection(*public, timeout=120)
    c.request("GET", "/warm")
    c.getresponse().read()
    base = front_rss(master)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], front_rss(master))
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    if chunked:
        c.request("POST", "/up", body=body(size), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
    else:
        c.request("POST", "/up", body=body(size), headers={"Content-Length": str(size)})
    r = c.getresponse()
    got = r.read()
    took = time.perf_counter() - start
    done.set()
    t.join()
    c.close()
    if r.status != 200 or got.decode() != expected.hexdigest():
        raise SystemExit("upload came back wrong: %d %r" % (r.status, got[:100]))
    return took, max(peak[0], front_rss(master)) - base


def loopback_baseline(size: int) -> float:
    """Seconds to push the same bytes through one plain loopback socket."""
    lst = socket.create_server(("127.0.0.1", 0))

    def drain():
        conn, _ = lst.accept()
        while conn.recv(MiB):
            pass
        conn.close()
    t = threading.Thread(target=drain)
    t.start()
    s = socket.create_connection(lst.getsockname())
    start = time.perf_counter()
    for piece in body(size):
        s.sendall(piece)
    s.close()
    t.join()
    lst.close()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100, help="MiB per upload")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = args.size * MiB
    runtime = tempfile.mkdtemp(prefix="prack-bench-")
    proc, public, api = start_server(runtime)
    stop = threading.Event()
    w = threading.Thread(target=worker, args=(api, stop), daemon=True)
    w.start()
    results = {}
    try:
        for name, chunked in (("content-length", False), ("chunked", True)):
            rounds = [one_upload(public, size, chunked, proc.pid) for _ in range(args.rounds)]
            best = min(r[0] for r in rounds)
            results[name] = {"best_seconds": round(best, 3),
                             "mib_per_s": round(args.size / best, 1),
                             "rss_growth_mib": round(max(r[1] for r in rounds) / MiB, 1)}
        base = min(loopback_baseline(size) for _ in range(args.rounds))
        results["loopback"] = {"best_seconds": round(base, 3),
                               "mib_per_s": round(args.size / base, 1)}
        for name in ("content-length", "chunked"):
            results[name]["ratio_to_loopback"] = round(base / results[name]["best_seconds"], 3)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
        if not os.listdir(runtime):     # the master removed its own directory
            os.rmdir(runtime)
    report = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "size_mib": args.size, "results": results}
    print(json.dumps(report, indent=2))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "upload-%s.json" % report["date"])
    with open(out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
