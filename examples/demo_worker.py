#!/usr/bin/env python3
"""A Prack demo worker using only the standard library.

It pulls requests from the worker API (v1), answers each with a short text
page describing the request, and posts the response back. Run several copies
(or --threads N) to add capacity; nothing needs to be told where they are.

    python3 examples/demo_worker.py --api http://127.0.0.1:4242
"""
import argparse
import base64
import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse

stopping = threading.Event()


def handle(env, body):
    """The app: (status, headers, body bytes) for one Rack-style request."""
    text = (
        "Hello from a Prack worker!\n"
        f"method: {env['REQUEST_METHOD']}\n"
        f"path: {env['PATH_INFO']}\n"
        f"query: {env['QUERY_STRING']}\n"
        f"body: {len(body)} bytes\n"
    )
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()


def work(api):
    url = urllib.parse.urlsplit(api)
    conn = None
    down_since = None
    while not stopping.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
            conn.request("GET", "/api/v1/request")
            resp = conn.getresponse()
            data = resp.read()
            if down_since is not None:
                print("worker: connected to", api, file=sys.stderr)
                down_since = None
            if resp.status != 200:
                continue          # 404: nothing pending within the poll timeout
            job = json.loads(data)
            status, headers, out = handle(job["environment"], base64.b64decode(job["body"]))
            answer = json.dumps({
                "identifier": job["identifier"],
                "code": status,
                "headers": headers,
                "body": base64.b64encode(out).decode("ascii"),
            })
            conn.request("POST", "/api/v1/response", answer,
                         {"Content-Type": "application/json"})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
                conn = None
            if down_since is None:
                down_since = time.monotonic()
                print("worker: cannot reach", api, "- retrying", file=sys.stderr)
            stopping.wait(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:4242")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    threads = [threading.Thread(target=work, args=(args.api,), daemon=True)
               for _ in range(args.threads)]
    for t in threads:
        t.start()
    try:
        while not stopping.wait(1):
            pass
    except KeyboardInterrupt:
        stopping.set()


if __name__ == "__main__":
    main()
