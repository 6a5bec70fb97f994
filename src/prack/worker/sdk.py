"""The Python worker SDK: pull requests from one or more Prack fronts (API
v2, msgpack), run a handler on each, post the responses back.

    from prack.worker import Response, serve

    def hello(request):
        return Response(200, [("Content-Type", "text/plain")], b"hi\\n")

    serve(hello, fronts=["http://127.0.0.1:4242"], concurrency=8)

`concurrency` lanes (threads, lanes.py), spread over the fronts, each keep
one HTTP/1.1 connection open and loop: long-poll for a batch, run the handler
on each request in turn, post all the answers in one call, which brings back
the next batch (POST /api/v2/responses?max=N&wait=S): a busy lane makes one
call per batch. No request changes threads on its way, which is what makes a
worker cheap per request. A lane asks for about 5 ms of handler time at once
(a moving average decides how many requests that is), so a slow handler takes
one request at a time and never sits on requests another worker could serve.
A front that cannot be reached is retried with a capped, jittered backoff; it
is logged once when it goes away and once when it is back. Every call goes
over the worker's one HTTP client (client.py).

A handler may also stream: a Response whose body is a generator (or any
iterable other than bytes, a list or a tuple) is sent chunk by chunk, and a
WebSocketResponse accepts a WebSocket upgrade. Both run on a thread of their
own (streams.py), so the lane goes back to pulling. A Request can tell when
its client has gone (is_gone, wait_gone, on_gone) and reads a large body kept
by Prack through `input`.
"""
from __future__ import annotations

import http.client
import io
import logging
import signal
import threading
import time
from dataclasses import dataclass, field

import msgspec

from prack.protocol import messages
from prack.worker import lanes, streams
from prack.worker.client import MSGPACK, Front, reason
from prack.worker.lanes import FrontDown, backoff  # noqa: F401
from prack.worker.streams import ClientGone, WebSocket, WebSocketClosed  # noqa: F401

log = logging.getLogger("prack.worker")

DEFAULT_FRONT = "http://127.0.0.1:4242"
_encode = msgspec.msgpack.Encoder().encode


class Request:
    """One request: `env` is the Rack/CGI environment (all strings), `body`
    the complete body, `deadline` the Unix time after which the client has
    been answered 504 already (for a response not started by then).

    A large body stays with Prack (the environment then has `prack.input`):
    `input` reads it as it is needed, and `body` reads all of it on first
    use. `is_gone()`, `wait_gone(timeout)` and `on_gone(callback)` tell when
    the client has gone; they start a cancellation long-poll on first use
    only."""

    __slots__ = ("id", "env", "_body", "deadline", "front", "_front", "_watch", "_input")

    def __init__(self, id: str, env: dict, body: bytes, deadline: float, front: str = "",
                 _front=None):
        self.id = id
        self.env = env
        self._body = body
        self.deadline = deadline
        self.front = front
        self._front = _front
        self._watch = None          # made on first use: most requests never need one
        self._input = None

    def __repr__(self):
        return "<Request %s %s %s>" % (self.id, self.env.get("REQUEST_METHOD"),
                                       self.env.get("PATH_INFO"))

    @property
    def input(self):
        """The body as a binary file: the inline body, or a stream of
        `GET /api/v2/requests/{id}/input` when Prack kept a large body."""
        if self._input is None:
            path = self.env.get("prack.input")
            if path and self._front is not None and self._body == b"":
                self._input = streams.remote_input(self._front, path,
                                                   int(self.env.get("CONTENT_LENGTH") or 0))
            else:
                self._input = io.BytesIO(self._body)
        return self._input

    @property
    def body(self) -> bytes:
        """The whole body (read from Prack on first use when it kept it)."""
        if self._body == b"" and self.env.get("prack.input") and self._front is not None:
            self._body = self.input.read()
            self._input = io.BytesIO(self._body)
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value
        self._input = None

    def _watcher(self):
        watch = self._watch
        if watch is None:
            with _WATCH_LOCK:
                watch = self._watch
                if watch is None:
                    watch = self._watch = (streams.Watch(self._front, self.id)
                                           if self._front is not None else _NoWatch())
        return watch

    def is_gone(self) -> bool:
        """True once the client has gone (the first call asks Prack)."""
        watch = self._watcher()
        watch.start()
        return watch.gone.is_set()

    @property
    def gone(self) -> bool:
        return self.is_gone()

    def wait_gone(self, timeout: float | None = None) -> bool:
        """Block until the client goes (True) or `timeout` passes (False)."""
        watch = self._watcher()
        watch.start()
        return watch.gone.wait(timeout)

    def on_gone(self, callback) -> None:
        """Call `callback()` once the client goes (from a helper thread)."""
        watch = self._watcher()
        watch.on_gone(callback)
        watch.start(wait=False)

    def _mark_gone(self) -> None:
        """A call about this request was answered 410."""
        self._watcher().mark_gone()

    def _finish(self) -> None:
        if self._watch is not None:
            self._watch.finish()
        if self._input is not None:
            self._input.close()


_WATCH_LOCK = threading.Lock()


class _NoWatch:
    """The watch of a request made by hand (no front): never gone."""

    def __init__(self):
        self.gone = threading.Event()

    def start(self, wait: bool = True) -> None:
        pass

    def on_gone(self, callback) -> None:
        pass

    def mark_gone(self) -> None:
        self.gone.set()

    def finish(self) -> None:
        pass


@dataclass(slots=True)
class Response:
    """`headers`: a list of (name, value) pairs (repeats allowed) or a dict.
    `body`: bytes (a list or tuple of bytes is joined), or any other
    iterable of bytes, e.g. a generator: then the response is streamed, each
    chunk sent as it is produced. `trailers` (a dict) go after a streamed
    body (a generator may fill them in as it runs)."""
    status: int
    headers: list | dict = field(default_factory=list)
    body: object = b""
    trailers: dict | None = None


@dataclass(slots=True)
class WebSocketResponse:
    """Accept a WebSocket upgrade and run `session(ws)` with the
    `prack.worker.WebSocket`: it receives and sends messages until it
    returns (then the socket is closed with 1000, 1011 if it raised).
    `subprotocol` is the one chosen from the client's
    Sec-WebSocket-Protocol; `headers` are extra handshake headers.
    `refused(reason)`, if given, is called instead of `session` when the
    accept did not happen (the client went)."""
    session: object
    subprotocol: str | None = None
    headers: list | dict = field(default_factory=list)
    refused: object = None
    status: int = 101


def is_streamed(body) -> bool:
    """A body that is sent chunk by chunk (not bytes, str, list, tuple or None)."""
    return body is not None and not isinstance(body, (bytes, bytearray, memoryview, str,
                                                      list, tuple))


def is_websocket(env: dict) -> bool:
    """The request asks for a WebSocket (Prack queues only valid upgrades;
    `Upgrade` in an HTTP/1.0 request means nothing, RFC 9110 7.8)."""
    return (env.get("REQUEST_METHOD") == "GET"
            and env.get("SERVER_PROTOCOL") == "HTTP/1.1"
            and "websocket" in _tokens(env.get("HTTP_UPGRADE", ""))
            and "upgrade" in _tokens(env.get("HTTP_CONNECTION", "")))


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",")]


class Worker:
    """Serves `handler(Request) -> Response` for every front until stop().

    `concurrency` lanes (threads), spread over the fronts, each keep one
    HTTP/1.1 connection to their front and loop: pull a batch (long poll of
    up to `wait` seconds), run the handler on each request in turn, post the
    answers in one call that also pulls the next batch. `batch` caps the
    requests a lane takes at once (the lane adapts below it to the handler's
    speed). A streamed response or a
    WebSocket runs on a thread of its own, at most `max_streams` at once."""

    def __init__(self, handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8,
                 batch: int = 64, wait: float = 2.0, max_backoff: float = 2.0,
                 max_streams: int = 1000, api: str = "v2"):
        if concurrency < 1 or batch < 1 or max_streams < 1:
            raise ValueError("concurrency, batch and max_streams must be at least 1")
        if api not in lanes.CODECS:
            raise ValueError("api must be 'v1' or 'v2', not %r" % (api,))
        if isinstance(fronts, str):
            fronts = [fronts]
        self.handler = handler
        self.fronts = [Front(url, wait + 30.0) for url in dict.fromkeys(fronts)]
        if not self.fronts:
            raise ValueError("at least one front is needed")
        if concurrency < len(self.fronts):
            raise ValueError("concurrency (%d) must be at least the number of fronts (%d)"
                             % (concurrency, len(self.fronts)))
        self.concurrency = concurrency
        self.wait = wait
        self.max_backoff = max_backoff
        self.pace = lanes.Pace(batch)
        self.max_streams = max_streams
        self.stream_slots = threading.BoundedSemaphore(max_streams)
        self.streams: dict[threading.Thread, tuple] = {}   # -> (front, request, is a WebSocket)
        self.streams_lock = threading.Lock()
        self.stopping = threading.Event()
        self.api = api
        # One codec per front: its lanes share what it learns of the front.
        codecs = [lanes.CODECS[api](front, wait, self.pace) for front in self.fronts]
        self.lanes = [threading.Thread(target=lanes.run, daemon=True, name="prack-lane",
                                       args=(codecs[i % len(codecs)], self._handle,
                                             self.stopping, max_backoff))
                      for i in range(concurrency)]

    def start(self) -> "Worker":
        for t in self.lanes:
            t.start()
        return self

    def stop(self) -> None:
        """Stop pulling (each long poll ends within `wait`); held requests
        are still answered. join() waits for that."""
        self.stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the lanes, then up to `timeout` seconds (None: as long
        as it takes) for the open streams and WebSockets; False if some
        are still open."""
        for t in self.lanes:
            t.join()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.streams_lock:
                left = list(self.streams)
            if not left:
                break
            if deadline is None:
                left[0].join()
            else:
                left[0].join(max(0.0, deadline - time.monotonic()))
                if time.monotonic() >= deadline:
                    with self.streams_lock:
                        return not self.streams
        for front in self.fronts:
            front.close_idle()
        return True

    def abort_streams(self) -> int:
        """End the streams still open: a streamed response is aborted (its
        client sees it cut short), a WebSocket closed with 1001 (going away).
        Their handlers learn it from their next call. The number aborted."""
        with self.streams_lock:
            left = list(self.streams.values())
        for front, req, websocket in left:
            path = "/api/v2/requests/%s/" % req.id
            if websocket:
                path, payload = path + "send", {"messages": [
                    {"type": "close", "code": 1001, "reason": "the worker is stopping"}]}
            else:
                path, payload = path + "end", {"error": "the worker is stopping"}
            try:
                conn = front.connect()
                try:
                    conn.call("POST", path, _encode(payload),
                              {"Content-Type": MSGPACK, "Accept": MSGPACK})
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                log.debug("aborting %s: %s", req.id, exc)
        return len(left)

    def _handle(self, front: Front, item: messages.RequestItem, answers: list,
                errors: list) -> None:
        req = Request(item.id, item.env, item.body, item.deadline, front.url, front)
        try:
            resp = self.handler(req)
            if type(resp) is Response and type(resp.body) is bytes:    # the usual case
                body = resp.body
            elif isinstance(resp, WebSocketResponse):
                self._start_stream(streams.run_websocket, front, req, resp)
                return
            else:
                body = resp.body
                if is_streamed(body):
                    self._start_stream(streams.run_stream, front, req, resp)
                    return
                if isinstance(body, (list, tuple)):
                    body = b"".join(body)
                elif body is None:
                    body = b""
                body = bytes(body)
            out = messages.ResponseItem(item.id, int(resp.status), _pairs(resp.headers), body)
        except Exception as exc:
            log.exception("handler failed on %s %s", item.env.get("REQUEST_METHOD"),
                          item.env.get("PATH_INFO"))
            errors.append((item.id, "%s: %s" % (exc.__class__.__name__, reason(exc))))
            out = None
        if req._watch is not None or req._input is not None:
            req._finish()
        if out is not None and time.time() < item.deadline:
            answers.append(out)

    def _start_stream(self, run, front: Front, req: Request, resp) -> None:
        """A streamed response or a WebSocket goes on a thread of its own
        (the lane goes back to pulling); at most `max_streams` at once, after
        which the lane waits for one to end."""
        if not self.stream_slots.acquire(blocking=False):
            log.warning("%d streams open (max_streams): waiting for one to end",
                        self.max_streams)
            self.stream_slots.acquire()

        def stream():
            try:
                run(front, req, resp, _pairs)
            except Exception:
                log.exception("stream of %s failed", req.id)
            finally:
                with self.streams_lock:
                    self.streams.pop(thread, None)
                self.stream_slots.release()

        thread = threading.Thread(target=stream, daemon=True, name="prack-stream")
        with self.streams_lock:
            self.streams[thread] = (front, req, run is streams.run_websocket)
        thread.start()


def _pairs(headers) -> list:
    if isinstance(headers, dict):
        return [(k, v) for k, vs in headers.items()
                for v in (vs if isinstance(vs, (list, tuple)) else [vs])]
    return [(str(k), str(v)) for k, v in headers]


def serve(handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8, grace: float = 30.0,
          **options) -> int:
    """Serve `handler` until SIGTERM or SIGINT, then stop pulling, finish the
    requests held and return 0. Streams and WebSockets get `grace` seconds
    to end by themselves, then are aborted. A second signal returns 1 at
    once. Options: those of Worker (batch, wait, max_backoff, max_streams,
    api: "v2", or "v1" for one JSON request per call)."""
    return run(Worker(handler, fronts, concurrency, **options), grace)


def run(worker: Worker, grace: float = 30.0) -> int:
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
        def finish():
            if not worker.join(grace):
                log.warning("%d streams still open after %gs: aborting them",
                            worker.abort_streams(), grace)
                worker.join(10.0)

        done = threading.Thread(target=finish, daemon=True)
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
