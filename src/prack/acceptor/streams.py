"""Streamed responses, on the acceptor's side.

A worker's streamed answer arrives as F_START (the head), F_DATA chunks and
F_END. The acceptor frames the body for the client (chunked on HTTP/1.1
without a declared length; as it is with one; close-delimited on HTTP/1.0),
and holds the worker back: a chunk is acknowledged (F_ACK) once the
client's buffer is under limits.stream_buffer, not before. The limits of a
stream are watched here: the client must keep reading (send_timeout), the
worker must keep sending (stream_idle_timeout), no stream outlasts
stream_max_duration, and a quiet event stream gets a comment line every
sse_keepalive seconds.
"""
from __future__ import annotations

import logging
import time

from prack.acceptor.connection import STREAMING, Conn
from prack.ipc import frames

log = logging.getLogger("prack.acceptor")

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


class Streams:
    """Registers itself for STREAMING connections: their body frames, what a
    flush means for them, their limits, and the API link's loss."""

    def __init__(self, acc) -> None:
        self.acc = acc
        self.responses = acc.responses
        self.t_send = acc.t_send
        self.t_stream_idle = acc.t_stream_idle
        self.t_stream_max = acc.t_stream_max
        self.t_sse = acc.t_sse
        self.stream_buffer = acc.stream_buffer
        acc.body_handlers[STREAMING] = self.on_frame
        acc.after_flush[STREAMING] = self.flushed
        acc.scanners[STREAMING] = self.scan
        acc.link_lost.append(self.link_lost)

    def start(self, conn: Conn, status: int, flags: int, block: bytes, declared: int) -> None:
        """F_START: a streamed response's head: send it; the body follows."""
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
            length, chunked = None, False
            flags |= frames.RF_CLOSE
        now = time.monotonic()
        sse = not discard and b"\ncontent-type: text/event-stream" in b"\n" + block.lower()
        stream = Stream(chunked, -1 if length is None or discard else length, discard, sse, now)
        keep, head = self.responses.head(conn, status, block, length, flags)
        conn.stream_start(stream, status, keep)
        conn.sent = len(head)
        stream.pending = sum(map(len, conn.out)) + len(head)
        conn.deadline = now + self.t_send
        self.responses.write(conn, [head])

    def on_frame(self, conn: Conn, kind: int, number: int, flags: int, payload) -> None:
        """F_DATA (a chunk) or F_END (the end; its payload a trailer block)."""
        st = conn.stream
        st.last_data = time.monotonic()
        if kind == frames.F_DATA:
            self._data(conn, st, payload)
            if conn.sock is None:
                return
            if st.pending <= self.stream_buffer:
                self.acc.send_api(frames.stream_frame(frames.F_ACK, conn.slot, conn.key, number))
            else:
                st.ack = number     # acknowledged when the client catches up
            return
        # F_END
        if flags & frames.SF_ABORT or st.remaining > 0:
            # The worker failed mid-stream (or sent less than it declared):
            # the client must see an incomplete response, so no last chunk,
            # and the connection closes after what was sent.
            log.warning("acceptor %d: streamed response to %s %s ended by the worker "
                        "before its end", self.acc.index, conn.method, conn.target)
            conn.keep_alive = False
        elif st.chunked and not st.discard:
            # The payload is a validated trailer block (may be empty).
            self._write(conn, st, [LAST_CHUNK, bytes(payload), CRLF])
        elif not st.chunked and st.remaining < 0 and not st.discard:
            conn.keep_alive = False     # close-delimited (HTTP/1.0)
        conn.end_stream()
        if conn.sock is not None and not conn.out and conn.file is None:
            self.responses.finished(conn)

    def _data(self, conn: Conn, st: Stream, payload) -> None:
        n = len(payload)
        if not n or st.discard:
            return
        if st.remaining >= 0:
            if n > st.remaining:
                log.warning("acceptor %d: worker streamed more than its Content-Length "
                            "for %s %s; closing", self.acc.index, conn.method, conn.target)
                self.acc.close(conn)
                return
            st.remaining -= n
            self._write(conn, st, [bytes(payload)])
        elif st.chunked:
            self._write(conn, st, [b"%x\r\n" % n, bytes(payload), CRLF])
        else:
            self._write(conn, st, [bytes(payload)])

    def _write(self, conn: Conn, st: Stream, buffers: list) -> None:
        st.last_write = time.monotonic()
        size = sum(map(len, buffers))
        conn.sent += size
        st.pending += size
        self.responses.write(conn, buffers)

    def flushed(self, conn: Conn, sent: int) -> None:
        """After a write to the client: a held acknowledgement goes once
        the buffer is under the window."""
        conn.deadline = time.monotonic() + self.t_send
        st = conn.stream
        st.pending -= sent
        if st.ack >= 0 and st.pending <= self.stream_buffer:
            self.acc.send_api(frames.stream_frame(frames.F_ACK, conn.slot, conn.key, st.ack))
            st.ack = -1
            st.last_data = time.monotonic()     # the worker's turn starts now

    def scan(self, conn: Conn, now: float) -> None:
        """A streamed response's limits (see the module's docstring)."""
        st = conn.stream
        acc = self.acc
        if conn.out and now >= conn.deadline:
            log.info("acceptor %d: client of a streamed %s %s stopped reading: closing",
                     acc.index, conn.method, conn.target)
            acc.close(conn)
        elif st.ack < 0 and now - st.last_data >= self.t_stream_idle:
            # (While a chunk waits for the client, the worker is held back,
            # not idle: send_timeout watches the client then.)
            log.warning("acceptor %d: worker sent nothing on the stream of %s %s for %.3gs: "
                        "closing", acc.index, conn.method, conn.target, self.t_stream_idle)
            acc.close(conn)
        elif self.t_stream_max and now - st.started >= self.t_stream_max:
            log.info("acceptor %d: stream of %s %s reached stream_max_duration: closing",
                     acc.index, conn.method, conn.target)
            acc.close(conn)
        elif st.sse and self.t_sse and not conn.out and now - st.last_write >= self.t_sse:
            if st.chunked:
                self._write(conn, st, [b"3\r\n", SSE_COMMENT, CRLF])
            elif st.remaining < 0:
                self._write(conn, st, [SSE_COMMENT])

    def link_lost(self) -> None:
        """The API process is gone: the streams it carried cannot go on (their
        state was in that process)."""
        for conn in [c for c in self.acc.conns.values() if c.state == STREAMING]:
            self.acc.close(conn)
