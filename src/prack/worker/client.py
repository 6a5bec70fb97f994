"""The worker's one HTTP/1.1 client, for every call it makes to a front.

`Connection` is one kept-alive connection: a call is one send and as few
receives as the answer needs (http.client costs about five times the CPU
per call, bench/analysis.md, which at one or two requests per call was most
of a worker's time). It connects on its first call and again after a close,
retries once on a new connection when the front had closed a kept-alive one
(if the caller says the call may be repeated), and can hand out an answer's
body as the caller reads it (a large request body read from Prack).

`Front` is one Prack front: its address, the timeout of its connections,
the idle connections kept for the calls about one request (streams, inputs,
WebSockets, cancellation long-polls: each on a connection of its own, so none
waits behind another), and whether it can be reached. `Lease` makes calls
over a connection borrowed from that pool.

Errors are OSError (the front closing an idle connection:
http.client.RemoteDisconnected) or http.client.HTTPException (an answer that
is not HTTP/1.1), as http.client would raise them.
"""
from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import urllib.parse

log = logging.getLogger("prack.worker")

MSGPACK = "application/msgpack"
MAX_HEAD = 64 * 1024        # a longer response head is not a front's
IDLE_CONNECTIONS = 16       # kept per front for streams, inputs and watches
# What a kept-alive connection the front closed meanwhile (an idle limit, a
# restart) looks like before any answer: worth one new connection.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_NO_HEADERS: dict = {}


def reason(exc: BaseException) -> str:
    """An exception as one short line for a log or an error report."""
    text = str(exc) or exc.__class__.__name__
    return text if len(text) < 200 else text[:200] + "..."


class Connection:
    """One keep-alive HTTP/1.1 client connection to a front."""

    __slots__ = ("address", "timeout", "host", "sock", "buf", "aborted", "left", "keep")

    def __init__(self, host: str, port: int, timeout: float):
        self.address = (host, port)
        self.timeout = timeout
        name = "[%s]" % host if ":" in host else host     # an IPv6 literal
        self.host = b"Host: %s:%d\r\n" % (name.encode("idna"), port)
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.aborted = False        # shut down by abort(): never retried, never pooled
        self.left = 0               # body bytes open() left to read (-1: to the close)
        self.keep = True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()
        self.left = 0

    def abort(self) -> None:
        """End a call in progress from another thread (its read fails)."""
        self.aborted = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict = _NO_HEADERS, retry: bool = False,
             whole: bool = True) -> tuple[int, bytes]:
        """Send a call, read its answer: (status, body). `retry`: the call may
        be sent again on a new connection when a kept-alive one turns out
        closed by the front. `whole` False (open()): the body is left to
        readinto(), b"" is returned for it."""
        head = ("%s %s HTTP/1.1\r\n" % (method, path) + "".join(
            "%s: %s\r\n" % kv for kv in headers.items())).encode("latin-1") + self.host
        while True:
            reused = self.sock is not None
            try:
                if not reused:
                    self.sock = socket.create_connection(self.address, timeout=self.timeout)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if body is None:
                    self.sock.sendall(head + b"\r\n")
                else:
                    self.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status, fields, keep = self._read_head()
                while status < 200:                 # interim answers have no body
                    status, fields, keep = self._read_head()
                if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                    data = self._read_chunked()
                    if not whole:       # not a front's way with a body: read whole
                        self.buf[:0] = data
                        n = len(data)
                elif b"content-length" in fields:
                    value = fields[b"content-length"].strip()
                    if not value.isdigit() or len(value) > 18:
                        raise http.client.HTTPException("bad Content-Length %r" % value[:40])
                    n = int(value)
                    data = self._read_exactly(n) if whole else b""
                else:
                    n = -1
                    data = self._read_to_end() if whole else b""
                    keep = False
            except STALE:
                self.close()
                if not (reused and retry) or self.aborted:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if not whole:
                self.left = n
                self.keep = keep
                if n:
                    return status, b""
            if not keep:
                self.close()
            return status, data

    def open(self, method: str, path: str, body: bytes | None = None,
             headers: dict = _NO_HEADERS, retry: bool = False) -> int:
        """Send a call and read the head of its answer: its status. The body
        is then read with readinto() (or read_rest()) before the next call."""
        return self.call(method, path, body, headers, retry, False)[0]

    def readinto(self, view) -> int:
        """Read some of the body open() left (0 at its end)."""
        left = self.left
        if not left:
            return 0
        view = memoryview(view).cast("B")
        n = len(view) if left < 0 else min(len(view), left)
        buf = self.buf
        try:
            if buf:
                n = min(n, len(buf))
                view[:n] = buf[:n]
                del buf[:n]
            else:
                n = self.sock.recv_into(view, n)
                if not n:
                    if left > 0:
                        raise http.client.IncompleteRead(b"", left)
                    self.close()
                    return 0
        except BaseException:
            self.close()
            raise
        if left > 0:
            self.left = left - n
            if n == left and not self.keep:
                self.close()
        return n

    def read_rest(self) -> bytes:
        """The rest of the body open() left."""
        out = bytearray()
        chunk = bytearray(65536)
        while True:
            n = self.readinto(chunk)
            if not n:
                return bytes(out)
            out += chunk[:n]

    def _fill(self) -> bool:
        """Receive more; False at the end of the stream."""
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _read_head(self) -> tuple[int, dict, bool]:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                raise http.client.HTTPException("response head over %d bytes" % MAX_HEAD)
            had = len(buf)
            if not self._fill():
                if had:
                    raise http.client.IncompleteRead(bytes(buf[:200]))
                raise http.client.RemoteDisconnected("the front closed the connection")
            end = buf.find(b"\r\n\r\n", max(0, had - 3))
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[:end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or \
                not (parts[1].isdigit() and len(parts[1]) == 3):
            raise http.client.BadStatusLine(lines[0][:200].decode("latin-1"))
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise http.client.HTTPException("bad header line %r" % line[:200])
            name = name.strip().lower()
            value = value.strip()
            fields[name] = fields[name] + b"," + value if name in fields else value
        connection = fields.get(b"connection", b"").lower()
        if parts[0] == b"HTTP/1.1":
            keep = b"close" not in connection
        else:
            keep = b"keep-alive" in connection
        return int(parts[1]), fields, keep

    def _read_exactly(self, n: int) -> bytes:
        buf = self.buf
        while len(buf) < n:
            if not self._fill():
                raise http.client.IncompleteRead(bytes(buf), n - len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _read_line(self) -> bytes:
        buf = self.buf
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                raise http.client.HTTPException("chunk line over %d bytes" % MAX_HEAD)
            if not self._fill():
                raise http.client.IncompleteRead(bytes(buf))
            end = buf.find(b"\r\n")
        line = bytes(buf[:end])
        del buf[:end + 2]
        return line

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = self._read_line().split(b";", 1)[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise http.client.HTTPException("bad chunk size %r" % size[:40]) from None
            if not n:
                while self._read_line():    # trailer fields, then the blank line
                    pass
                return bytes(out)
            out += self._read_exactly(n)
            if self._read_exactly(2) != b"\r\n":
                raise http.client.HTTPException("chunk without its CRLF")

    def _read_to_end(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data


class Front:
    """One Prack front: its address, its pool of idle connections for calls
    about one request, and its outage state."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url if "//" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("front %r: expected http://host:port" % url)
        self.url = "http://%s:%d" % (parts.hostname, parts.port or 80)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.failures = 0
        self.idle: list[Connection] = []

    def connect(self) -> Connection:
        """A connection of its own (it connects on its first call)."""
        return Connection(self.host, self.port, self.timeout)

    def borrow(self) -> Connection:
        """A connection for calls about one request: an idle one, else new."""
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return Connection(self.host, self.port, self.timeout)

    def give_back(self, conn: Connection) -> None:
        if conn.sock is not None and not conn.aborted and not conn.left:
            with self.lock:
                if len(self.idle) < IDLE_CONNECTIONS:
                    self.idle.append(conn)
                    return
        conn.close()

    def close_idle(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def failed(self, exc: BaseException) -> int:
        """Note a failure; the number of failures in a row (logs the first)."""
        with self.lock:
            self.failures += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("front %s unreachable (%s); retrying", self.url, reason(exc))
            return self.failures

    def succeeded(self) -> None:
        if self.failures:
            with self.lock:
                if self.down_since is not None:
                    log.warning("front %s back after %.1fs", self.url,
                                time.monotonic() - self.down_since)
                    self.down_since = None
                self.failures = 0


class Lease:
    """Calls about one request over a connection borrowed from its front's
    pool on the first call and given back by close() when still usable. A
    call on a kept-alive connection the front closed meanwhile is made again
    on a new one, unless abort() ended it."""

    __slots__ = ("front", "conn", "aborted")

    def __init__(self, front: Front):
        self.front = front
        self.conn: Connection | None = None
        self.aborted = False

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict = _NO_HEADERS) -> tuple[int, bytes]:
        conn = self.conn
        if conn is None:
            conn = self.conn = self.front.borrow()
        try:
            # Read after self.conn is set: an abort() from now on reaches
            # the connection itself, which then refuses the retry.
            answer = conn.call(method, path, body, headers, not self.aborted)
        except BaseException:
            self.conn = None
            raise
        if conn.sock is None:       # the front closed it after its answer
            self.conn = None
        return answer

    def abort(self) -> None:
        """End a call in progress from another thread (its read fails)."""
        self.aborted = True
        conn = self.conn
        if conn is not None:
            conn.abort()

    def close(self) -> None:
        conn = self.conn
        if conn is not None:
            self.conn = None
            if self.aborted:        # shut down by abort(): not for the pool
                conn.close()
            else:
                self.front.give_back(conn)
