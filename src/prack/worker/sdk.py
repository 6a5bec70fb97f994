"""The Python worker SDK: pull requests from one or more Prack fronts (API
v2, msgpack), run a handler on each, post the responses back.

    from prack.worker import Response, serve

    def hello(request):
        return Response(200, [("Content-Type", "text/plain")], b"hi\\n")

    serve(hello, fronts=["http://127.0.0.1:4242"], concurrency=8)

`concurrency` lanes (threads), spread over the fronts, each keep one
HTTP/1.1 connection open and loop: long-poll for a batch, run the handler on
each request in turn, post all the answers in one call. No request changes
threads on its way, which is what makes a worker cheap per request. A lane
asks for about 5 ms of handler time at once (a moving average decides how
many requests that is), so a slow handler takes one request at a time and
never sits on requests another worker could serve. A front that cannot be
reached is retried with a capped, jittered backoff; it is logged once when it
goes away and once when it is back.
"""
from __future__ import annotations

import http.client
import logging
import random
import signal
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import msgspec

from prack import wire

log = logging.getLogger("prack.worker")

DEFAULT_FRONT = "http://127.0.0.1:4242"
MSGPACK = "application/msgpack"
_decode_batch = msgspec.msgpack.Decoder(wire.RequestBatch).decode
_decode_results = msgspec.msgpack.Decoder(wire.ResultBatch).decode
_encode = msgspec.msgpack.Encoder().encode
BATCH_BUDGET = 0.005  # seconds of handler time a lane takes on at once


@dataclass(slots=True)
class Request:
    """One request: `env` is the Rack/CGI environment (all strings), `body`
    the complete body, `deadline` the Unix time after which the client has
    been answered 504 already."""
    id: str
    env: dict
    body: bytes
    deadline: float
    front: str = ""


@dataclass(slots=True)
class Response:
    """`headers`: a list of (name, value) pairs (repeats allowed) or a dict."""
    status: int
    headers: list | dict = field(default_factory=list)
    body: bytes = b""


class FrontDown(Exception):
    """The front answered with something other than what the API promises."""


class _Front:
    """One Prack front: its address and its outage state."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url if "//" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("front %r: expected http://host:port" % url)
        self.url = "http://%s:%d" % (parts.hostname, parts.port or 80)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.failures = 0

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def failed(self, exc: BaseException) -> int:
        """Note a failure; the number of failures in a row (logs the first)."""
        with self.lock:
            self.failures += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("front %s unreachable (%s); retrying", self.url, _reason(exc))
            return self.failures

    def succeeded(self) -> None:
        if self.failures:
            with self.lock:
                if self.down_since is not None:
                    log.warning("front %s back after %.1fs", self.url,
                                time.monotonic() - self.down_since)
                    self.down_since = None
                self.failures = 0


def _reason(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) < 200 else text[:200] + "..."


def backoff(failures: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Capped exponential backoff with full jitter in its upper half."""
    delay = min(cap, base * (2 ** min(failures, 30)))
    return delay * random.uniform(0.5, 1.0)


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
          headers: dict) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


class _Pace:
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


class Worker:
    """Serves `handler(Request) -> Response` for every front until stop().

    `concurrency` lanes (threads), spread over the fronts, each keep one
    HTTP/1.1 connection to their front and loop: pull a batch (long poll of
    up to `wait` seconds), run the handler on each request in turn, post the
    answers in one call. `batch` caps the requests a lane takes at once (the
    lane adapts below it to the handler's speed)."""

    def __init__(self, handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8,
                 batch: int = 64, wait: float = 2.0, max_backoff: float = 2.0):
        if concurrency < 1 or batch < 1:
            raise ValueError("concurrency and batch must be at least 1")
        if isinstance(fronts, str):
            fronts = [fronts]
        self.handler = handler
        self.fronts = [_Front(url, wait + 30.0) for url in dict.fromkeys(fronts)]
        if not self.fronts:
            raise ValueError("at least one front is needed")
        if concurrency < len(self.fronts):
            raise ValueError("concurrency (%d) must be at least the number of fronts (%d)"
                             % (concurrency, len(self.fronts)))
        self.concurrency = concurrency
        self.wait = wait
        self.max_backoff = max_backoff
        self.pace = _Pace(batch)
        self.stopping = threading.Event()
        self.lanes = [threading.Thread(target=self._lane, daemon=True, name="prack-lane",
                                       args=(self.fronts[i % len(self.fronts)],))
                      for i in range(concurrency)]

    def start(self) -> "Worker":
        for t in self.lanes:
            t.start()
        return self

    def stop(self) -> None:
        """Stop pulling (each long poll ends within `wait`); held requests
        are still answered. join() waits for that."""
        self.stopping.set()

    def join(self) -> None:
        for t in self.lanes:
            t.join()

    # -- one lane ---------------------------------------------------------------------

    def _lane(self, front: _Front) -> None:
        conn = None
        reused = False              # conn has carried a call already
        query = "/api/v2/requests?wait=%g&max=" % self.wait
        pull_headers = {"Accept": MSGPACK}
        answers: list = []          # ResponseItems to post
        errors: list = []           # (id, reason) to report
        while True:
            try:
                if answers or errors:
                    if conn is None:
                        conn = front.connect()
                    self._post(conn, answers, errors)
                    answers, errors = [], []
                    reused = True
                if self.stopping.is_set():
                    break
                if conn is None:
                    conn = front.connect()
                path = query + str(self.pace.size())
                try:
                    status, data = _call(conn, "GET", path, None, pull_headers)
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError):
                    if not reused:
                        raise
                    # The front closed a kept-alive connection (a restart, an
                    # idle limit): one new connection before calling it down.
                    conn.close()
                    status, data = _call(conn, "GET", path, None, pull_headers)
                reused = True
                if status != 200:
                    raise FrontDown("GET /api/v2/requests answered %d" % status)
                items = _decode_batch(data).requests
            except (OSError, http.client.HTTPException, FrontDown,
                    msgspec.DecodeError, msgspec.ValidationError) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                reused = False
                if answers or errors:
                    # These clients were answered by the front (or lost with
                    # it): a restarted front would not know the identifiers.
                    log.debug("front %s: %d answers not delivered: %s", front.url,
                              len(answers) + len(errors), exc)
                    answers, errors = [], []
                failures = front.failed(exc)
                self.stopping.wait(backoff(failures, cap=self.max_backoff))
                continue
            front.succeeded()
            started = time.monotonic()
            for item in items:
                self._handle(front, item, answers, errors)
            self.pace.took(time.monotonic() - started, len(items))
        if conn is not None:
            conn.close()

    def _handle(self, front: _Front, item: wire.RequestItem, answers: list,
                errors: list) -> None:
        req = Request(item.id, item.env, item.body, item.deadline, front.url)
        try:
            resp = self.handler(req)
            out = wire.ResponseItem(item.id, int(resp.status), _pairs(resp.headers),
                                    bytes(resp.body))
        except Exception as exc:
            log.exception("handler failed on %s %s", item.env.get("REQUEST_METHOD"),
                          item.env.get("PATH_INFO"))
            errors.append((item.id, "%s: %s" % (exc.__class__.__name__, _reason(exc))))
            return
        if time.time() < item.deadline:
            answers.append(out)

    @staticmethod
    def _post(conn, answers: list, errors: list) -> None:
        if answers:
            status, data = _call(conn, "POST", "/api/v2/responses",
                                 _encode(wire.ResponseBatch(answers)),
                                 {"Content-Type": MSGPACK, "Accept": MSGPACK})
            if status != 200:
                raise FrontDown("POST /api/v2/responses answered %d" % status)
            for result in _decode_results(data).results:
                if result.status == "invalid":
                    log.error("front refused the response to %s: %s", result.id, result.error)
                elif result.status != "ok":
                    log.info("response to %s not delivered: %s", result.id, result.status)
        for ident, reason in errors:
            _call(conn, "POST", "/api/v2/requests/%s/error" % ident,
                  _encode(wire.Error(reason)), {"Content-Type": MSGPACK})


def _pairs(headers) -> list:
    if isinstance(headers, dict):
        return [(k, v) for k, vs in headers.items()
                for v in (vs if isinstance(vs, (list, tuple)) else [vs])]
    return [(str(k), str(v)) for k, v in headers]


def serve(handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8, **options) -> int:
    """Serve `handler` until SIGTERM or SIGINT, then stop pulling, finish the
    requests held and return 0. A second signal returns 1 at once. Options:
    those of Worker (batch, wait, max_backoff)."""
    return run(Worker(handler, fronts, concurrency, **options))


def run(worker: Worker) -> int:
    """serve() for a Worker already made (call from the main thread)."""
    signals = []
    wake = threading.Event()

    def on_signal(signum, frame):      # only wakes the main loop
        signals.append(signum)
        wake.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        log.info("serving %s with %d threads", ", ".join(f.url for f in worker.fronts),
                 worker.concurrency)
        while not signals:
            wake.wait(1.0)
        log.info("stopping: finishing the requests held")
        wake.clear()
        worker.stop()
        done = threading.Thread(target=worker.join, daemon=True)
        done.start()
        while done.is_alive():
            if len(signals) > 1:
                log.warning("second signal: exiting now")
                return 1
            wake.wait(0.2)
            wake.clear()
        return 0
    finally:
        for sig, handler_ in old.items():
            signal.signal(sig, handler_)
