"""Differential check of Prack's request parsing against llhttp and h11.

A seeded generator makes near-valid requests: a valid request (several
shapes: GET, Content-Length and chunked POSTs, HTTP/1.0, absolute-form,
OPTIONS *), often followed by a clean pipelined request, with one to three
mutations applied (letter case, whitespace, duplicated or conflicting
framing headers, odd chunk sizes and extensions, non-ASCII, NUL/CTL bytes,
LF-only or bare-CR line ends, Host and target variations, versions,
Connection / Upgrade / Expect fields). Each input goes, whole, to

* Prack: `prack.http.RequestReader` (the C parser, the chunked decoder and
  the RFC 9112 framing decisions), request after request as the acceptor
  reads them;
* llhttp through `httptools.HttpRequestParser`;
* h11 (`h11.Connection(h11.SERVER)`).

Each side's outcome is the list of complete requests (method, target,
header fields with lower-case names and OWS-trimmed values, body) and how
the stream ended: `ok` (nothing left over), `incomplete`, `closed` (after
a request that does not keep the connection: later bytes are never read),
`reject`, or `upgrade` (llhttp switched protocols).
Prack differs from a peer when the outcomes differ. Every difference gets a
category from `classify()`; `ALLOWED` lists the categories that are Prack's
deliberate choice, each with the RFC 9112 (or 9110) section that justifies
it. A difference in no allowed category is a finding: a Prack bug to fix,
or a new category to document (docs/security.md).

Categories never allowed: both sides accept the first request but disagree
on its body or on what follows it (a framing disagreement is a smuggling
vector), or Prack accepts something the RFC says MUST be rejected.

    python tests/differential.py --cases 200000 [--seed 1] [--show 5]

prints the totals by category and peer; tests/test_differential.py runs a
few thousand cases under pytest.
"""
from __future__ import annotations

import argparse
import collections
import random
import re
import sys
import time
from dataclasses import dataclass, field

import h11
import httptools

from prack.protocol import http

CRLF = b"\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n"
LIMITS = http.Limits(1 << 20, 32 << 10, 8 << 10, 100)   # config.py defaults

# ---------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------


@dataclass
class Req:
    """A request under construction; `head_bytes()` serializes it."""
    method: bytes = b"GET"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    sep1: bytes = b" "
    sep2: bytes = b" "
    headers: list = field(default_factory=list)    # [name, sep, value] lists
    body: bytes = b""
    eol: list = field(default_factory=list)        # line end per line, or default
    tags: list = field(default_factory=list)       # mutations applied

    def head_bytes(self) -> bytes:
        lines = [self.method + self.sep1 + self.target + self.sep2 + self.version]
        lines += [n + s + v for n, s, v in self.headers]
        out = []
        for i, line in enumerate(lines + [b""]):
            end = self.eol[i] if i < len(self.eol) and self.eol[i] is not None else CRLF
            out.append(line + end)
        return b"".join(out)

    def bytes(self) -> bytes:
        return self.head_bytes() + self.body

    def set_header(self, name: bytes, value: bytes) -> None:
        self.headers = [h for h in self.headers if h[0].lower() != name.lower()]
        self.headers.append([name, b": ", value])


def chunk(data: bytes, size: bytes | None = None, ext: bytes = b"") -> bytes:
    return (size if size is not None else b"%x" % len(data)) + ext + CRLF + data + CRLF


def base(rnd: random.Random) -> Req:
    shape = rnd.choice(["get", "get", "post-cl", "post-chunked", "post-chunked",
                        "http10", "absolute", "options"])
    r = Req()
    r.headers = [[b"Host", b": ", b"example.com"]]
    if rnd.random() < 0.5:
        r.headers.append([b"User-Agent", b": ", b"diff/1.0"])
    if rnd.random() < 0.3:
        r.headers.append([b"Accept", b": ", b"*/*"])
    r.target = rnd.choice([b"/", b"/a/b?c=d", b"/x%20y", b"/p?q=1&r=%C3%A9"])
    if shape == "post-cl":
        r.method = b"POST"
        r.body = rnd.choice([b"hello", b"", b"a=1&b=2", b"x" * 100])
        r.set_header(b"Content-Length", b"%d" % len(r.body))
    elif shape == "post-chunked":
        r.method = rnd.choice([b"POST", b"PUT"])
        pieces = [bytes([97 + rnd.randrange(26)]) * rnd.randint(1, 20)
                  for _ in range(rnd.randint(0, 3))]
        r.body = b"".join(chunk(p) for p in pieces) + b"0" + CRLF + CRLF
        r.set_header(b"Transfer-Encoding", b"chunked")
    elif shape == "http10":
        r.version = b"HTTP/1.0"
        if rnd.random() < 0.5:
            r.headers = [h for h in r.headers if h[0] != b"Host"]
    elif shape == "absolute":
        r.target = b"http://example.com/abs?x=1"
    elif shape == "options":
        r.method = b"OPTIONS"
        r.target = b"*"
    r.tags.append(shape)
    return r


CTLS = [0, 1, 8, 9, 11, 12, 13, 10, 27, 31, 127]
NON_ASCII = [b"\x80", b"\xc3\xa9", b"\xff", b"\xe2\x80\x8b"]


def _hidx(r: Req, rnd: random.Random, name: bytes | None = None) -> int | None:
    if name is not None:
        idx = [i for i, h in enumerate(r.headers) if h[0].lower() == name]
        return rnd.choice(idx) if idx else None
    return rnd.randrange(len(r.headers)) if r.headers else None


def m_case(r: Req, rnd: random.Random) -> None:
    what = rnd.randrange(5)
    if what == 0:
        r.method = r.method.lower() if rnd.random() < 0.5 else r.method.capitalize()
    elif what == 1 and r.headers:
        h = r.headers[_hidx(r, rnd)]
        h[0] = h[0].swapcase() if rnd.random() < 0.5 else h[0].upper()
    elif what == 2:
        i = _hidx(r, rnd, b"transfer-encoding")
        if i is not None:
            r.headers[i][2] = rnd.choice([b"CHUNKED", b"Chunked", b"chunKed"])
        else:
            r.version = r.version.lower()
    elif what == 3:
        r.version = rnd.choice([b"http/1.1", b"Http/1.1", b"HTTP/1.1".replace(b"P", b"p")])
    else:
        r.target = r.target.upper()


def m_whitespace(r: Req, rnd: random.Random) -> None:
    what = rnd.randrange(10)
    if what == 0:
        r.sep1 = rnd.choice([b"  ", b"\t", b" \t"])
    elif what == 1:
        r.sep2 = rnd.choice([b"  ", b"\t"])
    elif what == 2:
        r.version += rnd.choice([b" ", b"\t"])
    elif what == 3 and r.headers:
        r.headers[_hidx(r, rnd)][1] = rnd.choice([b" : ", b"\t: ", b" :", b":"])
    elif what == 4 and r.headers:
        r.headers[_hidx(r, rnd)][1] = rnd.choice([b":\t", b":   ", b":"])
    elif what == 5 and r.headers:
        r.headers[_hidx(r, rnd)][2] += rnd.choice([b" ", b"\t", b" \t "])
    elif what == 6 and r.headers:                     # obs-fold
        i = _hidx(r, rnd)
        r.headers.insert(i + 1, [rnd.choice([b" ", b"\t"]) + b"folded", b"", b""])
    elif what == 7:                                   # whitespace before first field
        r.headers.insert(0, [b" X-Lead", b": ", b"v"])
    elif what == 8:
        r.method = rnd.choice([b" ", b"\t"]) + r.method
    else:
        i = _hidx(r, rnd)
        if i is not None:
            r.headers[i][2] = b""
            r.headers[i][1] = rnd.choice([b":", b": "])


def m_framing(r: Req, rnd: random.Random) -> None:
    te = rnd.choice([b"chunked", b"chunked, chunked", b"gzip, chunked", b"chunked, gzip",
                     b"identity", b"identity, chunked", b" chunked", b"chunked ",
                     b",chunked", b"chunked,", b"chunked;q=1", b"xchunked",
                     b"chunked\tx", b"", b"gzip"])
    cl = rnd.choice([b"5", b"0", b"05", b"+5", b"-1", b"5, 5", b"5,6", b"5 5", b"0x5",
                     b"", b"99999999999999999999", b"5.0", b" 5", b"1e1",
                     b"%d" % len(r.body)])
    what = rnd.randrange(7)
    if what == 0:
        r.headers.append([b"Content-Length", b": ", cl])
    elif what == 1:
        r.headers.append([b"Transfer-Encoding", b": ", te])
    elif what == 2:                                   # CL + TE
        r.headers.append([b"Content-Length", b": ", cl])
        r.headers.append([b"Transfer-Encoding", b": ", te])
    elif what == 3:                                   # replace CL value
        r.set_header(b"Content-Length", cl)
    elif what == 4:                                   # replace TE value
        r.set_header(b"Transfer-Encoding", te)
    elif what == 5:                                   # TE in two fields
        r.headers.append([b"Transfer-Encoding", b": ", rnd.choice([b"gzip", b"chunked"])])
        r.headers.append([b"Transfer-Encoding", b": ", rnd.choice([b"chunked", b""])])
    else:                                             # Host games
        h = rnd.randrange(5)
        if h == 0:
            r.headers = [x for x in r.headers if x[0].lower() != b"host"]
        elif h == 1:
            r.headers.append([b"Host", b": ", rnd.choice([b"example.com", b"other.example"])])
        elif h == 2:
            r.set_header(b"Host", rnd.choice([b"a b", b"a/b", b"a@b", b"[::1", b"h:x", b"",
                                              b"h:80", b"[::1]:8080", b"a,b"]))
        elif h == 3:
            r.target = rnd.choice([b"http://other.example/x", b"http://", b"http://a@b/",
                                   b"https://h:8443/", b"ftp://h/", b"HTTP://h/",
                                   b"http://h?q", b"//x", b"*", b"h:80", b"/#frag"])
        else:
            r.method = rnd.choice([b"CONNECT", b"PROPFIND", b"FROBNICATE", b"PRI", b"get"])


def m_chunks(r: Req, rnd: random.Random) -> None:
    if not any(h[0].lower() == b"transfer-encoding" for h in r.headers):
        r.method = b"POST"
        r.headers = [h for h in r.headers if h[0].lower() != b"content-length"]
        r.set_header(b"Transfer-Encoding", b"chunked")
        if r.version == b"HTTP/1.0":
            r.version = b"HTTP/1.1"
            r.set_header(b"Host", b"example.com")
    data = b"hello"
    what = rnd.randrange(9)
    if what == 0:
        size = rnd.choice([b"5", b"05", b"0005", b"0x5", b"+5", b"-5", b" 5", b"5 ",
                           b"5\t", b"0000000000000005", b"00000000000000005",
                           b"ffffffffffffffff", b"7fffffffffffffff", b"", b"g", b"5.0",
                           b"4", b"6"])
        r.body = chunk(data, size) + b"0\r\n\r\n"
    elif what == 1:
        ext = rnd.choice([b";a", b";a=b", b';a="b c"', b";a=b;c", b" ;a", b"; a", b";a =b",
                          b";a= b", b";", b";=b", b'; a="\\"x"', b";a=\x80", b";a=b ",
                          b";a\x00", b";" + b"x" * 5000])
        r.body = chunk(data, None, ext) + b"0\r\n\r\n"
    elif what == 2:
        r.body = chunk(data) + rnd.choice([b"0\r\nX-T: v\r\n\r\n", b"0\r\nX-T : v\r\n\r\n",
                                           b"0\r\nX-T: v\r\n", b"0\r\n", b"0\r\n\n",
                                           b"0\r\n\r\nJUNK", b"00\r\n\r\n",
                                           b"0\r\nContent-Length: 3\r\n\r\n",
                                           b"0\r\n folded\r\n\r\n"])
    elif what == 3:                                   # data not ending in CRLF
        r.body = b"5\r\nhello" + rnd.choice([b"X\r\n", b"\n", b"\r", b"\r\r\n", b""]) + b"0\r\n\r\n"
    elif what == 4:                                   # LF-only inside the body
        r.body = rnd.choice([b"5\nhello\r\n0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n",
                             b"5\r\nhello\r\n0\n\n", b"5\r\nhello\r\n0\r\n\n"])
        r.tags.append("chunk-lf")
    elif what == 5:
        r.body = b"".join(chunk(bytes([65 + i]) * n) for i, n in
                          enumerate(rnd.sample(range(1, 40), 3))) + b"0\r\n\r\n"
    elif what == 6:                                   # upper-case hex
        r.body = chunk(b"z" * 26, b"1A") + b"0\r\n\r\n"
    elif what == 7:                                   # bare CR in size line
        r.body = rnd.choice([b"5\rhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\r\n\r\n"])
    else:                                             # a size above the data
        r.body = b"10\r\nhello\r\n0\r\n\r\n"


def m_non_ascii(r: Req, rnd: random.Random) -> None:
    b = rnd.choice(NON_ASCII)
    what = rnd.randrange(4)
    if what == 0:
        r.target = r.target + b
    elif what == 1 and r.headers:
        r.headers[_hidx(r, rnd)][2] += b
    elif what == 2 and r.headers:
        r.headers[_hidx(r, rnd)][0] += b
    else:
        r.method += b


def m_ctl(r: Req, rnd: random.Random) -> None:
    c = bytes([rnd.choice(CTLS)])
    what = rnd.randrange(5)
    if what == 0:
        i = rnd.randrange(len(r.target) + 1)
        r.target = r.target[:i] + c + r.target[i:]
    elif what == 1 and r.headers:
        h = r.headers[_hidx(r, rnd)]
        i = rnd.randrange(len(h[2]) + 1)
        h[2] = h[2][:i] + c + h[2][i:]
    elif what == 2 and r.headers:
        h = r.headers[_hidx(r, rnd)]
        i = rnd.randrange(len(h[0]) + 1)
        h[0] = h[0][:i] + c + h[0][i:]
    elif what == 3:
        i = rnd.randrange(len(r.method) + 1)
        r.method = r.method[:i] + c + r.method[i:]
    else:
        r.version = r.version[:-1] + c + r.version[-1:]


def m_line_ends(r: Req, rnd: random.Random) -> None:
    nlines = 2 + len(r.headers)
    what = rnd.randrange(4)
    if what == 0:                                     # all LF
        r.eol = [b"\n"] * nlines
    elif what == 1:                                   # one LF
        r.eol = [None] * nlines
        r.eol[rnd.randrange(nlines)] = b"\n"
    elif what == 2:                                   # a bare CR
        r.eol = [None] * nlines
        r.eol[rnd.randrange(nlines)] = rnd.choice([b"\r", b"\r\r\n", b"\n\r"])
    else:                                             # empty lines before
        r.method = rnd.choice([b"\r\n", b"\n", b"\r\n\r\n", b"\r"]) + r.method


def m_connection(r: Req, rnd: random.Random) -> None:
    value = rnd.choice([b"close", b"Close", b"keep-alive", b"close, keep-alive",
                        b"keep-alive, close", b"upgrade", b"clo se", b"", b"TE",
                        b"Keep-Alive", b",close"])
    r.headers.append([b"Connection", b": ", value])
    if value == b"upgrade" or rnd.random() < 0.2:
        r.headers.append([b"Upgrade", b": ", b"websocket"])
    if rnd.random() < 0.3:
        r.headers.append([b"Expect", b": ", rnd.choice([b"100-continue", b"100-Continue",
                                                        b"x", b""])])


def m_version(r: Req, rnd: random.Random) -> None:
    r.version = rnd.choice([b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10",
                            b"HTTP/11", b"HTTP/1", b"HTTP/1.1.1", b"HTTPS/1.1", b"HTTP/9.9"])


MUTATIONS = {
    "case": m_case, "whitespace": m_whitespace, "framing": m_framing,
    "chunks": m_chunks, "non-ascii": m_non_ascii, "ctl": m_ctl,
    "line-ends": m_line_ends, "version": m_version, "connection": m_connection,
}
_MUT_NAMES = list(MUTATIONS)
_MUT_WEIGHTS = [2, 2, 4, 4, 1, 2, 2, 1, 1]


def generate(seed: int, count: int):
    """Yield (index, tags, bytes) for `count` cases; the same seed gives the
    same cases."""
    rnd = random.Random(seed)
    for i in range(count):
        r = base(rnd)
        for name in rnd.choices(_MUT_NAMES, _MUT_WEIGHTS, k=rnd.choice([1, 1, 2, 3])):
            MUTATIONS[name](r, rnd)
            r.tags.append(name)
        data = r.bytes()
        if rnd.random() < 0.7:
            data += NEXT
        yield i, r.tags, data


# ---------------------------------------------------------------------------
# the three parsers
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    requests: list            # [(method, target, headers tuple, body)]
    end: str                  # "ok" | "incomplete" | "closed" | "reject" | "upgrade"
    why: str = ""             # the reject reason (Prack: status + message)
    # Prack only, not compared: per request (HTTP minor version, set of
    # Connection options), to name persistence differences.
    meta: list = field(default_factory=list)

    def key(self):
        return (self.requests, self.end)


def _strip(v: bytes) -> bytes:
    return v.strip(b" \t")


# Values h11 lower-cases; compared case-insensitively for every side.
_LOWER_VALUES = (b"transfer-encoding", b"connection")


def _norm(method: bytes, target: bytes, headers, body: bytes):
    """One request as compared: names lower-case, values OWS-trimmed (RFC
    9112 5: OWS is not part of the value; llhttp keeps trailing OWS).
    Content-Length fields whose values are all the same number are compared
    as one field (h11 folds "5, 5" and repeated fields into one; RFC 9110
    8.6 makes them equivalent)."""
    fields = []
    lengths = []
    for n, v in headers:
        n = bytes(n).lower()
        v = _strip(bytes(v))
        if n == b"content-length":
            lengths.extend(_strip(x) for x in v.split(b","))
            continue
        fields.append((n, v.lower() if n in _LOWER_VALUES else v))
    if lengths:
        same = len(set(lengths)) == 1
        fields.append((b"content-length", lengths[0] if same else b", ".join(lengths)))
    return (bytes(method), bytes(target), tuple(fields), bytes(body))


def run_prack(data: bytes) -> Outcome:
    reader = http.RequestReader(LIMITS)
    reader.feed(data)
    out: list = []
    meta: list = []
    while True:
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            return Outcome(out, "reject", f"{exc.status} {exc.message}", meta)
        if req is None:
            break
        out.append(_norm(req.method.encode(), req.target.encode(), req.headers, req.body))
        conn = b",".join(v for n, v in req.headers if n == b"connection")
        meta.append((req.version_minor, {t.strip().lower() for t in conn.split(b",")}))
        if not req.keep_alive:
            # The acceptor closes after answering: later bytes are never read.
            return Outcome(out, "closed", meta=meta)
        reader.next()
    return Outcome(out, "ok" if reader.idle else "incomplete", meta=meta)


class _Proto:
    __slots__ = ("parser", "url", "headers", "body", "out", "begun", "in_trailer",
                 "closed")

    def __init__(self) -> None:
        self.out = []
        self.begun = False
        self.closed = False

    def on_message_begin(self):
        self.url, self.headers, self.body, self.begun = b"", [], [], True
        self.in_trailer = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        # llhttp reports trailer fields through on_header too; Prack and h11
        # drop trailers (RFC 9112 7.1.2), so they are not compared.
        if not self.in_trailer:
            self.headers.append((name, value))

    def on_headers_complete(self):
        self.in_trailer = True

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.out.append(_norm(self.parser.get_method(), self.url, self.headers,
                              b"".join(self.body)))
        self.begun = False
        if not self.parser.should_keep_alive():
            self.closed = True


def run_llhttp(data: bytes) -> Outcome:
    proto = _Proto()
    p = proto.parser = httptools.HttpRequestParser(proto)
    try:
        p.feed_data(data)
    except httptools.HttpParserUpgrade:
        # llhttp hands the bytes after an Upgrade (or CONNECT) request to the
        # caller as another protocol; its last request's body is cut there.
        return Outcome(proto.out, "upgrade")
    except httptools.HttpParserError as exc:
        if proto.closed:  # "Data after `Connection: close`": never read
            return Outcome(proto.out, "closed")
        return Outcome(proto.out, "reject", str(exc))
    if proto.closed:
        return Outcome(proto.out, "closed")
    if proto.begun:
        return Outcome(proto.out, "incomplete")
    # llhttp skips CR/LF between messages; leftover bytes would have begun one
    return Outcome(proto.out, "ok")


def run_h11(data: bytes) -> Outcome:
    out = []
    while True:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        req = None
        body = []
        try:
            while True:
                ev = conn.next_event()
                if isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body.append(ev.data)
                elif isinstance(ev, h11.EndOfMessage):
                    # trailers (ev.headers) are dropped, as Prack does
                    out.append(_norm(req.method, req.target, req.headers.raw_items(),
                                     b"".join(body)))
                    break
                elif ev is h11.NEED_DATA:
                    return Outcome(out, "incomplete" if req is not None or data else "ok")
                else:  # PAUSED / ConnectionClosed cannot come before EndOfMessage
                    return Outcome(out, f"unexpected {ev!r}")
        except h11.RemoteProtocolError as exc:
            return Outcome(out, "reject", str(exc))
        # h11 pauses after a request carrying Upgrade (MIGHT_SWITCH_PROTOCOL)
        # until we answer; whether it would then keep the connection is its
        # keep-alive rule.
        if conn.their_state is h11.MUST_CLOSE or not _h11_keep_alive(req):
            return Outcome(out, "closed")
        data = conn.trailing_data[0]
        if not data:
            return Outcome(out, "ok")


def _h11_keep_alive(req: h11.Request) -> bool:
    """h11's persistence rule (its documented behaviour): HTTP/1.0 closes, and
    so does a close option in Connection."""
    if req.http_version < b"1.1":
        return False
    return not any(t.strip().lower() == b"close"
                   for n, v in req.headers if n == b"connection" for t in v.split(b","))


PEERS = {"llhttp": run_llhttp, "h11": run_h11}

# ---------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------

# The allow-list: category -> the RFC section that makes it Prack's choice.
# docs/security.md ("Differential checking") lists the same categories.
ALLOWED: dict[str, str] = {
    # Prack rejects where a peer accepts
    "bare-lf": "RFC 9112 2.2: a bare LF as line terminator is only a MAY; Prack never accepts it",
    "bare-cr": "RFC 9112 2.2: a bare CR MUST be treated as invalid (or replaced by SP)",
    "obs-fold": "RFC 9112 5.2: a server MUST reject obs-fold with 400 (or replace it by SP)",
    "ws-before-colon": "RFC 9112 5.1: whitespace between field name and colon MUST get 400",
    "request-line": "RFC 9112 3: exactly one SP between method, target and version; "
                    "parsing on whitespace runs is only a MAY; no HTTP/0.9",
    "method-syntax": "RFC 9112 3.1, RFC 9110 9.1: method = token",
    "target-syntax": "RFC 9112 3.2: request-target has no whitespace, CTL or non-ASCII byte",
    "target-form": "RFC 9112 3.2.3, 3.2.4: authority-form only for CONNECT, "
                   "asterisk-form only for OPTIONS; 3.2 origin-form has no fragment",
    "absolute-form": "RFC 9112 3.2.2, RFC 9110 4.2.1, 4.2.4: http(s) URI with a non-empty "
                     "host and no userinfo",
    "version-syntax": "RFC 9112 2.3: HTTP-version = \"HTTP/\" DIGIT \".\" DIGIT, case-sensitive",
    "version-major": "RFC 9112 2.3, RFC 9110 15.6.6: a major version other than 1 gets 505",
    "field-name": "RFC 9112 5.1, RFC 9110 5.1: field-name = token",
    "field-value": "RFC 9110 5.5: CR, LF, NUL MUST be rejected; other CTLs are outside "
                   "field-value",
    "host": "RFC 9112 3.2: no Host in HTTP/1.1, more than one Host, or an invalid Host "
            "MUST get 400",
    "connect": "RFC 9110 9.3.6, 15.6.2: Prack is not a tunnel; CONNECT gets 501",
    "te-and-cl": "RFC 9112 6.1: a server MAY reject a request with both Transfer-Encoding "
                 "and Content-Length (Prack always does; 6.3 item 3)",
    "te-http10": "RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message MUST be treated "
                 "as faulty framing",
    "te-chunked-not-final": "RFC 9112 6.3 item 4: chunked not final in a request MUST get 400",
    "te-chunked-twice": "RFC 9112 6.1: chunked MUST NOT be applied more than once",
    "te-unknown-coding": "RFC 9112 6.1: an unknown transfer coding SHOULD get 501",
    "content-length": "RFC 9112 6.3 item 5, RFC 9110 8.6: an invalid or conflicting "
                      "Content-Length MUST get 400",
    "chunk-size": "RFC 9112 7.1: chunk-size = 1*HEXDIG; sizes above 2^63-1 overflow "
                  "(7.1: anticipate overflow)",
    "chunk-ext": "RFC 9112 7.1.1: chunk-ext grammar (BWS only before ; and around =); "
                 "extension bytes per line are limited (4096)",
    "chunk-data-end": "RFC 9112 7.1: chunk-data is followed by CRLF",
    "trailer": "RFC 9112 7.1.2, 5, 2.2: trailer fields have field-line syntax with CRLF",
    "expect": "RFC 9110 10.1.1: an unsupported expectation MAY get 417",
    "limits": "RFC 9112 3 (414), RFC 6585 5 (431), RFC 9110 15.5.14 (413): size limits",
    # Prack accepts where a peer rejects
    "extension-method": "RFC 9110 9.1: any token is a method, case-sensitive; llhttp "
                        "only knows a fixed list (unknown methods are the worker's to refuse)",
    "http-1x-minor": "RFC 9112 2.3, RFC 9110 6.2: HTTP/1.x with x > 1 is handled as 1.1",
    "leading-empty-lines": "RFC 9112 2.2: a server SHOULD ignore at least one empty line "
                           "before the request line",
    "chunk-ext-lenient": "RFC 9112 7.1.1: BWS around ; and =, quoted-pair in a quoted "
                         "value; obs-text in an unquoted value (parser.md); extensions "
                         "are discarded and never change framing",
    "content-length-list": "RFC 9110 8.6: a list of identical Content-Length values MAY "
                           "be accepted as that value",
    "te-ows": "RFC 9112 5, RFC 9110 5.6.1: OWS around a field value and its list "
              "elements is not part of the value",
    "trailer-framing-field": "RFC 9112 7.1.2, RFC 9110 6.5.1: trailer fields are "
                             "discarded; a Content-Length there changes nothing",
    "upgrade-ignored": "RFC 9110 7.8: a server MAY ignore Upgrade; Prack reads on as HTTP/1.1",
    "pending": "RFC 9112 6.3, 9.5: Prack has accepted no request from the bytes the peer "
               "rejected; it decides once the head or the chunk line is complete "
               "(RequestReader parses on each new LF), or the size limits / "
               "header_timeout / body_timeout end the connection",
    "close-wins": "RFC 9112 9.3, 9.6: with the close option the connection does not "
                  "persist, whatever else Connection says",
    "http10-keep-alive": "RFC 9112 9.3, C.2.2: an HTTP/1.0 request with keep-alive persists",
    "http10-close": "RFC 9112 9.3: an HTTP/1.0 request without keep-alive does not persist",
}

# raw category (classify()) -> allow-list category; first match wins.
RULES: list[tuple[str, re.Pattern]] = [(name, re.compile(rx)) for name, rx in [
    ("bare-lf", r"^prack-rejects: 400 bare LF"),
    ("bare-cr", r"^prack-rejects: 400 bare CR"),
    ("obs-fold", r"^prack-rejects: 400 obsolete line folding"),
    ("ws-before-colon", r"^prack-rejects: 400 whitespace before colon"),
    ("request-line", r"^prack-rejects: 400 malformed request line$"),
    ("method-syntax", r"^prack-rejects: 400 malformed method$"),
    ("target-syntax", r"^prack-rejects: 400 malformed request target$"),
    ("target-form", r"^prack-rejects: 400 (asterisk-form|authority-form|fragment)"),
    ("absolute-form", r"^prack-rejects: 400 (invalid authority|userinfo|unsupported scheme)"),
    ("version-syntax", r"^prack-rejects: 400 malformed HTTP version$"),
    ("version-major", r"^prack-rejects: 505 "),
    ("field-name", r"^prack-rejects: 400 malformed header name$"),
    ("field-value", r"^prack-rejects: 400 invalid character in header value$"),
    ("host", r"^prack-rejects: 400 (missing Host|more than one Host|invalid Host)"),
    ("connect", r"^prack-rejects: 501 CONNECT"),
    ("te-and-cl", r"^prack-rejects: 400 both Transfer-Encoding and Content-Length$"),
    ("te-http10", r"^prack-rejects: 400 Transfer-Encoding in an HTTP/1.0 request$"),
    ("te-chunked-not-final", r"^prack-rejects: 400 chunked is not the final"),
    ("te-chunked-twice", r"^prack-rejects: 400 chunked applied more than once$"),
    ("te-unknown-coding", r"^prack-rejects: 501 unsupported transfer coding$"),
    ("content-length", r"^prack-rejects: 400 (invalid|conflicting) Content-Length"
                       r"|^prack-rejects: 400 Content-Length too large$"),
    ("chunk-size", r"^prack-rejects: 400 malformed chunk size$"),
    ("chunk-ext", r"^prack-rejects: 400 malformed chunk extension$"),
    ("chunk-data-end", r"^prack-rejects: 400 chunk data not followed by CRLF$"),
    ("trailer", r"^prack-rejects: 400 malformed trailer section$"),
    ("expect", r"^prack-rejects: 417 "),
    ("limits", r"^prack-rejects: (413|414|431) "),
    ("extension-method", r"^prack-accepts: llhttp (Invalid method encountered"
                         r"|Expected HTTP/N Connection Preface)$"),
    ("http-1x-minor", r"^prack-accepts: llhttp Invalid HTTP version$"),
    ("leading-empty-lines", r"^prack-accepts: h11 no request line received$"),
    ("chunk-ext-lenient", r"^prack-accepts: (h11 illegal chunk header"
                          r"|llhttp Invalid character in chunk (size|extensions))"),
    ("content-length-list", r"^prack-accepts: llhttp (Duplicate Content-Length"
                            r"|Invalid character in Content-Length)$"),
    ("te-ows", r"^prack-accepts: llhttp Request has invalid `Transfer-Encoding`$"),
    ("trailer-framing-field", r"^prack-accepts: llhttp Content-Length can't be present "
                              r"with Transfer-Encoding$"),
    ("upgrade-ignored", r"^upgrade: llhttp switched protocols$"),
    ("pending", r"^pending: "),
    ("close-wins", r"^persistence: prack closes on the close option$"),
    ("http10-keep-alive", r"^persistence: prack keeps an HTTP/1.0 keep-alive connection$"),
    ("http10-close", r"^persistence: prack closes an HTTP/1.0 connection$"),
]]
assert {n for n, _ in RULES} == set(ALLOWED)


def category(raw: str, data: bytes) -> str | None:
    """The allow-list category of a raw difference, or None (a finding).
    A few categories also check the input, so that a rule written for one
    cause cannot hide another with the same message."""
    if raw.startswith("framing:"):
        return None
    for name, rx in RULES:
        if rx.search(raw):
            if name == "trailer-framing-field" and not _cl_only_in_trailer(data):
                return None
            if name == "content-length-list" and not _cl_identical_list(data):
                return None
            return name
    return None


def _fields(data: bytes, name: bytes) -> list[bytes]:
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    out = []
    for line in head.split(b"\r\n")[1:]:
        n, sep, v = line.partition(b":")
        if sep and n.lower() == name:
            out.append(v.strip(b" \t"))
    return out


def _cl_only_in_trailer(data: bytes) -> bool:
    return not _fields(data, b"content-length") and b"\r\n0\r\nContent-Length:" in data


def _cl_identical_list(data: bytes) -> bool:
    values = [x.strip(b" \t") for v in _fields(data, b"content-length") for x in v.split(b",")]
    return len(values) > 1 and len(set(values)) == 1 and values[0].isdigit()


def classify(data: bytes, prack: Outcome, peer_name: str, peer: Outcome) -> str:
    """The raw category of one difference (only called when the outcomes
    differ):

    - "framing: ..." when both sides took a request but not the same one,
      or one side took a request where the other still waits: never allowed;
    - "prack-rejects: <status> <Prack's message>" when Prack stopped earlier;
    - "prack-accepts: <peer> <peer's message>" when the peer stopped earlier;
    - "persistence: ..." when one side closes after a request and the other
      reads on (no request differs);
    - "upgrade: ..." when llhttp switched protocols after an Upgrade request;
    - "pending: <peer> <peer's message>" when the peer rejected bytes that
      Prack has not decided on yet (it waits for the rest of the head or
      body) and no request differs.

    category() maps these to the allow-list."""
    np, nq = len(prack.requests), len(peer.requests)
    if peer.end == "upgrade" and nq:
        # Everything before the upgraded request must agree. The upgraded
        # request itself: same method, target and fields (llhttp cuts its
        # body, the rest is another protocol to it) and Prack reads on, or
        # Prack still waits for its body, or Prack refused it (CONNECT: 501).
        k = nq - 1
        if prack.requests[:k] == peer.requests[:k]:
            if np > k and prack.requests[k][:3] == peer.requests[k][:3]:
                return f"upgrade: {peer_name} switched protocols"
            if np == k and prack.end == "incomplete":
                # Prack still reads the upgraded request's body as HTTP/1.1
                return f"upgrade: {peer_name} switched protocols"
            if np == k and prack.end == "reject":
                return "prack-rejects: " + prack.why
    for a, b in zip(prack.requests, peer.requests):
        if a != b:
            if a[3] != b[3]:
                return "framing: body differs"
            if a[:2] != b[:2]:
                return "framing: method or target differs"
            return "framing: header fields differ"
    if prack.end == "closed" and (nq > np or peer.end in ("ok", "incomplete")):
        minor, conn = prack.meta[np - 1]
        if b"close" in conn:
            return "persistence: prack closes on the close option"
        if minor == 0 and b"keep-alive" not in conn:
            return "persistence: prack closes an HTTP/1.0 connection"
        return f"framing: prack closed, {peer_name} {peer.end} with {nq} requests"
    if peer.end == "closed" and (np > nq or prack.end in ("ok", "incomplete")):
        minor, conn = prack.meta[nq - 1] if nq <= np else (None, set())
        if minor == 0 and b"keep-alive" in conn:
            return "persistence: prack keeps an HTTP/1.0 keep-alive connection"
        return f"framing: {peer_name} closed, prack {prack.end} with {np} requests"
    if np < nq or (np == nq and prack.end == "reject"):
        if prack.end == "reject":
            return "prack-rejects: " + prack.why
        return f"framing: prack {prack.end}, {peer_name} took a request"
    if np == nq and prack.end == "incomplete" and peer.end == "reject":
        return f"pending: {peer_name} {re.sub(r'[0-9]+', 'N', peer.why)}"
    if np > nq or peer.end == "reject":
        if peer.end == "reject":
            return f"prack-accepts: {peer_name} {re.sub(r'[0-9]+', 'N', peer.why)}"
        return f"framing: {peer_name} {peer.end}, prack took a request"
    return f"framing: prack {prack.end}, {peer_name} {peer.end}"


def compare(data: bytes):
    """(prack outcome, {peer: (outcome, raw category or None)})."""
    p = run_prack(data)
    res = {}
    for name, fn in PEERS.items():
        o = fn(data)
        res[name] = (o, None if o.key() == p.key() else classify(data, p, name, o))
    return p, res


@dataclass
class Summary:
    cases: int = 0
    differing: int = 0                                   # cases with any difference
    by_category: collections.Counter = field(default_factory=collections.Counter)
    findings: collections.Counter = field(default_factory=collections.Counter)  # (peer, raw)
    examples: dict = field(default_factory=lambda: collections.defaultdict(list))


def run(seed: int, count: int, keep_examples: int = 3) -> Summary:
    """Run `count` cases from `seed`. by_category counts (peer, allow-list
    category); findings counts (peer, raw category) of differences that no
    category allows; examples holds a few inputs per key of either."""
    out = Summary(cases=count)
    for _, _tags, data in generate(seed, count):
        _, res = compare(data)
        differs = False
        for peer, (_, raw) in res.items():
            if raw is None:
                continue
            differs = True
            cat = category(raw, data)
            key = (peer, cat) if cat is not None else (peer, raw)
            (out.by_category if cat is not None else out.findings)[key] += 1
            if len(out.examples[key]) < keep_examples:
                out.examples[key].append(data)
        out.differing += differs
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Prack vs llhttp and h11 on mutated requests")
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=0, help="examples printed per category")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    res = run(args.seed, args.cases, max(args.show, 1))
    took = time.monotonic() - t0
    print(f"{res.cases} cases (seed {args.seed}) in {took:.1f} s; "
          f"{res.differing} differ from llhttp or h11")
    print("\nallowed differences (category: cases per peer)")
    cats = sorted({c for _, c in res.by_category})
    for c in cats:
        per = ", ".join(f"{p} {res.by_category[(p, c)]}" for p in PEERS if (p, c) in res.by_category)
        print(f"  {c:24s} {per}")
        for ex in [e for p in PEERS for e in res.examples.get((p, c), [])][:args.show]:
            print("      ", repr(ex)[:240])
    print(f"\nfindings (differences no category allows): {sum(res.findings.values())}")
    for (peer, raw), n in sorted(res.findings.items()):
        print(f"  {n:7d}  {peer:7s} {raw}")
        for ex in res.examples[(peer, raw)][:max(args.show, 2)]:
            print("      ", repr(ex)[:240])
    return 1 if res.findings else 0


if __name__ == "__main__":
    sys.exit(main())
