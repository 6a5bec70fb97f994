"""Sans-IO HTTP/1.1 server side, shared by the acceptors and the API process.

Bytes go in (`RequestReader.feed`), complete requests come out
(`RequestReader.maybe_read_request`), and `ProtocolError` carries the status
to answer when the peer misbehaves. Nothing here touches a socket or a clock,
so the rules can be tested with byte strings. The byte-level grammar lives
in C (`_native/parser.c`); this module makes the framing decisions of
RFC 9112 section 6 on top of it.
"""
from __future__ import annotations

import re
import time
from http import HTTPStatus

from prack._native import ffi, lib
from prack.errors import PrackError

__all__ = [
    "Limits", "ProtocolError", "Request", "RequestReader",
    "reason_phrase", "http_date", "response_head", "simple_response",
]


class ProtocolError(PrackError):
    """The peer sent something we will not process. `status` is the answer;
    the connection is always closed afterwards (RFC 9112 section 9.6: after a
    framing error we cannot know where the next request starts)."""

    def __init__(self, status: int, message: str, head: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.head = head      # the failed request was a HEAD: answer without a body


# Parser result -> (status, message). Everything the grammar rejects is a 400.
_PARSE_ERRORS = {
    lib.PRK_E_BAD_REQUEST_LINE: "malformed request line",
    lib.PRK_E_BAD_METHOD: "malformed method",
    lib.PRK_E_BAD_TARGET: "malformed request target",
    lib.PRK_E_BAD_VERSION: "malformed HTTP version",
    lib.PRK_E_BAD_HEADER_NAME: "malformed header name",
    lib.PRK_E_WS_BEFORE_COLON: "whitespace before colon in header field",
    lib.PRK_E_BAD_HEADER_VALUE: "invalid character in header value",
    lib.PRK_E_OBS_FOLD: "obsolete line folding is not accepted",
    lib.PRK_E_BARE_CR: "bare CR in request head",
    lib.PRK_E_BARE_LF: "bare LF in request head",
    lib.PRK_E_TOO_MANY_HEADERS: "too many header fields",
    lib.PRK_E_CHUNK_SIZE: "malformed chunk size",
    lib.PRK_E_CHUNK_EXT: "malformed chunk extension",
    lib.PRK_E_CHUNK_DATA_END: "chunk data not followed by CRLF",
    lib.PRK_E_TRAILER: "malformed trailer section",
}


class Limits:
    """The limits one reader enforces (built from [limits] or [api])."""

    __slots__ = ("max_body_size", "max_header_size", "max_request_line", "max_headers")

    def __init__(self, max_body_size: int, max_header_size: int,
                 max_request_line: int, max_headers: int):
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.max_request_line = max_request_line
        self.max_headers = max_headers


class Request:
    """One complete request. `headers` (lower-case name, value) pairs of
    bytes are made on first use: the hot path reads only the fields the C
    scan filled in, and the environment is written by C from `_head` (the
    head's bytes) and `_saved` (a copy of the scan's output)."""

    __slots__ = ("method", "target", "version_minor", "body", "keep_alive",
                 "content_length", "upgrade", "_head", "_saved", "_headers", "_path")

    def __init__(self) -> None:
        self.body = b""
        self.content_length = None
        self._headers = None
        self._path = None

    # path, query and host are read from the head when asked for: the
    # acceptor's hot path needs none of them (C writes the environment).
    @property
    def path(self) -> str:
        """The target's path ("/" first for an absolute target)."""
        path = self._path
        if path is None:
            v = memoryview(self._saved).cast("I")
            at = v[_W_PATH]
            path = self._head[at:at + v[_W_PATH + 1]].decode("ascii")
            if v[_W_FLAGS] & _HF_PATH_SLASH:
                path = "/" + path
            self._path = path
        return path

    @property
    def query(self) -> str:
        v = memoryview(self._saved).cast("I")
        at = v[_W_QUERY]
        return self._head[at:at + v[_W_QUERY + 1]].decode("ascii")

    @property
    def host(self) -> str:
        """The authority of an absolute target, else Host, else ""."""
        v = memoryview(self._saved).cast("I")
        at = v[_W_HOST]
        return self._head[at:at + v[_W_HOST + 1]].decode("ascii")

    @property
    def protocol(self) -> str:
        return "HTTP/1.1" if self.version_minor else "HTTP/1.0"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The header fields in order, names lower-cased (for the rarer
        readers: static files, the WebSocket handshake, the API's own)."""
        headers = self._headers
        if headers is None:
            head = self._head
            v = memoryview(self._saved)[_HEAD_SIZE:].cast("I")
            names = _names
            headers = []
            for i in range(0, len(v), 4):
                raw = head[v[i]:v[i] + v[i + 1]]
                name = names.get(raw)
                if name is None:
                    name = raw.lower()
                    if len(names) < 4096 and len(raw) <= 64:   # long names: not kept
                        names[raw] = name
                headers.append((name, head[v[i + 2]:v[i + 2] + v[i + 3]]))
            self._headers = headers
        return headers

    @property
    def content_type(self) -> bytes | None:
        """The last Content-Type value, or None."""
        v = memoryview(self._saved).cast("I")
        index = v[_CTYPE_INDEX]
        if not index:
            return None
        at = _HEAD_SIZE // 4 + (index - 1) * 4
        return self._head[v[at + 2]:v[at + 2] + v[at + 3]]

    def environ_msgpack(self, server: bytes, server_count: int, extra: bytes = b"",
                        extra_count: int = 0):
        """The CGI/Rack environment (`prk_write_env`, head.h) as one msgpack
        map: a memoryview valid until the next call in this process. `server`
        holds SERVER_NAME and SERVER_PORT msgpack pairs for a request
        without a host; `extra` holds `extra_count` more pairs (REMOTE_ADDR
        ...). CONTENT_LENGTH is the body's size once it is in."""
        head = self._head
        saved = self._saved
        length = self.content_length
        if length is None:
            length = -1
        out = _env_out
        n = lib.prk_write_env(out[0], out[1], head, len(head), saved, len(saved), length,
                              server, len(server), server_count, extra, len(extra), extra_count)
        if n == _ENV_NO_ROOM:
            need = lib.prk_env_bound(len(head), len(saved) >> 4, len(server), len(extra))
            out[0] = ffi.new("char[]", need)
            out[1] = need
            out[2] = memoryview(ffi.buffer(out[0]))
            n = lib.prk_write_env(out[0], need, head, len(head), saved, len(saved), length,
                                  server, len(server), server_count, extra, len(extra),
                                  extra_count)
        if n < 0:       # cannot happen: the bound suffices, the scan is ours
            raise ValueError("prk_write_env failed (%d)" % n)
        return out[2][:n]


# The environment's output buffer: [char[], capacity, its memoryview],
# grown when a head needs more.
_env_out: list = [ffi.new("char[]", 16384), 16384, None]
_env_out[2] = memoryview(ffi.buffer(_env_out[0]))

# Raw header name -> lower-case name, so common names are lowered only once.
# It lives as long as the process: only names up to 64 bytes are kept, else
# a client sending new 32 KiB names would make it hold hundreds of MB.
_names: dict[bytes, bytes] = {}

# prk_head: its size and the uint32 word of each field read from Python
# (through a uint32 view: no cffi attribute access); the saved copy of a
# scan is prk_head then num_headers prk_header entries (4 words each).
_HEAD_SIZE = ffi.sizeof("prk_head")
_W_FLAGS, _W_NUM_HEADERS, _W_PATH, _W_QUERY, _W_HOST, _CTYPE_INDEX, _W_RESULT = (
    ffi.offsetof("prk_head", f) // 4 for f in (
        "flags", "num_headers", "path_off", "query_off", "host_off", "ctype_index", "result"))

# States of the reader.
_HEAD, _BODY_LENGTH, _BODY_CHUNKED, _DONE, _ERROR = range(5)

# prk_scan_head() results -> (status, message), as RFC 9112 / 9110 want.
_HEAD_ERRORS = {
    lib.PRK_H_VERSION: (505, "HTTP version not supported"),
    lib.PRK_H_CONNECT: (501, "CONNECT is not supported"),
    lib.PRK_H_AUTHORITY_FORM: (400, "authority-form target is only for CONNECT"),
    lib.PRK_H_ASTERISK_FORM: (400, "asterisk-form target is only for OPTIONS"),
    lib.PRK_H_SCHEME: (400, "unsupported scheme in request target"),
    lib.PRK_H_USERINFO: (400, "userinfo in request target"),
    lib.PRK_H_AUTHORITY: (400, "invalid authority in request target"),
    lib.PRK_H_FRAGMENT: (400, "fragment in request target"),
    lib.PRK_H_HOST_REPEATED: (400, "more than one Host header field"),
    lib.PRK_H_HOST_MISSING: (400, "missing Host header field"),
    lib.PRK_H_HOST_INVALID: (400, "invalid Host header field"),
    lib.PRK_H_EXPECTATION: (417, "unsupported expectation"),
    lib.PRK_H_TE_HTTP10: (400, "Transfer-Encoding in an HTTP/1.0 request"),
    lib.PRK_H_TE_AND_LENGTH: (400, "both Transfer-Encoding and Content-Length"),
    lib.PRK_H_TE_NOT_FINAL: (400, "chunked is not the final transfer coding"),
    lib.PRK_H_TE_TWICE: (400, "chunked applied more than once"),
    lib.PRK_H_TE_UNSUPPORTED: (501, "unsupported transfer coding"),
    lib.PRK_H_LENGTH_INVALID: (400, "invalid Content-Length"),
    lib.PRK_H_LENGTH_TOO_LARGE: (400, "Content-Length too large"),
    lib.PRK_H_LENGTH_CONFLICT: (400, "conflicting Content-Length values"),
    lib.PRK_H_BODY_TOO_LARGE: (413, "request body too large"),
    lib.PRK_H_BAD_INPUT: (400, "malformed request"),
}

_ENV_NO_ROOM = lib.PRK_ENV_NO_ROOM
_H_VERSION = lib.PRK_H_VERSION + (1 << 32)     # as the uint32 view reads it
_HF_HTTP11 = lib.PRK_HF_HTTP11
_HF_KEEP_ALIVE = lib.PRK_HF_KEEP_ALIVE
_HF_CHUNKED = lib.PRK_HF_CHUNKED
_HF_LENGTH = lib.PRK_HF_LENGTH
_HF_CONTINUE = lib.PRK_HF_CONTINUE
_HF_PATH_SLASH = lib.PRK_HF_PATH_SLASH
_HF_UPGRADE = lib.PRK_HF_UPGRADE


_arrays: dict[int, tuple] = {}


def _parse_arrays(max_headers: int) -> tuple:
    """The parse and scan output, made once per process and size: one
    buffer holding a prk_head then prk_header[max_headers], so a request's
    copy of both is one slice. (prk_request, prk_head *, prk_header *, the
    buffer, a uint32 view of prk_request, a uint32 view of prk_head)."""
    arrays = _arrays.get(max_headers)
    if arrays is None:
        req = ffi.new("prk_request *")
        block = ffi.new("char[]", _HEAD_SIZE + 16 * max_headers)
        head = ffi.cast("prk_head *", block)
        headers = ffi.cast("prk_header *", block + _HEAD_SIZE)
        arrays = _arrays[max_headers] = (
            req, head, headers, ffi.buffer(block),
            memoryview(ffi.buffer(req)).cast("I"),
            memoryview(ffi.buffer(head)).cast("I"))
    return arrays


class RequestReader:
    """Reads requests from one connection, one at a time.

    After a request is returned the reader holds any pipelined bytes until
    `next()` is called, so responses go out in request order (RFC 9112 9.3.2).
    """

    __slots__ = ("limits", "buf", "state", "_req", "_remaining", "_chunked",
                 "_body", "wants_continue", "_c_req", "_c_head", "_c_headers", "_c_out_len",
                 "_block", "_v_req", "_v_head", "_scanned", "inline_limit", "sink",
                 "wants_sink", "_body_len")

    def __init__(self, limits: Limits, inline_limit: int | None = None):
        self.limits = limits
        # Incremental body mode: a body larger than `inline_limit` (None:
        # no limit, bodies are always kept whole) is not held in memory.
        # The reader sets `wants_sink` and waits until the caller hands it a
        # sink (`set_sink`), a callable taking each piece of the body as it
        # arrives; the Request then comes out with an empty body and
        # content_length set to the body's size.
        self.inline_limit = inline_limit
        self.sink = None
        self.wants_sink = False
        self._body_len = 0
        self.buf = bytearray()
        self.state = _HEAD
        self._req: Request | None = None
        self._remaining = 0
        self._chunked = None
        self._body: bytearray | None = None
        self.wants_continue = False
        # The parser's output arrays are the process's, not the reader's: a
        # head is parsed and turned into a Request in one synchronous call,
        # so readers never need them at the same time, and an idle
        # connection does not carry max_headers * 16 bytes of them.
        (self._c_req, self._c_head, self._c_headers, self._block, self._v_req,
         self._v_head) = _parse_arrays(limits.max_headers)
        self._c_out_len = None
        self._scanned = 0

    # -- input -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.buf += data

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered (an idle keep-alive)."""
        return self.state == _HEAD and not self.buf

    @property
    def in_body(self) -> bool:
        return self.state in (_BODY_LENGTH, _BODY_CHUNKED)

    @property
    def head_request(self) -> Request | None:
        """The request whose body is being read (its head is complete), else
        None: lets a caller act on the head before the body is in."""
        return self._req if self.state in (_BODY_LENGTH, _BODY_CHUNKED) else None

    def set_sink(self, sink) -> None:
        """Send the body of the current request to `sink(data)` from now on
        (data is a bytes-like object valid only during the call); what was
        buffered of it already goes first."""
        self.sink = sink
        self.wants_sink = False
        body = self._body
        if body:
            sink(body)
            self._body = bytearray()

    def next(self) -> None:
        """Forget the request just returned; start on the next one."""
        if self.state == _DONE:
            self.state = _HEAD
            self._req = None
            self.sink = None
            self.wants_sink = False

    # -- output ----------------------------------------------------------

    def maybe_read_request(self) -> Request | None:
        """A complete request, or None when more bytes are needed.
        Raises ProtocolError; after that the reader refuses everything."""
        state = self.state
        if state == _HEAD:
            if not self._read_head():
                return None
            state = self.state
        if state == _BODY_LENGTH:
            return self._read_length_body()
        if state == _BODY_CHUNKED:
            return self._read_chunked_body()
        if state == _ERROR:
            raise ProtocolError(400, "connection already failed")
        return None  # _DONE: the caller has not called next() yet

    def _fail(self, status: int, message: str) -> ProtocolError:
        self.state = _ERROR
        req = self._req
        return ProtocolError(status, message, req is not None and req.method == "HEAD")

    def _read_head(self) -> bool:
        buf = self.buf
        n = len(buf)
        if not n:
            return False
        limits = self.limits
        # The parser is stateless and starts over on each call; calling it only
        # when a new line end arrived keeps a byte-at-a-time sender from making
        # us rescan the head once per byte.
        if buf.find(b"\n", self._scanned) < 0:
            rc = lib.PRK_INCOMPLETE
        else:
            cbuf = ffi.from_buffer(buf)
            try:
                rc = lib.prk_read_head(cbuf, n, self._c_req, self._c_headers,
                                       limits.max_headers, limits.max_body_size, self._c_head)
            finally:
                ffi.release(cbuf)
        self._scanned = n
        if rc == lib.PRK_INCOMPLETE:
            if n > limits.max_header_size or n > limits.max_request_line:
                line_end = buf.find(b"\n", 0, limits.max_request_line + 1)
                if line_end < 0 and n > limits.max_request_line:
                    raise self._fail(414, "request line too long")
                if n > limits.max_header_size:
                    raise self._fail(431, "request header section too large")
            return False
        if rc < 0:
            if rc == lib.PRK_E_TOO_MANY_HEADERS:
                raise self._fail(431, "too many header fields")
            raise self._fail(400, _PARSE_ERRORS.get(rc, "malformed request"))
        if rc > limits.max_header_size:
            raise self._fail(431, "request header section too large")
        if self._v_req[3] + self._v_req[1] + 10 > limits.max_request_line:
            raise self._fail(414, "request line too long")
        self._build_request(rc)
        return True

    def _build_request(self, head_len: int) -> None:
        buf = self.buf
        # prk_read_head has also made the RFC 9112 decisions (target form,
        # Host, persistence, expectation, body framing: prk_scan_head) in
        # one C pass over the fields; h is a uint32 view of its prk_head.
        h = self._v_head
        rc = h[_W_RESULT]
        if rc == _H_VERSION:
            raise self._fail(505, "HTTP version not supported")
        if head_len == len(buf):          # the usual case: nothing pipelined
            head = bytes(buf)
            buf.clear()
        else:
            head = bytes(buf[:head_len])
            del buf[:head_len]
        self._scanned = 0
        r = self._v_req
        req = Request()
        req.method = head[r[0]:r[0] + r[1]].decode("ascii")
        self._req = req           # from here on, errors know the method
        if rc:
            status, message = _HEAD_ERRORS.get(rc - (1 << 32), (400, "malformed request"))
            raise self._fail(status, message)
        flags = h[_W_FLAGS]
        req._head = head
        req._saved = self._block[:_HEAD_SIZE + (h[_W_NUM_HEADERS] << 4)]
        req.target = head[r[2]:r[2] + r[3]].decode("ascii")
        req.version_minor = 1 if flags & _HF_HTTP11 else 0
        req.keep_alive = not not flags & _HF_KEEP_ALIVE
        req.upgrade = not not flags & _HF_UPGRADE
        self.wants_continue = not not flags & _HF_CONTINUE
        if flags & _HF_CHUNKED:
            self._chunked = ffi.new("prk_chunked *")
            self._body = bytearray()
            self._body_len = 0
            self.state = _BODY_CHUNKED
        elif flags & _HF_LENGTH:
            length = self._c_head.content_length     # a uint64: any byte order
            req.content_length = length
            self._remaining = length
            self.state = _BODY_LENGTH
            inline = self.inline_limit
            if inline is not None and length > inline:
                self.wants_sink = True
        else:
            self._remaining = 0
            self.state = _BODY_LENGTH

    def _read_length_body(self) -> Request | None:
        need = self._remaining
        buf = self.buf
        sink = self.sink
        if sink is not None:
            take = min(need, len(buf))
            if take:
                if take == len(buf):
                    sink(buf)
                    buf.clear()
                else:
                    sink(memoryview(buf)[:take])
                    del buf[:take]
                need = self._remaining = need - take
            if need:
                return None
        elif len(buf) < need or self.wants_sink:
            return None
        req = self._req
        if need:
            req.body = bytes(buf[:need])
            del buf[:need]
        self.state = _DONE
        self.wants_continue = False
        return req

    def _read_chunked_body(self) -> Request | None:
        if self.wants_sink:             # nothing more until the caller gives a sink
            return None
        if self._chunked is None:       # complete; the sink has what was buffered
            return self._chunked_done()
        buf = self.buf
        n = len(buf)
        if not n:
            return None
        out_len = self._c_out_len
        if out_len is None:
            out_len = self._c_out_len = ffi.new("size_t *")
        cbuf = ffi.from_buffer(buf)
        try:
            rc = lib.prk_decode_chunked(self._chunked, cbuf, n, out_len)
        finally:
            ffi.release(cbuf)
        decoded = out_len[0]
        body = self._body
        if rc < 0 and rc != lib.PRK_INCOMPLETE:
            raise self._fail(400, _PARSE_ERRORS.get(rc, "malformed chunked body"))
        # Counting the rest of the chunk being read refuses a chunk declared
        # larger than the limit as soon as its size line is in, not after
        # max_body_size bytes of it have been uploaded.
        total = self._body_len + decoded
        if total + lib.prk_chunked_pending(self._chunked) > self.limits.max_body_size:
            raise self._fail(413, "request body too large")
        self._body_len = total
        sink = self.sink
        if decoded:
            if sink is not None:
                sink(memoryview(buf)[:decoded])
            else:
                body += memoryview(buf)[:decoded]
                inline = self.inline_limit
                if inline is not None and total > inline:
                    self.wants_sink = True
        if rc == lib.PRK_INCOMPLETE:
            del buf[:]
            return None
        del buf[:rc]
        self._chunked = None
        if self.wants_sink:
            # Complete, but larger than the caller keeps inline: it comes
            # out once the sink has taken what is buffered.
            return None
        return self._chunked_done()

    def _chunked_done(self) -> Request:
        req = self._req
        req.body = bytes(self._body) if self.sink is None else b""
        req.content_length = self._body_len
        self._body = None
        self.state = _DONE
        self.wants_continue = False
        return req


# -- responses -------------------------------------------------------------

# The interim answer to `Expect: 100-continue` (RFC 9110 10.1.1, 15.2.1).
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "")


_status_lines: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status).encode("ascii"))
        if len(_status_lines) < 1000:
            _status_lines[status] = line
    return line


# HTTP-dates (RFC 9110 5.6.7) are written and read here rather than with
# email.utils, whose imports (about 30 modules) every process would carry.
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name.encode("ascii"): i for i, name in enumerate(_MONTH_NAMES, 1)}
_HTTP_DATE_RE = re.compile(
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    rb"[A-Za-z]{3}, (?P<d1>\d\d) (?P<m1>[A-Za-z]{3}) (?P<y1>\d{4}) "
    rb"(?P<t1>\d\d:\d\d:\d\d) GMT"
    # rfc850-date (obsolete): Sunday, 06-Nov-94 08:49:37 GMT
    rb"|[A-Za-z]{6,9}, (?P<d2>\d\d)-(?P<m2>[A-Za-z]{3})-(?P<y2>\d\d) "
    rb"(?P<t2>\d\d:\d\d:\d\d) GMT"
    # asctime-date (obsolete): Sun Nov  6 08:49:37 1994
    rb"|[A-Za-z]{3} (?P<m3>[A-Za-z]{3}) (?P<d3>[ \d]\d) (?P<t3>\d\d:\d\d:\d\d) (?P<y3>\d{4})")


def format_http_date(t: float) -> str:
    """The IMF-fixdate of a POSIX time."""
    tm = time.gmtime(t)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAY_NAMES[tm.tm_wday], tm.tm_mday, _MONTH_NAMES[tm.tm_mon - 1], tm.tm_year,
        tm.tm_hour, tm.tm_min, tm.tm_sec)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_http_date(value: bytes) -> int | None:
    """The POSIX time of an HTTP-date in any of its three formats (a
    recipient must accept all of them); None if it is not one."""
    m = _HTTP_DATE_RE.fullmatch(value.strip())
    if m is None:
        return None
    n = 1 if m["d1"] else 2 if m["d2"] else 3
    month = _MONTHS.get(m["m%d" % n].title())
    day, year = int(m["d%d" % n]), int(m["y%d" % n])
    hour, minute, second = map(int, m["t%d" % n].split(b":"))
    if n == 2:
        # A two-digit year more than 50 years ahead is the latest past one
        # ending in those digits.
        this_year = time.gmtime().tm_year
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    # IMF-fixdate is a subset of RFC 5322's date-time (RFC 9110 5.6.7), which
    # must be semantically valid (RFC 5322 3.3): the day-of-month between 1
    # and the days of that month in that year. Feb 31, or Feb 29 of a common
    # year, is no HTTP-date, and a conditional carrying it is ignored.
    if month is None or not 1 <= day <= _days_in_month(year, month) or hour > 23 \
            or minute > 59 or second > 60:
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (March-based years).
    y = year - (month <= 2)
    era, yoe = divmod(y, 400)
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


_date_cache = [0, b""]


def http_date() -> bytes:
    """The IMF-fixdate for now, cached for the current second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = format_http_date(now).encode("ascii")
    return _date_cache[1]


def response_head(status: int, header_block: bytes, content_length: int | None,
                  keep_alive: bool, server: bytes = b"", add_date: bool = True,
                  http10_keep_alive: bool = False) -> bytes:
    """Serialize a response head. `header_block` holds already-validated
    "Name: value\\r\\n" lines; framing headers are Prack's alone."""
    parts = [status_line(status)]
    if add_date:
        parts.append(b"Date: " + http_date() + b"\r\n")
    if server:
        parts.append(b"Server: " + server + b"\r\n")
    parts.append(header_block)
    if content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % content_length)
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10_keep_alive:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def simple_response(status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
                    keep_alive: bool = False, server: bytes = b"",
                    extra: bytes = b"", head_only: bool = False,
                    http10_keep_alive: bool = False) -> bytes:
    """A complete small response generated by Prack itself (errors, API)."""
    head = response_head(status, b"Content-Type: " + content_type + b"\r\n" + extra,
                         len(body), keep_alive, server, True, http10_keep_alive)
    return head if head_only else head + body
