"""The API process's side of WebSockets, built on the streams of
streams.py (their StreamTable).

    POST /api/v2/requests/{id}/head    status 101: the worker accepts the upgrade
    GET  /api/v2/requests/{id}/events?wait=S&max=N   the client's messages (long-poll)
    POST /api/v2/requests/{id}/send    {"messages": [...]}: messages and/or a close

A WebSocket is a stream whose head was a 101. The acceptor relays the
client's messages as F_WS_EVENT frames; they wait here, per connection, until
the worker asks for them. The acceptor stops reading a client whose events
the worker has not received past a window (limits.stream_buffer); each events
call that hands events out sends F_CREDIT for their bytes, so the memory held
here per WebSocket is bounded by that window (plus one message).

The worker's messages go out as F_DATA (flags = opcode) and its close as
F_END (payload: code and reason). A send is answered when the acceptor
acknowledges its last message (F_ACK), as body chunks are.

The end of a WebSocket is always one close event: the client's close frame
(its code), a protocol error Prack found (1002, 1007, 1009), Prack stopping
(1001), or the client vanishing (F_GONE without a close frame: 1006). Once
the worker has received it, calls for the connection get 410.
"""
from __future__ import annotations

import binascii
import collections
import logging
import time
from typing import Any

import msgspec

from prack.api.checks import V2_PREFIX, BadResponse, check_response, describe, query_params
from prack.ipc import frames, slots
from prack.protocol import websocket

log = logging.getLogger("prack.api")

MAX_EVENTS = 256            # events per call, whatever `max` asks
EVENTS_BYTES = 4 << 20      # ...and no more once this many bytes are in the answer
GONE_KEEP = 300.0           # how long the close event of a gone client waits for a worker


class WsEvent(msgspec.Struct, omit_defaults=True):
    """One event of GET .../events: text (data: str), binary (data: bytes,
    base64 in JSON), or close (code, reason)."""
    type: str
    data: Any = None
    code: int | None = None
    reason: str | None = None


class WsEvents(msgspec.Struct):
    events: list[WsEvent]


class WsOutMessage(msgspec.Struct):
    """One message of POST .../send."""
    type: str
    data: Any = None
    code: int = websocket.CLOSE_NORMAL
    reason: str = ""


class WsSend(msgspec.Struct):
    messages: list[WsOutMessage]


class _WebSocket:
    """What the API process keeps for one WebSocket."""
    __slots__ = ("events", "closed", "done", "gone", "gone_at", "waiter", "deadline", "max")

    def __init__(self):
        self.events = collections.deque()   # (opcode, payload)
        self.closed = False     # the close event is queued: nothing follows it
        self.done = False       # ...and the worker received it: calls get 410
        self.gone = False       # the acceptor dropped the connection (F_GONE)
        self.gone_at = 0.0
        self.waiter = None      # the worker connection long-polling for events
        self.deadline = 0.0
        self.max = 1


_TYPES = {"text": websocket.OP_TEXT, "binary": websocket.OP_BINARY}


class WebSockets:
    """The WebSocket calls of `process` (the ApiServer); the stream of each
    WebSocket is in `table` (streams.StreamTable)."""

    def __init__(self, process, table) -> None:
        self.process = process
        self.table = table
        self.websockets: dict[tuple[int, int, int], _WebSocket] = {}
        self.decoders = {}
        for msgpack in (False, True):
            module = msgspec.msgpack if msgpack else msgspec.json
            self.decoders[msgpack] = module.Decoder(WsSend).decode
        process.id_routes.update({
            "events": {"GET": self.events},
            "send": {"POST": self.send},
        })
        process.link_handlers[frames.F_WS_EVENT] = self._on_ws_event

    # -- what Streams asks ------------------------------------------------------------------

    @staticmethod
    def check_accept(headers, max_size: int | None = None):
        """A 101 head is a WebSocket accept: its headers are checked as any
        response's (at most `max_size` bytes of them); the acceptor
        completes the handshake."""
        _, flags, block, _ = check_response(200, headers, "status", max_size)
        return 101, flags, block, frames.NO_LENGTH

    def opened(self, sid) -> None:
        """A 101 head went out for `sid`."""
        self.websockets[sid] = _WebSocket()

    def refuses(self, conn, req) -> bool:
        """Body chunks and stream ends are not for WebSockets: 409."""
        parsed = slots.parse_identifier(req.path[len(V2_PREFIX):].partition("/")[0])
        if (parsed is None or not self.process.known(parsed)
                or parsed[1:] not in self.websockets):
            return False
        self.process.reply_error(conn, 409, "a WebSocket: use .../send (a close message "
                                 "ends it)")
        return True

    def aborted(self, sid) -> None:
        """An /error report (or a whole response) for a WebSocket: it closes
        with 1011 and, as after the worker's own close, it is over for the
        worker (an events long-poll gets 410 now)."""
        ws = self.websockets.pop(sid, None)
        if ws is not None and ws.waiter is not None:
            waiter, ws.waiter = ws.waiter, None
            if waiter.sock is not None:
                self.process.reply_error(waiter, 410,
                                         "the WebSocket was ended by an error report")

    def client_gone(self, sid) -> None:
        """The acceptor dropped the connection. A WebSocket that ended
        without a close event gets one (1006, "abnormal closure"); its state
        stays until the worker has received it."""
        ws = self.websockets.get(sid)
        if ws is None:
            return
        ws.gone = True
        ws.gone_at = time.monotonic()
        if ws.done:
            self._forget(sid)
            return
        if not ws.closed:
            ws.closed = True
            ws.events.append((websocket.OP_CLOSE, websocket.close_event(
                websocket.CLOSE_ABNORMAL, "the client has gone")))
        self._wake(sid, ws)

    def unfetched(self) -> int:
        """WebSockets whose end (the close event) no worker has received."""
        return sum(not ws.done for ws in self.websockets.values())

    # -- resolving a call -------------------------------------------------------------------

    def _call(self, conn, req, replay):
        """(sid, state) of a WebSocket call, or None when it has been answered
        (an error, a forward to the other generation, or held until the
        acceptor links)."""
        p = self.process
        parsed = slots.parse_identifier(req.path[len(V2_PREFIX):].partition("/")[0])
        if parsed is None:
            p.reply_error(conn, 400, "id: malformed")
            return None
        sid = parsed[1:]
        ws = self.websockets.get(sid) if p.known(parsed) else None
        if ws is not None:
            if ws.done:
                p.reply_error(conn, 410, "the WebSocket is closed")
                return None
            return sid, ws
        # Not one of ours: the same resolution as every per-request call
        # (forwarded, held, 404 or 410), then "not a WebSocket".
        if p.resolve(conn, req, replay) is not None:
            p.reply_error(conn, 409, "not a WebSocket (accept the upgrade first: POST "
                          ".../head with status 101)")
        return None

    # -- GET .../events -------------------------------------------------------------------

    def events(self, conn, req, hold: bool = True) -> None:
        p = self.process
        try:
            wait, most = query_params(req.query, 0.0, p.poll_timeout, MAX_EVENTS, MAX_EVENTS)
        except ValueError as exc:
            p.reply_error(conn, 400, str(exc))
            return
        parsed = slots.parse_identifier(req.path[len(V2_PREFIX):].partition("/")[0])
        target = p.lifecycle.elsewhere(parsed) if parsed is not None else None
        if target is not None:
            # The other generation's WebSocket: ask there, as a GET with its
            # query (the common forward of resolve is a POST of the path).
            p.lifecycle.relay(conn, target, req.path + ("?" + req.query if req.query else ""),
                              b"", b"", b"GET")
            return
        found = self._call(conn, req, (lambda: self.events(conn, req, False)) if hold else None)
        if found is None:
            return
        sid, ws = found
        if ws.waiter is not None and ws.waiter.sock is not None:
            p.reply_error(conn, 409, "another events call is waiting for this WebSocket")
            return
        if ws.events or wait <= 0:
            self._deliver(sid, ws, conn, most)
            return
        ws.waiter = conn
        ws.deadline = time.monotonic() + wait
        ws.max = most

    def _deliver(self, sid, ws: _WebSocket, conn, most: int) -> None:
        """Answer an events call with what is queued (maybe nothing) and
        credit the acceptor for it."""
        p = self.process
        events = []
        size = credit = 0
        queue = ws.events
        while queue and len(events) < most and size < EVENTS_BYTES:
            opcode, payload = queue.popleft()
            size += len(payload)
            if opcode == websocket.OP_CLOSE:
                code, reason = websocket.parse_close_event(payload)
                events.append(WsEvent("close", code=code, reason=reason))
                ws.done = True
                break
            credit += len(payload) + websocket.EVENT_OVERHEAD
            if opcode == websocket.OP_TEXT:
                events.append(WsEvent("text", bytes(payload).decode("utf-8")))
            else:
                events.append(WsEvent("binary", bytes(payload)))
        if ws.done and ws.gone:
            self._forget(sid)
        acceptor, slot, key = sid
        link = p.links[acceptor]
        if credit and link is not None and not ws.closed:
            p.send_link(link, frames.stream_frame(frames.F_CREDIT, slot, key, credit))
        p.reply(conn, 200, p.codec(conn).encode(WsEvents(events)), ctype=p.ctype(conn))

    def _forget(self, sid) -> None:
        self.websockets.pop(sid, None)
        self.table.open.pop(sid, None)

    # -- POST .../send --------------------------------------------------------------------

    def send(self, conn, req, hold: bool = True) -> None:
        p = self.process
        found = self._call(conn, req, (lambda: self.send(conn, req, False)) if hold else None)
        if found is None:
            return
        sid, ws = found
        msgpack = p.codec_in(req).msgpack
        try:
            messages, close = _outgoing(self.decoders[msgpack](req.body), msgpack)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            p.reply_error(conn, 400, describe(exc))
            return
        except BadResponse as exc:
            p.reply_error(conn, 400, str(exc))
            return
        if ws.closed:
            # The client closed (or went): its close event waits for the worker.
            p.reply_error(conn, 410, "the client has closed the WebSocket")
            return
        st = self.table.open.get(sid)
        if st is None:
            p.reply_error(conn, 410, "the client has gone")
            return
        if st.held is not None:
            p.reply_error(conn, 409, "the previous send has not been answered yet "
                          "(send one batch at a time)")
            return
        acceptor, slot, key = sid
        link = p.links[acceptor]
        buffers = []
        for opcode, payload in messages:
            buffers += frames.stream_frame(frames.F_DATA, slot, key, st.seq, opcode, payload)
            st.seq += 1
        if buffers:
            p.send_link(link, buffers)
        if close is not None:
            # The worker closes: the acceptor runs the closing handshake
            # with the client; for the worker the WebSocket is over.
            del self.websockets[sid]
            waiter = ws.waiter
            if waiter is not None and waiter.sock is not None:
                p.reply_error(waiter, 410, "the worker closed the WebSocket")
            if not self.table.finish(sid, 0, close):
                p.reply_error(conn, 410, "the client has gone")
                return
            p.reply_ok(conn)
            return
        if not messages:
            p.reply_ok(conn)
            return
        st.held = conn
        st.held_seq = st.seq - 1
        # Answered by Streams' F_ACK handler once the acceptor has buffered
        # the last one.

    # -- frames from the acceptors --------------------------------------------------------

    def _on_ws_event(self, link, buf, start: int, end: int) -> bool:
        _, slot, key, _number, opcode = frames.STREAM.unpack_from(buf, start)
        sid = (link.index, slot, key)
        ws = self.websockets.get(sid)
        if ws is None or ws.closed:
            return False
        ws.events.append((opcode, bytes(buf[start + frames.STREAM.size:end])))
        if opcode == websocket.OP_CLOSE:
            ws.closed = True
        self._wake(sid, ws)
        return False

    def _wake(self, sid, ws: _WebSocket) -> None:
        conn = ws.waiter
        if conn is not None:
            ws.waiter = None
            if conn.sock is not None:
                self._deliver(sid, ws, conn, ws.max)

    def scan(self, now: float) -> None:
        """Events long-polls whose wait is over answer with no events; the
        close event of a connection long gone is dropped if no worker came
        for it (later calls get 404 then, not 410)."""
        for sid, ws in list(self.websockets.items()):
            if ws.gone and now - ws.gone_at > GONE_KEEP and ws.waiter is None:
                self._forget(sid)
                continue
            conn = ws.waiter
            if conn is None:
                continue
            if conn.sock is None:
                ws.waiter = None
            elif now >= ws.deadline:
                ws.waiter = None
                self._deliver(sid, ws, conn, ws.max)


def _outgoing(batch: WsSend, msgpack: bool) -> tuple[list, bytes | None]:
    """A send's messages as [(opcode, payload)], and the close payload (or
    None). Raises BadResponse naming the message at fault."""
    messages = []
    close = None
    for i, msg in enumerate(batch.messages):
        where = "messages[%d]" % i
        if close is not None:
            raise BadResponse("%s: nothing may follow a close" % where)
        if msg.type == "close":
            if not websocket.valid_close_code(msg.code):
                raise BadResponse("%s.code: %r may not be sent (1000-1003, 1007-1014, "
                                  "3000-4999)" % (where, msg.code))
            raw = msg.reason.encode("utf-8")
            if len(raw) > websocket.MAX_CLOSE_REASON:
                raise BadResponse("%s.reason: longer than %d bytes of UTF-8"
                                  % (where, websocket.MAX_CLOSE_REASON))
            close = websocket.close_payload(msg.code, msg.reason)
            continue
        opcode = _TYPES.get(msg.type)
        if opcode is None:
            raise BadResponse("%s.type: expected text, binary or close, got %r"
                              % (where, msg.type[:40]))
        data = msg.data
        if opcode == websocket.OP_TEXT:
            if type(data) is str:
                payload = data.encode("utf-8", "surrogatepass")
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadResponse("%s.data: not valid Unicode text" % where) from None
            elif msgpack and type(data) is bytes:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadResponse("%s.data: text must be valid UTF-8" % where) from None
                payload = data
            else:
                raise BadResponse("%s.data: expected a string" % where)
        elif type(data) is bytes:
            payload = data
        elif type(data) is str and not msgpack:
            try:
                payload = binascii.a2b_base64(data, strict_mode=True)
            except (binascii.Error, ValueError):
                raise BadResponse("%s.data: expected base64" % where) from None
        else:
            raise BadResponse("%s.data: expected %s" % (where, "bytes" if msgpack else "base64"))
        messages.append((opcode, payload))
    return messages, close
