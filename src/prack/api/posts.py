"""Posted responses: a worker's answer delivered to the acceptor that holds
its client, for v1 (``POST /api/v1/response``), v2 batches (``POST
/api/v2/responses``, with a pull after it when its query asks) and error
reports (``POST /api/v2/requests/{id}/error``).

Each posted response is checked and turned into a RESPONSE frame by one
function (`Posts.deliver`), whatever the call; the frames of one call leave
in one send per acceptor, before the worker is answered. A post for the
other generation's request (during an upgrade) is passed on to that
generation's API process and its answer relayed. A post that arrives before
its acceptor has linked to this (new) API process is held (`HeldCalls`).
"""
from __future__ import annotations

import logging
import time

import msgspec

from prack.api.checks import GONE, INVALID, JSON_TYPE, OK, UNKNOWN, BadResponse
from prack.api.checks import cached_check, describe, identifier_of, printable
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_FREE, SLOT_TAKEN
from prack.protocol import http, messages

log = logging.getLogger("prack.api")

THANK_YOU = b'{"message":"thank you"}'
HOLD_SECONDS = 3.0     # how long a post waits for its acceptor to (re)link
_V1_STATUS = {GONE: 410, UNKNOWN: 404, INVALID: 400}


class _IdentOnly(msgspec.Struct):
    identifier: str


_decode_ident = msgspec.json.Decoder(_IdentOnly).decode


class HeldCalls:
    """Calls that arrive before their acceptor has linked.

    A new API process (the old one died) is linked to each acceptor only
    once that acceptor has reconnected and said HELLO, a few milliseconds
    after the restart. A worker that re-posts its answer at once (its POST
    died with the old process) must not be told "gone" meanwhile: the call
    waits, up to HOLD_SECONDS, and is handled again when the link is there:
    `replay(deadline)` runs the call once more; it may hold again until the
    same deadline (a batch naming another acceptor still missing), and at
    the deadline `replay(None)` runs it without holding (a link still
    missing then means "gone")."""

    def __init__(self) -> None:
        self.held: dict[int, list] = {}    # acceptor index -> [(conn, replay, deadline)]

    def hold(self, conn, acceptor: int, replay, deadline: float | None = None) -> None:
        self.held.setdefault(acceptor, []).append(
            (conn, replay, deadline or time.monotonic() + HOLD_SECONDS))

    def replay(self, acceptor: int) -> None:
        """The acceptor has linked: its held calls run again."""
        if not self.held:
            return
        for conn, replay, deadline in self.held.pop(acceptor, ()):
            if conn.sock is not None:
                replay(deadline)

    def expire(self, now: float) -> None:
        if not self.held:
            return
        for acceptor, posts in list(self.held.items()):
            keep = [p for p in posts if p[2] > now and p[0].sock is not None]
            if keep:
                self.held[acceptor] = keep
            else:
                del self.held[acceptor]
            for conn, replay, deadline in posts:
                if deadline <= now and conn.sock is not None:
                    replay(None)


class Posts:
    """The response posts of `process` (the ApiServer); a post-and-pull
    continues with `pulls`; a response for a streaming request ends its
    stream (`streams`)."""

    def __init__(self, process, pulls, streams) -> None:
        self.process = process
        self.pulls = pulls
        self.streams = streams
        self.rings = process.rings
        self.links = process.links      # the process's list, updated in place
        # Valid heads remembered, under limits.max_response_header_size.
        self.check_response = cached_check(process.cfg.limits.max_response_header_size)
        self.open_streams = streams.table.open
        self.decode_v1 = msgspec.json.Decoder(messages.PostedResponse).decode
        # POST on the pull's path: v1 workers post there too.
        process.routes.setdefault("/api/v1/request", {})["POST"] = self.post_v1
        process.routes.update({
            "/api/v1/response": {"POST": self.post_v1},
            "/api/v2/responses": {"POST": self.post_v2},
        })
        process.id_routes["error"] = {"POST": self.post_error}

    # -- one response ------------------------------------------------------------------

    def deliver(self, parsed, code, headers, body, field: str,
                out: dict) -> tuple[str, str | None]:
        """Validate one posted response (its identifier already parsed, None
        when malformed) and queue its RESPONSE frame in `out` (link ->
        buffers); (outcome, reason)."""
        if parsed is None:
            return INVALID, "identifier: malformed"
        outcome, reason = self.process.lookup(parsed)
        if outcome is not OK:
            return outcome, reason
        _, acceptor, slot, key = parsed
        if (acceptor, slot, key) in self.open_streams:
            # Its head went out already: the stream ends as failed.
            self.fail((acceptor, slot, key), out)
            return INVALID, ("status: the head of a streamed response was sent already "
                             "(end it with POST /api/v2/requests/{id}/end)")
        try:
            status, flags, block, declared = self.check_response(code, headers, field)
        except BadResponse as exc:
            self.fail((acceptor, slot, key), out)
            log.warning("worker posted an invalid response: %s", exc)
            return INVALID, str(exc)
        if not self.rings[acceptor].move(slot, key, SLOT_TAKEN, SLOT_FREE):
            # The acceptor gave up on it this very moment.
            return GONE, "the client has gone"
        out.setdefault(self.links[acceptor], []).extend(
            frames.response_frame(slot, key, status, flags, block, body or b"", declared))
        return OK, None

    def fail(self, sid, out: dict) -> bool:
        """The worker's answer is unusable: if the request is still waiting
        for it, its client gets a 502 now (nothing hangs), or a streamed
        response ends incomplete. The frame is queued in `out`; True when
        it was."""
        if sid in self.open_streams:
            return self.streams.abort(sid, out)
        return self.process.fail(*sid, out)

    def _fail_parsed(self, parsed, out: dict) -> None:
        """`fail` for an unreadable post whose identifier could be read."""
        if parsed is not None and self.process.known(parsed):
            self.fail(parsed[1:], out)

    # -- POST /api/v1/response ---------------------------------------------------------

    def post_v1(self, conn, req: http.Request) -> None:
        self._post_v1(conn, req.body, True)

    def _post_v1(self, conn, body: bytes, hold: bool) -> None:
        p = self.process
        out: dict = {}
        try:
            msg = self.decode_v1(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # Refused by the strict (C) reading: a body in MIME-style
            # base64 is read again, leniently, as the original Prack did.
            try:
                msg = messages.reread_posted_response(body, exc)
            except (msgspec.ValidationError, msgspec.DecodeError) as again:
                msg, error = None, again
        if msg is None:
            parsed = slots.parse_identifier(identifier_of(body, _decode_ident))
        else:
            error = None
            parsed = slots.parse_identifier(msg.identifier)
        if parsed is not None:
            target = p.lifecycle.elsewhere(parsed)
            if target is not None:
                # The other generation's request; there, an unreadable post
                # gets the same 400 and its client a 502.
                p.lifecycle.forward(target, "/api/v1/response", JSON_TYPE, body,
                                    lambda status, answer: p.reply(conn, status, answer))
                return
        if msg is None:
            self._fail_parsed(parsed, out)
            p.send_frames(out)
            p.reply(conn, 400, p.encode(messages.Error(describe(error, None, body))))
            return
        if hold and parsed is not None and p.unlinked(parsed):
            p.held.hold(conn, parsed[1], lambda _: self._post_v1(conn, body, False))
            return
        outcome, reason = self.deliver(parsed, msg.code, msg.headers, msg.body, "code", out)
        p.send_frames(out)
        if outcome is OK:
            p.reply(conn, 200, THANK_YOU)
        else:
            p.reply(conn, _V1_STATUS[outcome], p.encode(messages.Error(reason)))

    # -- POST /api/v2/responses ----------------------------------------------------------

    def post_v2(self, conn, req: http.Request, hold: bool = True,
                deadline: float | None = None) -> None:
        """POST /api/v2/responses; with `max` or `wait` in the query (a
        post-and-pull) the results go out together with the next batch of
        requests, pulled as GET /api/v2/requests does once every answer has
        been delivered (held or forwarded ones included)."""
        p = self.process
        params = None
        if req.query:
            params = self.pulls.batch_params(conn, req)
            if params is None:          # 400: nothing delivered, nothing pulled
                return
        codec = p.codec_in(req)
        try:
            batch = codec.decode_batch(req.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            p.reply_error(conn, 400, describe(exc, codec))
            return
        # Each item is decoded once; only an unreadable one is read again
        # for its identifier (its client then gets a 502).
        entries = []            # (raw, item or None, identifier, parsed, error)
        decode_item = codec.decode_item
        parse = slots.parse_identifier
        for raw in batch.responses:
            try:
                item = decode_item(raw)
                ident, error = item.id, None
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                item, error = None, exc
                ident = identifier_of(raw, codec.decode_id)
            entries.append((raw, item, ident, parse(ident), error))
        if hold:
            unlinked = p.unlinked
            for entry in entries:
                parsed = entry[3]
                if parsed is not None and unlinked(parsed):
                    # Nothing is delivered before the whole batch is replayed
                    # (which holds again while another acceptor is missing).
                    p.held.hold(conn, parsed[1],
                                lambda until: self.post_v2(conn, req, until is not None, until),
                                deadline)
                    return
        out: dict = {}
        results: list = []
        foreign: dict = {}      # runtime dir of the other generation -> [(index, id, raw)]
        elsewhere = p.lifecycle.elsewhere
        deliver = self.deliver
        for raw, item, ident, parsed, error in entries:
            target = elsewhere(parsed) if parsed is not None else None
            if target is not None:
                foreign.setdefault(target, []).append((len(results), ident, raw))
                results.append(None)
                continue
            if item is None:
                self._fail_parsed(parsed, out)
                results.append(messages.ItemResult(ident if type(ident) is str else "", INVALID,
                                                   describe(error, codec, raw)))
                continue
            outcome, reason = deliver(parsed, item.status, item.headers, item.body,
                                      "status", out)
            results.append(messages.ItemResult(item.id, outcome, reason))
        p.send_frames(out)
        if not foreign:
            self.pulls.reply_results(conn, results, params)
            return
        # Items for the other generation go there as one batch each; the
        # answer to this call waits for theirs.
        pending = [len(foreign)]
        for target, items in foreign.items():
            def done(status: int, answer: bytes, items=items) -> None:
                got = []
                if status == 200:
                    try:
                        got = codec.decode_results(answer).results
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        got = []
                for k, (index, ident, _) in enumerate(items):
                    results[index] = got[k] if k < len(got) else messages.ItemResult(
                        ident, UNKNOWN, "identifier: its generation did not answer")
                pending[0] -= 1
                if not pending[0]:
                    self.pulls.reply_results(conn, results, params)
            p.lifecycle.forward(target, "/api/v2/responses", codec.ctype,
                                codec.encode(messages.ResponseBatch([raw for _, _, raw in items])),
                                done)

    # -- POST /api/v2/requests/{id}/error -------------------------------------------------

    def post_error(self, conn, req: http.Request, hold: bool = True) -> None:
        """A worker gives up on a request: its client gets 502 and the
        worker's reason goes to the log."""
        p = self.process
        parsed = p.resolve(conn, req, (lambda: self.post_error(conn, req, False))
                           if hold else None)
        if parsed is None:
            return
        codec = p.codec_in(req)
        reason = ""
        bad = None
        if req.body:
            try:
                reason = codec.decode_error(req.body).error
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                bad = describe(exc, codec)
        out: dict = {}
        if not self.fail(parsed[1:], out):
            p.reply_error(conn, 410, "the client has gone")
            return
        p.send_frames(out)
        log.warning("worker reported an error for request %s: %s",
                    slots.make_identifier(*parsed),
                    printable(reason) if bad is None else "(unreadable report: %s)" % bad)
        if bad is not None:
            p.reply_error(conn, 400, bad)
        else:
            p.reply(conn, 200, p.codec(conn).encode(messages.Message("reported")),
                    ctype=p.ctype(conn))
