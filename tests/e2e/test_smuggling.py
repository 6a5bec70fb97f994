"""Request smuggling, end to end: the framing rules of RFC 9112 sections 6-7.

Each vector is a request whose framing a lenient parser or a proxy could read
differently, followed on the same connection by a request the attacker wants
smuggled. Prack must answer the first with the status the RFC asks for, close
the connection, and never hand either request to a worker. Valid but unusual
framings must be read exactly one way: the worker gets the body the RFC says,
and the request behind it is a request of its own.
"""
from __future__ import annotations

import itertools

import pytest

from conftest import Recorder

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
_marks = itertools.count()


@pytest.fixture(scope="module")
def setup(start_module_server, module_worker_factory):
    # One acceptor and one worker: a request that reaches a worker is seen
    # before the marker that follows it.
    s = start_module_server(acceptors=1, api_poll_timeout=1)
    app = Recorder()
    module_worker_factory(s.api, app)
    return s, app


def _seen_until_marker(s, app) -> list[tuple[str, bytes]]:
    """Send a marker request; return what the worker was given before it
    (since the previous marker)."""
    mark = "/marker/%d" % next(_marks)
    with s.raw() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % mark.encode())
        assert c.read_response().status == 200
    with app.lock:
        seen = [(env["PATH_INFO"], body) for env, body in app.seen]
        app.seen.clear()
    assert seen and seen[-1][0] == mark, seen
    return seen[:-1]


# (id, request bytes, expected status). RFC 9112 section in the comment.
REJECTED = [
    # 6.3: Transfer-Encoding with Content-Length is a smuggling attempt.
    ("cl-te", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("te-cl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("te-cl-zero", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # 6.3: chunked must be the final coding of a request.
    ("chunked-not-last", b"POST / HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    # 6.1: chunked must not be applied twice.
    ("chunked-twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunked-twice-list", b"POST / HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    # 6.3: without chunked as the final coding the length cannot be known:
    # 400 is a MUST, and it wins over 6.1's SHOULD (501 for an unknown coding).
    ("te-unknown", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                   b"0\r\n\r\n", 400),
    ("te-identity", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"
                    b"0\r\n\r\n", 400),
    ("te-gzip-only", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    # 6.1: chunked last, but a coding before it that Prack does not decode.
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                        b"\r\n0\r\n\r\n", 501),
    # 5.1 / 5.5: no whitespace before the colon; no control characters in values.
    ("te-space-colon", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
                       b"0\r\n\r\n", 400),
    ("te-vtab", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n"
                b"0\r\n\r\n", 400),
    ("te-nul", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x00\r\n\r\n"
               b"0\r\n\r\n", 400),
    # 5.2: obs-fold is rejected (a proxy may unfold it into a framing header).
    ("te-obs-fold", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
                    b"0\r\n\r\n", 400),
    ("x-obs-fold", b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\n"
                   b"Content-Length: 0\r\n\r\n", 400),
    # 6.1: Transfer-Encoding in an HTTP/1.0 request: the framing is faulty.
    ("te-http10", b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n", 400),
    # 6.3 / 8.6: differing or malformed Content-Length.
    ("cl-differ", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Content-Length: 4\r\n\r\nabcd", 400),
    ("cl-list-differ", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("cl-minus", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc", 400),
    ("cl-inner-space", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n"
                       b"0123456789", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    ("cl-overflow", b"POST / HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 18446744073709551617\r\n\r\nabc", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400),
    ("cl-space-colon", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", 400),
    # 7.1: chunk sizes and terminators.
    ("chunk-overflow", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"10000000000000001\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-0x", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0x3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-minus", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"-3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-leading-space", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b" 3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-empty-size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-bad-terminator", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabcXX0\r\n\r\n", 400),
    ("chunk-too-long", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabcd\r\n0\r\n\r\n", 400),
    ("chunk-bare-lf", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\nabc\n0\n\n", 400),
    ("chunk-ext-ctl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3;a\x00\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-last-bare-lf", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0\n\r\n", 400),
    # 2.2: bare CR and bare LF as line ends.
    ("bare-lf-head", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare-cr-head", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    # 3.2: Host missing or repeated in HTTP/1.1.
    ("host-missing", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    ("host-twice", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("host-twice-same", b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
    ("host-list", b"GET / HTTP/1.1\r\nHost: x, y\r\n\r\n", 400),
    # 3: request line shape.
    ("two-spaces", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("lower-version", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    ("leading-header-space", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
]


@pytest.mark.parametrize("data,status", [(d, st) for _, d, st in REJECTED],
                         ids=[name for name, _, _ in REJECTED])
def test_smuggling_vector_rejected(setup, data, status):
    s, app = setup
    with s.raw() as c:
        c.send(data + SMUGGLED)
        r = c.read_response()
        assert r.status == status, r
        assert r.header("Connection") == "close"
        c.assert_closed()
        assert c.buf == b"", "more than one response came back: %r" % c.buf
    assert _seen_until_marker(s, app) == [], "a worker was handed part of a rejected request"


# (id, request bytes, the body the worker must get). Each is followed by
# SMUGGLED, which is then a request of its own.
ACCEPTED = [
    ("cl-body-looks-like-request", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 32\r\n\r\n"
                                   b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n",
     b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"),
    # 6.3: a list of identical values is one length.
    ("cl-list-same", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", b"abc"),
    ("cl-dup-same", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Content-Length: 3\r\n\r\nabc", b"abc"),
    ("cl-leading-zeros", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc", b"abc"),
    # 5.5: leading and trailing OWS is not part of a value.
    ("te-ows", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \t chunked \t\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
    # 6.1: coding names are case-insensitive.
    ("te-case", b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: ChUnKeD\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
    # 7.1.1: chunk extensions are ignored; hex is case-insensitive.
    ("chunk-ext", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"A;name=\"v;al\"\r\n0123456789\r\n0;x=y\r\n\r\n", b"0123456789"),
    ("chunk-upper-hex", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0000B\r\n0123456789a\r\n0\r\n\r\n", b"0123456789a"),
    # 7.1.2: trailer fields never change the framing.
    ("trailer-cl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nContent-Length: 40\r\nX-T: 1\r\n\r\n", b"abc"),
    # 6.3: a request with neither has no body, whatever follows.
    ("get-no-framing", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
]


@pytest.mark.parametrize("data,body", [(d, b) for _, d, b in ACCEPTED],
                         ids=[name for name, _, _ in ACCEPTED])
def test_unusual_but_valid_framing_read_one_way(setup, data, body):
    s, app = setup
    with s.raw() as c:
        c.send(data + SMUGGLED)
        first = c.read_response()
        second = c.read_response()
        assert first.status == 200 and second.status == 200
    seen = _seen_until_marker(s, app)
    assert seen == [("/", body), ("/smuggled", b"")]
