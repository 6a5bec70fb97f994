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
import mmap
import os
import random
import selectors
import socket
import time

from prack.acceptor import static
from prack.acceptor import uploads as spool
from prack.acceptor.websockets import WEBSOCKET, AcceptorWebSockets
from prack.child.loop import ChildLoop
from prack.child.send import drop_sent, send_file, send_pending
from prack.ipc import frames, slots
from prack.ipc.ring import RecordTooBig, RingFull
from prack.ipc.slots import SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN
from prack.protocol import environ, http

log = logging.getLogger("prack.acceptor")
access_log = logging.getLogger("prack.access")

# Connection states.
READING, QUEUED, TAKEN, WRITING, LINGER, STREAMING = range(6)

LINGER_SECONDS = 2.0      # drain time after an error before closing (RFC 9112 9.6)
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
LINGER_MAX_BYTES = 1 << 20
RETIRE_IDLE_GRACE = 1.0   # an idle keep-alive connection's last chance when retiring
RECV_SIZE = 65536
API_READ_SIZE = 1 << 18   # what one read of the API link takes at most
# accept(2) errors that concern only the connection being accepted (Linux
# passes its pending network errors on, and says to retry; EPERM is a
# firewall rule): go on with the next one.
_ACCEPT_RETRY = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ETIMEDOUT") if hasattr(errno, name))
BODY_RATE_GRACE = 5.0     # seconds of body before min_body_rate is enforced
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n"
SSE_COMMENT = b":\n\n"
CRLF = b"\r\n"


class Stream:
    """A streamed response in progress on one connection (state STREAMING):
    how its body is framed, the chunk whose acknowledgement waits for the
    client to read, and the clocks of its limits."""
    __slots__ = ("chunked", "remaining", "discard", "sse", "ack", "started",
                 "last_data", "last_write", "pending")

    def __init__(self, chunked: bool, remaining: int, discard: bool, sse: bool, now: float):
        self.chunked = chunked        # chunked transfer coding (HTTP/1.1, no declared length)
        self.remaining = remaining    # declared Content-Length still to come, or -1
        self.discard = discard        # HEAD, 204, 304: the body is not sent
        self.sse = sse                # text/event-stream: keep-alive comments
        self.ack = -1                 # sequence whose F_ACK waits for the buffer to drain
        self.started = now
        self.last_data = now          # the worker's last chunk
        self.last_write = now         # our last write to the client
        # Bytes in the connection's out list, kept as they come and go: a
        # sum over that list per chunk cost time in its length (a stalled
        # client with many small chunks buffered).
        self.pending = 0


class Conn:
    __slots__ = ("sock", "fd", "slot", "key", "state", "reader", "out", "events",
                 "deadline", "keep_alive", "version_minor", "method", "target",
                 "remote_addr", "remote_port", "started", "sent_continue",
                 "lingered", "status", "sent", "processing", "again",
                 "body_since", "body_read", "file", "stream", "spool", "input",
                 "input_keep", "ws", "env_remote")

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
        self.stream = None        # Stream, while a streamed response is being relayed
        self.spool = None         # spool.SpoolFile of a body too large for the ring
        self.input = 0            # a deferred body's progress (spool.PARKED ...)
        self.input_keep = False
        self.ws = None            # a WebSocket upgrade's (key, protocols), then its WsSession
        self.env_remote = None    # REMOTE_ADDR and REMOTE_PORT as msgpack pairs, once made
        if isinstance(addr, tuple):
            self.remote_addr = addr[0]
            self.remote_port = str(addr[1])
        else:  # Unix-domain listener
            self.remote_addr = ""
            self.remote_port = ""


class Acceptor(AcceptorWebSockets, spool.AcceptorUploads, ChildLoop):
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
        self.server = cfg.server.server_header.encode("latin-1")
        self.access = cfg.logging.access_log
        st = cfg.static
        self.static = (static.StaticFiles(st.root, st.prefix, st.index, st.cache_control)
                       if st.root else None)
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
        self.api: socket.socket | None = None
        self.api_in = bytearray()
        # Anonymous memory: only the pages reads have used count (an idle
        # acceptor does not carry 256 KiB of zeros).
        self.api_scratch = mmap.mmap(-1, API_READ_SIZE, mmap.MAP_PRIVATE)
        self.api_scratch_view = memoryview(self.api_scratch)
        self.api_out: list = []
        self.api_retry_at = 0.0
        self.rand = random.Random(os.urandom(16))
        self._init_websockets(cfg)

    # -- setup ---------------------------------------------------------------

    def run(self) -> int:
        _raise_fd_limit(self.cfg.server.max_connections + 64)
        # A new incarnation of this acceptor: nothing in the slot table is ours.
        for i in range(self.nslots):
            self.ring.slot_store(i, 0)
        self._uploads_start()
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
            elif conn.state == WEBSOCKET:
                self._ws_going_away(conn)
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
        # The streams it carried cannot go on: their state was in that process.
        for conn in [c for c in self.conns.values() if c.state == STREAMING]:
            self._close(conn)
        self._uploads_api_lost()
        self._ws_link_lost()
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
        for start, end in frames.complete_frames(buf):
            kind = buf[start]
            if kind == frames.F_RESPONSE:
                self._on_response_frame(buf, start, end)
            elif kind == frames.F_DATA or kind == frames.F_END:
                self._on_stream_frame(kind, buf, start, end)
            elif kind == frames.F_START:
                self._on_start_frame(buf, start, end)
            elif kind == frames.F_INPUT:
                self._on_input(buf, start)
            elif kind == frames.F_CREDIT:
                self._ws_credit(buf, start)
            consumed = end
        if consumed:
            del buf[:consumed]

    def _on_response_frame(self, buf, start: int, end: int) -> None:
        _, slot, key, status, flags, block_len, declared = frames.RESPONSE.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is None or conn.key != key or conn.state not in (QUEUED, TAKEN):
            log.debug("acceptor %d: response for a connection that has gone", self.index)
            return
        at = start + frames.RESPONSE.size
        block = buf[at:at + block_len]      # one copy each; sendmsg takes bytearrays
        body = buf[at + block_len:end]
        self._respond(conn, status, flags, block, body, declared)

    # -- streamed responses ----------------------------------------------------------

    def _on_start_frame(self, buf, start: int, end: int) -> None:
        """A streamed response's head: send it; the body follows as F_DATA."""
        _, slot, key, status, flags, block_len, declared = frames.RESPONSE.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is None or conn.key != key or conn.state not in (QUEUED, TAKEN):
            self._send_api(frames.stream_frame(frames.F_GONE, slot, key))
            return
        at = start + frames.RESPONSE.size
        block = bytes(buf[at:at + block_len])
        if status == 101:
            self._ws_start(conn, flags, block)
            return
        keep = conn.keep_alive and not flags & frames.RF_CLOSE and not self.stopping
        discard = status < 200 or status == 204 or status == 304 or conn.method == "HEAD"
        no_length = status < 200 or status == 204   # RFC 9110 8.6: never a length
        if flags & frames.RF_DECLARED and not no_length:
            length, chunked = declared, False
        elif discard:
            length, chunked = None, False
        elif conn.version_minor >= 1:
            length, chunked = None, True
            block += CHUNKED
        else:
            # HTTP/1.0 has no chunked coding: the body ends when we close.
            length, chunked, keep = None, False, False
        now = time.monotonic()
        sse = not discard and b"\ncontent-type: text/event-stream" in b"\n" + block.lower()
        conn.stream = Stream(chunked, -1 if length is None or discard else length, discard,
                             sse, now)
        head = http.response_head(status, block, length, keep,
                                  b"" if flags & frames.RF_HAS_SERVER else self.server,
                                  not flags & frames.RF_HAS_DATE,
                                  keep and conn.version_minor == 0)
        conn.keep_alive = keep
        conn.state = STREAMING
        conn.status = status
        conn.sent = len(head)
        conn.stream.pending = sum(map(len, conn.out)) + len(head)
        conn.deadline = now + self.t_send
        self._write(conn, [head])

    def _on_stream_frame(self, kind: int, buf, start: int, end: int) -> None:
        _, slot, key, number, flags = frames.STREAM.unpack_from(buf, start)
        conn = self.slots[slot] if slot < self.nslots else None
        if conn is not None and conn.key == key and conn.state == WEBSOCKET:
            self._ws_frame(conn, kind, number, flags, buf[start + frames.STREAM.size:end])
            return
        if conn is None or conn.key != key or conn.state != STREAMING:
            # The client went (F_GONE is on its way or was sent): say so again
            # for this chunk, so the worker's post is not left waiting.
            self._send_api(frames.stream_frame(frames.F_GONE, slot, key))
            return
        st = conn.stream
        payload = buf[start + frames.STREAM.size:end]
        now = time.monotonic()
        st.last_data = now
        if kind == frames.F_DATA:
            self._stream_data(conn, st, payload)
            if conn.sock is None:
                return
            if st.pending <= self.stream_buffer:
                self._send_api(frames.stream_frame(frames.F_ACK, slot, key, number))
            else:
                st.ack = number     # acknowledged when the client catches up
            return
        # F_END
        if flags & frames.SF_ABORT or st.remaining > 0:
            # The worker failed mid-stream (or sent less than it declared):
            # the client must see an incomplete response, so no last chunk,
            # and the connection closes after what was sent.
            log.warning("acceptor %d: streamed response to %s %s ended by the worker "
                        "before its end", self.index, conn.method, conn.target)
            conn.keep_alive = False
        elif st.chunked and not st.discard:
            # The payload is a validated trailer block (may be empty).
            self._stream_write(conn, st, [LAST_CHUNK, bytes(payload), CRLF])
        elif not st.chunked and st.remaining < 0 and not st.discard:
            conn.keep_alive = False     # close-delimited (HTTP/1.0)
        conn.stream = None
        conn.state = WRITING
        if conn.sock is not None and not conn.out and conn.file is None:
            self._finished(conn)

    def _stream_data(self, conn: Conn, st: Stream, payload) -> None:
        n = len(payload)
        if not n or st.discard:
            return
        if st.remaining >= 0:
            if n > st.remaining:
                log.warning("acceptor %d: worker streamed more than its Content-Length "
                            "for %s %s; closing", self.index, conn.method, conn.target)
                self._gone(conn)
                return
            st.remaining -= n
            self._stream_write(conn, st, [bytes(payload)])
        elif st.chunked:
            self._stream_write(conn, st, [b"%x\r\n" % n, bytes(payload), CRLF])
        else:
            self._stream_write(conn, st, [bytes(payload)])

    def _stream_write(self, conn: Conn, st: Stream, buffers: list) -> None:
        st.last_write = time.monotonic()
        size = sum(map(len, buffers))
        conn.sent += size
        st.pending += size
        self._write(conn, buffers)

    def _gone(self, conn: Conn) -> None:
        """Drop a connection whose request a worker may hold; _close tells
        the API process (F_GONE) so the worker learns at once."""
        self._close(conn)

    # -- accepting -------------------------------------------------------------

    def _on_accept(self, mask) -> None:
        taken = 0
        for _ in range(64):             # connections failed at once do not count
            if taken == ACCEPT_BATCH:
                return
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
                # It counts as the wake-up's connection: a full acceptor that
                # refused a whole burst would turn away connections the
                # others, woken too but taking one each, have room for.
                self._refuse(sock)
                taken += 1
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
            conn = Conn(sock, slot, http.RequestReader(self.limits, self.inline_limit), addr)
            conn.deadline = time.monotonic() + self.t_keepalive
            conn.events = selectors.EVENT_READ
            self.slots[slot] = conn
            self.conns[conn.fd] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)
            taken += 1
            if _yield is not None:
                _yield()

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
        if state == WEBSOCKET:
            self._ws_input(conn, data)
            return
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
            if req is None and reader.wants_sink:
                if not self._spool_body(conn):
                    return
                req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            self._fail(conn, exc.status, exc.message, exc.head)
            return
        except OSError as exc:          # writing the spool file
            self._spool_failed(conn, exc)
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
                if self._defer_input(conn, reader.head_request):
                    return          # 100 Continue once a worker takes it
                conn.deadline = time.monotonic() + self.t_body
                self._write(conn, [CONTINUE])
            return
        if conn.input:
            self._input_done(conn, req)
        else:
            self._dispatch(conn, req)

    def _dispatch(self, conn: Conn, req: http.Request, flags: int = 0) -> None:
        conn.body_since = 0.0
        conn.keep_alive = req.keep_alive and not self.stopping
        conn.version_minor = req.version_minor
        conn.method = req.method
        conn.target = req.target
        conn.started = time.monotonic()
        conn.sent_continue = False
        conn.ws = None
        if self.static is not None and self.static.wants(req.path):
            self._serve_static(conn, req)
            return
        # The environment is written as msgpack by C (prk_write_env), from
        # the head and the scan the reader kept with the request.
        extra = conn.env_remote
        if extra is None:
            extra = conn.env_remote = environ.msgpack_pairs(
                {"REMOTE_ADDR": conn.remote_addr, "REMOTE_PORT": conn.remote_port})
        count = 2
        if conn.spool is not None:
            extra += self._spooled_env(conn)
            count = 3
        if req.upgrade and self._ws_request(conn, req):
            return
        env_packed = req.environ_msgpack(self.env_server, 2, extra, count)
        key = conn.key or self.rand.getrandbits(62) or 1
        slot = conn.slot
        ring = self.ring
        ring.slot_store(slot, (key << 2) | SLOT_QUEUED)
        conn.key = key
        conn.state = QUEUED
        body = req.body
        record = slots.RECORD.pack(self.generation, self.index, slot, key, time.time(),
                                  len(env_packed), len(body), flags)
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
            # At once, not at the end of this loop turn: with a burst of
            # requests read in one turn, the API process starts on the first
            # while we read the rest (measured: the turn's end put 0.3-0.7 ms
            # on the median at 32 paced connections).
            self._send_api([frames.WAKE_FRAME])

    # -- responses ---------------------------------------------------------------

    def _respond(self, conn: Conn, status: int, flags: int, block: bytes, body: bytes,
                 declared: int) -> None:
        if flags & frames.RF_ERROR:
            self._respond_local(conn, status, http.reason_phrase(status).encode() + b"\n", b"")
            return
        keep = conn.keep_alive and not flags & frames.RF_CLOSE and not self.stopping
        if status < 200 or status == 204 or status == 304:
            length = None
            body = b""
        elif conn.method == "HEAD":
            if body:
                length = len(body)
            elif flags & frames.RF_DECLARED:
                length = declared
            else:
                length = None
            body = b""
        else:
            length = len(body)
        head = http.response_head(status, block, length, keep,
                                  b"" if flags & frames.RF_HAS_SERVER else self.server,
                                  not flags & frames.RF_HAS_DATE,
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
        if send_file(conn.sock, conn.file, conn.out):
            os.close(conn.file[0])
            conn.file = None

    def _start_response(self, conn: Conn, status: int, keep: bool, buffers: list) -> None:
        conn.keep_alive = keep
        conn.state = WRITING
        conn.status = status
        # Counted before the first write, which may send it all and log it.
        size = sum(map(len, buffers))
        if conn.file is None and not conn.out and len(buffers) <= 64:
            conn.sent = size
            # The usual answer: head and body leave in one call, and the
            # connection goes straight back to reading.
            try:
                n = conn.sock.sendmsg(buffers)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(conn)
                return
            if n == size:
                if conn.events & selectors.EVENT_WRITE:
                    self._set_events(conn, conn.events & ~selectors.EVENT_WRITE)
                self._finished(conn)
                return
            drop_sent(buffers, n)
        else:
            conn.sent = size + (conn.file[2] if conn.file is not None else 0)
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
            sent = send_pending(conn.sock, out)
            if conn.file is not None and not out:
                self._send_file(conn)
        except OSError:
            self._close(conn)
            return
        state = conn.state
        if state == WRITING:
            conn.deadline = time.monotonic() + self.t_send
        elif state == STREAMING:
            conn.deadline = time.monotonic() + self.t_send
            st = conn.stream
            st.pending -= sent
            if st.ack >= 0 and st.pending <= self.stream_buffer:
                self._send_api(frames.stream_frame(frames.F_ACK, conn.slot, conn.key, st.ack))
                st.ack = -1
                st.last_data = time.monotonic()     # the worker's turn starts now
        elif state == WEBSOCKET:
            self._ws_flushed(conn)
            if conn.sock is None:
                return
        if out or conn.file is not None:
            self._set_events(conn, conn.events | selectors.EVENT_WRITE)
            return
        if conn.events & selectors.EVENT_WRITE:
            self._set_events(conn, conn.events & ~selectors.EVENT_WRITE)
        if conn.state == WRITING:
            self._finished(conn)

    def _finished(self, conn: Conn) -> None:
        if conn.spool is not None or conn.input:
            self._upload_end(conn)
        if self.access:
            access_log.info('%s - "%s %s HTTP/1.%d" %d %d %.4f', conn.remote_addr or "-",
                            conn.method, conn.target, conn.version_minor, conn.status,
                            conn.sent, time.monotonic() - conn.started)
        conn.method = ""
        conn.target = ""
        conn.key = 0
        stopping_idle = self.stopping and not conn.reader.buf
        if not conn.keep_alive or (stopping_idle and not self.retiring):
            # Stopping, an answer that ends (a stream's, say, begun before
            # the stop) leaves no idle keep-alive behind, as _begin_stop.
            self._linger(conn)
            return
        conn.state = READING
        conn.reader.next()
        conn.deadline = time.monotonic() + self.t_keepalive
        if stopping_idle:   # retiring: the grace _begin_stop gives idle ones
            conn.deadline = min(conn.deadline, time.monotonic() + RETIRE_IDLE_GRACE)
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
        if conn.spool is not None or conn.input:
            self._upload_end(conn)
        if conn.state in (QUEUED, TAKEN, STREAMING, WEBSOCKET):
            self._withdraw(conn)
        if conn.events:
            self.sel.unregister(sock)
        sock.close()
        conn.sock = None
        conn.out = []
        if conn.file is not None:
            os.close(conn.file[0])
            conn.file = None
        conn.stream = None
        conn.ws = None
        del self.conns[conn.fd]
        self.slots[conn.slot] = None
        self.free_slots.append(conn.slot)

    def _withdraw(self, conn: Conn) -> None:
        """The client of a queued, taken or streaming request has gone (or
        its deadline passed): mark the slot GONE, so a record still queued
        is never handed out and a late answer gets 410; if a worker holds
        the request, tell the API process, which tells the worker."""
        key = conn.key
        old = self.ring.slot_exchange(conn.slot, (key << 2) | SLOT_GONE)
        if old == (key << 2) | SLOT_TAKEN:
            self._send_api(frames.stream_frame(frames.F_GONE, conn.slot, key))
        elif old == (key << 2) | SLOT_QUEUED:
            log.debug("acceptor %d: client %s left; its queued request %s %s is withdrawn",
                      self.index, conn.remote_addr or "-", conn.method, conn.target)

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
            elif state == STREAMING:
                self._scan_stream(conn, now)
                continue
            elif state == WEBSOCKET:
                self._ws_scan(conn, now)
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
                self._withdraw(conn)
                log.warning("acceptor %d: no response to %s %s within %.3gs: 504",
                            self.index, conn.method, conn.target, self.t_response)
                self._respond_local(conn, 504, b"the worker did not answer in time\n", b"")
            else:  # WRITING to a client that does not read, or LINGER done
                self._close(conn)


    def _scan_stream(self, conn: Conn, now: float) -> None:
        """A streamed response's limits: the client must keep reading
        (send_timeout), the worker must keep sending (stream_idle_timeout),
        and no stream lasts past stream_max_duration. A quiet event stream
        gets a comment line every sse_keepalive seconds."""
        st = conn.stream
        if conn.out and now >= conn.deadline:
            log.info("acceptor %d: client of a streamed %s %s stopped reading: closing",
                     self.index, conn.method, conn.target)
            self._gone(conn)
        elif st.ack < 0 and now - st.last_data >= self.t_stream_idle:
            # (While a chunk waits for the client, the worker is held back,
            # not idle: send_timeout watches the client then.)
            log.warning("acceptor %d: worker sent nothing on the stream of %s %s for %.3gs: "
                        "closing", self.index, conn.method, conn.target, self.t_stream_idle)
            self._gone(conn)
        elif self.t_stream_max and now - st.started >= self.t_stream_max:
            log.info("acceptor %d: stream of %s %s reached stream_max_duration: closing",
                     self.index, conn.method, conn.target)
            self._gone(conn)
        elif st.sse and self.t_sse and not conn.out and now - st.last_write >= self.t_sse:
            if st.chunked:
                self._stream_write(conn, st, [b"3\r\n", SSE_COMMENT, CRLF])
            elif st.remaining < 0:
                self._stream_write(conn, st, [SSE_COMMENT])


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
