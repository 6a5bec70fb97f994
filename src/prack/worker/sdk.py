"""The Python worker SDK: pull requests from one or more Prack fronts (API
v2, msgpack), run a handler on each, post the responses back.

    from prack.worker import Response, serve

    def hello(request):
        return Response(200, [("Content-Type", "text/plain")], b"hi\\n")

    serve(hello, fronts=["http://127.0.0.1:4242"], concurrency=8)

`concurrency` lanes (threads), spread over the fronts, each keep one
HTTP/1.1 connection open and loop: long-poll for a batch, run the handler on
each request in turn, post all the answers in one call, which brings back
the next batch (POST /api/v2/responses?max=N&wait=S): a busy lane makes one
call per batch. No request changes
threads on its way, which is what makes a worker cheap per request. A lane
asks for about 5 ms of handler time at once (a moving average decides how
many requests that is), so a slow handler takes one request at a time and
never sits on requests another worker could serve. A front that cannot be
reached is retried with a capped, jittered backoff; it is logged once when it
goes away and once when it is back.

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
import random
import signal
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import msgspec

from prack.protocol import messages
from prack.worker import streams
from prack.worker.streams import ClientGone, WebSocket, WebSocketClosed  # noqa: F401

log = logging.getLogger("prack.worker")

DEFAULT_FRONT = "http://127.0.0.1:4242"
MSGPACK = streams.MSGPACK
_decode_batch = msgspec.msgpack.Decoder(messages.RequestBatch).decode


class _PostAnswer(msgspec.Struct):
    """The answer to a post-and-pull (messages.ResultsAndRequests). `requests` is
    None from a front older than the combined call, which ignores the query
    and answers the results alone."""
    results: list[messages.ItemResult]
    requests: list[messages.RequestItem] | None = None


_decode_post = msgspec.msgpack.Decoder(_PostAnswer).decode
_encode = msgspec.msgpack.Encoder().encode
_decode_v1 = msgspec.json.Decoder(messages.PulledRequest).decode
_encode_json = msgspec.json.Encoder().encode
JSON = "application/json"
BATCH_BUDGET = 0.005  # seconds of handler time a lane takes on at once
IDLE_CONNECTIONS = 16  # kept per front for streams, inputs and watches
# A v1 pull has no `wait`: it long-polls for the front's api.poll_timeout,
# which may be up to this (config.py's bound), so a v1 lane's connection
# waits that long plus a margin before calling the front down.
V1_POLL_MAX = 300.0


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
        self.idle: list = []          # kept-alive connections for calls about requests
        self.combined = True          # it pulls with the answers (False: an older front)

    def connect(self) -> "_Connection":
        return _Connection(self.host, self.port, self.timeout)

    def borrow(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection for calls about one request (streams, inputs,
        WebSockets): (conn, is it new). These stay http.client connections:
        an input is read from the response as the caller reads, which the
        lanes' lean client (whole answers only) does not do."""
        with self.lock:
            if self.idle:
                return self.idle.pop(), False
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout), True

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < IDLE_CONNECTIONS:
                self.idle.append(conn)
                return
        conn.close()

    def close_idle(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

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


MAX_HEAD = 64 * 1024    # a longer response head is not a front's


class _Connection:
    """One keep-alive HTTP/1.1 client connection, made for a lane's calls: a
    call is one send and as few receives as the answer needs. http.client
    costs about five times the CPU per call (bench/analysis.md), which at
    one or two requests per call was most of a worker's time. It connects
    on the first call and again after close(); errors are OSError (the
    front closing an idle connection: http.client.RemoteDisconnected) or
    http.client.HTTPException (an answer that is not HTTP/1.1)."""

    def __init__(self, host: str, port: int, timeout: float):
        self.address = (host, port)
        self.timeout = timeout
        name = "[%s]" % host if ":" in host else host     # an IPv6 literal
        self.host = b"Host: %s:%d\r\n" % (name.encode("idna"), port)
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()

    def call(self, method: str, path: str, body: bytes | None,
             headers: dict) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
            "%s: %s\r\n" % kv for kv in headers.items())
        if body is None:
            self.sock.sendall(head.encode("latin-1") + self.host + b"\r\n")
        else:
            self.sock.sendall(head.encode("latin-1") + self.host +
                              b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, fields, keep = self._read_head()
        while status < 200:                 # interim answers have no body
            status, fields, keep = self._read_head()
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            data = self._read_chunked()
        elif b"content-length" in fields:
            value = fields[b"content-length"].strip()
            if not value.isdigit() or len(value) > 18:
                raise http.client.HTTPException("bad Content-Length %r" % value[:40])
            data = self._read_exactly(int(value))
        else:
            data = self._read_to_end()
            keep = False
        if not keep:
            self.close()
        return status, data

    def _fill(self) -> bool:
        """Receive more; False at the end of the stream."""
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _read_head(self) -> tuple[int, dict, bool]:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                raise http.client.HTTPException("response head over %d bytes" % MAX_HEAD)
            had = len(buf)
            if not self._fill():
                if had:
                    raise http.client.IncompleteRead(bytes(buf[:200]))
                raise http.client.RemoteDisconnected("the front closed the connection")
            end = buf.find(b"\r\n\r\n", max(0, had - 3))
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[:end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or \
                not (parts[1].isdigit() and len(parts[1]) == 3):
            raise http.client.BadStatusLine(lines[0][:200].decode("latin-1"))
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise http.client.HTTPException("bad header line %r" % line[:200])
            name = name.strip().lower()
            value = value.strip()
            fields[name] = fields[name] + b"," + value if name in fields else value
        connection = fields.get(b"connection", b"").lower()
        if parts[0] == b"HTTP/1.1":
            keep = b"close" not in connection
        else:
            keep = b"keep-alive" in connection
        return int(parts[1]), fields, keep

    def _read_exactly(self, n: int) -> bytes:
        buf = self.buf
        while len(buf) < n:
            if not self._fill():
                raise http.client.IncompleteRead(bytes(buf), n - len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _read_line(self) -> bytes:
        buf = self.buf
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                raise http.client.HTTPException("chunk line over %d bytes" % MAX_HEAD)
            if not self._fill():
                raise http.client.IncompleteRead(bytes(buf))
            end = buf.find(b"\r\n")
        line = bytes(buf[:end])
        del buf[:end + 2]
        return line

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = self._read_line().split(b";", 1)[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise http.client.HTTPException("bad chunk size %r" % size[:40]) from None
            if not n:
                while self._read_line():    # trailer fields, then the blank line
                    pass
                return bytes(out)
            out += self._read_exactly(n)
            if self._read_exactly(2) != b"\r\n":
                raise http.client.HTTPException("chunk without its CRLF")

    def _read_to_end(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data


def _call(conn: _Connection, method: str, path: str, body: bytes | None,
          headers: dict) -> tuple[int, bytes]:
    return conn.call(method, path, body, headers)


def _pull(conn: _Connection, reused: bool, path: str, headers: dict) -> tuple[int, bytes]:
    """A lane's GET; see _again."""
    return _again(conn, reused, "GET", path, None, headers)


def _again(conn: _Connection, reused: bool, method: str, path: str, body: bytes | None,
           headers: dict) -> tuple[int, bytes]:
    """A lane's call. On a connection that has carried calls already, the
    front may have closed it (a restart, or its idle limits: api.idle_timeout,
    api.max_connections) before reading this call: once more on a new
    connection before calling the front down. A post sent twice is harmless:
    the front answers the second "unknown" when it took the first."""
    try:
        return _call(conn, method, path, body, headers)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        if not reused:
            raise
        conn.close()
        return _call(conn, method, path, body, headers)


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
    answers in one call that also pulls the next batch. `batch` caps the
    requests a lane takes at once (the lane adapts below it to the handler's
    speed). A streamed response or a
    WebSocket runs on a thread of its own, at most `max_streams` at once."""

    def __init__(self, handler, fronts=(DEFAULT_FRONT,), concurrency: int = 8,
                 batch: int = 64, wait: float = 2.0, max_backoff: float = 2.0,
                 max_streams: int = 1000, api: str = "v2"):
        if concurrency < 1 or batch < 1 or max_streams < 1:
            raise ValueError("concurrency, batch and max_streams must be at least 1")
        if api not in ("v1", "v2"):
            raise ValueError("api must be 'v1' or 'v2', not %r" % (api,))
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
        self.max_streams = max_streams
        self.stream_slots = threading.BoundedSemaphore(max_streams)
        self.streams: dict[threading.Thread, tuple] = {}   # -> (front, request, is a WebSocket)
        self.streams_lock = threading.Lock()
        self.stopping = threading.Event()
        self.api = api
        lane = self._lane if api == "v2" else self._lane_v1
        self.lanes = [threading.Thread(target=lane, daemon=True, name="prack-lane",
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
                    _call(conn, "POST", path, _encode(payload),
                          {"Content-Type": MSGPACK, "Accept": MSGPACK})
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                log.debug("aborting %s: %s", req.id, exc)
        return len(left)

    # -- one lane ---------------------------------------------------------------------

    def _lane(self, front: _Front) -> None:
        conn = None
        reused = False              # conn has carried a call already
        params = "?wait=%g&max=" % self.wait
        pull_headers = {"Accept": MSGPACK}
        answers: list = []          # ResponseItems to post
        errors: list = []           # (id, reason) to report
        while True:
            try:
                items = None
                if answers or errors:
                    if conn is None:
                        conn = front.connect()
                    stopping = self.stopping.is_set()
                    items = self._post(conn, answers, errors, None if stopping or not
                                       front.combined else params + str(self.pace.size()),
                                       front, reused)
                    answers, errors = [], []
                    reused = True
                    if stopping:
                        break
                    if not items and conn.sock is None:
                        # Closed after an empty batch: a stopping front says
                        # so (its pulls get 503). Pull apart to find out.
                        items = None
                elif self.stopping.is_set():
                    break
                if items is None:
                    if conn is None:
                        conn = front.connect()
                    path = "/api/v2/requests" + params + str(self.pace.size())
                    status, data = _pull(conn, reused, path, pull_headers)
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
                if self.stopping.is_set():
                    break
                front.combined = True       # a restarted front may be a newer one
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

    def _handle(self, front: _Front, item: messages.RequestItem, answers: list,
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
            errors.append((item.id, "%s: %s" % (exc.__class__.__name__, _reason(exc))))
            out = None
        if req._watch is not None or req._input is not None:
            req._finish()
        if out is not None and time.time() < item.deadline:
            answers.append(out)

    def _start_stream(self, run, front: _Front, req: Request, resp) -> None:
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

    @staticmethod
    def _post(conn, answers: list, errors: list, params: str | None,
              front: _Front, reused: bool = False) -> list | None:
        """Post the answers (with `params`, "?wait=S&max=N": and pull the next
        batch in the same call) and report the errors. The batch pulled, or
        None when none was (no answers, no `params`, or an older front).
        `reused`: conn has carried calls already (see _again)."""
        items = None
        for ident, reason in errors:
            _again(conn, reused, "POST", "/api/v2/requests/%s/error" % ident,
                   _encode(messages.Error(reason)), {"Content-Type": MSGPACK})
            reused = False
        if not answers:
            return None
        status, data = _again(conn, reused, "POST", "/api/v2/responses" + (params or ""),
                              _encode(messages.ResponseBatch(answers)),
                              {"Content-Type": MSGPACK, "Accept": MSGPACK})
        if status != 200:
            raise FrontDown("POST /api/v2/responses answered %d" % status)
        answer = _decode_post(data)
        if params is not None:
            items = answer.requests
            if items is None:
                log.info("front %s pulls no requests with the answers (an older "
                         "Prack): pulling apart", front.url)
                front.combined = False
        for result in answer.results:
            if result.status == "invalid":
                log.error("front refused the response to %s: %s", result.id, result.error)
            elif result.status != "ok":
                log.info("response to %s not delivered: %s", result.id, result.status)
        return items

    def _lane_v1(self, front: _Front) -> None:
        """A lane on API v1 (JSON, one request per call): for fronts that
        speak only v1, and to compare the protocols. Stopping waits for the
        long poll under way (the front's api.poll_timeout at most)."""
        conn = None
        reused = False
        answers: list = []
        errors: list = []
        while not self.stopping.is_set():
            try:
                if conn is None:
                    # Not front.connect(): its timeout (the lanes' wait + 30 s)
                    # is shorter than a front's api.poll_timeout may be.
                    conn = _Connection(front.host, front.port,
                                       max(front.timeout, V1_POLL_MAX + 30.0))
                status, data = _pull(conn, reused, "/api/v1/request", {})
                reused = True
                if status == 404:       # the poll timed out: nothing for us
                    front.succeeded()
                    continue
                if status != 200:
                    raise FrontDown("GET /api/v1/request answered %d" % status)
                pulled = _decode_v1(data)
            except (OSError, http.client.HTTPException, FrontDown,
                    msgspec.DecodeError, msgspec.ValidationError) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                reused = False
                self.stopping.wait(backoff(front.failed(exc), cap=self.max_backoff))
                continue
            front.succeeded()
            # v1 tells no deadline: the front answers 504 when it passes.
            self._handle(front, messages.RequestItem(pulled.identifier, pulled.environment,
                                                 pulled.body, float("inf")), answers, errors)
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
                    # The pull's connection, idle while the handler ran.
                    status, data = _again(conn, True, "POST", "/api/v1/response", _encode_json(
                        messages.PostedResponse(item.id, item.status, headers, item.body)),
                        {"Content-Type": JSON})
                    if status == 400:
                        log.error("front refused the response to %s: %s", item.id, data[:200])
                    elif status != 200:
                        log.info("response to %s not delivered: %d", item.id, status)
                for ident, reason in errors:
                    _call(conn, "POST", "/api/v2/requests/%s/error" % ident,
                          _encode_json(messages.Error(reason)), {"Content-Type": JSON})
            except (OSError, http.client.HTTPException) as exc:
                log.debug("front %s: answer not delivered: %s", front.url, exc)
                conn.close()
                conn = None
                reused = False
            answers.clear()
            errors.clear()
        if conn is not None:
            conn.close()


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
