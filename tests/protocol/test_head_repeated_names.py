"""prk_write_env on heads of many fields (up to the largest
limits.max_headers, 1000): the repeats of a name are found in O(n log n),
and the environment stays that of environ.environ."""
from __future__ import annotations

import itertools
import random
import time

import msgspec

from prack.protocol import http

from prack.protocol import environ
LIMITS = http.Limits(1 << 20, 256 << 10, 8 << 10, 1000)
DECODE = msgspec.msgpack.Decoder(dict[str, str]).decode
SERVER = environ.msgpack_pairs({"SERVER_NAME": "s", "SERVER_PORT": "1"})
# Names the hash does not tell apart: it ignores bit 0x20 of every byte, and
# "^" (0x5e) and "~" (0x7e) differ only there.
ALIKE = [b"x" + bytes(p) for p in itertools.product(b"^~", repeat=10)][:999]


def read(head: bytes) -> http.Request:
    reader = http.RequestReader(LIMITS)
    reader.feed(head)
    req = reader.maybe_read_request()
    assert req is not None
    return req


def request(names) -> bytes:
    return (b"GET / HTTP/1.1\r\nHost: a\r\n" +
            b"".join(n + b": v%d\r\n" % i for i, n in enumerate(names)) + b"\r\n")


def c_environ(req: http.Request) -> dict:
    return DECODE(bytes(req.environ_msgpack(SERVER, 2, environ.msgpack_pairs(
        {"REMOTE_ADDR": "a", "REMOTE_PORT": "2"}), 2)))


def test_many_fields_join_as_the_reference_does():
    rnd = random.Random(4)
    pool = ALIKE[:40] + [b"Cookie", b"cookie", b"X-A", b"x-a", b"X-a", b"Accept", b"X_B",
                         b"Proxy", b"Content-Type", b"A", b"a", b"B"]
    for n in (0, 1, 2, 3, 7, 64, 300, 999):
        for _ in range(5):
            req = read(request(rnd.choice(pool) for _ in range(n)))
            want = environ.environ(req, "s", "1", "a", "2")
            assert c_environ(req) == want


def best_of(head: bytes, rounds: int = 7, calls: int = 10) -> float:
    req = read(head)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            req.environ_msgpack(SERVER, 2)
        best = min(best, time.perf_counter() - t)
    return best


def test_names_alike_cost_no_quadratic_work():
    """999 names alike to the hash cost about what 999 names the hash tells
    apart do (sorted: each comparison of two alike names reads ~11 bytes
    instead of two integers). Each field compared with those before it, the
    alike ones cost 8 times more: 6.7 ms per request."""
    plain = [n.replace(b"^", b"a").replace(b"~", b"b") for n in ALIKE]
    ratio = best_of(request(ALIKE)) / best_of(request(plain))
    assert ratio < 3, ratio
    env = c_environ(read(request(ALIKE)))
    assert sum(k.startswith("HTTP_X") for k in env) == 999
