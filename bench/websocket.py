#!/usr/bin/env python3
"""WebSocket messages through Prack: one client streams --messages messages
of --size bytes to an echo worker (GET .../events, POST .../send, JSON) and
reads them back; then --pings single round trips (send one, wait for its
echo) give the latency. The baseline is the same client against a bare
blocking echo server on loopback that uses Prack's own codec (no relay,
no worker API): the ratios are what means something on a shared machine.
Also reports the peak growth of the front's resident memory (acceptor + API
process) during the stream.

    python bench/websocket.py [--messages 20000] [--size 100] [--pings 500]

Writes bench/results/websocket-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from upload import front_rss, start_server  # noqa: E402
from wsclient import WsClient  # noqa: E402

from prack.protocol import websocket as ws  # noqa: E402


def echo_worker(api, stop: threading.Event) -> None:
    """Accept every upgrade; echo each WebSocket on its own thread."""
    c = http.client.HTTPConnection(*api, timeout=60)
    while not stop.is_set():
        c.request("GET", "/api/v2/requests?wait=0.5")
        r = c.getresponse()
        data = r.read()
        for item in json.loads(data)["requests"] if r.status == 200 else ():
            c.request("POST", "/api/v2/requests/%s/head" % item["id"],
                      json.dumps({"status": 101}), {"Content-Type": "application/json"})
            c.getresponse().read()
            threading.Thread(target=echo_session, args=(api, item["id"]), daemon=True).start()
    c.close()


def echo_session(api, ident: str) -> None:
    c = http.client.HTTPConnection(*api, timeout=60)
    base = "/api/v2/requests/%s/" % ident
    while True:
        c.request("GET", base + "events?wait=5")
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            break
        events = json.loads(data)["events"]
        out = [e for e in events if e["type"] != "close"]
        if out:
            c.request("POST", base + "send", json.dumps({"messages": out}),
                      {"Content-Type": "application/json"})
            c.getresponse().read()
        if len(out) != len(events):
            break
    c.close()


def bare_echo_server() -> tuple[socket.socket, int]:
    """A blocking WebSocket echo server on loopback, one thread per client."""
    lst = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in buf.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        conn.sendall(ws.handshake_head(key, [], []))
        parser = ws.FrameParser()
        while True:
            data = conn.recv(262144)
            if not data:
                break
            parser.feed(data)
            out = []
            for event in parser.events():
                if isinstance(event, ws.Message):
                    out.append(ws.frame(event.opcode, event.data))
                elif isinstance(event, ws.Close):
                    out.append(ws.frame(ws.OP_CLOSE, b""))
            if out:
                conn.sendall(b"".join(out))
            if parser.closed:
                break
        conn.close()

    def accept():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return lst, lst.getsockname()[1]


def run(port: int, messages: int, size: int, pings: int, master: int | None) -> dict:
    payload = os.urandom(size)
    client = WsClient(port, "/bench", timeout=60)
    base = front_rss(master) if master else 0
    peak = [base]
    done = threading.Event()

    def sample():
        while master and not done.wait(0.05):
            peak[0] = max(peak[0], front_rss(master))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def send():
        for _ in range(messages):
            client.send(payload)
    start = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    for i in range(messages):
        if client.recv() != payload:
            raise SystemExit("message %d came back wrong" % i)
    took = time.perf_counter() - start
    sender.join()
    done.set()
    sampler.join()
    rtts = []
    for _ in range(pings):
        t = time.perf_counter()
        client.send(payload)
        client.recv()
        rtts.append(time.perf_counter() - t)
    client.close()
    client.recv_event()
    client.shutdown()
    rtts.sort()
    return {"messages_per_s": round(messages / took),
            "mib_per_s": round(messages * size / took / (1 << 20), 2),
            "rtt_p50_ms": round(statistics.median(rtts) * 1000, 3),
            "rtt_p99_ms": round(rtts[int(len(rtts) * 0.99) - 1] * 1000, 3),
            "rss_growth_mib": round((peak[0] - base) / (1 << 20), 1) if master else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=100, help="bytes per message")
    ap.add_argument("--pings", type=int, default=500)
    args = ap.parse_args()
    runtime = tempfile.mkdtemp(prefix="prack-bench-")
    proc, public, api = start_server(runtime)
    stop = threading.Event()
    threading.Thread(target=echo_worker, args=(api, stop), daemon=True).start()
    try:
        prack = run(public[1], args.messages, args.size, args.pings, proc.pid)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
        if not os.listdir(runtime):
            os.rmdir(runtime)
    lst, port = bare_echo_server()
    bare = run(port, args.messages, args.size, args.pings, None)
    lst.close()
    results = {"prack": prack, "bare_echo": bare,
               "throughput_ratio": round(prack["messages_per_s"] / bare["messages_per_s"], 3),
               "rtt_ratio": round(prack["rtt_p50_ms"] / bare["rtt_p50_ms"], 2)}
    report = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "messages": args.messages, "size": args.size,
              "results": results}
    print(json.dumps(report, indent=2))
    out = os.path.join(HERE, "results", "websocket-%s.json" % report["date"])
    with open(out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
