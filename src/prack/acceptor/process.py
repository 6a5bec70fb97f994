"""Acceptor process: owns client connections.

One selector loop: accept, read, parse (the C parser via protocol.http),
push each complete request into this acceptor's ring, and hand the frames
the API process sends back over the Unix socket to whoever handles their
kind. Every per-connection deadline lives in the acceptor (checked here, or
by the collaborator that owns the connection's state), so the API process
only moves records and can be restarted without losing a queued request.

The features are collaborators built here, each with the state it owns,
registered in the process's tables: `frame_handlers` (frame kind -> handler,
the one dispatch table for frames from the API process), `body_handlers`
(F_DATA/F_END by connection state), `after_flush` and `scanners` (by
connection state), `link_lost` (what the API process's loss means).
"""
from __future__ import annotations

import collections
import logging
import mmap
import os
import random
import selectors
import socket
import time

from prack.acceptor.connection import (ANSWERABLE, IN_FLIGHT, LINGER, QUEUED, READING, TAKEN,
                                       WEBSOCKET, WRITING, Conn)
from prack.acceptor.responses import RETIRE_IDLE_GRACE, Responses
from prack.acceptor.static import StaticFiles, StaticSite
from prack.acceptor.streams import Streams
from prack.acceptor.uploads import Uploads
from prack.acceptor.websockets import WebSockets
from prack.child.accept import accept_connections
from prack.child.connection import EVENT_READ, EVENT_WRITE
from prack.child.limits import raise_fd_limit
from prack.child.loop import ChildLoop
from prack.child.send import send_pending
from prack.ipc import frames, slots
from prack.ipc.ring import RecordTooBig, RingFull
from prack.ipc.slots import SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN
from prack.protocol import environ, http

log = logging.getLogger("prack.acceptor")

# Connections taken per wake-up of the listener. Every acceptor is woken for
# a new connection; one that took a whole burst (wrk opens its 32 at once)
# would serve them all while the others idle (measured: one acceptor at
# 50 us/request, the other at 0). Taking one and going back to the loop lets
# the others take their share, as nginx does without multi_accept.
ACCEPT_BATCH = 1
# ...and after taking it, give the CPU to the others woken with us: on a
# busy machine the first acceptor to run otherwise took a whole burst before
# another was scheduled (measured at 32 connections: one acceptor at 0 us
# per request in 2 runs of 4 without it, none in 4 with it).
_yield = getattr(os, "sched_yield", None)
# At most one "all slots in use" warning per acceptor in this many seconds.
FULL_LOG_INTERVAL = 60.0
LINGER_MAX_BYTES = 1 << 20
RECV_SIZE = 65536
API_READ_SIZE = 1 << 18   # what one read of the API link takes at most
BODY_RATE_GRACE = 5.0     # seconds of body before min_body_rate is enforced


class Acceptor(ChildLoop):
    def __init__(self, cfg, index: int, generation: int, listener: socket.socket,
                 segment, api_path: str, status_fd: int, beat=None):
        super().__init__(beat)
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
        self.inline_limit = lim.inline_body_size
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
        self.t_stream_idle = t.stream_idle_timeout
        self.t_stream_max = t.stream_max_duration
        self.t_sse = t.sse_keepalive
        self.stream_buffer = lim.stream_buffer
        self.tick = min(1.0, max(0.05, min(self.t_header, self.t_body, self.t_keepalive,
                                            self.t_send, self.t_queue, self.t_response) / 4))
        if cfg.websocket.ping_interval:
            self.tick = min(self.tick, max(0.05, cfg.websocket.ping_interval / 4))
        self.server = cfg.server.server_header.encode("latin-1")
        self.access = cfg.logging.access_log
        host, port = listener.getsockname()[:2] if listener.family != socket.AF_UNIX else ("", 0)
        # The environment goes into the ring as msgpack: a v2 msgpack pull
        # (the SDK's) splices it as it is; JSON answers convert it. These
        # are its SERVER_NAME and SERVER_PORT for a request without a host.
        self.env_server = environ.msgpack_pairs({"SERVER_NAME": host, "SERVER_PORT": str(port)})
        self.conns: dict[int, Conn] = {}
        self.slots: list[Conn | None] = [None] * self.nslots
        # First freed, first reused: a slot stays GONE as long as possible, so
        # a late answer for it gets 410 rather than 404.
        self.free_slots = collections.deque(range(self.nslots))
        # No free slot: the listener is not watched (_leave_listener).
        self.full = False
        self.full_logged_at = -FULL_LOG_INTERVAL
        self.api: socket.socket | None = None
        self.api_ending = False       # the API process has gone: read what it sent, no more
        self.api_in = bytearray()
        # Anonymous memory: only the pages reads have used count (an idle
        # acceptor does not carry 256 KiB of zeros).
        self.api_scratch = mmap.mmap(-1, API_READ_SIZE, mmap.MAP_PRIVATE)
        self.api_scratch_view = memoryview(self.api_scratch)
        self.api_out: list = []
        self.api_retry_at = 0.0
        self.rand = random.Random(os.urandom(16))
        # The tables the collaborators register in.
        self.frame_handlers = {frames.F_START: self._on_start_frame,
                               frames.F_DATA: self._on_body_frame,
                               frames.F_END: self._on_body_frame}
        self.body_handlers: dict = {}       # state -> handler(conn, kind, number, flags, payload)
        self.after_flush: dict = {}         # state -> hook(conn, bytes sent)
        self.scanners: dict = {}            # state -> scan(conn, now)
        self.link_lost: list = []           # what the API process's loss means, in order
        self.responses = Responses(self)
        self.streams = Streams(self)
        self.uploads = Uploads(self)
        self.websockets = WebSockets(self)
        st = cfg.static
        self.static = (StaticSite(self, StaticFiles(st.root, st.prefix, st.index,
                                                    st.cache_control))
                       if st.root else None)
        self._process_step = self._process_one

    # -- setup ---------------------------------------------------------------

    def run(self) -> int:
        raise_fd_limit(self.cfg.server.max_connections + 64)
        # A new incarnation of this acceptor: nothing in the slot table is ours.
        for i in range(self.nslots):
            self.ring.slot_store(i, 0)
        self.uploads.start()
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
                    self.close(conn)
            elif conn.state == WEBSOCKET:
                self.websockets.going_away(conn)
        log.debug("acceptor %d draining %d connections", self.index, len(self.conns))

    def _drained(self) -> bool:
        return not self.conns

    def _finish(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn)

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
        self.api_ending = False
        # A new buffer, not clear(): this can run from inside _on_api's frame
        # loop (a wake-up that finds the link gone), which must finish the
        # frames it already read (they answer our clients) in the old one.
        self.api_in = bytearray()
        self.api_out = [frames.FRAME_LEN.pack(frames.HELLO.size),
                        frames.HELLO.pack(frames.F_HELLO, self.index, self.generation, os.getpid())]
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
        for lost in self.link_lost:
            lost()
        # At once, not on the next housekeeping tick (up to 1 s): until we
        # are linked, the API process refuses answers for our requests. The
        # master holds the listening socket, so this succeeds even before the
        # new API process runs; it accepts us when it starts.
        self._connect_api()

    def send_api(self, buffers) -> None:
        if self.api is None or self.api_ending:
            return
        was_empty = not self.api_out
        self.api_out.extend(buffers)
        if was_empty:
            self._flush_api()

    def _flush_api(self) -> None:
        try:
            send_pending(self.api, self.api_out)
        except OSError:
            self._api_unwritable()
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.api_out else 0)
        if want != self.api_events:
            self.api_events = want
            self.sel.modify(self.api, want, self._on_api)

    def _api_unwritable(self) -> None:
        """Writing to the API process failed: it has gone. What it sent
        before dying may still be unread in the socket: answers whose slots
        it had already freed, which no one else will ever send. Closing the
        socket now would throw them away (their clients then waited for
        queue_timeout). So while there is something to read (data, or the
        end), the link is only read, to its end, where _on_api finds the
        loss and reconnects; nothing more is written to it."""
        try:
            pending = self.api.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:         # nothing to read (not even the end), or reset
            pending = None
        if pending is None:
            self._api_lost()
            return
        self.api_ending = True
        self.api_out = []
        if self.api_events != selectors.EVENT_READ:
            self.api_events = selectors.EVENT_READ
            self.sel.modify(self.api, selectors.EVENT_READ, self._on_api)

    def _on_api(self, mask) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_api()
            if self.api is None:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            # Into a buffer kept for it: recv(256 KiB) would allocate that
            # much per call, which malloc serves with mmap/munmap (measured:
            # 17-23 us per call against 3 us).
            n = self.api.recv_into(self.api_scratch)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if not n:
            self._api_lost()
            return
        buf = self.api_in
        buf += self.api_scratch_view[:n]
        consumed = 0
        handlers = self.frame_handlers
        for start, end in frames.complete_frames(buf):
            handler = handlers.get(buf[start])
            if handler is not None:
                handler(buf, start, end)
            consumed = end
        if consumed:
            del buf[:consumed]

    def _on_start_frame(self, buf, start: int, end: int) -> None:
        """F_START: a streamed response's head, or a WebSocket's accept (101)."""
        _, slot, key, status, flags, block_len, declared = frames.RESPONSE.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is None or conn.key != key or conn.state not in ANSWERABLE:
            self.send_api(frames.stream_frame(frames.F_GONE, slot, key))
            return
        at = start + frames.RESPONSE.size
        block = bytes(buf[at:at + block_len])
        if status == 101:
            self.websockets.start(conn, flags, block)
        else:
            self.streams.start(conn, status, flags, block, declared)

    def _on_body_frame(self, buf, start: int, end: int) -> None:
        """F_DATA or F_END: for whoever handles the connection's state (a
        streamed response, a WebSocket)."""
        _, slot, key, number, flags = frames.STREAM.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is not None and conn.key == key:
            handler = self.body_handlers.get(conn.state)
            if handler is not None:
                handler(conn, buf[start], number, flags, buf[start + frames.STREAM.size:end])
                return
        # The client went (F_GONE is on its way or was sent): say so again
        # for this chunk, so the worker's post is not left waiting.
        self.send_api(frames.stream_frame(frames.F_GONE, slot, key))

    # -- accepting -------------------------------------------------------------
    # The listener is shared by every acceptor (and kept by the master, so a
    # new acceptor or a new generation inherits its queue). An acceptor
    # watches it only while it has a free slot: a full one leaves the
    # connections in the kernel's queue for the others, and takes them again
    # once one of its own connections closes. With every acceptor full they
    # wait there, up to server.backlog, as with haproxy's maxconn, Apache's
    # MaxRequestWorkers or nginx's accept_mutex (docs/architecture.md, "accept").

    def _on_accept(self, mask) -> None:
        # One per wake-up (ACCEPT_BATCH); the listener is watched only with a
        # free slot, so the one taken always has one.
        accept_connections(self.listener, self._take, self._exhausted, ACCEPT_BATCH)

    def _exhausted(self, exc: OSError) -> None:
        self._pause_accepting(self.listener, self._on_accept, exc)

    def _take(self, sock: socket.socket, addr) -> bool:
        """A new connection: True when it counts as this wake-up's."""
        try:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            # Reset before we got to it (BSD and macOS refuse setsockopt then).
            sock.close()
            return False
        free_slots = self.free_slots
        slot = free_slots.popleft()
        conn = Conn(sock, self.sel, slot, http.RequestReader(self.limits, self.inline_limit),
                    addr, time.monotonic() + self.t_keepalive)
        self.slots[slot] = conn
        self.conns[conn.fd] = conn
        if not free_slots:
            self._leave_listener()
        if _yield is not None:
            _yield()
        return True

    def _leave_listener(self) -> None:
        """The last free slot is taken: stop watching the listener, so the
        next connection goes to an acceptor with room (every acceptor is
        woken for it, and this one no longer is)."""
        self.full = True
        self.sel.unregister(self.listener)
        now = time.monotonic()
        if now >= self.full_logged_at + FULL_LOG_INTERVAL:
            # Under a sustained load the acceptor fills at every connection
            # that ends: say so once a minute, not each time.
            self.full_logged_at = now
            log.warning("acceptor %d: all %d connection slots in use; new connections go to "
                        "the other acceptors or wait in the listen backlog", self.index,
                        self.nslots)

    def _rejoin_listener(self) -> None:
        """A slot of a full acceptor was freed: watch the listener again (a
        connection already waiting in its queue wakes us at once)."""
        self.full = False
        if not self.stopping:
            self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)

    # -- connection events -----------------------------------------------------

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & EVENT_WRITE:
            self.responses.flush(conn)
            if conn.sock is None:
                return
        if mask & EVENT_READ:
            self._on_readable(conn)

    def _on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)        # reset: nobody is there to answer
            return
        if not data:
            if conn.state == WRITING:
                # The client ended its side after its request (a half-close,
                # or a close): finish the answer being written, read nothing
                # more. A client that has really gone resets the write.
                conn.keep_alive = False
                conn.watch(conn.events & ~EVENT_READ)
                return
            # The client closed. A request still queued or with a worker is
            # withdrawn (a worker holding it learns the client has gone), as
            # nginx does for a client that closes before its answer.
            self.close(conn)
            return
        state = conn.state
        reader = conn.reader
        if state == READING:
            now = time.monotonic()
            if reader.idle:
                conn.deadline = now + self.t_header
            elif reader.in_body:
                conn.deadline = now + self.t_body
                conn.body_read += len(data)
            reader.feed(data)
            conn.drive(self._process_step)
        elif state == WEBSOCKET:
            self.websockets.input(conn, data)
        elif state == LINGER:
            conn.lingered += len(data)
            if conn.lingered > LINGER_MAX_BYTES:
                self.close(conn)
        else:
            # Pipelined bytes while a request is in flight: keep them, but no
            # more than pipeline_cap bytes or max_pipelined heads (then stop
            # reading; TCP pushes back on the client until our turn). Line
            # ends other than CRLF are refused, so counting blank lines counts
            # heads (a body containing one only makes us stop sooner).
            reader.feed(data)
            buf = reader.buf
            if len(buf) > self.pipeline_cap or buf.count(b"\r\n\r\n") > self.max_pipelined:
                conn.watch(conn.events & ~EVENT_READ)

    def process(self, conn: Conn) -> None:
        """Parse what is buffered; dispatch a complete request. A request
        answered at once (503 when the ring is full) leads back here for the
        next pipelined one: Connection.drive makes that another turn of one
        loop, so pipelined requests cannot nest calls."""
        conn.drive(self._process_step)

    def _process_one(self, conn: Conn) -> None:
        reader = conn.reader
        try:
            req = reader.maybe_read_request()
            if req is None and reader.wants_sink:
                if not self.uploads.spool_body(conn):
                    return
                req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            self.responses.fail(conn, exc.status, exc.message, exc.head)
            return
        except OSError as exc:          # writing the spool file
            self.uploads.spool_failed(conn, exc)
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
                if self.uploads.defer(conn, reader.head_request):
                    return          # 100 Continue once a worker takes it
                conn.deadline = time.monotonic() + self.t_body
                self.responses.write(conn, [http.CONTINUE])
            return
        if conn.input:
            self.uploads.input_done(conn, req)
        else:
            self.dispatch(conn, req)

    def dispatch(self, conn: Conn, req: http.Request, flags: int = 0) -> None:
        """A complete request (or a deferred one's head): static files are
        answered here; anything else goes into the ring for a worker."""
        conn.body_since = 0.0
        conn.keep_alive = req.keep_alive and not self.stopping
        conn.version_minor = req.version_minor
        conn.method = req.method
        conn.target = req.target
        conn.started = time.monotonic()
        conn.sent_continue = False
        conn.ws = None
        if self.static is not None and self.static.wants(req.path):
            self.static.serve(conn, req)
            return
        # The environment is written as msgpack by C (prk_write_env), from
        # the head and the scan the reader kept with the request.
        extra = conn.env_remote
        if extra is None:
            extra = conn.env_remote = environ.msgpack_pairs(
                {"REMOTE_ADDR": conn.remote_addr, "REMOTE_PORT": conn.remote_port})
        count = 2
        if conn.spool is not None:
            extra += self.uploads.spooled_env(conn)
            count = 3
        if req.upgrade and self.websockets.request(conn, req):
            return
        env_packed = req.environ_msgpack(self.env_server, 2, extra, count)
        key = conn.key or self.rand.getrandbits(62) or 1
        slot = conn.slot
        ring = self.ring
        ring.mark(slot, key, SLOT_QUEUED)
        conn.queue(key)
        body = req.body
        record = slots.RECORD.pack(self.generation, self.index, slot, key, time.time(),
                                   len(env_packed), len(body), flags)
        try:
            wake = ring.push(record, env_packed, body)
        except RingFull:
            ring.slot_store(slot, 0)
            log.warning("acceptor %d: ring full, answering 503", self.index)
            self.responses.local(conn, 503, b"the request queue is full\n",
                                 b"Retry-After: 1\r\n")
            return
        except RecordTooBig:
            ring.slot_store(slot, 0)
            self.responses.local(conn, 431, b"request too large for the queue\n", b"",
                                 close=True)
            return
        conn.deadline = conn.started + self.t_queue
        if wake:
            # At once, not at the end of this loop turn: with a burst of
            # requests read in one turn, the API process starts on the first
            # while we read the rest (measured: the turn's end put 0.3-0.7 ms
            # on the median at 32 paced connections).
            self.send_api([frames.WAKE_FRAME])

    # -- the end of a connection -------------------------------------------------

    def close(self, conn: Conn) -> None:
        if conn.sock is None:
            return
        in_flight = conn.state in IN_FLIGHT
        # Closed and out of the tables before the API process is told:
        # telling it can find the link gone, and the link's loss closes
        # connections (streams, uploads), which must not find this one.
        conn.close()
        del self.conns[conn.fd]
        self.slots[conn.slot] = None
        self.free_slots.append(conn.slot)
        if self.full:
            self._rejoin_listener()
        if conn.spool is not None or conn.input:
            self.uploads.end(conn)
        if in_flight:
            self.withdraw(conn)

    def withdraw(self, conn: Conn) -> None:
        """The client of a queued, taken or streaming request has gone (or
        its deadline passed): mark the slot GONE, so a record still queued
        is never handed out and a late answer gets 410; if a worker holds
        the request, tell the API process, which tells the worker."""
        key = conn.key
        old = self.ring.swap(conn.slot, key, SLOT_GONE)
        if old == SLOT_TAKEN:
            self.send_api(frames.stream_frame(frames.F_GONE, conn.slot, key))
        elif old == SLOT_QUEUED:
            log.debug("acceptor %d: client %s left; its queued request %s %s is withdrawn",
                      self.index, conn.remote_addr or "-", conn.method, conn.target)

    # -- deadlines ---------------------------------------------------------------

    def _scan(self, now: float) -> None:
        if self.api is None and now >= self.api_retry_at:
            self._connect_api()
        ring = self.ring
        scanners = self.scanners
        for conn in list(self.conns.values()):
            state = conn.state
            scanner = scanners.get(state)
            if scanner is not None:         # streams, WebSockets: their own clocks
                scanner(conn, now)
                continue
            if state == QUEUED:
                if ring.holds(conn.slot, conn.key, SLOT_TAKEN):
                    conn.take(now + self.t_response)
                    continue
            elif state == READING and conn.body_since and self.min_body_rate:
                elapsed = now - conn.body_since
                if elapsed > BODY_RATE_GRACE and conn.body_read < self.min_body_rate * elapsed:
                    log.info("acceptor %d: request body from %s arriving at %.0f bytes/s, "
                             "under min_body_rate: 408", self.index, conn.remote_addr or "-",
                             conn.body_read / elapsed)
                    self.responses.fail(conn, 408, "request body too slow")
                    continue
            if now < conn.deadline:
                continue
            if state == READING:
                if conn.reader.idle:
                    self.close(conn)        # idle keep-alive: close silently
                else:
                    self.responses.fail(conn, 408, "request timeout")
            elif state == QUEUED:
                # Withdraw the request unless a worker took it meanwhile.
                if ring.move(conn.slot, conn.key, SLOT_QUEUED, SLOT_GONE):
                    log.warning("acceptor %d: no worker took %s %s within %.3gs: 504",
                                self.index, conn.method, conn.target, self.t_queue)
                    self.responses.local(conn, 504, b"no worker took the request in time\n", b"")
                else:
                    conn.take(now + self.t_response)
            elif state == TAKEN:
                self.withdraw(conn)
                log.warning("acceptor %d: no response to %s %s within %.3gs: 504",
                            self.index, conn.method, conn.target, self.t_response)
                self.responses.local(conn, 504, b"the worker did not answer in time\n", b"")
            else:  # WRITING to a client that does not read, LINGER done, or closed
                self.close(conn)
