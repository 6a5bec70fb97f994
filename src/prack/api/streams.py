"""The API process's side of streamed responses and client lifecycle
notices (mixed into ApiServer, like apilife.py).

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

from prack.api.checks import BadResponse, check_response, describe, printable, query_params
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_FREE, SLOT_TAKEN

log = logging.getLogger("prack.api")

OK_RESULT = b'{"result":"ok"}'
STATE_OPEN = "open"
STATE_GONE = "gone"


class StreamHead(msgspec.Struct):
    """POST /api/v2/requests/{id}/head."""
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


class ApiStreams:
    """Mixed into ApiServer, which provides _reply, _lookup, _elsewhere, links,
    rings... `_init_streams()` runs from its constructor."""

    def _init_streams(self) -> None:
        self.streams: dict[tuple[int, int, int], _Stream] = {}
        # (acceptor, slot, key) -> [(worker conn, deadline)] of state long-polls
        self.gone_waiters: dict[tuple[int, int, int], list] = {}
        self.stream_codecs = {}
        for msgpack, codec in self.codecs.items():
            module = msgspec.msgpack if msgpack else msgspec.json
            self.stream_codecs[msgpack] = (module.Decoder(StreamHead).decode,
                                           module.Decoder(StreamEnd).decode)
        self.id_routes.update({
            "head": {"POST": self._stream_head},
            "body": {"POST": self._stream_body},
            "end": {"POST": self._stream_end},
            "state": {"GET": self._stream_state},
        })
        self.link_handlers[frames.F_ACK] = self._on_ack
        self.link_handlers[frames.F_GONE] = self._on_gone

    # -- common preamble of the per-request calls ---------------------------------

    def _id_call(self, conn, req, replay, forwardable: bool = True):
        """Resolve the identifier of a /api/v2/requests/{id}/... call: the
        parsed identifier when the request is this process's and waits for
        an answer; else the call has been answered (or forwarded, or held
        until its acceptor links) and None is returned."""
        ident = req.path[len("/api/v2/requests/"):].partition("/")[0]
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            self._reply_error(conn, 400, "id: malformed")
            return None
        target = self._elsewhere(parsed)
        if target is not None:
            if not forwardable:
                self._reply_error(conn, 404, "identifier: of another generation; ask the "
                                  "front it came from")
                return None
            accept = b"Accept: application/%s\r\n" % (b"msgpack" if conn.msgpack else b"json")
            self._forward(target, req.path, self._codec_in(req).ctype + accept, req.body,
                          lambda status, answer: self._reply(conn, status, answer,
                                                             ctype=self._ctype(conn)))
            return None
        if replay is not None and self._unlinked(parsed):
            self._hold_until_linked(conn, parsed[1], lambda _: replay())
            return None
        outcome, why = self._lookup(parsed)
        if outcome != "ok":
            self._reply_error(conn, 410 if outcome == "gone" else 404, why)
            return None
        return parsed

    def _reply_ok(self, conn) -> None:
        self._reply(conn, 200, self._codec(conn).encode({"result": "ok"}),
                    ctype=self._ctype(conn))

    # -- the calls ------------------------------------------------------------------

    def _stream_head(self, conn, req, hold: bool = True) -> None:
        parsed = self._id_call(conn, req, (lambda: self._stream_head(conn, req, False))
                               if hold else None)
        if parsed is None:
            return
        _, acceptor, slot, key = parsed
        sid = (acceptor, slot, key)
        if sid in self.streams:
            self._reply_error(conn, 409, "the head of this response was sent already")
            return
        decode_head = self.stream_codecs[self._codec_in(req) is self.codecs[True]][0]
        try:
            msg = decode_head(req.body)
            status, flags, block, declared = self._check_head(msg.status, msg.headers)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._stream_invalid(conn, parsed, describe(exc))
            return
        except BadResponse as exc:
            self._stream_invalid(conn, parsed, str(exc))
            return
        self.streams[sid] = _Stream()
        if status == 101:
            self._ws_opened(sid)
        self._send_link(self.links[acceptor], frames.response_frame(
            slot, key, status, flags, block, b"", declared, kind=frames.F_START))
        self._reply_ok(conn)

    def _check_head(self, status, headers):
        """Hook: api.py's response checks (WebSocket accepts extend it)."""
        return check_response(status, headers, "status")

    def _stream_invalid(self, conn, parsed, reason: str) -> None:
        """An unusable head: the client gets a 502 now, the worker a 400."""
        out: dict = {}
        self._answer_502(*parsed[1:], out)
        self._send_frames(out)
        log.warning("worker posted an invalid streamed head: %s", reason)
        self._reply_error(conn, 400, reason)

    def _stream_body(self, conn, req, hold: bool = True) -> None:
        parsed = self._id_call(conn, req, (lambda: self._stream_body(conn, req, False))
                               if hold else None)
        if parsed is None:
            return
        _, acceptor, slot, key = parsed
        st = self.streams.get((acceptor, slot, key))
        if st is None:
            self._reply_error(conn, 409, "no head was sent for this response "
                              "(POST .../head first)")
            return
        if st.held is not None:
            self._reply_error(conn, 409, "the previous chunk has not been answered yet "
                              "(send one chunk at a time)")
            return
        if not req.body:
            self._reply_ok(conn)
            return
        st.held = conn
        st.held_seq = st.seq
        self._send_link(self.links[acceptor], frames.stream_frame(
            frames.F_DATA, slot, key, st.seq, 0, req.body))
        st.seq += 1
        # Answered by _on_ack (or _on_gone).

    def _stream_end(self, conn, req, hold: bool = True) -> None:
        parsed = self._id_call(conn, req, (lambda: self._stream_end(conn, req, False))
                               if hold else None)
        if parsed is None:
            return
        _, acceptor, slot, key = parsed
        sid = (acceptor, slot, key)
        st = self.streams.get(sid)
        if st is None:
            self._reply_error(conn, 409, "no head was sent for this response "
                              "(POST .../head first, or /api/v2/responses for a whole one)")
            return
        if st.held is not None:
            self._reply_error(conn, 409, "the previous chunk has not been answered yet")
            return
        trailers = b""
        error = None
        if req.body:
            decode_end = self.stream_codecs[self._codec_in(req) is self.codecs[True]][1]
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
                self._finish_stream(sid, frames.SF_ABORT, b"")
                log.warning("worker posted an invalid end of stream: %s", reason)
                self._reply_error(conn, 400, reason)
                return
        if not self._finish_stream(sid, frames.SF_ABORT if error is not None else 0, trailers):
            self._reply_error(conn, 410, "the client has gone")
            return
        if error is not None:
            log.warning("worker aborted its streamed response to %s: %s",
                        slots.make_identifier(self.generation, *sid), printable(error))
        self._reply_ok(conn)

    def _finish_stream(self, sid, flags: int, trailers: bytes) -> bool:
        """TAKEN -> FREE and F_END; False when the client went first."""
        acceptor, slot, key = sid
        del self.streams[sid]
        if not self.rings[acceptor].slot_cas(slot, (key << 2) | SLOT_TAKEN,
                                             (key << 2) | SLOT_FREE):
            return False
        self._send_link(self.links[acceptor], frames.stream_frame(
            frames.F_END, slot, key, 0, flags, trailers))
        return True

    def _abort_stream(self, sid, out: dict) -> bool:
        """The worker gave up on a streaming request by another call (an
        /error report, a whole response): the client's response ends
        incomplete, like an end with "error". The F_END is queued in `out`
        (link -> buffers); False when the client went first."""
        acceptor, slot, key = sid
        st = self.streams.pop(sid)
        if st.held is not None:
            conn, st.held = st.held, None
            # Its F_ACK would find no stream: answer the chunk's post now.
            self._reply_error(conn, 409, "the response was ended by another call")
        link = self.links[acceptor]
        if link is None or not self.rings[acceptor].slot_cas(
                slot, (key << 2) | SLOT_TAKEN, (key << 2) | SLOT_FREE):
            return False
        out.setdefault(link, []).extend(
            frames.stream_frame(frames.F_END, slot, key, 0, frames.SF_ABORT))
        return True

    def _stream_state(self, conn, req, hold: bool = True) -> None:
        try:
            wait = query_params(req.query, 0.0, self.poll_timeout)[0]
        except ValueError as exc:
            self._reply_error(conn, 400, str(exc))
            return
        ident = req.path[len("/api/v2/requests/"):].partition("/")[0]
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            self._reply_error(conn, 400, "id: malformed")
            return
        target = self._elsewhere(parsed)
        if target is not None:          # the other generation's request: ask there
            def done(status: int, answer: bytes) -> None:
                if status in (410, 502):
                    # That generation has stopped, or stops as we ask: its
                    # clients have gone (no answer could reach them now).
                    self._reply_state(conn, STATE_GONE)
                else:
                    self._reply(conn, status, answer, ctype=self._ctype(conn))
            accept = b"Accept: application/%s\r\n" % (b"msgpack" if conn.msgpack else b"json")
            self._forward(target, req.path + ("?" + req.query if req.query else ""), accept,
                          b"", done, b"GET")
            return
        if hold and self._unlinked(parsed):
            # A new API process whose acceptors are relinking: the request
            # is not gone (taken requests outlive the API process).
            self._hold_until_linked(conn, parsed[1],
                                    lambda _: self._stream_state(conn, req, False))
            return
        outcome, why = self._lookup(parsed)
        if outcome == "gone":
            self._reply_state(conn, STATE_GONE)
        elif outcome != "ok":
            self._reply_error(conn, 404, why)
        elif wait <= 0:
            self._reply_state(conn, STATE_OPEN)
        else:
            _, acceptor, slot, key = parsed
            self.gone_waiters.setdefault((acceptor, slot, key), []).append(
                (conn, time.monotonic() + wait))

    def _reply_state(self, conn, state: str) -> None:
        self._reply(conn, 200, self._codec(conn).encode(StreamState(state)),
                    ctype=self._ctype(conn))

    # -- frames from the acceptors ------------------------------------------------

    def _on_ack(self, link, buf, start: int, end: int) -> None:
        _, slot, key, number, _flags = frames.STREAM.unpack_from(buf, start)
        st = self.streams.get((link.index, slot, key))
        if st is None or st.held is None or st.held_seq != number:
            return
        conn, st.held = st.held, None
        if conn.sock is not None:
            self._reply_ok(conn)

    def _on_gone(self, link, buf, start: int, end: int) -> None:
        _, slot, key, _number, _flags = frames.STREAM.unpack_from(buf, start)
        self._client_gone((link.index, slot, key))

    def _client_gone(self, sid) -> None:
        """The client of a request a worker holds has gone: a chunk waiting
        for its acknowledgement gets 410, state long-polls answer "gone"."""
        st = self.streams.pop(sid, None)
        if st is not None and st.held is not None and st.held.sock is not None:
            conn, st.held = st.held, None
            self._reply_error(conn, 410, "the client has gone")
        for conn, _deadline in self.gone_waiters.pop(sid, ()):
            if conn.sock is not None:
                self._reply_state(conn, STATE_GONE)

    def _streams_lost(self, acceptor: int) -> None:
        """An acceptor's link dropped: it closes its streaming connections
        (their state was with this link), so every one of them is gone; so
        is the client of every request a state long-poll waits on (a link
        drops when its acceptor dies, and its connections with it)."""
        for sid in [s for s in self.streams if s[0] == acceptor]:
            self._client_gone(sid)
        for sid in [s for s in self.gone_waiters if s[0] == acceptor]:
            self._client_gone(sid)

    def _scan_streams(self, now: float) -> None:
        """State long-polls whose wait is over answer "open"; those of a
        request answered meanwhile (or whose slot went GONE without an
        F_GONE) end now, as a new call would."""
        if not self.gone_waiters:
            return
        for sid, waiters in list(self.gone_waiters.items()):
            outcome, why = self._lookup((self.generation,) + sid)
            if outcome != "ok":
                del self.gone_waiters[sid]
                for conn, _deadline in waiters:
                    if conn.sock is None:
                        continue
                    if outcome == "gone":
                        self._reply_state(conn, STATE_GONE)
                    else:
                        self._reply_error(conn, 404, why)
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
