"""API process: serves the worker REST API and moves requests and responses.

It takes a record out of a ring only when a worker is waiting for one (so a
request that no worker has pulled stays in shared memory, where a restarted
API process finds it), and routes each posted response, by the connection
identifier, to the acceptor that holds the client, over that acceptor's Unix
socket. It speaks HTTP with the same sans-IO reader as the acceptors.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import time

import msgspec

from prack import http, wire
from prack.apilife import HEALTH_PATHS, ApiLifecycle
from prack.loop import ChildLoop
from prack.sockets import send_pending
from prack.wire import SLOT_FREE, SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN

log = logging.getLogger("prack.api")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Characters a header value may not carry: CTLs except HTAB (RFC 9110 5.5).
_BAD_VALUE = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}
# Framing and hop-by-hop fields are Prack's business (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "proxy-connection", "te", "trailer", "upgrade"})
NO_REQUESTS = b'{"error":"There are no requests pending"}'
THANK_YOU = b'{"message":"thank you"}'
JSON_TYPE = b"Content-Type: application/json\r\n"


class BadResponse(Exception):
    """A worker's posted response is invalid; the message names the field."""


class Link:
    """The Unix-socket connection from one acceptor."""
    __slots__ = ("sock", "index", "inbuf", "out", "events")

    def __init__(self, sock):
        self.sock = sock
        self.events = selectors.EVENT_READ
        self.index = -1
        self.inbuf = bytearray()
        self.out: list = []


class WorkerConn:
    __slots__ = ("sock", "reader", "out", "events", "waiting", "deadline", "keep_alive",
                 "busy", "close_after", "head", "processing")

    def __init__(self, sock, reader):
        self.sock = sock
        self.reader = reader
        self.out: list = []
        self.events = selectors.EVENT_READ
        self.waiting = False
        self.deadline = 0.0
        self.keep_alive = True
        self.busy = False          # a request of this connection is being answered
        self.close_after = False
        self.head = False          # the request being answered is a HEAD: no body
        self.processing = False    # _process is running for this connection


class ApiServer(ApiLifecycle, ChildLoop):
    what = "API process"

    def __init__(self, cfg, generation: int, listener: socket.socket,
                 link_listener: socket.socket, segment, status_fd: int):
        super().__init__()
        self.cfg = cfg
        self.generation = generation
        self.listener = listener
        self.link_listener = link_listener
        self.segment = segment
        self.rings = [segment.ring(i) for i in range(segment.nrings)]
        self.nslots = segment.nslots
        self.status_fd = status_fd
        lim = cfg.limits
        self.limits = http.Limits(cfg.api.max_request_size, lim.max_header_size,
                                  lim.max_request_line, lim.max_headers)
        self.poll_timeout = cfg.api.poll_timeout
        self.server = cfg.server.server_header.encode("latin-1")
        self.tick = min(0.5, max(0.05, self.poll_timeout / 4 if self.poll_timeout else 0.5))
        self.links: list[Link | None] = [None] * segment.nrings
        self.workers: dict[int, WorkerConn] = {}
        self.waiters: collections.deque[WorkerConn] = collections.deque()
        self.rr = 0
        self.encode = msgspec.json.Encoder().encode
        self.decode_response = msgspec.json.Decoder(wire.PostedResponse).decode

    # -- setup -------------------------------------------------------------------

    def run(self) -> int:
        for lst in (self.listener, self.link_listener):
            lst.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept_worker)
        self.sel.register(self.link_listener, selectors.EVENT_READ, self._on_accept_link)
        log.debug("API process ready (pid %d)", os.getpid())
        return self.serve(self.status_fd, b"P\n")

    def _on_event(self, data, mask: int) -> None:
        cls = data.__class__
        if cls is WorkerConn:
            self._on_worker(data, mask)
        elif cls is Link:
            self._on_link(data, mask)
        else:
            data(mask)

    def _drained(self) -> bool:
        return not any(w.busy or w.out for w in self.workers.values())

    def _begin_stop(self) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic() + 2.0
        self._close_listener(self.listener)
        while self.waiters:
            conn = self.waiters.popleft()
            if conn.waiting and conn.sock is not None:
                conn.waiting = False
                self._reply(conn, 503, b'{"error":"the server is shutting down"}')
        for conn in list(self.workers.values()):
            if not conn.busy and not conn.out:
                self._close_worker(conn)

    # -- acceptor links ------------------------------------------------------------

    def _on_accept_link(self, mask) -> None:
        while True:
            try:
                sock, _ = self.link_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._pause_accepting(self.link_listener, self._on_accept_link, exc)
                return
            sock.setblocking(False)
            link = Link(sock)
            self.sel.register(sock, selectors.EVENT_READ, link)

    def _on_link(self, link: Link, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_link(link)
            if link.sock is None:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = link.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_link(link)
            return
        buf = link.inbuf
        buf += data
        consumed = 0
        woken = False
        for start, end in wire.complete_frames(buf):
            consumed = end
            kind = buf[start]
            if kind == wire.F_WAKE:
                woken = True
            elif kind == wire.F_HELLO:
                _, index, generation, pid = wire.HELLO.unpack_from(buf, start)
                if index < len(self.links) and generation == self.generation:
                    old = self.links[index]
                    if old is not None and old is not link:
                        self._drop_link(old)
                    link.index = index
                    self.links[index] = link
                    log.debug("acceptor %d (pid %d) linked", index, pid)
                    self._replay_held(index)
                    woken = True
        del buf[:consumed]
        if woken:
            self._dispatch_waiters()

    def _drop_link(self, link: Link) -> None:
        if link.sock is None:
            return
        self.sel.unregister(link.sock)
        link.sock.close()
        link.sock = None
        if 0 <= link.index < len(self.links) and self.links[link.index] is link:
            self.links[link.index] = None

    def _send_link(self, link: Link, buffers: list) -> None:
        was_empty = not link.out
        link.out.extend(buffers)
        if was_empty:
            self._flush_link(link)

    def _flush_link(self, link: Link) -> None:
        try:
            send_pending(link.sock, link.out)
        except OSError:
            self._drop_link(link)
            return
        # Watch for writability only while something waits (one epoll_ctl
        # per change, not per frame).
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.out else 0)
        if want != link.events:
            link.events = want
            self.sel.modify(link.sock, want, link)

    # -- taking requests out of the rings ---------------------------------------------

    def _take(self) -> bytes | None:
        """The JSON of the next request still wanted, or None. A record is
        consumed only here, when a worker is waiting for it."""
        rings = self.rings
        n = len(rings)
        unpack = wire.RECORD.unpack_from
        rsize = wire.RECORD.size
        links = self.links
        for i in range(n):
            idx = (self.rr + i) % n
            if links[idx] is None:
                # Its answer could not be routed: wait for the acceptor's
                # HELLO (after an API restart it reconnects), which wakes us.
                continue
            ring = rings[idx]
            while True:
                view = ring.peek()
                if view is None:
                    break
                generation, acceptor, slot, key, _queued, env_len, body_len = unpack(view)
                if ring.slot_cas(slot, (key << 2) | SLOT_QUEUED, (key << 2) | SLOT_TAKEN):
                    env_end = rsize + env_len
                    data = self.encode(wire.PulledRequest(
                        wire.make_identifier(generation, acceptor, slot, key),
                        msgspec.Raw(view[rsize:env_end]), view[env_end:env_end + body_len]))
                    view.release()
                    ring.release()
                    self.rr = idx + 1
                    return data
                # Withdrawn: the client left or its deadline passed. Drop it.
                view.release()
                ring.release()
        return None

    def _dispatch_waiters(self) -> None:
        waiters = self.waiters
        rings = self.rings
        while waiters:
            conn = waiters[0]
            if not conn.waiting or conn.sock is None:
                waiters.popleft()
                continue
            data = self._take()
            if data is None:
                # Declare ourselves asleep on every ring, then look once more:
                # a producer that published meanwhile saw no flag, so no wake-up
                # would come for its record.
                asleep = True
                for ring, link in zip(rings, self.links):
                    if link is not None and not ring.sleep():
                        asleep = False
                if asleep:
                    return
                continue
            waiters.popleft()
            conn.waiting = False
            self._reply(conn, 200, data)
        for ring in rings:
            ring.wake()

    # -- worker connections ------------------------------------------------------------

    def _on_accept_worker(self, mask) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(self.listener, self._on_accept_worker, exc)
                else:
                    log.warning("API process: accept: %s", exc)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = WorkerConn(sock, http.RequestReader(self.limits))
            self.workers[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _on_worker(self, conn: WorkerConn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_worker(conn)
            if conn.sock is None:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_worker(conn)
            return
        conn.reader.feed(data)
        if not conn.busy:
            self._process(conn)

    def _process(self, conn: WorkerConn) -> None:
        """Handle buffered requests one after another. A loop, not recursion:
        _reply asks for the next request while we are still in here, and a
        worker may pipeline thousands of calls."""
        if conn.processing:
            return      # called back from _reply: the loop below goes on
        conn.processing = True
        try:
            while self._process_one(conn):
                pass
        finally:
            conn.processing = False

    def _process_one(self, conn: WorkerConn) -> bool:
        """Read and route one request; True when it was answered at once and
        more bytes are buffered."""
        reader = conn.reader
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            conn.keep_alive = False
            conn.busy = True
            conn.head = exc.head
            self._reply(conn, exc.status, self.encode(wire.Error(exc.message)))
            return False
        if req is None:
            if reader.wants_continue:
                reader.wants_continue = False
                self._write(conn, [CONTINUE])
            return False
        conn.busy = True
        conn.keep_alive = req.keep_alive and not self.stopping
        conn.head = req.method == "HEAD"
        self._route(conn, req)
        return (not conn.busy and conn.sock is not None and not conn.close_after
                and bool(reader.buf))

    def _route(self, conn: WorkerConn, req: http.Request) -> None:
        path = req.path
        method = req.method
        if path == "/api/v1/request":
            if method == "GET":
                self._pull(conn)
            elif method == "POST":
                self._post_response(conn, req.body)
            else:
                self._reply(conn, 405, b'{"error":"use GET or POST"}', b"Allow: GET, POST\r\n")
        elif path == "/api/v1/response":
            if method == "POST":
                self._post_response(conn, req.body)
            else:
                self._reply(conn, 405, b'{"error":"use POST"}', b"Allow: POST\r\n")
        elif path in HEALTH_PATHS:
            self._health(conn, req)
        else:
            self._reply(conn, 404, b'{"error":"no such endpoint"}')

    def _pull(self, conn: WorkerConn) -> None:
        if self.stopping:
            self._reply(conn, 503, b'{"error":"the server is shutting down"}')
            return
        if self.poll_timeout <= 0:
            data = self._take()
            if data is None:
                self._reply(conn, 404, NO_REQUESTS)
            else:
                self._reply(conn, 200, data)
            return
        conn.waiting = True
        conn.deadline = time.monotonic() + self.poll_timeout
        self.waiters.append(conn)
        self._dispatch_waiters()

    def _post_response(self, conn: WorkerConn, body: bytes) -> None:
        try:
            msg = self.decode_response(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            parsed = wire.parse_identifier(_identifier_of(body))
            reason = _describe(exc)
            if parsed is not None and self._known(parsed):
                self._answer_502(*parsed[1:])
            self._reply(conn, 400, self.encode(wire.Error(reason)))
            return
        parsed = wire.parse_identifier(msg.identifier)
        if parsed is None:
            self._reply(conn, 400, b'{"error":"identifier: malformed"}')
            return
        if not self._known(parsed):
            if self._forward(conn, parsed[0], body):    # the other generation's
                return
            self._reply(conn, 404, b'{"error":"identifier: unknown"}')
            return
        _, acceptor, slot, key = parsed
        ring = self.rings[acceptor]
        word = ring.slot_load(slot)
        if word >> 2 != key or word & 3 in (SLOT_FREE, SLOT_QUEUED):
            self._reply(conn, 404, b'{"error":"identifier: unknown or already answered"}')
            return
        link = self.links[acceptor]
        if word & 3 == SLOT_GONE or link is None:
            if word & 3 != SLOT_GONE and self._hold_until_linked(conn, acceptor, body):
                return      # the acceptor is reconnecting (we are a new API process)
            self._reply(conn, 410, b'{"error":"the client has gone"}')
            return
        try:
            status, flags, block, declared = _check_response(msg)
        except BadResponse as exc:
            self._answer_502(acceptor, slot, key)
            log.warning("worker posted an invalid response: %s", exc)
            self._reply(conn, 400, self.encode(wire.Error(str(exc))))
            return
        if not ring.slot_cas(slot, (key << 2) | SLOT_TAKEN, (key << 2) | SLOT_FREE):
            # The acceptor gave up on it this very moment.
            self._reply(conn, 410, b'{"error":"the client has gone"}')
            return
        self._send_link(link, wire.response_frame(slot, key, status, flags, block,
                                                  msg.body or b"", declared))
        self._reply(conn, 200, THANK_YOU)

    def _known(self, parsed: tuple[int, int, int, int]) -> bool:
        """The identifier names a slot of this generation's rings."""
        generation, acceptor, slot, _ = parsed
        return generation == self.generation and acceptor < len(self.rings) and slot < self.nslots

    def _answer_502(self, acceptor: int, slot: int, key: int) -> None:
        """The worker's answer is unusable: if the request is still waiting
        for it, its client gets a 502 now (nothing hangs)."""
        link = self.links[acceptor]
        if link is not None and self.rings[acceptor].slot_cas(
                slot, (key << 2) | SLOT_TAKEN, (key << 2) | SLOT_FREE):
            self._send_link(link, wire.response_frame(slot, key, 502, wire.RF_ERROR, b"", b""))

    # -- writing to workers ----------------------------------------------------------

    def _reply(self, conn: WorkerConn, status: int, body: bytes, extra: bytes = b"") -> None:
        if conn.sock is None:
            return
        keep = conn.keep_alive and not self.stopping
        if not keep:
            conn.close_after = True
        head = http.response_head(status, JSON_TYPE + extra, len(body), keep, self.server)
        conn.busy = False
        # Head and body leave in one sendmsg: a pulled request's JSON (up to
        # max_body_size, base64) is not copied once more to join them.
        self._write(conn, [head] if conn.head else [head, body])
        if conn.sock is not None and not conn.close_after:
            conn.reader.next()
            if conn.reader.buf:
                self._process(conn)

    def _write(self, conn: WorkerConn, buffers: list) -> None:
        was_empty = not conn.out
        conn.out.extend(buffers)
        if was_empty:
            self._flush_worker(conn)

    def _flush_worker(self, conn: WorkerConn) -> None:
        out = conn.out
        try:
            send_pending(conn.sock, out)
        except OSError:
            self._close_worker(conn)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        if want != conn.events:
            conn.events = want
            self.sel.modify(conn.sock, want, conn)
        if not out and conn.close_after:
            self._close_worker(conn)

    def _close_worker(self, conn: WorkerConn) -> None:
        if conn.sock is None:
            return
        conn.waiting = False
        self.sel.unregister(conn.sock)
        del self.workers[conn.sock.fileno()]
        conn.sock.close()
        conn.sock = None

    def _scan(self, now: float) -> None:
        # An expired waiter stays in the deque; when the same connection
        # polls again it is appended once more. Answer each one once, and
        # drop the stale entries before answering (which may poll again).
        expired = []
        for conn in self.waiters:
            if conn.waiting and now >= conn.deadline:
                conn.waiting = False
                expired.append(conn)
        if expired:
            self.waiters = collections.deque(c for c in self.waiters if c.waiting)
            for conn in expired:
                self._reply(conn, 404, NO_REQUESTS)


class _IdentOnly(msgspec.Struct):
    identifier: str


_decode_ident = msgspec.json.Decoder(_IdentOnly).decode


def _identifier_of(body: bytes) -> str | None:
    try:
        return _decode_ident(body).identifier
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _describe(exc: Exception) -> str:
    """msgspec's message, with its `$.field` path turned into the field name."""
    text = str(exc)
    if " - at `$." in text:
        reason, _, where = text.partition(" - at `$.")
        return "%s: %s" % (where.rstrip("`"), reason)
    if isinstance(exc, msgspec.DecodeError):
        return "malformed JSON: " + text
    return text


def _check_response(msg: wire.PostedResponse) -> tuple[int, int, bytes, int]:
    """Validate a posted response: (status, flags, header block, declared)."""
    code = msg.code
    if type(code) is str:
        code = code.strip()
        if not (code.isdigit() and code.isascii() and len(code) == 3):
            raise BadResponse("code: expected a 3-digit status code, got %r" % msg.code)
        code = int(code)
    if not 200 <= code <= 999:
        raise BadResponse("code: expected a final status code from 200 to 999, got %r" % code)
    flags = 0
    declared = wire.NO_LENGTH
    lines = []
    for name, value in (msg.headers or {}).items():
        if not name or not _TCHAR.issuperset(name):
            raise BadResponse("headers: %r is not a valid header name" % name)
        values = value if type(value) is list else value.split("\n")
        lower = name.lower()
        for item in values:
            if _BAD_VALUE.intersection(item):
                raise BadResponse("headers.%s: value contains CR, LF, NUL or another control "
                                  "character" % name)
            if lower in _HOP_BY_HOP:
                if lower == "connection":
                    if any(t.strip().lower() == "close" for t in item.split(",")):
                        flags |= wire.RF_CLOSE
                elif lower == "content-length":
                    item = item.strip()
                    if item.isdigit() and item.isascii() and len(item) < 19:
                        declared = int(item)
                        flags |= wire.RF_DECLARED
                continue
            if lower == "date":
                flags |= wire.RF_HAS_DATE
            elif lower == "server":
                flags |= wire.RF_HAS_SERVER
            try:
                encoded = item.strip(" \t").encode("latin-1")
            except UnicodeEncodeError:
                encoded = item.strip(" \t").encode("utf-8")
            lines.append(name.encode("ascii") + b": " + encoded + b"\r\n")
    return code, flags, b"".join(lines), declared
