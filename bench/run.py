#!/usr/bin/env python3
"""Prack against its peers, side by side in one run.

Every configuration runs on loopback, in turn, round-robin for --rounds
rounds (the machine is noisy: a peer measured minutes apart is not a
comparison). Results are medians with min-max spread and ratios against each
peer from the same run; they go to bench/results/<date>.json, and
bench/report.py turns that into docs/benchmarks.md with plots.

Scenarios (--only to pick):
  micro    C parser vs httptools (ns/request); ring records/s vs a plain copy
  hello    "Hello, World!" end to end at 32 and 256 connections: requests/s,
           latency, server-side CPU µs per request (whole process trees)
  memory   PSS of Prack's tree idle, after load, and holding 10,000 idle
           keep-alive connections (bytes per connection)
  latency  p50/p99/p99.9 at a fixed offered rate, half of Prack's saturation
  static   front only: a small file from Prack's acceptors vs nginx, 1 process each
  sizes    1 KiB, 64 KiB and 1 MiB request and response bodies (echo)

    python bench/run.py [--quick] [--only hello,memory] [--rounds 3] [--seconds 5]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import measure  # noqa: E402
import micro  # noqa: E402
import peers  # noqa: E402

APPS = os.path.join(HERE, "apps")
PY = sys.executable


def prack_v1(work, echo=False, **kw):
    cmd = [PY, os.path.join(APPS, "prack_v1_hello.py"), "--api", "{api}"]
    return peers.start_prack(work, cmd + (["--echo"] if echo else []), **kw)


def prack_v2(work, echo=False, **kw):
    cmd = [PY, os.path.join(APPS, "prack_v2_hello.py"), "--api", "{api}"]
    return peers.start_prack(work, cmd + (["--echo"] if echo else []), **kw)


# name -> (start(work, echo) -> Running, app processes, what it is)
HELLO = {
    "prack-v2": (lambda w, echo=False: prack_v2(w, echo), 2,
                 "Prack, 2 acceptors, 2 Python SDK workers (prack.worker, 8 lanes each) on "
                 "API v2: msgpack batches, each lane's answers posted with its next pull"),
    "prack-v1": (lambda w, echo=False: prack_v1(w, echo), 2,
                 "Prack, 2 acceptors, 2 Python SDK workers (8 lanes each) on API v1: JSON, "
                 "one request per pull and one per post"),
    "nginx": (lambda w, echo=False: peers.start_nginx_hello(w, 2), 0,
              "nginx alone, 2 worker processes, `return 200`"),
    "uvicorn-1": (lambda w, echo=False: peers.start_uvicorn(
        w, 1, "echo_asgi:app" if echo else "hello_asgi:app"), 1, "uvicorn, 1 worker"),
    "uvicorn-2": (lambda w, echo=False: peers.start_uvicorn(
        w, 2, "echo_asgi:app" if echo else "hello_asgi:app"), 2, "uvicorn, 2 workers"),
    "mongrel2": (lambda w, echo=False: peers.start_mongrel2(w, 2), 2,
                 "Mongrel2 + 2 Python pyzmq handlers"),
    "gunicorn": (lambda w, echo=False: peers.start_gunicorn(
        w, 2, "echo_wsgi:app" if echo else "hello_wsgi:app"), 2, "gunicorn sync, 2 workers"),
    "nginx-gunicorn": (lambda w, echo=False: peers.start_nginx_gunicorn(w, 2), 2,
                       "nginx (2 workers) -> gunicorn sync, 2 workers"),
}
PRACK = "prack-v2"


def summarize(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def one_load(run, path: str, conns: int, seconds: float, lua: str = "") -> dict:
    pids = run.pids()
    before = measure.cpu_seconds(pids)
    t0 = time.monotonic()
    res = measure.wrk(run.url + path, conns, seconds, lua)
    res["wall_s"] = time.monotonic() - t0
    after = measure.cpu_seconds(run.pids())
    cpu = measure.cpu_used(before, after)
    res["cpu_s"] = cpu
    res["cpu_us_per_request"] = cpu / res["requests"] * 1e6 if res.get("requests") else None
    return res


def scenario_hello(args, configs: dict) -> dict:
    raw: dict = {name: {str(c): [] for c in args.connections} for name in configs}
    for rnd in range(args.rounds):
        for name, (start, _, _) in configs.items():
            with tempfile.TemporaryDirectory() as work:
                try:
                    with start(work) as run:
                        measure.wrk(run.url + "/", 32, 1)        # warm-up
                        for conns in args.connections:
                            r = one_load(run, "/", conns, args.seconds)
                            raw[name][str(conns)].append(r)
                            print("hello round %d %-15s c=%-3d %8.0f req/s  cpu %6.1f us/req  "
                                  "p99 %.2f ms  errors %s" % (
                                      rnd + 1, name, conns, r["requests_per_s"],
                                      r["cpu_us_per_request"] or 0, r.get("p99", 0) * 1e3,
                                      r["errors"]), flush=True)
                except Exception as exc:   # a peer that cannot start is reported, not fatal
                    print("hello %s failed: %s" % (name, exc), flush=True)
                    raw[name].setdefault("failed", []).append(str(exc))
    out = {"runs": raw, "summary": {}}
    for name in configs:
        out["summary"][name] = {}
        for conns in args.connections:
            runs = raw[name][str(conns)]
            out["summary"][name][str(conns)] = {
                "requests_per_s": summarize([r["requests_per_s"] for r in runs]),
                "cpu_us_per_request": summarize([r["cpu_us_per_request"] for r in runs]),
                "p50": summarize([r.get("p50") for r in runs]),
                "p99": summarize([r.get("p99") for r in runs]),
                "errors": sum(r["errors"] or 0 for r in runs),
            }
    out["ratios"] = ratios(out["summary"], [n for n in configs if n.startswith("prack")])
    return out


def ratios(summary: dict, ours: list[str]) -> dict:
    """For each Prack configuration and connection count: its median
    requests/s divided by each peer's, and each peer's CPU per request
    divided by Prack's (above 1 means Prack is better in both)."""
    out: dict = {}
    for mine in ours:
        out[mine] = {}
        for conns, s in summary[mine].items():
            rps = s["requests_per_s"].get("median")
            cpu = s["cpu_us_per_request"].get("median")
            row = {}
            for peer, ps in summary.items():
                if peer == mine or conns not in ps:
                    continue
                prps = ps[conns]["requests_per_s"].get("median")
                pcpu = ps[conns]["cpu_us_per_request"].get("median")
                row[peer] = {
                    "throughput": rps / prps if rps and prps else None,
                    "cpu_efficiency": pcpu / cpu if cpu and pcpu else None,
                }
            out[mine][conns] = row
    return out


def _hold_idle(host: str, port: int, n: int) -> list[socket.socket]:
    """Open n keep-alive connections, make one request on each, and keep
    them open and idle. Raises if one was not answered 200 and kept open
    (a refusal over max_connections would make the per-connection figure
    a fraction of the truth)."""
    sel = selectors.DefaultSelector()
    socks, pending, refused = [], 0, 0
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        pending += 1
        while pending > 200 or (i == n - 1 and pending):
            for key, _ in sel.select(10):
                data = key.fileobj.recv(65536)
                if not data or b"\r\n\r\n" in data:
                    sel.unregister(key.fileobj)
                    pending -= 1
                    if not data.startswith(b"HTTP/1.1 200 ") or b"Connection: close" in data:
                        refused += 1
    sel.close()
    if refused:
        for s in socks:
            s.close()
        raise RuntimeError("%d of %d idle connections were not kept" % (refused, n))
    return socks


def scenario_memory(args) -> dict:
    import resource
    idle_conns = 2000 if args.quick else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle_conns + 1000), hard))
    out = {}
    with tempfile.TemporaryDirectory() as work:
        # Per acceptor: all may land on one. (Given as a setting: start_prack
        # does not pass the caller's PRACK_* variables on.)
        run = prack_v2(work, settings={"server_max_connections": idle_conns})
        with run:
            server = run.procs[0].pid
            tree = lambda: measure.tree([server])      # noqa: E731 - master, acceptors, API
            out["processes"] = len(tree())
            out["idle_pss"] = measure.pss_bytes(tree())
            measure.wrk(run.url + "/", 64, args.seconds)
            out["after_load_pss"] = measure.pss_bytes(tree())
            host, port = run.url.split("//")[1].rsplit(":", 1)
            socks = _hold_idle(host, int(port), idle_conns)
            try:
                out["idle_connections"] = idle_conns
                out["with_idle_connections_pss"] = measure.pss_bytes(tree())
            finally:
                for s in socks:
                    s.close()
            out["bytes_per_idle_connection"] = (
                (out["with_idle_connections_pss"] - out["after_load_pss"]) / idle_conns)
    print("memory: idle %.1f MB, after load %.1f MB, %d idle conns %.1f MB (%.0f B/conn)" % (
        out["idle_pss"] / 1e6, out["after_load_pss"] / 1e6, idle_conns,
        out["with_idle_connections_pss"] / 1e6, out["bytes_per_idle_connection"]), flush=True)
    return out


def scenario_latency(args, saturation: float | None, configs: dict) -> dict:
    """Latency at a fixed offered rate: half of Prack's own saturation rate,
    paced per connection with wrk's delay() (closed loop, 32 connections)."""
    conns = 32
    if not saturation:
        with tempfile.TemporaryDirectory() as work, prack_v2(work) as run:
            saturation = measure.wrk(run.url + "/", conns, args.seconds)["requests_per_s"]
    rate = saturation / 2
    delay_ms = max(1, round(conns * 1000 / rate))
    lua = "delay = function() return %d end\n" % delay_ms
    out = {"offered_rate": conns * 1000 / delay_ms, "prack_saturation": saturation,
           "connections": conns, "configs": {}}
    for name, (start, _, _) in configs.items():
        runs = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as work:
                try:
                    with start(work) as run:
                        runs.append(measure.wrk(run.url + "/", conns, args.seconds, lua))
                except Exception as exc:
                    print("latency %s failed: %s" % (name, exc), flush=True)
        out["configs"][name] = {k: summarize([r.get(k) for r in runs])
                                for k in ("requests_per_s", "p50", "p99", "p99_9")}
        s = out["configs"][name]
        if s.get("p99"):
            print("latency %-15s at %.0f req/s: p50 %.2f ms p99 %.2f ms p99.9 %.2f ms" % (
                name, out["offered_rate"], s["p50"]["median"] * 1e3, s["p99"]["median"] * 1e3,
                s["p99_9"]["median"] * 1e3), flush=True)
    return out


def scenario_sizes(args, configs: dict) -> dict:
    out = {}
    sizes = {"1KiB": 1024, "64KiB": 65536, "1MiB": 1 << 20}
    for label, size in sizes.items():
        lua = 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' \
              'wrk.headers["Content-Type"] = "application/octet-stream"\n' % size
        out[label] = {}
        for name, (start, _, _) in configs.items():
            runs = []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as work:
                    try:
                        with start(work, echo=True) as run:
                            runs.append(one_load(run, "/", 32, args.seconds, lua))
                    except Exception as exc:
                        print("sizes %s failed: %s" % (name, exc), flush=True)
            out[label][name] = {
                "requests_per_s": summarize([r["requests_per_s"] for r in runs]),
                "mib_per_s": summarize([r["requests_per_s"] * size * 2 / (1 << 20) for r in runs]),
                "cpu_us_per_request": summarize([r["cpu_us_per_request"] for r in runs]),
                "errors": sum(r["errors"] or 0 for r in runs),
            }
            s = out[label][name]["requests_per_s"]
            if s:
                print("sizes %-6s %-15s %8.0f req/s" % (label, name, s["median"]), flush=True)
    return out


def scenario_static(args) -> dict:
    """Front only: one small file served by Prack's acceptors themselves
    ([static], no worker) against nginx serving the same file, each with one
    process doing the serving."""
    out = {}
    with tempfile.TemporaryDirectory() as site:
        with open(os.path.join(site, "hello.html"), "wb") as f:
            f.write(b"<!doctype html><title>hello</title><p>" + b"Hello, World! " * 64 + b"\n")
        configs = {
            "prack-static-1": lambda w: peers.start_prack(
                w, [], workers=0, acceptors=1, settings={"static_root": site},
                ready_path="/static/hello.html"),
            "nginx-static-1": lambda w: peers.start_nginx_static(w, site, 1),
        }
        raw = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, start in configs.items():
                with tempfile.TemporaryDirectory() as work:
                    with start(work) as run:
                        path = "/static/hello.html" if name.startswith("prack") else "/hello.html"
                        measure.wrk(run.url + path, 32, 1)
                        r = one_load(run, path, 32, args.seconds)
                        raw[name].append(r)
                        print("static %-15s %8.0f req/s  cpu %5.1f us/req" % (
                            name, r["requests_per_s"], r["cpu_us_per_request"] or 0), flush=True)
        for name, runs in raw.items():
            out[name] = {"requests_per_s": summarize([r["requests_per_s"] for r in runs]),
                         "cpu_us_per_request": summarize([r["cpu_us_per_request"] for r in runs]),
                         "p99": summarize([r.get("p99") for r in runs]),
                         "errors": sum(r["errors"] or 0 for r in runs)}
        a = out["prack-static-1"]["requests_per_s"].get("median")
        b = out["nginx-static-1"]["requests_per_s"].get("median")
        out["ratio_vs_nginx"] = a / b if a and b else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, for trying the harness")
    ap.add_argument("--only", default="micro,hello,static,memory,latency,sizes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", default="32,256")
    ap.add_argument("--configs", default=",".join(HELLO))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    args.connections = [int(c) for c in args.connections.split(",")]
    only = set(args.only.split(","))
    configs = {n: HELLO[n] for n in args.configs.split(",")}
    missing = peers.which_missing()
    if missing:
        sys.exit("bench: missing %s (make bench installs them)" % ", ".join(missing))
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": micro.cpu_model(), "cores": os.cpu_count(),
                    "kernel": platform.release(), "python": platform.python_version()},
        "versions": peers.peer_versions(),
        "settings": {"rounds": args.rounds, "seconds": args.seconds,
                     "connections": args.connections, "client": "wrk -t1, keep-alive, loopback"},
        "configs": {n: {"app_processes": c[1], "what": c[2]} for n, c in configs.items()},
    }
    n = 20000 if args.quick else 200000
    if "micro" in only:
        results["parser"] = micro.bench_parser(n)
        results["ring"] = micro.bench_ring(n * 5)
        print("micro:", json.dumps({"parser": results["parser"], "ring": results["ring"]}),
              flush=True)
    if "hello" in only:
        results["hello"] = scenario_hello(args, configs)
    if "memory" in only:
        results["memory"] = scenario_memory(args)
    if "latency" in only:
        sat = None
        if "hello" in results and PRACK in results["hello"]["summary"]:
            sat = results["hello"]["summary"][PRACK]["32"]["requests_per_s"].get("median")
        results["latency"] = scenario_latency(
            args, sat, {k: v for k, v in configs.items()
                        if k in (PRACK, "uvicorn-2", "mongrel2", "nginx-gunicorn")})
    if "static" in only:
        results["static"] = scenario_static(args)
    if "sizes" in only:
        results["sizes"] = scenario_sizes(
            args, {k: v for k, v in configs.items()
                   if k in (PRACK, "prack-v1", "uvicorn-2", "gunicorn")})
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", datetime.date.today().isoformat() + ".json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("written to", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
