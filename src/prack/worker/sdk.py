"""The Python worker SDK: pull requests from one or more Prack fronts (API
v2, msgpack), run a handler on a thread pool, post the responses back.

    from prack.worker import Response, serve

    def hello(request):
        return Response(200, [("Content-Type", "text/plain")], b"hi\\n")

    serve(hello, fronts=["http://127.0.0.1:4242"], concurrency=8)

Per front, `pulls` threads each keep one HTTP connection open and long-poll
for a batch; a batch never holds more requests than the pool has free
threads, so a worker never sits on a request another worker could serve.
One poster thread per front sends the finished responses back, several per
call. A front that cannot be reached is retried with a capped, jittered
backoff; it is logged once when it goes away and once when it is back.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import logging
import queue
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
POST_BATCH = 256     # responses per POST /api/v2/responses at most


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


class _Capacity:
    """Free handler threads; a pull asks for up to n of them."""

    def __init__(self, n: int):
        self.free = n
        self.cond = threading.Condition()
        self.closed = False

    def take(self, most: int) -> int:
        with self.cond:
            while self.free == 0 and not self.closed:
                self.cond.wait()
            if self.closed:
                return 0
            n = min(self.free, most)
            self.free -= n
            return n

    def give(self, n: int) -> None:
        if n:
            with self.cond:
                self.free += n
                self.cond.notify(n)      # the longest waiters first

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Front:
    """One Prack front: its address, its outage state and its post queue."""

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
        self.posts: queue.SimpleQueue = queue.SimpleQueue()

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


class Worker:
    """Serves `handler(Request) -> Response` for every front until stop().

    `concurrency` is the number of requests handled at once (threads);
    `pulls` the long polls kept open per front (fewer when there are not
    enough threads for them); `wait` how long each may wait (it also bounds
    how long a stop waits for them)."""

    def __init__(self, handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8,
                 pulls: int = 2, wait: float = 2.0, max_backoff: float = 2.0):
        if concurrency < 1 or pulls < 1:
            raise ValueError("concurrency and pulls must be at least 1")
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
        self.capacity = _Capacity(concurrency)
        # A long poll holds the threads it may receive requests for. Every
        # pull asks for at most its share, and there are no more pulls than
        # threads, so an idle worker keeps a pull open on every front.
        pulls = max(1, min(pulls, concurrency // len(self.fronts)))
        self.share = concurrency // (pulls * len(self.fronts))
        self.pool = concurrent.futures.ThreadPoolExecutor(concurrency,
                                                          thread_name_prefix="prack-handler")
        self.stopping = threading.Event()
        self.pullers = [threading.Thread(target=self._pull_loop, args=(front,), daemon=True,
                                         name="prack-pull")
                        for front in self.fronts for _ in range(pulls)]
        self.posters = [threading.Thread(target=self._post_loop, args=(front,), daemon=True,
                                         name="prack-post")
                        for front in self.fronts]

    def start(self) -> "Worker":
        for t in self.posters + self.pullers:
            t.start()
        return self

    def stop(self) -> None:
        """Stop pulling (each long poll ends within `wait`); held requests
        are still answered. join() waits for that."""
        self.stopping.set()
        self.capacity.close()

    def join(self) -> None:
        for t in self.pullers:
            t.join()
        self.pool.shutdown(wait=True)
        for front in self.fronts:
            front.posts.put(None)
        for t in self.posters:
            t.join()

    # -- pulling ------------------------------------------------------------------

    def _pull_loop(self, front: _Front) -> None:
        conn = None
        reused = False           # conn has carried a call already
        query = "/api/v2/requests?wait=%g&max=" % self.wait
        headers = {"Accept": MSGPACK}
        while not self.stopping.is_set():
            n = self.capacity.take(self.share)
            if n == 0:
                break
            try:
                if conn is None:
                    conn = front.connect()
                try:
                    status, data = _call(conn, "GET", query + str(n), None, headers)
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError):
                    if not reused:
                        raise
                    # The front closed a kept-alive connection (a restart, an
                    # idle limit): one new connection before calling it down.
                    conn.close()
                    status, data = _call(conn, "GET", query + str(n), None, headers)
                reused = True
                if status != 200:
                    raise FrontDown("GET /api/v2/requests answered %d" % status)
                items = _decode_batch(data).requests
            except (OSError, http.client.HTTPException, FrontDown,
                    msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.capacity.give(n)
                if conn is not None:
                    conn.close()
                    conn = None
                reused = False
                failures = front.failed(exc)
                self.stopping.wait(backoff(failures, cap=self.max_backoff))
                continue
            front.succeeded()
            self.capacity.give(n - len(items))
            for item in items:
                self.pool.submit(self._handle, front, item)
        if conn is not None:
            conn.close()

    def _handle(self, front: _Front, item: wire.RequestItem) -> None:
        try:
            req = Request(item.id, item.env, item.body, item.deadline, front.url)
            try:
                resp = self.handler(req)
                out = wire.ResponseItem(item.id, int(resp.status), _pairs(resp.headers),
                                        bytes(resp.body))
            except Exception as exc:
                log.exception("handler failed on %s %s", item.env.get("REQUEST_METHOD"),
                              item.env.get("PATH_INFO"))
                front.posts.put(("error", item.id, "%s: %s" % (exc.__class__.__name__,
                                                             _reason(exc))))
            else:
                if time.time() < item.deadline:
                    front.posts.put(out)
        finally:
            self.capacity.give(1)

    # -- posting ----------------------------------------------------------------------

    def _post_loop(self, front: _Front) -> None:
        conn = None
        done = False
        while not done:
            batch = [front.posts.get()]
            while len(batch) < POST_BATCH:
                try:
                    batch.append(front.posts.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                done = True
                batch = [x for x in batch if x is not None]
            responses = [x for x in batch if isinstance(x, wire.ResponseItem)]
            errors = [x for x in batch if isinstance(x, tuple)]
            for attempt in range(2):     # a kept-alive connection may have been closed
                try:
                    if conn is None:
                        conn = front.connect()
                    if responses:
                        self._post_responses(conn, responses)
                        responses = []
                    while errors:
                        _, ident, reason = errors[0]
                        _call(conn, "POST", "/api/v2/requests/%s/error" % ident,
                              _encode(wire.Error(reason)), {"Content-Type": MSGPACK})
                        errors.pop(0)
                    break
                except (OSError, http.client.HTTPException, FrontDown,
                        msgspec.DecodeError) as exc:
                    if conn is not None:
                        conn.close()
                        conn = None
                    if attempt:
                        # The front is gone: these clients were answered by
                        # it (or lost with it); nothing to retry.
                        log.debug("front %s: %d responses not delivered: %s", front.url,
                                  len(responses) + len(errors), exc)
        if conn is not None:
            conn.close()

    @staticmethod
    def _post_responses(conn, responses) -> None:
        status, data = _call(conn, "POST", "/api/v2/responses",
                             _encode(wire.ResponseBatch(responses)),
                             {"Content-Type": MSGPACK, "Accept": MSGPACK})
        if status != 200:
            raise FrontDown("POST /api/v2/responses answered %d" % status)
        for result in _decode_results(data).results:
            if result.status == "invalid":
                log.error("front refused the response to %s: %s", result.id, result.error)
            elif result.status != "ok":
                log.info("response to %s not delivered: %s", result.id, result.status)


def _pairs(headers) -> list:
    if isinstance(headers, dict):
        return [(k, v) for k, vs in headers.items()
                for v in (vs if isinstance(vs, (list, tuple)) else [vs])]
    return [(str(k), str(v)) for k, v in headers]


def serve(handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8, **options) -> int:
    """Serve `handler` until SIGTERM or SIGINT, then stop pulling, finish the
    requests held and return 0. A second signal returns 1 at once. Options:
    those of Worker (pulls, wait, max_backoff)."""
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
