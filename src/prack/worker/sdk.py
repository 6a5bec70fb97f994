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
import socket
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

    def connect(self) -> "_Connection":
        return _Connection(self.host, self.port, self.timeout)

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
