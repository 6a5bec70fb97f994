"""In-process timing of the acceptor's per-request head work: parse the head
(RequestReader.maybe_read_request: the C parser and the framing decisions)
and make the environment the ring carries (msgpack), for a realistic browser
request and a three-field wrk-style request. Best of 7 rounds.

    PYTHONPATH=src python bench/headpath.py [--n 200000]

It times whichever prack is on the path: one whose Request has
environ_msgpack (the C environment, head.c) or the older one (environ.environ
and msgspec), so the same script measures a branch and main.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import msgspec  # noqa: E402
from micro import BROWSER_REQUEST  # noqa: E402

from prack.protocol import environ, http

WRK_REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n"
               b"Accept: */*\r\n\r\n")
LIMITS = http.Limits(1 << 20, 32 << 10, 8 << 10, 100)


def env_maker():
    """f(req) -> the environment's msgpack bytes (or buffer), as _dispatch makes it."""
    if hasattr(http.Request, "environ_msgpack"):
        server = environ.msgpack_pairs({"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"})
        remote = environ.msgpack_pairs({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000"})
        return "c", lambda req: req.environ_msgpack(server, 2, remote, 2)
    encode = msgspec.msgpack.Encoder().encode
    build = environ.environ
    return "python", lambda req: encode(build(req, "127.0.0.1", "8080", "127.0.0.1", "40000"))


def best(fn, n: int, rounds: int = 7) -> float:
    """Best per-call time in microseconds over `rounds` rounds of n calls."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - t) / n * 1e6)
    return min(times)


def measure(raw: bytes, n: int) -> dict:
    kind, make_env = env_maker()
    reader = http.RequestReader(LIMITS)

    def parse(n):
        feed, read, nxt = reader.feed, reader.maybe_read_request, reader.next
        for _ in range(n):
            feed(raw)
            read()
            nxt()

    def both(n):
        feed, read, nxt = reader.feed, reader.maybe_read_request, reader.next
        for _ in range(n):
            feed(raw)
            make_env(read())
            nxt()

    reader.feed(raw)
    req = reader.maybe_read_request()
    reader.next()

    def env_only(n):
        for _ in range(n):
            make_env(req)

    return {"env": kind, "parse_us": round(best(parse, n), 3),
            "environment_us": round(best(env_only, n), 3),
            "parse_and_environment_us": round(best(both, n), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100000)
    args = ap.parse_args()
    out = {"browser": measure(BROWSER_REQUEST, args.n), "wrk": measure(WRK_REQUEST, args.n)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
