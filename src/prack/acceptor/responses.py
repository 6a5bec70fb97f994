"""Answers on an acceptor's client connections: the response head and its
keep-alive decision (made here once, for workers' answers, streamed ones,
static files and Prack's own), writing with its one-sendmsg shortcut,
what happens once an answer is out (the next request, or a linger), and
the answers Prack makes itself (errors, timeouts, a full queue).
"""
from __future__ import annotations

import logging
import socket
import time

from prack.acceptor.connection import ANSWERABLE, WRITING, Conn
from prack.child.connection import EVENT_READ, EVENT_WRITE
from prack.child.send import drop_sent
from prack.ipc import frames
from prack.protocol import http

log = logging.getLogger("prack.acceptor")
access_log = logging.getLogger("prack.access")

LINGER_SECONDS = 2.0      # drain time after an error before closing (RFC 9112 9.6)
RETIRE_IDLE_GRACE = 1.0   # an idle keep-alive connection's last chance when retiring
_PLAIN = b"Content-Type: text/plain; charset=utf-8\r\n"


class Responses:
    """Owns nothing per connection beyond the Conn fields an answer sets;
    registers the F_RESPONSE handler. What a flush means for a streamed
    answer or a WebSocket is asked of the acceptor's `after_flush` table."""

    def __init__(self, acc) -> None:
        self.acc = acc
        self.server = acc.server
        self.access = acc.access
        self.t_send = acc.t_send
        self.t_keepalive = acc.t_keepalive
        self.t_header = acc.t_header
        self.after_flush = acc.after_flush
        acc.frame_handlers[frames.F_RESPONSE] = self.on_response

    # -- heads ----------------------------------------------------------------------

    def head(self, conn: Conn, status: int, block: bytes, length: int | None,
             flags: int) -> tuple[bool, bytes]:
        """Whether the connection stays open after this answer, and its
        head. `flags` are a worker's RF_* (0 for Prack's own answers)."""
        keep = conn.keep_alive and not flags & frames.RF_CLOSE and not self.acc.stopping
        return keep, http.response_head(status, block, length, keep,
                                         b"" if flags & frames.RF_HAS_SERVER else self.server,
                                         not flags & frames.RF_HAS_DATE,
                                         keep and conn.version_minor == 0)

    # -- a worker's answer -------------------------------------------------------------

    def on_response(self, buf, start: int, end: int) -> None:
        """F_RESPONSE: a worker's whole answer."""
        _, slot, key, status, flags, block_len, declared = frames.RESPONSE.unpack_from(buf, start)
        acc = self.acc
        conn = acc.slots[slot] if slot < acc.nslots else None
        if conn is None or conn.key != key or conn.state not in ANSWERABLE:
            log.debug("acceptor %d: response for a connection that has gone", acc.index)
            return
        at = start + frames.RESPONSE.size
        block = buf[at:at + block_len]      # one copy each; sendmsg takes bytearrays
        body = buf[at + block_len:end]
        self.respond(conn, status, flags, block, body, declared)

    def respond(self, conn: Conn, status: int, flags: int, block: bytes, body: bytes,
                declared: int) -> None:
        if flags & frames.RF_ERROR:
            self.local(conn, status, http.reason_phrase(status).encode() + b"\n", b"")
            return
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
        keep, head = self.head(conn, status, block, length, flags)
        self.start(conn, status, keep, [head, body] if body else [head])

    # -- Prack's own answers -------------------------------------------------------------

    def local(self, conn: Conn, status: int, body: bytes, extra: bytes,
              close: bool = False) -> None:
        """A response Prack makes itself (errors, timeouts, a full queue)."""
        keep, head = self.head(conn, status, _PLAIN + extra, len(body),
                               frames.RF_CLOSE if close else 0)
        self.start(conn, status, keep, [head] if conn.method == "HEAD" else [head + body])

    def fail(self, conn: Conn, status: int, message: str, head: bool = False) -> None:
        """The client broke the protocol (or took too long): answer, then
        close (no more requests are read from this connection)."""
        log.debug("acceptor %d: %d %s from %s", self.acc.index, status, message,
                  conn.remote_addr)
        conn.method = "HEAD" if head else (conn.method or "-")
        conn.started = time.monotonic()
        self.local(conn, status, message.encode() + b"\n", b"", close=True)

    # -- writing ---------------------------------------------------------------------------

    def start(self, conn: Conn, status: int, keep: bool, buffers: list) -> None:
        """Begin writing an answer (a file region in conn.file follows it)."""
        conn.answer(status, keep)
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
                self.acc.close(conn)
                return
            if n == size:
                if conn.events & EVENT_WRITE:
                    conn.watch(conn.events & ~EVENT_WRITE)
                self.finished(conn)
                return
            drop_sent(buffers, n)
        else:
            conn.sent = size + (conn.file[2] if conn.file is not None else 0)
        conn.deadline = time.monotonic() + self.t_send
        self.write(conn, buffers)

    def write(self, conn: Conn, buffers: list) -> None:
        if conn.add_output(buffers):
            self.flush(conn)

    def flush(self, conn: Conn) -> None:
        """Send what waits; then, by the connection's state, what that
        means: a finished answer's end, a stream's acknowledgement ..."""
        sent = conn.flush()
        if sent < 0:
            self.acc.close(conn)
            return
        state = conn.state
        if state == WRITING:
            conn.deadline = time.monotonic() + self.t_send
        else:
            after = self.after_flush.get(state)
            if after is not None:
                after(conn, sent)
                if conn.sock is None:
                    return
        if conn.out or conn.file is not None:
            conn.watch(conn.events | EVENT_WRITE)
            return
        if conn.events & EVENT_WRITE:
            conn.watch(conn.events & ~EVENT_WRITE)
        if conn.state == WRITING:
            self.finished(conn)

    # -- after an answer --------------------------------------------------------------------

    def finished(self, conn: Conn) -> None:
        """The answer is out: log it, then read the next request or linger."""
        acc = self.acc
        if conn.spool is not None or conn.input:
            acc.uploads.end(conn)
        if self.access:
            access_log.info('%s - "%s %s HTTP/1.%d" %d %d %.4f', conn.remote_addr or "-",
                            conn.method, conn.target, conn.version_minor, conn.status,
                            conn.sent, time.monotonic() - conn.started)
        conn.method = ""
        conn.target = ""
        conn.key = 0
        stopping_idle = acc.stopping and not conn.reader.buf
        if not conn.keep_alive or (stopping_idle and not acc.retiring):
            # Stopping, an answer that ends (a stream's, say, begun before
            # the stop) leaves no idle keep-alive behind, as the stop does.
            self.linger(conn)
            return
        now = time.monotonic()
        conn.next_request(now + self.t_keepalive)
        if stopping_idle:   # retiring: the grace the stop gives idle ones
            conn.deadline = min(conn.deadline, now + RETIRE_IDLE_GRACE)
        if not conn.events & EVENT_READ:
            conn.watch(conn.events | EVENT_READ)
        if conn.reader.buf:
            conn.deadline = now + self.t_header
            acc.process(conn)

    def linger(self, conn: Conn) -> None:
        """Half-close and drain before closing, so the client reads our answer
        instead of a reset caused by its unread bytes (RFC 9112 9.6)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.acc.close(conn)
            return
        conn.linger(time.monotonic() + LINGER_SECONDS)
        conn.watch(EVENT_READ)
