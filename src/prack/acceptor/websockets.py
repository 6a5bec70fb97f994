"""WebSockets, on the acceptor's side.

A request that asks for a WebSocket is checked when it is dispatched (an
invalid upgrade gets 400, or 426 for another protocol version, from Prack)
and queued like any request. When its worker answers with a 101 head
(F_START), the acceptor writes the handshake and the connection becomes a
WebSocket: a `websocket.WsSession` parses the client's bytes (those the
HTTP reader had already buffered first), answers pings, and turns messages
into F_WS_EVENT frames for the API process; the worker's messages arrive as
F_DATA (flags = opcode) and its close as F_END. The slot stays TAKEN until
the worker's close; when the connection ends otherwise, the acceptor's
withdraw marks it GONE and sends F_GONE.

Backpressure: worker -> client as for streamed responses (F_ACK once the
client's buffer is under limits.stream_buffer); client -> worker by a window
of unacknowledged event bytes (limits.stream_buffer too): past it we stop
reading the socket until the API process sends F_CREDIT.
"""
from __future__ import annotations

import logging
import time

from prack.acceptor.connection import WEBSOCKET
from prack.child.connection import EVENT_READ
from prack.ipc import frames
from prack.protocol import websocket

log = logging.getLogger("prack.acceptor")
access_log = logging.getLogger("prack.access")

_DATA_OPCODES = (websocket.OP_TEXT, websocket.OP_BINARY)


class WebSockets:
    """Registers itself for WEBSOCKET connections: their body frames and
    F_CREDIT, what a flush means for them, their clocks, and the API link's
    loss. A connection's session is its Conn.ws."""

    def __init__(self, acc) -> None:
        self.acc = acc
        self.responses = acc.responses
        self.index = acc.index
        self.access = acc.access
        self.t_send = acc.t_send
        self.t_stream_idle = acc.t_stream_idle
        cfg = acc.cfg
        self.ws_max_message = cfg.websocket.max_message_size
        self.ws_ping = cfg.websocket.ping_interval
        self.ws_window = cfg.limits.stream_buffer
        acc.frame_handlers[frames.F_CREDIT] = self.on_credit
        acc.body_handlers[WEBSOCKET] = self.on_frame
        acc.after_flush[WEBSOCKET] = self.flushed
        acc.scanners[WEBSOCKET] = self.scan
        acc.link_lost.append(self.link_lost)

    # -- the upgrade -------------------------------------------------------------------

    def request(self, conn, req) -> bool:
        """At dispatch of a request that carries Upgrade: note a valid
        WebSocket upgrade (its key and offered subprotocols) in conn.ws;
        answer an invalid one here. True when answered."""
        try:
            key = websocket.handshake_key(req.method, req.version_minor, req.headers)
        except websocket.HandshakeError as exc:
            # RFC 9110 15.5.22: a 426 names the protocol in Upgrade (and
            # 7.8: with the upgrade connection option).
            extra = (b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n") if exc.status == 426 else b""
            self.responses.local(conn, exc.status, exc.message.encode() + b"\n", extra)
            return True
        if key is not None:
            conn.ws = (key, websocket.offered_protocols(req.headers))
        return False

    def start(self, conn, flags: int, block: bytes) -> None:
        """The worker accepted (101): write the handshake, become a WebSocket."""
        info = conn.ws
        reason = None
        head = b""
        if info.__class__ is not tuple:
            reason = "the request is not a WebSocket upgrade"
        else:
            pairs = []
            for line in block.split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b":")
                    pairs.append((name, value.strip()))
            try:
                head = websocket.handshake_head(info[0], pairs, info[1])
            except ValueError as exc:
                reason = str(exc)
        if reason is not None:
            log.warning("acceptor %d: worker answered %s %s with 101, but %s: 502",
                        self.index, conn.method, conn.target, reason)
            self.acc.withdraw(conn)     # the worker's later calls get 410
            self.responses.local(conn, 502, b"the worker could not accept the upgrade\n",
                                b"", close=True)
            return
        now = time.monotonic()
        session = websocket.WsSession(self.ws_max_message, self.ws_window, now)
        conn.upgrade(session, now + self.t_send)
        early = conn.reader.buf
        conn.reader.buf = bytearray()
        session.sent = len(head)
        self.responses.write(conn, [head])
        if conn.sock is None:
            return
        if self.acc.stopping:
            self.going_away(conn)
            return
        if early:
            session.receive(early, now)
        self.pump(conn)

    # -- client -> worker -----------------------------------------------------------------

    def input(self, conn, data) -> None:
        conn.ws.receive(data, time.monotonic())
        self.pump(conn)

    def pump(self, conn) -> None:
        """Send what the session produced: events to the API process, frames
        to the client; read or not per the window; end when finished."""
        s = conn.ws
        if s.to_worker:
            buffers = []
            slot, key = conn.slot, conn.key
            for opcode, payload in s.to_worker:
                buffers += frames.stream_frame(frames.F_WS_EVENT, slot, key, 0, opcode, payload)
            s.to_worker = []
            self.acc.send_api(buffers)
            if conn.ws is not s:
                return          # that found the API link gone, which ended it
        if s.to_client:
            out, s.to_client = s.to_client, []
            self.responses.write(conn, out)
            if conn.ws is not s:
                return          # the write ended it (or found the client gone)
        if s.finished:
            if not conn.out:
                self.end(conn)
            elif conn.events & EVENT_READ:
                conn.watch(conn.events & ~EVENT_READ)
            return
        # Not read either while our own frames (pongs, a worker's messages)
        # wait for the client past the window: a client that sends pings
        # and never reads the pongs would grow conn.out without bound.
        hold = s.paused or sum(map(len, conn.out)) > self.ws_window
        conn.watch(conn.events & ~EVENT_READ if hold else conn.events | EVENT_READ)

    def on_credit(self, buf, start: int, end: int) -> None:
        """F_CREDIT: the worker received events; read on if that opens the window."""
        _, slot, key, number, _ = frames.STREAM.unpack_from(buf, start)
        acc = self.acc
        conn = acc.slots[slot] if slot < acc.nslots else None
        if conn is None or conn.key != key or conn.state != WEBSOCKET:
            return
        conn.ws.credit(number)
        self.pump(conn)

    # -- worker -> client -------------------------------------------------------------------

    def on_frame(self, conn, kind: int, number: int, flags: int, payload) -> None:
        """F_DATA (a message; flags = opcode) or F_END (the worker's close)."""
        s = conn.ws
        if kind == frames.F_DATA:
            if flags not in _DATA_OPCODES:
                log.warning("acceptor %d: F_DATA with opcode %d for a WebSocket: dropped",
                            self.index, flags)
            elif s.send(flags, payload):     # a bytearray of its own (sliced off the frame)
                out, s.to_client = s.to_client, []
                self.responses.write(conn, out)
                if conn.ws is not s:
                    return
            # A held acknowledgement means the buffer is still over the
            # window (flushed() releases it once under): no need to sum it
            # again for each message of a large batch (quadratic).
            if s.ack < 0 and sum(map(len, conn.out)) <= self.ws_window:
                self.acc.send_api(frames.stream_frame(frames.F_ACK, conn.slot, conn.key, number))
            else:
                s.ack = number      # acknowledged when the client catches up
            return
        if flags & frames.SF_ABORT or not payload:
            payload = websocket.close_payload(websocket.CLOSE_INTERNAL_ERROR
                                              if flags & frames.SF_ABORT else websocket.CLOSE_NORMAL)
        s.close(bytes(payload), time.monotonic())
        self.pump(conn)

    def flushed(self, conn, sent: int) -> None:
        """After a write to the client: a held acknowledgement goes out once
        the buffer is under the window; a finished session ends once all
        is written."""
        s = conn.ws
        conn.deadline = time.monotonic() + self.t_send
        if conn.out and sum(map(len, conn.out)) > self.ws_window:
            return
        if s.ack >= 0:
            self.acc.send_api(frames.stream_frame(frames.F_ACK, conn.slot, conn.key, s.ack))
            s.ack = -1
            if conn.ws is not s:
                return          # the API link was found gone, which ended it
        if s.finished:
            if not conn.out:
                self.end(conn)
        elif not s.paused and not conn.events & EVENT_READ:
            conn.watch(conn.events | EVENT_READ)   # caught up

    # -- the end ------------------------------------------------------------------------------

    def end(self, conn) -> None:
        """The closing handshake is done (or failed): the worker is told if
        it still holds the connection, and the TCP connection closes (we
        close first, as RFC 6455 7.1.1 asks of servers), after a drain."""
        s = conn.ws
        if s is None:
            return              # ended already (a lost link found while ending)
        conn.ws = None
        self.acc.withdraw(conn)
        if self.access:
            access_log.info('%s - "%s %s HTTP/1.%d" 101 %d %.4f', conn.remote_addr or "-",
                            conn.method, conn.target, conn.version_minor, s.sent,
                            time.monotonic() - conn.started)
        self.responses.linger(conn)

    def going_away(self, conn) -> None:
        """The acceptor stops or retires: close with 1001."""
        self._shutdown(conn, websocket.CLOSE_GOING_AWAY, "the server is shutting down")

    def link_lost(self) -> None:
        """The API process is gone, and with it every WebSocket's state
        there: close them all with 1011 (clients reconnect)."""
        # (One whose end is under way - ws cleared, its F_GONE finding the
        # link gone - is left to finish.)
        for conn in [c for c in self.acc.conns.values()
                     if c.state == WEBSOCKET and c.ws is not None]:
            self._shutdown(conn, websocket.CLOSE_INTERNAL_ERROR,
                           "the server lost its worker link")

    def _shutdown(self, conn, code: int, reason: str) -> None:
        """Prack ends a WebSocket (stopping, or the API process is lost):
        a close frame to the client, a close event to the worker, whose
        later calls get 410 even while the client answers our close."""
        session = conn.ws
        session.close(websocket.close_payload(code, reason), time.monotonic(),
                      websocket.close_event(code, reason))
        self.pump(conn)
        if conn.ws is session:
            self.acc.withdraw(conn)

    def scan(self, conn, now: float) -> None:
        s = conn.ws
        if conn.out and now >= conn.deadline:
            log.info("acceptor %d: WebSocket client of %s stopped reading: closing",
                     self.index, conn.target)
            self.acc.close(conn)
            return
        what = s.tick(now, self.ws_ping, self.t_stream_idle)
        if what == websocket.TICK_DEAD:
            if s.state == websocket.WS_OPEN:
                log.info("acceptor %d: WebSocket client of %s went silent: dropping",
                         self.index, conn.target)
                self.acc.close(conn)
            elif not conn.out:
                self.end(conn)
        elif what == websocket.TICK_PING:
            self.pump(conn)
        elif what == websocket.TICK_STALLED:
            log.warning("acceptor %d: the worker of WebSocket %s fetched no events for "
                        "stream_idle_timeout (%.0f s): closing", self.index, conn.target,
                        self.t_stream_idle)
            self._shutdown(conn, websocket.CLOSE_INTERNAL_ERROR,
                           "the worker stopped receiving")
