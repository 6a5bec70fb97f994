"""The calls a worker makes about one request after pulling it: a streamed
response (head, body chunks, end), the cancellation long-poll, a large
request body read from Prack, and a WebSocket conversation.

Every call about a request goes to the front that handed it out, each on a
connection of its own taken from that front's small pool (client.Lease), so
none of them waits behind another: a lane keeps its own connection for
pulling.
"""
from __future__ import annotations

import collections
import http.client
import io
import logging
import threading
import time

import msgspec

from prack.worker.client import MSGPACK, Connection, Lease, reason

log = logging.getLogger("prack.worker")

OCTETS = "application/octet-stream"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.decode
_CALL_HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
_BODY_HEADERS = {"Content-Type": OCTETS, "Accept": MSGPACK}
_GET_HEADERS = {"Accept": MSGPACK}
STATE_WAIT = 10.0        # seconds each cancellation long-poll waits
EVENTS_WAIT = 20.0       # seconds each WebSocket events long-poll waits
EVENTS_MAX = 64          # events taken at once (bounded: Prack's credit is what we took)


class ClientGone(OSError):
    """The client of this request has gone (Prack answered 410): nothing
    more can reach it."""


class CallFailed(Exception):
    """Prack refused a call about a request (an unknown or answered request,
    a call out of order); the message has Prack's reason."""

    def __init__(self, what: str, status: int, data: bytes):
        self.status = status
        why = _error_text(data)
        super().__init__("%s answered %d%s" % (what, status, ": " + why if why else ""))


def _error_text(data: bytes) -> str:
    try:
        doc = _decode(data)
    except (msgspec.DecodeError, ValueError):
        try:
            doc = msgspec.json.decode(data)
        except (msgspec.DecodeError, ValueError):
            return data[:200].decode("utf-8", "replace")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return ""


def _path(ident: str, what: str) -> str:
    return "/api/v2/requests/%s/%s" % (ident, what)


# -- cancellation ------------------------------------------------------------------

class Watch:
    """Learns when a request's client goes: a helper thread long-polls
    `GET .../state?wait=` (only once someone asks) until the client goes or
    the request is finished."""

    def __init__(self, front, ident: str):
        self.front = front
        self.ident = ident
        self.gone = threading.Event()
        self.finished = False
        self.first = threading.Event()       # the first answer is in
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.api: Lease | None = None
        self.callbacks: list = []

    def start(self, wait: bool = True) -> None:
        """Start the long-poll (once) and, with `wait`, wait for its first
        answer."""
        with self.lock:
            if self.thread is None and not self.finished and not self.gone.is_set():
                self.api = Lease(self.front)
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="prack-watch")
                self.thread.start()
            else:
                self.first.set()
        if wait:
            self.first.wait(self.front.timeout)

    def on_gone(self, callback) -> None:
        """Call `callback()` (from the watch thread) when the client goes."""
        with self.lock:
            if not self.gone.is_set():
                self.callbacks.append(callback)
                return
        callback()

    def mark_gone(self) -> None:
        with self.lock:
            if self.gone.is_set():
                return
            self.gone.set()
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a client-gone callback failed")

    def finish(self) -> None:
        """The request is answered: stop watching."""
        with self.lock:
            self.finished = True
            api = self.api
        if api is not None:
            api.abort()

    def _run(self) -> None:
        api = self.api
        wait = 0.0
        try:
            while not self.finished:
                status, data = api.call("GET", _path(self.ident, "state?wait=%g" % wait),
                                        None, _GET_HEADERS)
                wait = STATE_WAIT
                if status == 410 or (status == 200 and _decode(data).get("state") == "gone"):
                    self.mark_gone()
                    return
                if status != 200:        # answered, unknown: nothing to watch
                    return
                self.first.set()
        except (OSError, http.client.HTTPException, msgspec.DecodeError, AttributeError) as exc:
            if not self.finished:
                log.debug("watching %s stopped: %s", self.ident, exc)
        finally:
            self.first.set()
            with self.lock:
                self.api = None
            api.close()


# -- large request bodies ------------------------------------------------------------

class RemoteInput(io.RawIOBase):
    """A request body kept by Prack (`prack.input`), read as it is needed
    with `GET .../input` on a connection of its own."""

    def __init__(self, front, path: str, length: int):
        self.front = front
        self.path = path
        self.length = length
        self.conn: Connection | None = None
        self.opened = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed input")
        if not self.opened:
            self._open()
        conn = self.conn
        if conn is None:                        # read to the end already
            return 0
        n = conn.readinto(buf)
        if n == 0 and len(buf):
            self.front.give_back(conn)          # read to the end: reusable
            self.conn = None
        return n

    def _open(self) -> None:
        conn = self.front.borrow()
        # A pooled connection the front closed meanwhile (an API process
        # restarted): the read goes again on a new one, as a Lease's calls do.
        status = conn.open("GET", self.path, None, _GET_HEADERS, True)
        if status != 200:
            data = conn.read_rest()
            conn.close()
            if status == 410:
                raise ClientGone("the client has gone")
            raise CallFailed("GET " + self.path, status, data)
        self.conn = conn
        self.opened = True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        super().close()


def remote_input(front, path: str, length: int) -> io.BufferedReader:
    return io.BufferedReader(RemoteInput(front, path, length), 65536)


# -- streamed responses ----------------------------------------------------------------

def run_stream(front, req, resp, pairs) -> None:
    """Send `resp` (its body an iterable of bytes) as a streamed response:
    the head, each chunk as it is produced (each post is answered once Prack
    has room for more: that is the backpressure), then the end, or an abort
    when the iterable raises. A 410 means the client has gone: the iterable
    is closed and nothing more is sent."""
    api = Lease(front)
    body = resp.body
    ident = req.id
    step = "head"
    try:
        status, data = api.call("POST", _path(ident, "head"),
                                _encode({"status": int(resp.status),
                                         "headers": pairs(resp.headers)}), _CALL_HEADERS)
        if status == 200:
            step = "body"
            status, data, failure = _send_chunks(api, req, body)
            if status == 200:
                step = "end"
                trailers = getattr(resp, "trailers", None)
                if failure:
                    end = {"error": failure}
                elif trailers:
                    end = {"trailers": dict(trailers)}
                else:
                    end = {}
                status, data = api.call("POST", _path(ident, "end"), _encode(end),
                                        _CALL_HEADERS)
        if status == 410:
            req._mark_gone()
            log.debug("streamed response to %s: the client has gone", ident)
        elif status != 200:
            log.error("streamed response to %s: %s", ident,
                      CallFailed("POST .../" + step, status, data))
    except (OSError, http.client.HTTPException) as exc:
        log.warning("streamed response to %s cut short: POST .../%s failed: %s",
                    ident, step, reason(exc))
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing the body of the response to %s failed", ident)
        req._finish()
        api.close()


def _send_chunks(api: Lease, req, body) -> tuple[int, bytes, str | None]:
    """Post each chunk as the iterable yields it. (status, data) of the last
    post, and the reason when the iterable failed (the stream is aborted)."""
    path = _path(req.id, "body")
    try:
        chunks = iter(body)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return 200, b"", None
            if not chunk:
                continue
            if isinstance(chunk, str):
                raise TypeError("a streamed body yielded str, not bytes")
            status, data = api.call("POST", path, bytes(chunk), _BODY_HEADERS)
            if status != 200:
                return status, data, None
    except (OSError, http.client.HTTPException) as exc:
        if api.conn is None:        # the call failed, not the iterable
            raise
        failure = exc
    except Exception as exc:
        failure = exc
    log.error("streamed response to %s %s failed", req.env.get("REQUEST_METHOD"),
              req.env.get("PATH_INFO"), exc_info=failure)
    return 200, b"", "%s: %s" % (failure.__class__.__name__, reason(failure))


# -- WebSockets ----------------------------------------------------------------------------

class WebSocketClosed(Exception):
    """The WebSocket is closed: `code` and `reason` of the close (1006, no
    reason, when the client went without a close frame)."""

    def __init__(self, code: int = 1006, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocket:
    """A WebSocket a handler accepted. receive() returns the next message
    (str for text, bytes for binary) and raises WebSocketClosed once the
    client closed or went; send() and close() may be called from another
    thread than receive() (each direction has its own connection)."""

    def __init__(self, front, req, subprotocol: str | None = None):
        self.request = req
        self.subprotocol = subprotocol
        self._front = front
        self._recv = Lease(front)
        self._send = Lease(front)
        self._send_lock = threading.Lock()
        self._events: collections.deque = collections.deque()
        self.closed: WebSocketClosed | None = None    # set once the client closed or went
        self.close_sent: tuple | None = None          # (code, reason) of our close

    def receive(self, timeout: float | None = None):
        """The next message; None when `timeout` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            if self.closed is not None:
                raise self.closed
            wait = EVENTS_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
            status, data = self._recv.call(
                "GET", _path(self.request.id, "events?wait=%g&max=%d"
                             % (min(wait, EVENTS_WAIT), EVENTS_MAX)), None, _GET_HEADERS)
            if status == 200:
                self._events.extend(_decode(data).get("events") or ())
            elif status in (404, 410):
                self._gone()
            else:
                raise CallFailed("GET events", status, data)
            if not self._events and deadline is not None and time.monotonic() >= deadline:
                return None
        event = self._events.popleft()
        kind = event.get("type")
        if kind == "text":
            return event["data"]
        if kind == "binary":
            return bytes(event["data"])
        self.closed = WebSocketClosed(int(event.get("code") or 1005), event.get("reason") or "")
        self._events.clear()
        self.request._mark_gone()
        raise self.closed

    def _gone(self) -> None:
        if self.closed is None:
            # After our own close, Prack ends the worker's side at once;
            # otherwise the client went without a close frame.
            self.closed = WebSocketClosed(*self.close_sent) if self.close_sent \
                else WebSocketClosed(1006, "")
        self.request._mark_gone()

    def send(self, data) -> None:
        """Send one message: str as text, bytes as binary."""
        self.send_many([data])

    def send_many(self, messages) -> None:
        """Send several messages in one call (in order)."""
        out = []
        for data in messages:
            if isinstance(data, str):
                out.append({"type": "text", "data": data})
            elif isinstance(data, (bytes, bytearray, memoryview)):
                out.append({"type": "binary", "data": bytes(data)})
            else:
                raise TypeError("a WebSocket message is str or bytes, not %s"
                                % type(data).__name__)
        self._post(out)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (once; later calls do nothing)."""
        if self.close_sent:
            return
        self.close_sent = (int(code), reason)
        try:
            self._post([{"type": "close", "code": int(code), "reason": reason}])
        except WebSocketClosed:
            pass

    def _post(self, messages: list) -> None:
        if self.close_sent and messages[-1]["type"] != "close":
            raise self.closed or WebSocketClosed(*self.close_sent)
        with self._send_lock:
            status, data = self._send.call("POST", _path(self.request.id, "send"),
                                           _encode({"messages": messages}), _CALL_HEADERS)
        if status in (404, 410):
            self._gone()
            raise self.closed
        if status != 200:
            raise CallFailed("POST send", status, data)

    def release(self) -> None:
        self._recv.abort()
        self._recv.close()
        self._send.close()


def run_websocket(front, req, resp, pairs) -> None:
    """Accept the WebSocket (`POST .../head` 101), run `resp.session(ws)`,
    and close with 1000 when it returns (1011 when it raises) unless it
    closed already."""
    api = Lease(front)
    headers = pairs(resp.headers)
    if resp.subprotocol:
        headers.append(("Sec-WebSocket-Protocol", resp.subprotocol))
    ws = None
    try:
        status, data = api.call("POST", _path(req.id, "head"),
                                _encode({"status": 101, "headers": headers}), _CALL_HEADERS)
        api.close()
        if status != 200:
            failure = CallFailed("POST .../head", status, data)
            if status == 410:
                req._mark_gone()
            else:
                log.error("WebSocket accept of %s: %s", req.id, failure)
            if resp.refused is not None:
                resp.refused(str(failure))
            return
        ws = WebSocket(front, req, resp.subprotocol)
        code, reason = 1000, ""
        try:
            resp.session(ws)
        except WebSocketClosed:
            pass
        except Exception:
            log.exception("WebSocket session on %s failed", req.env.get("PATH_INFO"))
            code, reason = 1011, "internal error"
        if ws.closed is None and not ws.close_sent:
            ws.close(code, reason)
    except (OSError, http.client.HTTPException) as exc:
        log.warning("WebSocket %s cut short: %s", req.id, exc)
        if ws is None and resp.refused is not None:
            resp.refused(str(exc))
    finally:
        if ws is not None:
            ws.release()
        api.close()
        req._finish()
