"""Prack worker for the benchmarks on API v1, standard library only: one
keep-alive connection, pull, answer, repeat. `--echo` answers with the
request body (body-size scenario); otherwise "Hello, World!"."""
import argparse
import base64
import http.client
import json
import signal
import sys
import urllib.parse

HELLO = base64.b64encode(b"Hello, World!").decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--echo", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    url = urllib.parse.urlsplit(args.api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": "text/plain"}
    post_headers = {"Content-Type": "application/json"}
    while True:
        conn.request("GET", "/api/v1/request")
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            continue
        job = json.loads(data)
        body = job["body"] if args.echo else HELLO
        msg = json.dumps({"identifier": job["identifier"], "code": 200, "headers": headers,
                          "body": body})
        conn.request("POST", "/api/v1/response", msg, post_headers)
        conn.getresponse().read()


if __name__ == "__main__":
    main()
