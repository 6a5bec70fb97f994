"""Differential: the environment the acceptor sends (C, prk_write_env through
Request.environ_msgpack) decodes to exactly the dict of environ.environ, the
readable reference, for many requests: the parser corpus, the seeded
near-valid requests of tests/differential.py, and a generator of header
sets aimed at the environment's rules (repeats, Cookie, names with "_",
Proxy, latin-1 bytes, hosts, absolute targets, chunked bodies). Request.headers
(made lazily from the saved scan) is checked against the parser's fields too.
"""
from __future__ import annotations

import random

import msgspec
import pytest

import differential
import parserlib
from prack.protocol import http
from prack.protocol import environ
LIMITS = http.Limits(1 << 20, 32 << 10, 8 << 10, 100)
DECODE = msgspec.msgpack.Decoder(dict[str, str]).decode
ADDRS = [("127.0.0.1", "8080", "10.0.0.1", "5555"), ("::1", "80", "::1", "1"),
         ("", "0", "", "")]


def check_stream(data: bytes, rnd: random.Random) -> int:
    """Read every request of `data` as the acceptor does; compare each
    environment with the reference. The number of requests compared."""
    reader = http.RequestReader(LIMITS)
    reader.feed(data)
    n = 0
    while True:
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError:
            return n
        if req is None:
            return n
        server_name, server_port, addr, port = rnd.choice(ADDRS)
        server = environ.msgpack_pairs({"SERVER_NAME": server_name, "SERVER_PORT": server_port})
        extra = {"REMOTE_ADDR": addr, "REMOTE_PORT": port}
        if rnd.random() < 0.2:
            extra["prack.input"] = "/api/v2/requests/%032x/input" % rnd.getrandbits(128)
        got = DECODE(bytes(req.environ_msgpack(server, 2, environ.msgpack_pairs(extra), len(extra))))
        want = environ.environ(req, server_name, server_port, addr, port)
        want.update(extra)
        assert got == want, (data, got, want)
        n += 1
        reader.next()


def test_corpus_requests():
    rnd = random.Random(7)
    compared = 0
    for case in parserlib.load("valid"):
        compared += check_stream(case.data, rnd)
    assert compared >= 10          # most of the corpus lacks Host: 400


def test_near_valid_requests():
    rnd = random.Random(3)
    compared = 0
    for _, _, data in differential.generate(11, 6000):
        compared += check_stream(data, rnd)
    assert compared > 1500         # the rest are refused, as they must be


NAMES = [b"Host", b"host", b"HOST", b"Cookie", b"cookie", b"X-A", b"x-a", b"X_A", b"Proxy",
         b"proxy", b"Content-Type", b"content-type", b"Content-Length", b"Connection",
         b"Upgrade", b"Expect", b"Accept", b"X-Forwarded-For", b"A", b"Server-Name",
         b"Transfer-Encoding", b"Http-Host", b"Q!#$%&'*+.^`|~9", b"X-Long-" + b"n" * 70]
VALUES = [b"", b"1", b"a b", b"caf\xe9", b"\x80\xff\xa0", b"x" * 40, b"y" * 300,
          b"keep-alive", b"close", b"100-continue", b"text/html; charset=utf-8",
          b"a=1; b=2", b"websocket", b"example.com", b"[::1]:81", b"h:", b"\t\"q\" ,;"]
TARGETS = [b"/", b"/a?b", b"/%e9?x=%20&y", b"/?", b"http://H.example", b"https://h:8/p?q",
           b"http://[::1]:9?z", b"/a/b/../c;p?q=1?2", b"*"]


def generated(rnd: random.Random) -> bytes:
    method = rnd.choice([b"GET", b"POST", b"PUT", b"OPTIONS", b"PATCH", b"M-SEARCH"])
    target = rnd.choice(TARGETS)
    version = rnd.choice([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
    fields = []
    if version == b"HTTP/1.1" or rnd.random() < 0.5:
        fields.append((rnd.choice([b"Host", b"host"]), rnd.choice(
            [b"example.com", b"Ex.COM:8080", b"[::1]", b"", b"a:"])))
    for _ in range(rnd.randrange(0, 20)):
        name = rnd.choice(NAMES)
        if name.lower() in (b"host", b"content-length", b"transfer-encoding", b"expect"):
            continue
        fields.append((name, rnd.choice(VALUES)))
    rnd.shuffle(fields)
    body = b""
    shape = rnd.random()
    if shape < 0.3:
        body = b"b" * rnd.randrange(0, 50)
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif shape < 0.5 and version == b"HTTP/1.1":
        data = b"c" * rnd.randrange(1, 50)
        fields.append((b"Transfer-Encoding", b"chunked"))
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    return head + b"\r\n" + body


def test_generated_requests():
    rnd = random.Random(5)
    compared = 0
    for _ in range(20000):
        compared += check_stream(generated(rnd), rnd)
    assert compared > 15000


def test_lazy_headers_are_the_parsers_fields():
    rnd = random.Random(9)
    for _ in range(3000):
        data = generated(rnd)
        reader = http.RequestReader(LIMITS)
        reader.feed(data)
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError:
            continue
        rc, fields = parserlib.parse(data)
        assert rc > 0
        want = [(n.encode("latin-1").lower(), v.encode("latin-1")) for n, v in fields["headers"]]
        assert req.headers == want
        ctype = [v for n, v in want if n == b"content-type"]
        assert req.content_type == (ctype[-1] if ctype else None)


@pytest.mark.parametrize("raw, status", [
    # statuses and messages are those of the Python code this replaced
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n", 417),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
])
def test_reader_statuses(raw, status):
    reader = http.RequestReader(LIMITS)
    reader.feed(raw)
    with pytest.raises(http.ProtocolError) as exc:
        reader.maybe_read_request()
    assert exc.value.status == status
    assert exc.value.head is False
    with pytest.raises(http.ProtocolError):
        reader.maybe_read_request()


def test_head_errors_know_the_method():
    reader = http.RequestReader(LIMITS)
    reader.feed(b"HEAD / HTTP/1.1\r\n\r\n")
    with pytest.raises(http.ProtocolError) as exc:
        reader.maybe_read_request()
    assert exc.value.status == 400 and exc.value.head
    reader = http.RequestReader(LIMITS)
    reader.feed(b"HEAD / HTTP/3.0\r\n\r\n")     # 505 comes before the method is known
    with pytest.raises(http.ProtocolError) as exc:
        reader.maybe_read_request()
    assert exc.value.status == 505 and not exc.value.head
