"""Acceptor process: owns client connections.

One selector loop: accept, read, parse (C parser via prack.http), push each
complete request into this acceptor's ring, and write the responses the API
process routes back over the Unix socket. Every per-connection deadline lives
here, so the API process only moves records and can be restarted without
losing a queued request.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import random
import selectors
import socket
import time

import msgspec

from prack import http, static, wire
from prack.loop import ChildLoop
from prack.sockets import send_pending
from prack.ring import RecordTooBig, RingFull
from prack.wire import SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN

log = logging.getLogger("prack.acceptor")
# sendfile(2) where the platform has it (Linux, BSD, macOS); else pread + send.
_sendfile = getattr(os, "sendfile", None)
access_log = logging.getLogger("prack.access")

# Connection states.
READING, QUEUED, TAKEN, WRITING, LINGER = range(5)

LINGER_SECONDS = 2.0      # drain time after an error before closing (RFC 9112 9.6)
LINGER_MAX_BYTES = 1 << 20
RETIRE_IDLE_GRACE = 1.0   # an idle keep-alive connection's last chance when retiring
RECV_SIZE = 65536
# accept(2) errors that concern only the connection being accepted (Linux
# passes its pending network errors on, and says to retry; EPERM is a
# firewall rule): go on with the next one.
_ACCEPT_RETRY = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ETIMEDOUT") if hasattr(errno, name))
BODY_RATE_GRACE = 5.0     # seconds of body before min_body_rate is enforced
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Conn:
    __slots__ = ("sock", "fd", "slot", "key", "state", "reader", "out", "events",
                 "deadline", "keep_alive", "version_minor", "method", "target",
                 "remote_addr", "remote_port", "started", "sent_continue",
                 "lingered", "status", "sent", "processing", "again",
                 "body_since", "body_read", "file")

    def __init__(self, sock, slot, reader, addr):
        self.sock = sock
        self.fd = sock.fileno()
        self.slot = slot
        self.key = 0
        self.state = READING
        self.reader = reader
        self.out: list = []
        self.events = 0
        self.deadline = 0.0
        self.keep_alive = False
        self.version_minor = 1
        self.method = ""
        self.target = ""
        self.started = 0.0
        self.sent_continue = False
        self.lingered = 0
        self.status = 0
        self.sent = 0
        self.processing = False   # _process is running for this connection
        self.again = False        # ...and was asked to look at the buffer again
        self.body_since = 0.0     # when the current request's head completed
        self.body_read = 0        # body bytes received since then
        self.file = None          # static file being sent: [fd, offset, remaining]
        if isinstance(addr, tuple):
            self.remote_addr = addr[0]
            self.remote_port = str(addr[1])
        else:  # Unix-domain listener
            self.remote_addr = ""
            self.remote_port = ""


class Acceptor(ChildLoop):
    def __init__(self, cfg, index: int, generation: int, listener: socket.socket,
                 segment, api_path: str, status_fd: int):
        super().__init__()
        self.what = "acceptor %d" % index
        self.cfg = cfg
        self.index = index
        self.generation = generation
        self.listener = listener
        self.ring = segment.ring(index)
        self.nslots = segment.nslots
        self.api_path = api_path
        self.status_fd = status_fd
        lim = cfg.limits
        self.limits = http.Limits(lim.max_body_size, lim.max_header_size,
                                  lim.max_request_line, lim.max_headers)
        # What we accept to hold for a connection whose request is in flight:
        # at most max_header_size bytes and max_pipelined complete heads.
        self.pipeline_cap = lim.max_header_size
        self.max_pipelined = lim.max_pipelined
        t = cfg.timeouts
        self.t_header = t.header_timeout
        self.t_body = t.body_timeout
        self.t_keepalive = t.keepalive_timeout
        self.t_send = t.send_timeout
        self.t_queue = t.queue_timeout
        self.t_response = t.response_timeout
        self.t_graceful = t.graceful_timeout
        self.min_body_rate = t.min_body_rate
        self.tick = min(1.0, max(0.05, min(self.t_header, self.t_body, self.t_keepalive,
                                            self.t_send, self.t_queue, self.t_response) / 4))
        self.server = cfg.server.server_header.encode("latin-1")
        self.access = cfg.logging.access_log
        st = cfg.static
        self.static = (static.StaticFiles(st.root, st.prefix, st.index, st.cache_control)
                       if st.root else None)
        host, port = listener.getsockname()[:2] if listener.family != socket.AF_UNIX else ("", 0)
        self.server_name = host
        self.server_port = str(port)
        # The environment goes into the ring as msgpack: a v2 msgpack pull
        # (the SDK's) splices it as it is; JSON answers convert it.
        self.encode = msgspec.msgpack.Encoder().encode
        self.conns: dict[int, Conn] = {}
        self.slots: list[Conn | None] = [None] * self.nslots
        # First freed, first reused: a slot stays GONE as long as possible, so
        # a late answer for it gets 410 rather than 404.
        self.free_slots = collections.deque(range(self.nslots))
        self.api: socket.socket | None = None
        self.api_in = bytearray()
        self.api_out: list = []
        self.api_retry_at = 0.0
        self.rand = random.Random(os.urandom(16))

    # -- setup ---------------------------------------------------------------

    def run(self) -> int:
        _raise_fd_limit(self.cfg.server.max_connections + 64)
        # A new incarnation of this acceptor: nothing in the slot table is ours.
        for i in range(self.nslots):
            self.ring.slot_store(i, 0)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)
        self._connect_api()
        log.debug("acceptor %d ready (pid %d)", self.index, os.getpid())
        return self.serve(self.status_fd, b"A%d\n" % self.index)

    def _on_event(self, data, mask: int) -> None:
        if data.__class__ is Conn:
            self._on_conn(data, mask)
        else:
            data(mask)

    # -- stopping ----------------------------------------------------------------

    def _begin_stop(self) -> None:
        """Graceful stop: no new connections; finish what we hold."""
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.t_graceful
        self._close_listener(self.listener)
        # Retiring (an upgrade): an idle keep-alive client may be sending its
        # next request right now; closing under it would fail that request.
        # Give it RETIRE_IDLE_GRACE to arrive (it is then answered with
        # Connection: close); the housekeeping tick closes the rest.
        grace = time.monotonic() + min(RETIRE_IDLE_GRACE, self.t_keepalive)
        for conn in list(self.conns.values()):
            if conn.state == READING and conn.reader.idle:
                if self.retiring:
                    conn.deadline = min(conn.deadline, grace)
                else:
                    self._close(conn)
        log.debug("acceptor %d draining %d connections", self.index, len(self.conns))

    def _drained(self) -> bool:
        return not self.conns

    def _finish(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)

    # -- the link to the API process -------------------------------------------

    def _connect_api(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)
            sock.connect(self.api_path)
        except OSError as exc:
            sock.close()
            self.api_retry_at = time.monotonic() + 0.2
            log.debug("acceptor %d: API socket not reachable: %s", self.index, exc)
            return
        sock.setblocking(False)
        self.api = sock
        # A new buffer, not clear(): this can run from inside _on_api's frame
        # loop (a wake-up that finds the link gone), which must finish the
        # frames it already read (they answer our clients) in the old one.
        self.api_in = bytearray()
        self.api_out = [wire.FRAME_LEN.pack(wire.HELLO.size),
                        wire.HELLO.pack(wire.F_HELLO, self.index, self.generation, os.getpid())]
        self.api_events = selectors.EVENT_READ | selectors.EVENT_WRITE
        self.sel.register(sock, self.api_events, self._on_api)

    def _api_lost(self) -> None:
        sock = self.api
        self.api = None
        if sock is not None:
            self.sel.unregister(sock)
            sock.close()
        self.api_out = []
        log.info("acceptor %d: lost the API process; reconnecting", self.index)
        # At once, not on the next housekeeping tick (up to 1 s): until we
        # are linked, the API process refuses answers for our requests. The
        # master holds the listening socket, so this succeeds even before the
        # new API process runs; it accepts us when it starts.
        self._connect_api()

    def _send_api(self, buffers) -> None:
        if self.api is None:
            return
        was_empty = not self.api_out
        self.api_out.extend(buffers)
        if was_empty:
            self._flush_api()

    def _flush_api(self) -> None:
        try:
            send_pending(self.api, self.api_out)
        except OSError:
            self._api_lost()
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.api_out else 0)
        if want != self.api_events:
            self.api_events = want
            self.sel.modify(self.api, want, self._on_api)

    def _on_api(self, mask) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_api()
            if self.api is None:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = self.api.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._api_lost()
            return
        buf = self.api_in
        buf += data
        consumed = 0
        for start, end in wire.complete_frames(buf):
            if buf[start] == wire.F_RESPONSE:
                self._on_response_frame(buf, start, end)
            consumed = end
        if consumed:
            del buf[:consumed]

    def _on_response_frame(self, buf, start: int, end: int) -> None:
        _, slot, key, status, flags, block_len, declared = wire.RESPONSE.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is None or conn.key != key or conn.state not in (QUEUED, TAKEN):
            log.debug("acceptor %d: response for a connection that has gone", self.index)
            return
        at = start + wire.RESPONSE.size
        block = buf[at:at + block_len]      # one copy each; sendmsg takes bytearrays
        body = buf[at + block_len:end]
        self._respond(conn, status, flags, block, body, declared)

    # -- accepting -------------------------------------------------------------

    def _on_accept(self, mask) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(self.listener, self._on_accept, exc)
                    return
                if exc.errno in _ACCEPT_RETRY:
                    continue
                raise
            if not self.free_slots:
                # Over max_connections: refuse quickly rather than queue forever.
                self._refuse(sock)
                continue
            try:
                sock.setblocking(False)
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                # Reset before we got to it (BSD and macOS refuse setsockopt then).
                sock.close()
                continue
            slot = self.free_slots.popleft()
            conn = Conn(sock, slot, http.RequestReader(self.limits), addr)
            conn.deadline = time.monotonic() + self.t_keepalive
            conn.events = selectors.EVENT_READ
            self.slots[slot] = conn
            self.conns[conn.fd] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _refuse(self, sock: socket.socket) -> None:
        """Over max_connections: answer 503 and close at once, rather than
        leave the client queued. Reading what already arrived before closing
        makes a reset (which could destroy the 503 in flight) less likely."""
        try:
            sock.setblocking(False)
            sock.send(http.simple_response(503, b"server busy\n", extra=b"Retry-After: 1\r\n",
                                           server=self.server))
            sock.shutdown(socket.SHUT_WR)
            sock.recv(RECV_SIZE)
        except OSError:
            pass
        sock.close()

    # -- connection events -----------------------------------------------------

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
            if conn.sock is None:
                return
        if mask & selectors.EVENT_READ:
            self._on_readable(conn)

    def _on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)       # reset: nobody is there to answer
            return
        if not data:
            if conn.state == WRITING:
                # The client ended its side after its request (a half-close,
                # or a close): finish the answer being written, read nothing
                # more. A client that has really gone resets the write.
                conn.keep_alive = False
                self._set_events(conn, conn.events & ~selectors.EVENT_READ)
                return
            # The client closed. A request still queued or with a worker is
            # withdrawn (a worker holding it learns the client has gone), as
            # nginx does for a client that closes before its answer.
            self._close(conn)
            return
        state = conn.state
        if state == LINGER:
            conn.lingered += len(data)
            if conn.lingered > LINGER_MAX_BYTES:
                self._close(conn)
            return
        reader = conn.reader
        if state == READING:
            now = time.monotonic()
            if reader.idle:
                conn.deadline = now + self.t_header
            elif reader.in_body:
                conn.deadline = now + self.t_body
                conn.body_read += len(data)
            reader.feed(data)
            self._process(conn)
        else:
            # Pipelined bytes while a request is in flight: keep them, but no
            # more than pipeline_cap bytes or max_pipelined heads (then stop
            # reading; TCP pushes back on the client until our turn). Line
            # ends other than CRLF are refused, so counting blank lines counts
            # heads (a body containing one only makes us stop sooner).
            reader.feed(data)
            buf = reader.buf
            if len(buf) > self.pipeline_cap or buf.count(b"\r\n\r\n") > self.max_pipelined:
                self._set_events(conn, conn.events & ~selectors.EVENT_READ)

    def _process(self, conn: Conn) -> None:
        """Parse what is buffered; dispatch a complete request. A request we
        answer at once (503 when the ring is full) leads back here through
        _finished for the next pipelined one: that call only sets `again`,
        and this loop goes on, so pipelined requests cannot nest calls."""
        if conn.processing:
            conn.again = True
            return
        conn.processing = True
        try:
            while True:
                conn.again = False
                self._process_one(conn)
                if not conn.again or conn.sock is None:
                    break
        finally:
            conn.processing = False

    def _process_one(self, conn: Conn) -> None:
        reader = conn.reader
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            self._fail(conn, exc.status, exc.message, exc.head)
            return
        if req is None:
            if reader.in_body and not conn.body_since:
                # The head is complete: from now on body_timeout counts,
                # from this read (header_timeout was armed for the head), and
                # the body's average rate is measured from here.
                conn.deadline = conn.body_since = time.monotonic()
                conn.deadline += self.t_body
                conn.body_read = 0
            if reader.wants_continue and not conn.sent_continue:
                conn.sent_continue = True
                conn.deadline = time.monotonic() + self.t_body
                self._write(conn, [CONTINUE])
            return
        self._dispatch(conn, req)

    def _dispatch(self, conn: Conn, req: http.Request) -> None:
        conn.body_since = 0.0
        conn.keep_alive = req.keep_alive and not self.stopping
        conn.version_minor = req.version_minor
        conn.method = req.method
        conn.target = req.target
        conn.started = time.monotonic()
        conn.sent_continue = False
        if self.static is not None and self.static.wants(req.path):
            self._serve_static(conn, req)
            return
        env = wire.environ(req, self.server_name, self.server_port,
                           conn.remote_addr, conn.remote_port)
        env_packed = self.encode(env)
        key = self.rand.getrandbits(62) or 1
        slot = conn.slot
        ring = self.ring
        ring.slot_store(slot, (key << 2) | SLOT_QUEUED)
        conn.key = key
        conn.state = QUEUED
        body = req.body
        record = wire.RECORD.pack(self.generation, self.index, slot, key, time.time(),
                                  len(env_packed), len(body), 0)
        try:
            wake = ring.push(record, env_packed, body)
        except RingFull:
            ring.slot_store(slot, 0)
            log.warning("acceptor %d: ring full, answering 503", self.index)
            self._respond_local(conn, 503, b"the request queue is full\n", b"Retry-After: 1\r\n")
            return
        except RecordTooBig:
            ring.slot_store(slot, 0)
            self._respond_local(conn, 431, b"request too large for the queue\n", b"", close=True)
            return
        conn.deadline = conn.started + self.t_queue
        if wake:
            self._send_api([wire.WAKE_FRAME])

    # -- responses ---------------------------------------------------------------

    def _respond(self, conn: Conn, status: int, flags: int, block: bytes, body: bytes,
                 declared: int) -> None:
        if flags & wire.RF_ERROR:
            self._respond_local(conn, status, http.reason_phrase(status).encode() + b"\n", b"")
            return
        keep = conn.keep_alive and not flags & wire.RF_CLOSE and not self.stopping
        if status < 200 or status == 204 or status == 304:
            length = None
            body = b""
        elif conn.method == "HEAD":
            if body:
                length = len(body)
            elif flags & wire.RF_DECLARED:
                length = declared
            else:
                length = None
            body = b""
        else:
            length = len(body)
        head = http.response_head(status, block, length, keep,
                                  b"" if flags & wire.RF_HAS_SERVER else self.server,
                                  not flags & wire.RF_HAS_DATE,
                                  keep and conn.version_minor == 0)
        self._start_response(conn, status, keep, [head, body] if body else [head])

    def _respond_local(self, conn: Conn, status: int, body: bytes, extra: bytes,
                       close: bool = False) -> None:
        """A response Prack makes itself (errors, timeouts, a full queue)."""
        keep = conn.keep_alive and not close and not self.stopping
        data = http.simple_response(status, body, keep_alive=keep, server=self.server,
                                    extra=extra, head_only=conn.method == "HEAD",
                                    http10_keep_alive=keep and conn.version_minor == 0)
        self._start_response(conn, status, keep, [data])

    def _serve_static(self, conn: Conn, req: http.Request) -> None:
        """A file under static.prefix, answered here without a worker."""
        ans = self.static.answer(req.method, req.path, req.headers)
        cls = ans.__class__
        if cls is static.SimpleAnswer and ans.status != 304:
            self._respond_local(conn, ans.status, ans.body, ans.header_block)
            return
        keep = conn.keep_alive
        body = b""
        if cls is static.FileAnswer:
            length = ans.length
        elif cls is static.BytesAnswer:
            body = ans.body
            length = len(body)
        else:                   # 304: no body, no length
            length = None
        head = http.response_head(ans.status, ans.header_block, length, keep, self.server,
                                  True, keep and conn.version_minor == 0)
        if req.method == "HEAD":
            body = b""
        if cls is static.FileAnswer:
            if req.method != "HEAD" and length:
                conn.file = [ans.fd, ans.offset, length]    # sent after the head
            else:
                os.close(ans.fd)
        self._start_response(conn, ans.status, keep, [head, body] if body else [head])

    def _send_file(self, conn: Conn) -> None:
        """Send the static file after its head, until the socket is full.
        Raises OSError when the client has gone or the file shrank."""
        job = conn.file
        fd = job[0]
        while job[2]:
            if _sendfile is not None:
                try:
                    n = _sendfile(conn.fd, fd, job[1], min(job[2], 1 << 20))
                except (BlockingIOError, InterruptedError):
                    return
            else:
                data = os.pread(fd, min(job[2], RECV_SIZE), job[1])
                n = len(data)
                if n:
                    conn.out.append(data)
            if n == 0:
                raise OSError("static file shrank while being sent")
            job[1] += n
            job[2] -= n
            if conn.out:            # the pread fallback: send what was read
                send_pending(conn.sock, conn.out)
                if conn.out:
                    return
        conn.file = None
        os.close(fd)

    def _start_response(self, conn: Conn, status: int, keep: bool, buffers: list) -> None:
        conn.keep_alive = keep
        conn.state = WRITING
        conn.status = status
        # Counted before the first write, which may send it all and log it.
        conn.sent = sum(map(len, buffers)) + (conn.file[2] if conn.file is not None else 0)
        conn.deadline = time.monotonic() + self.t_send
        self._write(conn, buffers)

    def _fail(self, conn: Conn, status: int, message: str, head: bool = False) -> None:
        """The client broke the protocol: answer, then close (no more requests
        are read from this connection)."""
        log.debug("acceptor %d: %d %s from %s", self.index, status, message, conn.remote_addr)
        conn.method = "HEAD" if head else (conn.method or "-")
        conn.started = time.monotonic()
        self._respond_local(conn, status, message.encode() + b"\n", b"", close=True)

    def _write(self, conn: Conn, buffers: list) -> None:
        was_empty = not conn.out
        conn.out.extend(buffers)
        if was_empty:
            self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        out = conn.out
        try:
            send_pending(conn.sock, out)
            if conn.file is not None and not out:
                self._send_file(conn)
        except OSError:
            self._close(conn)
            return
        if conn.state == WRITING:
            conn.deadline = time.monotonic() + self.t_send
        if out or conn.file is not None:
            self._set_events(conn, conn.events | selectors.EVENT_WRITE)
            return
        if conn.events & selectors.EVENT_WRITE:
            self._set_events(conn, conn.events & ~selectors.EVENT_WRITE)
        if conn.state == WRITING:
            self._finished(conn)

    def _finished(self, conn: Conn) -> None:
        if self.access:
            access_log.info('%s - "%s %s HTTP/1.%d" %d %d %.4f', conn.remote_addr or "-",
                            conn.method, conn.target, conn.version_minor, conn.status,
                            conn.sent, time.monotonic() - conn.started)
        conn.method = ""
        conn.target = ""
        conn.key = 0
        if not conn.keep_alive:
            self._linger(conn)
            return
        conn.state = READING
        conn.reader.next()
        conn.deadline = time.monotonic() + self.t_keepalive
        if not conn.events & selectors.EVENT_READ:
            self._set_events(conn, conn.events | selectors.EVENT_READ)
        if conn.reader.buf:
            conn.deadline = time.monotonic() + self.t_header
            self._process(conn)

    def _linger(self, conn: Conn) -> None:
        """Half-close and drain before closing, so the client reads our answer
        instead of a reset caused by its unread bytes (RFC 9112 9.6)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = LINGER
        conn.reader.buf.clear()
        conn.deadline = time.monotonic() + LINGER_SECONDS
        self._set_events(conn, selectors.EVENT_READ)

    def _set_events(self, conn: Conn, events: int) -> None:
        if events == conn.events:
            return
        conn.events = events
        if events:
            if conn.sock is not None:
                try:
                    self.sel.modify(conn.sock, events, conn)
                except KeyError:
                    self.sel.register(conn.sock, events, conn)
        else:
            self.sel.unregister(conn.sock)

    def _close(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        if conn.state in (QUEUED, TAKEN):
            # Whoever holds the request learns the client has gone.
            self.ring.slot_store(conn.slot, (conn.key << 2) | SLOT_GONE)
        if conn.events:
            self.sel.unregister(sock)
        sock.close()
        conn.sock = None
        conn.out = []
        if conn.file is not None:
            os.close(conn.file[0])
            conn.file = None
        del self.conns[conn.fd]
        self.slots[conn.slot] = None
        self.free_slots.append(conn.slot)

    # -- deadlines ---------------------------------------------------------------

    def _scan(self, now: float) -> None:
        if self.api is None and now >= self.api_retry_at:
            self._connect_api()
        ring = self.ring
        for conn in list(self.conns.values()):
            state = conn.state
            if state == QUEUED:
                word = ring.slot_load(conn.slot)
                if word == (conn.key << 2) | SLOT_TAKEN:
                    conn.state = TAKEN
                    conn.deadline = now + self.t_response
                    continue
            elif state == READING and conn.body_since and self.min_body_rate:
                elapsed = now - conn.body_since
                if elapsed > BODY_RATE_GRACE and conn.body_read < self.min_body_rate * elapsed:
                    log.info("acceptor %d: request body from %s arriving at %.0f bytes/s, "
                             "under min_body_rate: 408", self.index, conn.remote_addr or "-",
                             conn.body_read / elapsed)
                    self._fail(conn, 408, "request body too slow")
                    continue
            if now < conn.deadline:
                continue
            if state == READING:
                if conn.reader.idle:
                    self._close(conn)        # idle keep-alive: close silently
                else:
                    self._fail(conn, 408, "request timeout")
            elif state == QUEUED:
                # Withdraw the request unless a worker took it meanwhile.
                queued = (conn.key << 2) | SLOT_QUEUED
                if ring.slot_cas(conn.slot, queued, (conn.key << 2) | SLOT_GONE):
                    log.warning("acceptor %d: no worker took %s %s within %.3gs: 504",
                                self.index, conn.method, conn.target, self.t_queue)
                    self._respond_local(conn, 504, b"no worker took the request in time\n", b"")
                else:
                    conn.state = TAKEN
                    conn.deadline = now + self.t_response
            elif state == TAKEN:
                ring.slot_store(conn.slot, (conn.key << 2) | SLOT_GONE)
                log.warning("acceptor %d: no response to %s %s within %.3gs: 504",
                            self.index, conn.method, conn.target, self.t_response)
                self._respond_local(conn, 504, b"the worker did not answer in time\n", b"")
            else:  # WRITING to a client that does not read, or LINGER done
                self._close(conn)


def _raise_fd_limit(wanted: int) -> None:
    """Lift this process's soft limit on open files towards `wanted` (never
    past the hard limit), so max_connections is not cut short by a low
    default. Where the limit cannot be read or raised, accept() reports
    EMFILE and the acceptor pauses accepting instead."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError) as exc:
        log.debug("could not raise the open-file limit: %s", exc)
