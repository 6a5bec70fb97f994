"""Static files served by the acceptors themselves (`[static]`).

`StaticFiles` decides; `StaticSite`, the acceptor's collaborator, sends.
`StaticFiles.answer(req)` maps a request under the configured prefix to a
ready response (404, 405, 304, 416 ...), to the bytes of a small file kept
in memory (checked against the file's size and modification time on every
request), or to an open file plus the byte range to send after the head,
which the connection sends with sendfile(2) (or reads, where there is no
sendfile). Validators and ranges follow RFC 9110 sections 8.8, 13 and 14:
strong ETags from size and modification time, Last-Modified, If-Match and
If-Unmodified-Since (412), If-None-Match before If-Modified-Since (304),
If-Range, and a single byte range (a request for several ranges, or with
two Range fields, gets the whole file, which the RFC allows). Dates that are
no HTTP-date, and an If-Modified-Since in the future, are ignored. A path
ending in a slash names a directory: a file there is 404, as with nginx.
"""
from __future__ import annotations

import mimetypes
import os
import stat
import time
from urllib.parse import unquote_to_bytes

from prack.protocol import http

_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml",
               "application/xml")
_ALLOW = b"Allow: GET, HEAD\r\n"
# Request fields that make an answer depend on more than the file.
_CONDITIONAL = frozenset({b"if-none-match", b"if-match", b"if-modified-since",
                          b"if-unmodified-since", b"range", b"if-range"})
CACHE_SECONDS = 1.0     # how long a path resolution is trusted
CACHE_ENTRIES = 4096    # entries per cache before it starts over
CACHE_PATH_MAX = 256    # longer request paths are resolved every time
SMALL_FILE = 64 * 1024  # files up to this size are kept in memory...
CACHE_BYTES = 8 << 20   # ...up to this many bytes per acceptor
# Non-blocking: opening a FIFO someone placed under the root must not hang.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class FileAnswer:
    """An open file to send: the head, then `length` bytes from `offset`."""

    __slots__ = ("status", "fd", "offset", "length", "header_block")

    def __init__(self, status: int, fd: int, offset: int, length: int, header_block: bytes):
        self.status = status
        self.fd = fd
        self.offset = offset
        self.length = length
        self.header_block = header_block


class BytesAnswer:
    """A small file's bytes (or a range of them), kept in memory: the
    acceptor sends head and body in one write."""

    __slots__ = ("status", "header_block", "body", "ready")

    def __init__(self, status: int, header_block: bytes, body: bytes, ready=None):
        self.status = status
        self.header_block = header_block
        self.body = body
        self.ready = ready      # a whole file's (path, (size, mtime, inode))


class SimpleAnswer:
    """A response Prack makes without a file (errors, 304, redirects)."""

    __slots__ = ("status", "header_block", "body")

    def __init__(self, status: int, body: bytes = b"", header_block: bytes = b""):
        self.status = status
        self.body = body
        self.header_block = header_block


def _etag(st: os.stat_result) -> bytes:
    return b'"%x-%x"' % (st.st_size, st.st_mtime_ns)


def _content_type(path: bytes) -> bytes:
    ctype, encoding = mimetypes.guess_type(os.fsdecode(path), strict=False)
    if ctype is None or encoding is not None:
        # A .gz or an unknown kind: the bytes as they are.
        return b"application/octet-stream"
    if ctype.startswith(_TEXT_TYPES):
        ctype += "; charset=utf-8"
    return ctype.encode("ascii")


def _etag_list_matches(value: bytes, etag: bytes, weak: bool) -> bool:
    """If-None-Match (weak comparison) or If-Match style list matching."""
    value = value.strip()
    if value == b"*":
        return True
    bare = etag[2:] if etag.startswith(b"W/") else etag
    for item in value.split(b","):
        item = item.strip()
        if weak and item.startswith(b"W/"):
            item = item[2:]
        if item == bare:
            return True
    return False


def _position(digits: bytes) -> int:
    """A byte position of a range. Past 18 digits it is beyond any file, and
    int() would refuse the digit strings a 32 KiB header allows (ValueError
    past 4300 digits, which would crash the acceptor): clamp it."""
    return int(digits) if len(digits) <= 18 else 10 ** 18


def parse_range(value: bytes, size: int) -> tuple[int, int] | None | bool:
    """One `bytes=` range of a file of `size` bytes: (first, last) inclusive;
    None when the header is to be ignored (other units, several ranges,
    malformed); False when it is valid but unsatisfiable (416)."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or not first) or not (last.isdigit() or not last) or \
            (not first and not last):
        return None
    if not first:                       # suffix: the last N bytes
        n = _position(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None                     # invalid range-spec: ignore the header
    if start >= size:
        return False
    return start, min(end, size - 1)


class StaticFiles:
    def __init__(self, root: str, prefix: str, index: str = "index.html",
                 cache_control: str = ""):
        self.root = os.path.realpath(root).encode() if root else b""
        self.prefix = prefix.encode("latin-1")
        self.prefix_text = prefix          # what wants() compares, per request
        self.index = index.encode() if index else b""
        self.extra = (b"Cache-Control: " + cache_control.encode("latin-1") + b"\r\n"
                      if cache_control else b"")
        # Per-request work that only changes when the files do, kept for
        # CACHE_SECONDS: request path -> resolved path (or None: refused),
        # and (path, size, mtime) -> the headers describing that version.
        self._paths: dict[str, tuple[float, bytes | None]] = {}
        self._heads: dict[tuple, tuple[bytes, int, bytes, bytes]] = {}
        self._bodies: dict[tuple, bytes] = {}
        self._body_bytes = 0
        # The common case answered in one step: request path -> (trusted
        # until, file, (size, mtime, inode), its plain 200 answer). Valid
        # while the stat made for every request still matches.
        self._ready: dict[str, tuple] = {}

    def _resolve_cached(self, raw_path: str) -> bytes | None:
        now = time.monotonic()
        hit = self._paths.get(raw_path)
        if hit is not None and hit[0] > now:
            return hit[1]
        real = self._resolve(raw_path)
        if len(raw_path) > CACHE_PATH_MAX:
            return real         # not kept: 4096 of them would be 64 MB
        if len(self._paths) >= CACHE_ENTRIES:
            self._paths.clear()
        self._paths[raw_path] = (now + CACHE_SECONDS, real)
        return real

    def wants(self, path: str) -> bool:
        return bool(self.root) and path.startswith(self.prefix_text)

    def _resolve(self, raw_path: str) -> bytes | None:
        """The file a request path names, or None when it is not one we
        serve (outside the root, a dot file, not decodable)."""
        rel = unquote_to_bytes(raw_path.encode("latin-1")[len(self.prefix):])
        if b"\0" in rel or b"\\" in rel:
            return None
        parts = []
        segments = rel.split(b"/")
        for seg in segments:
            if not seg or seg == b".":
                continue
            if seg.startswith(b"."):    # "..", and hidden files such as .git or .env
                return None
            parts.append(seg)
        full = os.path.join(self.root, *parts) if parts else self.root
        real = os.path.realpath(full)
        # A symlink may not lead out of the root.
        if real != self.root and not real.startswith(self.root + b"/"):
            return None
        if len(segments) > 1 and segments[-1] in (b"", b"."):
            # "/index.html/" is another URI than "/index.html" (RFC 3986
            # 3.3: a path of segments, the last one empty; 6.2.3 normalizes
            # only an empty path to "/"), and one that names a directory.
            # The slash is kept so that the stat refuses a file there
            # (POSIX pathname resolution: "file/" fails with ENOTDIR): 404,
            # as nginx answers, never the file under a second name.
            real += b"/"
        return real

    def answer(self, method: str, raw_path: str,
               headers: list) -> FileAnswer | BytesAnswer | SimpleAnswer:
        if method != "GET" and method != "HEAD":
            return SimpleAnswer(405, b"method not allowed\n", _ALLOW)
        ready = self._ready.get(raw_path)
        plain = True
        for name, _ in headers:
            if name in _CONDITIONAL:
                plain = False
                break
        if ready is not None and plain and ready[0] > time.monotonic():
            # A small file asked for again, without validators or ranges:
            # only the stat that makes a change show at once.
            try:
                st = os.stat(ready[1])
            except OSError:
                st = None
            if st is not None and (st.st_size, st.st_mtime_ns, st.st_ino) == ready[2]:
                return ready[3]
        answer = self._answer_path(method, raw_path, headers)
        if plain and answer.__class__ is BytesAnswer and answer.ready is not None:
            # Kept as long as the path's resolution is trusted (a long path's
            # is not kept, nor is this then).
            resolved = self._paths.get(raw_path)
            if resolved is not None:
                if len(self._ready) >= CACHE_ENTRIES:
                    self._ready.clear()
                self._ready[raw_path] = (resolved[0],) + answer.ready + (answer,)
        return answer

    def _answer_path(self, method: str, raw_path: str,
                     headers: list) -> FileAnswer | BytesAnswer | SimpleAnswer:
        path = self._resolve_cached(raw_path)
        if path is None:
            return SimpleAnswer(404, b"not found\n")
        try:
            st = os.stat(path)     # "file/" raises ENOTDIR: 404
            if stat.S_ISDIR(st.st_mode) and self.index:
                if not raw_path.endswith("/"):
                    location = raw_path + "/"
                    return SimpleAnswer(301, b"moved\n",
                                        b"Location: " + location.encode("latin-1") + b"\r\n")
                path = os.path.realpath(os.path.join(path, self.index))
                if not path.startswith(self.root + b"/"):
                    return SimpleAnswer(404, b"not found\n")
                st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return SimpleAnswer(404, b"not found\n")
            if st.st_size <= SMALL_FILE:
                body = self._small_body(path, st)
                if body is not None:
                    return self._answer(method, path, st, headers, -1, body)
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return SimpleAnswer(404, b"not found\n")
        try:
            # What is sent is what the descriptor holds, whatever the name
            # points to by now.
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return self._answer(method, path, st, headers, fd, None)
        except OSError:
            pass
        os.close(fd)
        return SimpleAnswer(404, b"not found\n")

    def _small_body(self, path: bytes, st) -> bytes | None:
        """The bytes of a small file's current version, read once and kept
        (at most CACHE_BYTES in all); None if it changed while being read."""
        # The inode too: a file renamed over it with the same size and time
        # (a deploy that keeps times) has other bytes.
        key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        body = self._bodies.get(key)
        if body is None:
            # Non-blocking like every open here: the name may have come to
            # point at a FIFO since the stat.
            fd = os.open(path, _OPEN_FLAGS)
            try:
                body = os.read(fd, SMALL_FILE + 1)
                now = os.fstat(fd)
            finally:
                os.close(fd)
            if not stat.S_ISREG(now.st_mode) or \
                    (now.st_size, now.st_mtime_ns, now.st_ino) != key[1:] \
                    or len(body) != st.st_size:
                return None
            if self._body_bytes + len(body) > CACHE_BYTES:
                self._bodies.clear()
                self._ready.clear()     # it holds bodies too
                self._body_bytes = 0
            self._bodies[key] = body
            self._body_bytes += len(body)
        return body

    def _describe(self, path: bytes, st) -> tuple[bytes, int, bytes, bytes]:
        """(etag, mtime, validator lines, full header block) of one version
        of a file."""
        key = (path, st.st_size, st.st_mtime_ns)
        hit = self._heads.get(key)
        if hit is None:
            etag = _etag(st)
            mtime = int(st.st_mtime)
            validators = (b"ETag: " + etag + b"\r\nLast-Modified: " +
                          http.format_http_date(mtime).encode("ascii") + b"\r\n")
            block = (b"Content-Type: " + _content_type(path) + b"\r\n" + validators +
                     b"Accept-Ranges: bytes\r\n" + self.extra)
            if len(self._heads) >= CACHE_ENTRIES:
                self._heads.clear()
            hit = self._heads[key] = (etag, mtime, validators, block)
        return hit

    def _answer(self, method: str, path: bytes, st, headers: list, fd: int,
                body: bytes | None) -> FileAnswer | BytesAnswer | SimpleAnswer:
        """Conditionals and ranges for one version of a file, held either
        as an open descriptor `fd` or as its bytes `body`."""
        etag, mtime, validators, block = self._describe(path, st)
        inm = ims = im = ius = rng = if_range = None
        for name, value in headers:
            if name == b"if-none-match":
                inm = value if inm is None else inm + b"," + value
            elif name == b"if-match":
                im = value if im is None else im + b"," + value
            # The date fields hold one HTTP-date each: given twice they are
            # a list, which RFC 9110 has ignored (13.1.3: "more than one
            # member"; 13.1.4: "appears to be a list of dates"). An empty
            # value parses as no date.
            elif name == b"if-unmodified-since":
                ius = value if ius is None else b""
            elif name == b"if-modified-since":
                ims = value if ims is None else b""
            elif name == b"range" and method == "GET":
                # RFC 9110 14.2: a HEAD ignores Range. Range is a single
                # ranges-specifier, not a list (14.2, 5.3), so two Range
                # fields make no valid one; 14.2 lets the server ignore or
                # reject an invalid ranges-specifier. Ignored: the whole file
                # with 200, as for any other malformed Range here. (416 is for
                # ranges that are valid but unsatisfiable, 15.5.17, and
                # rejecting would take a full answer from a client that must
                # already handle one.) An empty value parses as no range.
                rng = value if rng is None else b""
            elif name == b"if-range":
                # One validator (13.1.5); two match no representation, so
                # the condition is false and the whole file goes out.
                if_range = value if if_range is None else b""
        # RFC 9110 13.2.2: If-Match (strong comparison), or If-Unmodified-Since
        # without it: false gives 412. Then If-None-Match, or If-Modified-Since
        # without it: false gives 304.
        if im is not None:
            failed = not _etag_list_matches(im, etag, weak=False)
        elif ius is not None:
            since = http.parse_http_date(ius)
            failed = since is not None and mtime > since
        else:
            failed = False
        if failed:
            if fd >= 0:
                os.close(fd)
            return SimpleAnswer(412, b"precondition failed\n")
        if inm is not None:
            not_modified = _etag_list_matches(inm, etag, weak=True)
        elif ims is not None:
            # RFC 9110 13.1.3: an If-Modified-Since that is no valid HTTP-date
            # is ignored, its date read on the origin server's clock; a date
            # later than the server's current time is invalid (said in so
            # many words by RFC 2616 14.25, which 9110 replaces). Honouring
            # one would answer 304 to every later change of the file until
            # that date: ignored, the whole 200 goes out.
            since = http.parse_http_date(ims)
            not_modified = since is not None and mtime <= since <= time.time()
        else:
            not_modified = False
        size = st.st_size
        status, first, length = 200, 0, size
        if not_modified:
            answer = SimpleAnswer(304, b"", validators + self.extra)
        else:
            if rng is not None and if_range is not None:
                # 13.1.5: the range only applies if the representation is
                # the one the client has (strong ETag match, or the exact date).
                if if_range.startswith(b'"'):
                    ok = if_range.strip() == etag
                else:
                    when = http.parse_http_date(if_range)
                    ok = when is not None and int(when) == mtime
                if not ok:
                    rng = None
            r = parse_range(rng, size) if rng is not None else None
            if r is False:
                answer = SimpleAnswer(416, b"range not satisfiable\n",
                                      b"Content-Range: bytes */%d\r\n" % size)
            else:
                if r is not None:
                    status, first, length = 206, r[0], r[1] - r[0] + 1
                    block += b"Content-Range: bytes %d-%d/%d\r\n" % (r[0], r[1], size)
                if body is not None:
                    if status != 200:
                        return BytesAnswer(status, block, body[first:first + length])
                    return BytesAnswer(200, block, body,
                                       (path, (size, st.st_mtime_ns, st.st_ino)))
                return FileAnswer(status, fd, first, length, block)
        if fd >= 0:
            os.close(fd)
        return answer


class StaticSite:
    """The acceptor's static files: whether a request is one, and its
    answer written on the connection (a file after its head)."""

    def __init__(self, acc, files: StaticFiles) -> None:
        self.files = files
        self.responses = acc.responses
        self.wants = files.wants

    def serve(self, conn, req) -> None:
        """A file under static.prefix, answered here without a worker."""
        ans = self.files.answer(req.method, req.path, req.headers)
        cls = ans.__class__
        if cls is SimpleAnswer and ans.status != 304:
            self.responses.local(conn, ans.status, ans.body, ans.header_block)
            return
        body = b""
        if cls is FileAnswer:
            length = ans.length
        elif cls is BytesAnswer:
            body = ans.body
            length = len(body)
        else:                   # 304: no body, no length
            length = None
        keep, head = self.responses.head(conn, ans.status, ans.header_block, length, 0)
        if req.method == "HEAD":
            body = b""
        if cls is FileAnswer:
            if req.method != "HEAD" and length:
                conn.file = [ans.fd, ans.offset, length]    # sent after the head
            else:
                os.close(ans.fd)
        self.responses.start(conn, ans.status, keep, [head, body] if body else [head])
