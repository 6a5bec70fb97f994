"""A lane: one thread that pulls requests from one front over one kept-alive
connection, runs the handler on each in turn and posts the answers back. No
request changes threads on its way, which is what makes a worker cheap per
request.

What goes over the wire is the lane's codec, one per front (its lanes share
what it learns of the front):

- `V2`: API v2, msgpack batches. The answers of a batch go in one call that
  also pulls the next batch (POST /api/v2/responses?max=N&wait=S), so a busy
  lane makes one call per batch; a front older than that call answers the
  results alone and is pulled apart from then on.
- `V1`: API v1, JSON, one request per call: for fronts that speak only v1,
  and to compare the protocols.

A lane asks for about BATCH_BUDGET of handler time at once (`Pace`). A front
that cannot be reached is retried with a capped, jittered backoff.
"""
from __future__ import annotations

import http.client
import logging
import random
import time

import msgspec

from prack.protocol import messages
from prack.worker.client import MSGPACK, Connection, Front

log = logging.getLogger("prack.worker")

JSON = "application/json"
BATCH_BUDGET = 0.005  # seconds of handler time a lane takes on at once
# A v1 pull has no `wait`: it long-polls for the front's api.poll_timeout,
# which may be up to this (config.py's bound), so a v1 lane's connection
# waits that long plus a margin before calling the front down.
V1_POLL_MAX = 300.0


class FrontDown(Exception):
    """The front answered with something other than what the API promises."""


# What ends a lane's call and sends it into backoff.
FAILURES = (OSError, http.client.HTTPException, FrontDown, msgspec.DecodeError,
            msgspec.ValidationError)


def backoff(failures: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Capped exponential backoff with full jitter in its upper half."""
    delay = min(cap, base * (2 ** min(failures, 30)))
    return delay * random.uniform(0.5, 1.0)


class Pace:
    """How many requests a lane asks for at once: about BATCH_BUDGET seconds
    of handler time (a moving average), between 1 and `most`. A fast handler
    gets big batches (fewer calls per request); a slow one takes one request
    at a time, so it never sits on requests another worker could serve."""

    def __init__(self, most: int):
        self.most = most
        # Seconds per request. It starts at the whole budget (one request at
        # a time) and comes down as fast answers are measured, so a handler
        # that blocks is never handed a batch to sit on before it is known.
        self.average = BATCH_BUDGET

    def size(self) -> int:
        return max(1, min(self.most, int(BATCH_BUDGET / self.average)))

    def took(self, seconds: float, n: int) -> None:
        if n:
            self.average += (seconds / n - self.average) * 0.2


def run(codec, handle, stopping, max_backoff: float) -> None:
    """One lane, until `stopping` is set: pull (or post and pull), run
    `handle(front, item, answers, errors)` on each request pulled, which
    appends a messages.ResponseItem to `answers` or (id, reason) to `errors`
    (nothing for a stream, which goes its own way). The handler time is
    measured for the codec's pace, if it has one."""
    front = codec.front
    pace = codec.pace
    monotonic = time.monotonic
    conn = codec.connection()
    pull = codec.pull
    post = codec.post
    answers: list = []          # ResponseItems to post
    errors: list = []           # (id, reason) to report
    while True:
        try:
            items = None
            if answers or errors:
                stop = stopping.is_set()
                items = post(conn, answers, errors, stop)
                answers, errors = [], []
                if stop:
                    break
            elif stopping.is_set():
                break
            if items is None:
                items = pull(conn)
        except FAILURES as exc:
            conn.close()
            if answers or errors:
                # These clients were answered by the front (or lost with
                # it): a restarted front would not know the identifiers.
                log.debug("front %s: %d answers not delivered: %s", front.url,
                          len(answers) + len(errors), exc)
                answers, errors = [], []
            if stopping.is_set():
                break
            codec.reset()
            stopping.wait(backoff(front.failed(exc), cap=max_backoff))
            continue
        if front.failures:          # read here: a call per batch saved
            front.succeeded()
        if pace is None:            # one request per call: nothing to size
            for item in items:
                handle(front, item, answers, errors)
            continue
        started = monotonic()
        for item in items:
            handle(front, item, answers, errors)
        pace.took(monotonic() - started, len(items))
    conn.close()


class _PostAnswer(msgspec.Struct):
    """The answer to a post-and-pull (messages.ResultsAndRequests). `requests` is
    None from a front older than the combined call, which ignores the query
    and answers the results alone."""
    results: list[messages.ItemResult]
    requests: list[messages.RequestItem] | None = None


_decode_batch = msgspec.msgpack.Decoder(messages.RequestBatch).decode
_decode_post = msgspec.msgpack.Decoder(_PostAnswer).decode
_encode = msgspec.msgpack.Encoder().encode
_PULL_HEADERS = {"Accept": MSGPACK}
_POST_HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
_ERROR_HEADERS = {"Content-Type": MSGPACK}


class V2:
    """API v2 (msgpack batches, each post of answers pulling the next)."""

    def __init__(self, front: Front, wait: float, pace: Pace):
        self.front = front
        self.params = "?wait=%g&max=" % wait
        self.pace = pace
        self.combined = True        # it pulls with the answers (False: an older front)

    def connection(self) -> Connection:
        return self.front.connect()

    def reset(self) -> None:
        """The front failed: a restarted front may be a newer one."""
        self.combined = True

    def pull(self, conn: Connection) -> list:
        # A pull may go again on a new connection: the front had not taken
        # it when it had closed the kept-alive one.
        status, data = conn.call("GET", "/api/v2/requests" + self.params + str(self.pace.size()),
                                 None, _PULL_HEADERS, True)
        if status != 200:
            raise FrontDown("GET /api/v2/requests answered %d" % status)
        return _decode_batch(data).requests

    def post(self, conn: Connection, answers: list, errors: list, stopping: bool) -> list | None:
        """Report the errors and post the answers, pulling the next batch in
        the same call unless `stopping` (or the front is older than that
        call). The batch pulled, or None when none was."""
        # Posts go again on a new connection too when the front had closed the
        # kept-alive one before reading them (a restart, or its idle limits:
        # api.idle_timeout, api.max_connections). A post that arrives twice is
        # harmless: the second is answered "unknown".
        for ident, why in errors:
            conn.call("POST", "/api/v2/requests/%s/error" % ident, _encode(messages.Error(why)),
                      _ERROR_HEADERS, True)
        if not answers:
            return None
        pulling = not stopping and self.combined
        path = "/api/v2/responses" + self.params + str(self.pace.size()) if pulling \
            else "/api/v2/responses"
        status, data = conn.call("POST", path, _encode(messages.ResponseBatch(answers)),
                                 _POST_HEADERS, True)
        if status != 200:
            raise FrontDown("POST /api/v2/responses answered %d" % status)
        answer = _decode_post(data)
        items = None
        if pulling:
            items = answer.requests
            if items is None:
                log.info("front %s pulls no requests with the answers (an older "
                         "Prack): pulling apart", self.front.url)
                self.combined = False
            elif not items and conn.sock is None:
                # Closed after an empty batch: a stopping front says so (its
                # pulls get 503). Pull apart to find out.
                items = None
        for result in answer.results:
            if result.status == "invalid":
                log.error("front refused the response to %s: %s", result.id, result.error)
            elif result.status != "ok":
                log.info("response to %s not delivered: %s", result.id, result.status)
        return items


_decode_v1 = msgspec.json.Decoder(messages.PulledRequest).decode
_encode_json = msgspec.json.Encoder().encode
_JSON_HEADERS = {"Content-Type": JSON}
_NO_HEADERS: dict = {}


class V1:
    """API v1 (JSON, one request per call). Stopping waits for the long poll
    under way (the front's api.poll_timeout at most)."""

    pace = None                 # one request per call: no batch to size

    def __init__(self, front: Front, wait: float, pace: Pace):
        self.front = front

    def connection(self) -> Connection:
        # Not front.connect(): its timeout (the lanes' wait + 30 s) is
        # shorter than a front's api.poll_timeout may be.
        front = self.front
        return Connection(front.host, front.port, max(front.timeout, V1_POLL_MAX + 30.0))

    def reset(self) -> None:
        pass

    def pull(self, conn: Connection) -> list:
        status, data = conn.call("GET", "/api/v1/request", None, _NO_HEADERS, True)
        if status == 404:       # the poll timed out: nothing for us
            return []
        if status != 200:
            raise FrontDown("GET /api/v1/request answered %d" % status)
        pulled = _decode_v1(data)
        # v1 tells no deadline: the front answers 504 when it passes.
        return [messages.RequestItem(pulled.identifier, pulled.environment, pulled.body,
                                 float("inf"))]

    def post(self, conn: Connection, answers: list, errors: list, stopping: bool) -> None:
        """Post each answer, report each error; a failure here loses them
        (logged) but does not call the front down: the next pull finds out."""
        try:
            for item in answers:
                headers: dict = {}
                for name, value in item.headers:
                    old = headers.get(name)
                    if old is None:
                        headers[name] = value
                    elif type(old) is list:
                        old.append(value)
                    else:
                        headers[name] = [old, value]
                # Again on a new connection if the front closed this one (idle
                # while the handler ran) before reading the post.
                status, data = conn.call("POST", "/api/v1/response", _encode_json(
                    messages.PostedResponse(item.id, item.status, headers, item.body)),
                    _JSON_HEADERS, True)
                if status == 400:
                    log.error("front refused the response to %s: %s", item.id, data[:200])
                elif status != 200:
                    log.info("response to %s not delivered: %d", item.id, status)
            for ident, why in errors:
                conn.call("POST", "/api/v2/requests/%s/error" % ident,
                          _encode_json(messages.Error(why)), _JSON_HEADERS, True)
        except (OSError, http.client.HTTPException) as exc:
            log.debug("front %s: answer not delivered: %s", self.front.url, exc)
            conn.close()
        return None


CODECS = {"v2": V2, "v1": V1}
