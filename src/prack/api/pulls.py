"""Pulls: workers waiting for requests, and the records taken out of the
rings for them.

    GET  /api/v1/request                 one request (JSON), 404 when none came
    GET  /api/v2/requests?max=N&wait=S   a batch, JSON (bodies base64) or msgpack
    POST /api/v2/responses?max=N&wait=S  (posts.py) answers, then a pull like the GET

A record is taken (QUEUED -> TAKEN) only when a worker is waiting for it,
so a request no worker has pulled stays in shared memory, where a restarted
API process finds it. Waiting pulls are served in order; the rings are
visited in turn.

What a pull answers is written by one of three codecs behind one interface
(`take(want)`, `empty`, `empty_status`): v1 (one request, JSON), v2 JSON and
v2 msgpack. The msgpack codec claims and writes runs of records in C
(Ring.take_v2), with no Python per request; the records C leaves to Python
(a parked upload, a body too large for its buffer) go the long way, as the
other codecs take all of theirs.
"""
from __future__ import annotations

import collections
import time

import msgspec

from prack.api.checks import BadParameter, query_params
from prack.ipc import slots
from prack.ipc.slots import SLOT_QUEUED, SLOT_TAKEN
from prack.protocol import http, messages

NO_REQUESTS = b'{"error":"There are no requests pending"}'
# API v2 batches: at most this many requests per pull whatever `max` asks,
# and no more once the batch holds this many bytes of environments and bodies
# (one large upload is still handed out alone).
MAX_BATCH = 256
BATCH_BYTES = 4 << 20


class Pulls:
    """The pulls of `process` (the ApiServer); parked uploads (`uploads`)
    whose body is in go out ahead of the rings."""

    def __init__(self, process, uploads) -> None:
        self.process = process
        self.uploads = uploads
        self.rings = process.rings
        self.links = process.links      # the process's list, updated in place
        self.waiters: collections.deque = collections.deque()
        self.rr = 0                     # the ring to look at first
        self.params: dict[str, tuple[int, float]] = {}
        self.v1 = V1Codec(self)
        self.v2 = {False: V2JsonCodec(self), True: V2MsgpackCodec(self)}
        process.routes.update({
            "/api/v1/request": {"GET": self.pull_v1},
            "/api/v2/requests": {"GET": self.pull_v2},
        })

    # -- the calls ------------------------------------------------------------------------

    def pull_v1(self, conn, req: http.Request) -> None:
        self.pull(conn, self.process.poll_timeout)

    def pull_v2(self, conn, req: http.Request) -> None:
        params = self.batch_params(conn, req)
        if params is not None:
            conn.batch, wait = params
            self.pull(conn, wait)

    def batch_params(self, conn, req: http.Request) -> tuple[int, float] | None:
        """(max, wait) of a v2 pull or post-and-pull, or None once a bad
        parameter has been answered 400. A worker asks with the same few
        query strings again and again: valid ones are parsed once
        (parse_qsl is about 5 µs a call)."""
        params = self.params.get(req.query)
        if params is None:
            try:
                wait, most = query_params(req.query, self.process.poll_timeout,
                                          self.process.poll_timeout, 1, MAX_BATCH)
            except BadParameter as exc:
                self.process.reply_error(conn, 400, str(exc))
                return None
            params = most, wait
            if len(self.params) >= 256:
                self.params.clear()
            self.params[req.query] = params
        return params

    def reply_results(self, conn, results: list, params: tuple[int, float] | None) -> None:
        """The results of a post; with `params` (max, wait), a pull follows
        and they wait for its batch."""
        p = self.process
        encoded = p.codec(conn).encode(messages.ResultBatch(results))
        if params is None:
            p.reply(conn, 200, encoded, ctype=p.ctype(conn))
            return
        conn.results = encoded
        conn.batch, wait = params
        self.pull(conn, wait)

    def pull(self, conn, wait: float) -> None:
        p = self.process
        if conn.sock is None:
            # Gone while its post was held or forwarded: take nothing for it.
            return
        if p.stopping:
            if conn.results is not None:
                self._reply_empty(conn)     # its results, and no requests
            else:
                p.reply_error(conn, 503, "the server is shutting down")
            return
        if wait <= 0:
            data = self._pull_codec(conn).take(conn.batch)
            if data is None:
                self._reply_empty(conn)
            else:
                self._reply_batch(conn, data)
            return
        conn.waiting = True
        conn.deadline = time.monotonic() + wait
        self.waiters.append(conn)
        self.dispatch()

    def _pull_codec(self, conn) -> "V1Codec | V2JsonCodec | V2MsgpackCodec":
        return self.v2[conn.msgpack] if conn.batch else self.v1

    def _reply_batch(self, conn, data: bytes, status: int = 200) -> None:
        """A v1 request or a v2 batch (after a post-and-pull's results)."""
        results = conn.results
        if results is not None:
            conn.results = None
            data = _results_and_requests(results, data, conn.msgpack)
        self.process.reply(conn, status, data, ctype=self.process.ctype(conn))

    def _reply_empty(self, conn) -> None:
        """Nothing arrived in time: v1 says 404, v2 an empty batch."""
        codec = self._pull_codec(conn)
        self._reply_batch(conn, codec.empty, codec.empty_status)

    # -- waiters --------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Serve the waiting pulls, in order, while records are there."""
        waiters = self.waiters
        rings = self.rings
        while waiters:
            conn = waiters[0]
            if not conn.waiting or conn.sock is None:
                waiters.popleft()
                continue
            data = self._pull_codec(conn).take(conn.batch)
            if data is None:
                # Declare ourselves asleep on every ring, then look once more:
                # a producer that published meanwhile saw no flag, so no wake-up
                # would come for its record.
                asleep = True
                for ring, link in zip(rings, self.links):
                    if link is not None and not ring.sleep():
                        asleep = False
                if asleep:
                    return
                continue
            waiters.popleft()
            conn.waiting = False
            self._reply_batch(conn, data)
        for ring in rings:
            ring.wake()

    def expire(self, now: float) -> None:
        """Pulls whose wait is over answer empty. An expired waiter stays
        in the deque; when the same connection polls again it is appended
        once more. Answer each one once, and drop the stale entries before
        answering (which may poll again)."""
        expired = []
        for conn in self.waiters:
            if conn.waiting and now >= conn.deadline:
                conn.waiting = False
                expired.append(conn)
        if expired:
            self.waiters = collections.deque(c for c in self.waiters if c.waiting)
            for conn in expired:
                self._reply_empty(conn)

    def stop(self) -> None:
        """The process stops: waiting pulls are answered now."""
        while self.waiters:
            conn = self.waiters.popleft()
            if conn.waiting and conn.sock is not None:
                conn.waiting = False
                if conn.results is not None:
                    # A post-and-pull: its answers went through, so it is
                    # answered 200 with its results and no requests.
                    self._reply_empty(conn)
                else:
                    self.process.reply_error(conn, 503, "the server is shutting down")

    # -- taking records ---------------------------------------------------------------------

    def take_run(self, want: int, room: int, deadline: float) -> tuple[bytes, int]:
        """A run of up to `want` queued requests (`room` bytes at most) as
        msgpack RequestItems, claimed and written by C (Ring.take_v2) from
        the first ring, from self.rr on, that has one: (bytes, count), with
        count 0 when none has (or its next record is for `take`)."""
        rings = self.rings
        links = self.links
        n = len(rings)
        for i in range(n):
            idx = (self.rr + i) % n
            if links[idx] is None:
                continue        # see take: its answers could not be routed
            data, got = rings[idx].take_v2(want, room, deadline)
            if got:
                self.rr = idx + 1
                return data, got
        return b"", 0

    def take(self, build):
        """build(identifier, environment view (msgpack), body view) for the next
        request still wanted, or None. A record is consumed only here, when a
        worker is waiting for it; successive calls visit the rings in turn."""
        uploads = self.uploads
        if uploads.unstarted:   # parked uploads: room for more now?
            uploads.start()
        if uploads.ready:       # parked requests whose body is in go first
            data = uploads.take_ready(build)
            if data is not None:
                return data
        rings = self.rings
        n = len(rings)
        unpack = slots.RECORD.unpack_from
        rsize = slots.RECORD.size
        links = self.links
        for i in range(n):
            idx = (self.rr + i) % n
            if links[idx] is None:
                # Its answer could not be routed: wait for the acceptor's
                # HELLO (after an API restart it reconnects), which wakes us.
                continue
            ring = rings[idx]
            while True:
                view = ring.peek()
                if view is None:
                    break
                generation, acceptor, slot, key, _queued, env_len, body_len, flags = unpack(view)
                if ring.move(slot, key, SLOT_QUEUED, SLOT_TAKEN):
                    env_end = rsize + env_len
                    if flags & slots.RECF_INPUT_PENDING:
                        # Its body is read once a worker wants it: park it.
                        try:
                            uploads.park(generation, acceptor, slot, key, view[rsize:env_end])
                        finally:
                            view.release()
                            ring.release()
                        continue
                    try:
                        data = build(slots.make_identifier(generation, acceptor, slot, key),
                                     view[rsize:env_end], view[env_end:env_end + body_len])
                    finally:
                        view.release()
                        ring.release()
                    self.rr = idx + 1
                    return data
                # Withdrawn: the client left or its deadline passed. Drop it.
                view.release()
                ring.release()
        return None


# -- the codecs: what a pull answers -----------------------------------------------------

class V1Codec:
    """GET /api/v1/request: one request, JSON; 404 when none came."""
    empty = NO_REQUESTS
    empty_status = 404

    def __init__(self, pulls: Pulls) -> None:
        self.pulls = pulls
        self.encode = pulls.process.encode
        self.decode_env = pulls.process.decode_env

    def item(self, ident: str, env, body) -> bytes:
        return self.encode(messages.PulledRequest(ident, self.decode_env(env), body))

    def take(self, want: int) -> bytes | None:
        return self.pulls.take(self.item)


class V2JsonCodec:
    """A v2 batch in JSON: environments decoded and encoded again, bodies
    base64."""
    empty_status = 200

    def __init__(self, pulls: Pulls) -> None:
        self.pulls = pulls
        self.encode = pulls.process.encode
        self.decode_env = pulls.process.decode_env
        self.response_timeout = pulls.process.response_timeout
        self.empty = pulls.process.codecs[False].empty_batch

    def item(self, ident: str, env, body) -> bytes:
        return self.encode(messages.RequestItem(ident, self.decode_env(env), body,
                                                time.time() + self.response_timeout))

    def take(self, want: int) -> bytes | None:
        take = self.pulls.take
        parts = []
        size = 0
        while len(parts) < want and size < BATCH_BYTES:
            item = take(self.item)
            if item is None:
                break
            parts.append(item)
            size += len(item)
        if not parts:
            return None
        return b'{"requests":[' + b",".join(parts) + b"]}"


class V2MsgpackCodec:
    """A v2 batch in msgpack: the environment spliced in as the acceptor
    encoded it, the body as raw bytes straight from shared memory."""
    empty_status = 200

    def __init__(self, pulls: Pulls) -> None:
        self.pulls = pulls
        self.encode = pulls.process.msgpack_encode
        self.response_timeout = pulls.process.response_timeout
        self.empty = pulls.process.codecs[True].empty_batch

    def item(self, ident: str, env, body) -> bytes:
        # What prk_take_v2 (take.c) writes for a record, byte for byte.
        return self.encode(messages.RequestItem(ident, msgspec.Raw(env), body,
                                                time.time() + self.response_timeout))

    def take(self, want: int) -> bytes | None:
        """Up to `want` requests. Runs of queued requests are claimed and
        written by C (Ring.take_v2: no Python per request), one ring after
        another (Pulls.take_run); parked requests and the records C leaves
        to us (a deferred body, a very large one) go through Pulls.take."""
        pulls = self.pulls
        uploads = pulls.uploads
        parts = []
        count = size = 0
        while count < want and size < BATCH_BYTES:
            if not uploads.unstarted and not uploads.ready:
                data, got = pulls.take_run(want - count, BATCH_BYTES - size,
                                           time.time() + self.response_timeout)
                if got:
                    parts.append(data)
                    count += got
                    size += len(data)
                    continue
            item = pulls.take(self.item)
            if item is None:
                break
            parts.append(item)
            count += 1
            size += len(item)
        if not count:
            return None
        return messages.msgpack_request_batch(parts, count)


def _results_and_requests(results: bytes, batch: bytes, msgpack: bool) -> bytes:
    """One {"results", "requests"} map (messages.ResultsAndRequests) out of an
    encoded ResultBatch and an encoded RequestBatch, each a one-key map:
    their entries are joined, the requests not encoded again."""
    if msgpack:         # fixmap of 1 -> fixmap of 2
        return b"\x82" + results[1:] + batch[1:]
    return results[:-1] + b"," + batch[1:]
