"""The API process's side of streamed responses and client lifecycle
notices.

    POST /api/v2/requests/{id}/head    {"status", "headers"}: the head goes out now
    POST /api/v2/requests/{id}/body    raw bytes: one chunk, answered once buffered
    POST /api/v2/requests/{id}/end     {} | {"trailers"} | {"error"}: the end
    GET  /api/v2/requests/{id}/state?wait=S   {"state": "open" | "gone"}

Backpressure: a chunk's post is answered only when the acceptor says (F_ACK)
that the chunk is buffered with room for more, so each stream has at most one
chunk in flight here and at most `limits.stream_buffer` plus one chunk in the
acceptor, whatever the speeds of worker and client. When the client goes the
acceptor sends F_GONE: a chunk waiting for its acknowledgement gets 410, and
so do the stream's later calls; a state long-poll answers "gone" at once.

The state kept here per stream is small and only for streams a worker has
started (sequence, the post waiting for its acknowledgement); the slot word
in shared memory stays the truth about whether the client is still there.
"""
from __future__ import annotations

import logging
import time

import msgspec

from prack.api.checks import GONE, OK, V2_PREFIX, BadResponse, check_response, describe
from prack.api.checks import printable, query_params
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_FREE, SLOT_TAKEN
from prack.protocol import http, messages

log = logging.getLogger("prack.api")

STATE_OPEN = "open"
STATE_GONE = "gone"


class StreamHead(msgspec.Struct):
    """POST /api/v2/requests/{id}/head in JSON: the status and header values
    read as leniently as a posted response's (messages.ResponseItem)."""
    status: int | str
    headers: (dict[str, messages.HeaderValue]
              | list[tuple[str, messages.HeaderScalar | None]] | None) = None


class TypedStreamHead(msgspec.Struct):
    """StreamHead in msgpack: typed (the status an integer, values strings)."""
    status: int
    headers: dict[str, str | list[str]] | list[tuple[str, str]] | None = None


class StreamEnd(msgspec.Struct):
    """POST /api/v2/requests/{id}/end (an empty body is the same as {})."""
    trailers: dict[str, str | list[str]] | list[tuple[str, str]] | None = None
    error: str | None = None


class StreamState(msgspec.Struct):
    """GET /api/v2/requests/{id}/state."""
    state: str


class _Stream:
    __slots__ = ("seq", "held", "held_seq")

    def __init__(self):
        self.seq = 0          # sequence of the next chunk
        self.held = None      # the worker connection whose chunk awaits F_ACK
        self.held_seq = -1


# Fields a trailer section must not carry (RFC 9110 6.5.1): framing, routing,
# authentication, and what the head controls.
_NOT_TRAILERS = frozenset({"content-length", "transfer-encoding", "host", "content-type",
                           "connection", "keep-alive", "te", "upgrade", "proxy-connection",
                           "content-encoding", "content-range", "trailer", "authorization",
                           "set-cookie", "cache-control", "expires", "date", "location",
                           "retry-after", "vary", "www-authenticate", "age", "server"})


class StreamTable:
    """The streams a worker has started (sid = (acceptor, slot, key) ->
    _Stream) and their two ends, shared by Streams and WebSockets (a
    WebSocket is a stream whose head was a 101)."""

    def __init__(self, process) -> None:
        self.process = process
        self.open: dict[tuple[int, int, int], _Stream] = {}

    def finish(self, sid, flags: int, trailers: bytes) -> bool:
        """TAKEN -> FREE and F_END; False when the client went first."""
        acceptor, slot, key = sid
        del self.open[sid]
        p = self.process
        if not p.rings[acceptor].move(slot, key, SLOT_TAKEN, SLOT_FREE):
            return False
        p.send_link(p.links[acceptor], frames.stream_frame(
            frames.F_END, slot, key, 0, flags, trailers))
        return True

    def abort(self, sid, out: dict) -> bool:
        """The worker gave up on a streaming request by another call (an
        /error report, a whole response): the client's response ends
        incomplete, like an end with "error". The F_END is queued in `out`
        (link -> buffers); False when the client went first."""
        acceptor, slot, key = sid
        p = self.process
        st = self.open.pop(sid)
        if st.held is not None:
            conn, st.held = st.held, None
            # Its F_ACK would find no stream: answer the chunk's post now.
            p.reply_error(conn, 409, "the response was ended by another call")
        link = p.links[acceptor]
        if link is None or not p.rings[acceptor].move(slot, key, SLOT_TAKEN, SLOT_FREE):
            return False
        out.setdefault(link, []).extend(
            frames.stream_frame(frames.F_END, slot, key, 0, frames.SF_ABORT))
        return True


class Streams:
    """The streaming calls of `process` (the ApiServer). A head with status
    101 opens a WebSocket (`websockets`), whose ends it learns of too."""

    def __init__(self, process, table: StreamTable, websockets) -> None:
        self.process = process
        self.table = table
        self.websockets = websockets
        self.max_head = process.cfg.limits.max_response_header_size
        # (acceptor, slot, key) -> [(worker conn, deadline)] of state long-polls
        self.gone_waiters: dict[tuple[int, int, int], list] = {}
        self.decoders = {}
        for msgpack in (False, True):
            module = msgspec.msgpack if msgpack else msgspec.json
            self.decoders[msgpack] = (module.Decoder(TypedStreamHead if msgpack
                                                     else StreamHead).decode,
                                      module.Decoder(StreamEnd).decode)
        process.id_routes.update({
            "head": {"POST": self.head},
            "body": {"POST": self.body},
            "end": {"POST": self.end},
            "state": {"GET": self.state},
        })
        process.link_handlers[frames.F_ACK] = self._on_ack

    # -- the calls ------------------------------------------------------------------

    def head(self, conn, req: http.Request, hold: bool = True) -> None:
        p = self.process
        parsed = p.resolve(conn, req, (lambda: self.head(conn, req, False)) if hold else None)
        if parsed is None:
            return
        _, acceptor, slot, key = parsed
        sid = (acceptor, slot, key)
        if sid in self.table.open:
            p.reply_error(conn, 409, "the head of this response was sent already")
            return
        codec = p.codec_in(req)
        decode_head = self.decoders[codec.msgpack][0]
        try:
            msg = decode_head(req.body)
            if msg.status == 101 or msg.status == "101":
                # A WebSocket accept: the acceptor completes the handshake.
                status, flags, block, declared = self.websockets.check_accept(
                    msg.headers, self.max_head)
            else:
                status, flags, block, declared = check_response(msg.status, msg.headers,
                                                                "status", self.max_head)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._invalid(conn, parsed, describe(exc, codec, req.body))
            return
        except BadResponse as exc:
            self._invalid(conn, parsed, str(exc))
            return
        self.table.open[sid] = _Stream()
        if status == 101:
            self.websockets.opened(sid)
        p.send_link(p.links[acceptor], frames.response_frame(
            slot, key, status, flags, block, b"", declared, kind=frames.F_START))
        p.reply_ok(conn)

    def _invalid(self, conn, parsed, reason: str) -> None:
        """An unusable head: the client gets a 502 now, the worker a 400."""
        p = self.process
        out: dict = {}
        p.fail(*parsed[1:], out)
        p.send_frames(out)
        log.warning("worker posted an invalid streamed head: %s", reason)
        p.reply_error(conn, 400, reason)

    def body(self, conn, req: http.Request, hold: bool = True) -> None:
        p = self.process
        if self.websockets.refuses(conn, req):
            return
        parsed = p.resolve(conn, req, (lambda: self.body(conn, req, False)) if hold else None)
        if parsed is None:
            return
        _, acceptor, slot, key = parsed
        st = self.table.open.get((acceptor, slot, key))
        if st is None:
            p.reply_error(conn, 409, "no head was sent for this response "
                          "(POST .../head first)")
            return
        if st.held is not None:
            p.reply_error(conn, 409, "the previous chunk has not been answered yet "
                          "(send one chunk at a time)")
            return
        if not req.body:
            p.reply_ok(conn)
            return
        st.held = conn
        st.held_seq = st.seq
        p.send_link(p.links[acceptor], frames.stream_frame(
            frames.F_DATA, slot, key, st.seq, 0, req.body))
        st.seq += 1
        # Answered by _on_ack (or client_gone).

    def end(self, conn, req: http.Request, hold: bool = True) -> None:
        p = self.process
        if self.websockets.refuses(conn, req):
            return
        parsed = p.resolve(conn, req, (lambda: self.end(conn, req, False)) if hold else None)
        if parsed is None:
            return
        sid = parsed[1:]
        st = self.table.open.get(sid)
        if st is None:
            p.reply_error(conn, 409, "no head was sent for this response "
                          "(POST .../head first, or /api/v2/responses for a whole one)")
            return
        if st.held is not None:
            p.reply_error(conn, 409, "the previous chunk has not been answered yet")
            return
        trailers = b""
        error = None
        if req.body:
            decode_end = self.decoders[p.codec_in(req).msgpack][1]
            try:
                msg = decode_end(req.body)
                if msg.trailers:
                    names = msg.trailers if type(msg.trailers) is dict else \
                        [name for name, _ in msg.trailers]
                    for name in names:
                        if name.lower() in _NOT_TRAILERS:
                            raise BadResponse("trailers: %s may not be sent as a trailer"
                                              % name)
                    trailers = check_response(200, msg.trailers, "trailers")[2]
                error = msg.error
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                reason, error = describe(exc), "unreadable end of stream"
            except BadResponse as exc:
                reason, error = str(exc), "invalid trailers"
            else:
                reason = None
            if reason is not None:
                # The response cannot be completed as asked: end it incomplete.
                self.table.finish(sid, frames.SF_ABORT, b"")
                log.warning("worker posted an invalid end of stream: %s", reason)
                p.reply_error(conn, 400, reason)
                return
        if not self.table.finish(sid, frames.SF_ABORT if error is not None else 0, trailers):
            p.reply_error(conn, 410, "the client has gone")
            return
        if error is not None:
            log.warning("worker aborted its streamed response to %s: %s",
                        slots.make_identifier(p.generation, *sid), printable(error))
        p.reply_ok(conn)

    def abort(self, sid, out: dict) -> bool:
        """`StreamTable.abort` for a stream or a WebSocket (which closes
        with 1011, and is over for its worker)."""
        self.websockets.aborted(sid)
        return self.table.abort(sid, out)

    def state(self, conn, req: http.Request, hold: bool = True) -> None:
        p = self.process
        try:
            wait = query_params(req.query, 0.0, p.poll_timeout)[0]
        except ValueError as exc:
            p.reply_error(conn, 400, str(exc))
            return
        ident = req.path[len(V2_PREFIX):].partition("/")[0]
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            p.reply_error(conn, 400, "id: malformed")
            return
        target = p.lifecycle.elsewhere(parsed)
        if target is not None:          # the other generation's request: ask there
            def done(status: int, answer: bytes) -> None:
                if status in (410, 502):
                    # That generation has stopped, or stops as we ask: its
                    # clients have gone (no answer could reach them now).
                    self._reply_state(conn, STATE_GONE)
                else:
                    p.reply(conn, status, answer, ctype=p.ctype(conn))
            p.lifecycle.relay(conn, target, req.path + ("?" + req.query if req.query else ""),
                              b"", b"", b"GET", done)
            return
        if hold and p.unlinked(parsed):
            # A new API process whose acceptors are relinking: the request
            # is not gone (taken requests outlive the API process).
            p.held.hold(conn, parsed[1], lambda _: self.state(conn, req, False))
            return
        outcome, why = p.lookup(parsed)
        if outcome is GONE:
            self._reply_state(conn, STATE_GONE)
        elif outcome is not OK:
            p.reply_error(conn, 404, why)
        elif wait <= 0:
            self._reply_state(conn, STATE_OPEN)
        else:
            _, acceptor, slot, key = parsed
            self.gone_waiters.setdefault((acceptor, slot, key), []).append(
                (conn, time.monotonic() + wait))

    def _reply_state(self, conn, state: str) -> None:
        p = self.process
        p.reply(conn, 200, p.codec(conn).encode(StreamState(state)), ctype=p.ctype(conn))

    # -- frames from the acceptors, and their loss ------------------------------------

    def _on_ack(self, link, buf, start: int, end: int) -> bool:
        _, slot, key, number, _flags = frames.STREAM.unpack_from(buf, start)
        st = self.table.open.get((link.index, slot, key))
        if st is None or st.held is None or st.held_seq != number:
            return False
        conn, st.held = st.held, None
        if conn.sock is not None:
            self.process.reply_ok(conn)
        return False

    def client_gone(self, sid) -> None:
        """The client of a request a worker holds has gone (F_GONE): a chunk
        waiting for its acknowledgement gets 410, state long-polls answer
        "gone", a WebSocket gets its close event."""
        st = self.table.open.pop(sid, None)
        if st is not None and st.held is not None and st.held.sock is not None:
            conn, st.held = st.held, None
            self.process.reply_error(conn, 410, "the client has gone")
        for conn, _deadline in self.gone_waiters.pop(sid, ()):
            if conn.sock is not None:
                self._reply_state(conn, STATE_GONE)
        self.websockets.client_gone(sid)

    def lost(self, acceptor: int) -> None:
        """An acceptor's link dropped: it closes its streaming connections
        (their state was with this link), so every one of them is gone; so
        is the client of every request a state long-poll waits on (a link
        drops when its acceptor dies, and its connections with it)."""
        for sid in [s for s in self.table.open if s[0] == acceptor]:
            self.client_gone(sid)
        for sid in [s for s in self.gone_waiters if s[0] == acceptor]:
            self.client_gone(sid)

    def scan(self, now: float) -> None:
        """State long-polls whose wait is over answer "open"; those of a
        request answered meanwhile (or whose slot went GONE without an
        F_GONE) end now, as a new call would."""
        if not self.gone_waiters:
            return
        p = self.process
        for sid, waiters in list(self.gone_waiters.items()):
            outcome, why = p.lookup((p.generation,) + sid)
            if outcome is not OK:
                del self.gone_waiters[sid]
                for conn, _deadline in waiters:
                    if conn.sock is None:
                        continue
                    if outcome is GONE:
                        self._reply_state(conn, STATE_GONE)
                    else:
                        p.reply_error(conn, 404, why)
                continue
            keep = []
            for conn, deadline in waiters:
                if conn.sock is None:
                    continue
                if now >= deadline:
                    self._reply_state(conn, STATE_OPEN)
                else:
                    keep.append((conn, deadline))
            if keep:
                self.gone_waiters[sid] = keep
            else:
                del self.gone_waiters[sid]
