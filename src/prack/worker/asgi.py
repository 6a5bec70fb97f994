"""Run an ASGI 3 application (HTTP, WebSocket and lifespan scopes) as a
Prack handler.

The application runs on one asyncio event loop in its own thread; each
request, handed over by a lane, is a task on that loop, so requests are
concurrent as the application expects. The lane waits only until the
response is decided:

* a response whose body comes in one `http.response.body` is returned whole
  (posted with the others of the lane's batch);
* `more_body=True` makes it a streamed response: the SDK sends each chunk as
  the application sends it, and the application's `send()` returns once
  Prack took the chunk (backpressure). After the body, `receive()` waits for
  the client to go (`http.disconnect`), learned from Prack's state long-poll;
* a `websocket` scope is accepted (status 101 through Prack) or refused
  (403, or the denial response the application sends); messages go through
  Prack's WebSocket events and send calls.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import urllib.parse

from prack.worker.sdk import Request, Response, WebSocketResponse, is_websocket
from prack.worker.streams import ClientGone, WebSocketClosed

log = logging.getLogger("prack.worker")

_INTERNAL_ERROR = Response(500, [("Content-Type", "text/plain; charset=utf-8")],
                           b"Internal Server Error\n")
_HEADER_KEYS = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}


class ClientDisconnected(ClientGone):
    """send() after the client has gone (ASGI 2.4: an OSError)."""


def scope_for(req: Request, state: dict) -> dict:
    """The ASGI HTTP (or WebSocket) scope of a Prack request."""
    env = req.env
    headers = []
    for key, value in env.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-").encode("latin-1")
        else:
            name = _HEADER_KEYS.get(key)
            if name is None:
                continue
        headers.append((name, value.encode("latin-1")))
    raw_path = env.get("PATH_INFO", "/")
    protocol = env.get("SERVER_PROTOCOL", "HTTP/1.1")
    if is_websocket(env):
        protocols = env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
        scheme = "wss" if env.get("rack.url_scheme") == "https" else "ws"
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": protocol[5:] if protocol.startswith("HTTP/") else "1.1",
            "scheme": scheme,
            "path": urllib.parse.unquote(raw_path, errors="surrogateescape"),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": env.get("QUERY_STRING", "").encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": (env.get("REMOTE_ADDR", ""), int(env.get("REMOTE_PORT") or 0)),
            "server": (env.get("SERVER_NAME", ""), int(env.get("SERVER_PORT") or 0)),
            "subprotocols": [p.strip() for p in protocols.split(",") if p.strip()],
            "state": dict(state),
            "extensions": {"websocket.http.response": {}},
        }
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": protocol[5:] if protocol.startswith("HTTP/") else "1.1",
        "method": env.get("REQUEST_METHOD", "GET"),
        "scheme": env.get("rack.url_scheme", "http"),
        "path": urllib.parse.unquote(raw_path, errors="surrogateescape"),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": env.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (env.get("REMOTE_ADDR", ""), int(env.get("REMOTE_PORT") or 0)),
        "server": (env.get("SERVER_NAME", ""), int(env.get("SERVER_PORT") or 0)),
        "state": dict(state),
        "extensions": {},
    }


class ASGIHandler:
    """handler(Request) -> Response around an ASGI application. start() runs
    the loop and the lifespan startup; close() the shutdown."""

    def __init__(self, app, lifespan: bool = True):
        self.app = app
        self.lifespan = lifespan
        self.state: dict = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="prack-asgi")
        # Threads for WebSocket sends (blocking calls, each short but for
        # backpressure); made as needed.
        self.senders = concurrent.futures.ThreadPoolExecutor(64, "prack-ws-send")
        self._lifespan_queue: asyncio.Queue | None = None
        self._lifespan_task = None
        self._shutdown_done = None

    # -- lifespan ----------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()
        if self.lifespan:
            asyncio.run_coroutine_threadsafe(self._startup(), self.loop).result()

    def close(self) -> None:
        if self.lifespan and self._lifespan_task is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(30)
            except Exception:
                log.exception("ASGI lifespan shutdown failed")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.senders.shutdown(wait=False)
        self.loop.close()

    async def _startup(self) -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        started = self.loop.create_future()
        self._shutdown_done = self.loop.create_future()
        self._lifespan_queue = inbox

        async def send(message):
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                started.set_result(None)
            elif kind == "lifespan.startup.failed":
                started.set_exception(RuntimeError("lifespan startup failed: %s"
                                                   % message.get("message", "")))
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if not self._shutdown_done.done():
                    self._shutdown_done.set_result(message)

        async def run():
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                     "state": self.state}
            try:
                await self.app(scope, inbox.get, send)
            except Exception as exc:
                if not started.done():
                    # An application without lifespan support raises here;
                    # it is served all the same (as uvicorn's "auto").
                    log.info("ASGI application does not support lifespan (%s)", exc)
                    self._lifespan_task = None
                    started.set_result(None)
                    return
                log.exception("ASGI lifespan task failed")
            if not started.done():
                started.set_result(None)

        await inbox.put({"type": "lifespan.startup"})
        self._lifespan_task = self.loop.create_task(run())
        await started

    async def _shutdown(self) -> None:
        await self._lifespan_queue.put({"type": "lifespan.shutdown"})
        done, _ = await asyncio.wait([self._shutdown_done, self._lifespan_task], timeout=30)
        if self._shutdown_done.done():
            message = self._shutdown_done.result()
            if message["type"] == "lifespan.shutdown.failed":
                log.error("ASGI lifespan shutdown failed: %s", message.get("message", ""))

    # -- requests ------------------------------------------------------------------

    def __call__(self, req: Request):
        if is_websocket(req.env):
            call = _WebSocketCall(self, req)
        else:
            call = _HTTPCall(self, req)
        return asyncio.run_coroutine_threadsafe(call.start(), self.loop).result()


_CHUNK = 65536


class _HTTPCall:
    """One HTTP request on the loop. `decided` gets the Response the lane
    returns: whole, or streamed through `chunks` to the stream thread."""

    def __init__(self, handler: ASGIHandler, req: Request):
        self.handler = handler
        self.loop = handler.loop
        self.req = req
        self.scope = scope_for(req, handler.state)
        self.decided: asyncio.Future | None = None
        self.status = None
        self.headers: list = []
        self.chunks: queue.SimpleQueue | None = None    # -> the stream thread
        self.pending: asyncio.Future | None = None      # the chunk being posted
        self.finished = asyncio.Event()                 # the response is complete
        self.gone = asyncio.Event()                     # the client has gone
        self.body_left = True
        self.stream_ended = False     # the last chunk was handed to the stream thread
        self.stream_done = False      # ... and posted
        self.watching = False
        self.remote = bool(req.env.get("prack.input")) and req._front is not None

    async def start(self) -> Response:
        self.decided = self.loop.create_future()
        task = self.loop.create_task(self.run())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await self.decided

    async def run(self) -> None:
        scope = self.scope
        try:
            await self.handler.app(scope, self.receive, self.send)
        except Exception as exc:
            if isinstance(exc, ClientGone) and self.gone.is_set():
                log.debug("ASGI application stopped: the client of %s has gone", self.req.id)
            else:
                log.exception("ASGI application failed on %s %s", scope["method"],
                              scope["path"])
            self._end(error="%s: %s" % (exc.__class__.__name__, exc))
            return
        if self.status is None:
            log.error("ASGI application returned without a response to %s %s",
                      scope["method"], scope["path"])
        self._end(error="the application returned before the end of its response")

    def _end(self, error: str) -> None:
        """The application is done: settle whatever it left open."""
        self.finished.set()
        if not self.decided.done():
            self.decided.set_result(_INTERNAL_ERROR)
        elif self.chunks is not None and not self.stream_ended:
            self.stream_ended = True
            self.chunks.put(RuntimeError(error))

    async def receive(self) -> dict:
        if self.body_left:
            if not self.remote:
                self.body_left = False
                return {"type": "http.request", "body": self.req.body, "more_body": False}
            data = await self.loop.run_in_executor(None, self.req.input.read, _CHUNK)
            if not data:
                self.body_left = False
            return {"type": "http.request", "body": data, "more_body": bool(data)}
        if not self.finished.is_set() and not self.gone.is_set():
            if not self.watching:
                self.watching = True
                self.req.on_gone(lambda: self.loop.call_soon_threadsafe(self.gone.set))
            done = self.loop.create_task(self.finished.wait())
            gone = self.loop.create_task(self.gone.wait())
            await asyncio.wait([done, gone], return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            gone.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if self.gone.is_set():
            raise ClientDisconnected("the client has gone")
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                            for n, v in message.get("headers", ())]
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("http.response.body before http.response.start")
            if self.finished.is_set():
                raise RuntimeError("http.response.body after the response ended")
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self.chunks is None and not more:
                self.finished.set()
                self.decided.set_result(Response(self.status, self.headers, body))
                return
            if self.chunks is None:
                self._stream()
            if not more:
                self.finished.set()
            await self._put(body, last=not more)
        else:
            raise RuntimeError("unexpected ASGI message %r in an HTTP scope" % kind)

    def _stream(self) -> None:
        self.chunks = queue.SimpleQueue()
        self.decided.set_result(Response(self.status, self.headers, _Relay(self)))

    async def _put(self, body: bytes, last: bool) -> None:
        """Hand a chunk to the stream thread; return once it is posted."""
        posted = self.loop.create_future()
        self.pending = posted
        if last:
            self.stream_ended = True
        self.chunks.put((body, posted, last))
        await posted

    def relay(self):
        """The streamed body, in the stream thread: each chunk as the
        application sends it. Resuming the generator means the previous
        chunk was posted: its send() returns then."""
        loop = self.loop
        while True:
            item = self.chunks.get()
            if isinstance(item, Exception):
                raise item
            body, posted, last = item
            if body:
                yield body
            loop.call_soon_threadsafe(_settle, posted, None)
            if last:
                self.stream_done = True
                return

    def relay_closed(self) -> None:
        """On the loop, once the SDK is done with the stream: a chunk still
        waiting means the client (or Prack) went."""
        if not self.stream_done:
            self.gone.set()
            if self.pending is not None:
                _settle(self.pending, ClientDisconnected("the client has gone"))


class _Relay:
    """The body of a streamed ASGI response, as the SDK iterates and closes it."""

    def __init__(self, call: _HTTPCall):
        self.call = call
        self.gen = None

    def __iter__(self):
        self.gen = self.call.relay()
        return self.gen

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()
        self.call.loop.call_soon_threadsafe(self.call.relay_closed)


def _settle(future: asyncio.Future, error) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _WebSocketCall:
    """One WebSocket on the loop. The lane gets a WebSocketResponse (the
    application accepted) or an ordinary Response (it refused); after the
    accept, receive() is served by the stream thread running the session
    (one long-poll at a time) and send() by a short blocking call."""

    def __init__(self, handler: ASGIHandler, req: Request):
        self.handler = handler
        self.loop = handler.loop
        self.req = req
        self.scope = scope_for(req, handler.state)
        self.decided: asyncio.Future | None = None
        self.connected = False        # websocket.connect delivered
        self.accepted: asyncio.Future | None = None   # -> the WebSocket once Prack accepted
        self.ws = None
        self.closed = False           # a close was sent, or the client went
        self.denial: tuple | None = None
        self.denial_parts: list[bytes] = []
        self.wants = queue.SimpleQueue()   # receive() requests for the session thread
        self.done = threading.Event()      # the application returned
        self.close_code = 1000

    async def start(self):
        self.decided = self.loop.create_future()
        task = self.loop.create_task(self.run())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await self.decided

    async def run(self) -> None:
        try:
            await self.handler.app(self.scope, self.receive, self.send)
            refused, code = 403, 1000
        except Exception as exc:
            if isinstance(exc, (ClientGone, WebSocketClosed)) and self.closed:
                refused, code = 403, 1000
            else:
                log.exception("ASGI WebSocket application failed on %s", self.scope["path"])
                refused, code = 500, 1011
        self.close_code = code
        self.done.set()
        self.wants.put(None)
        if not self.decided.done():
            self.decided.set_result(Response(refused, [("Content-Type", "text/plain")],
                                             b"" if refused == 403 else b"Internal Server Error\n"))
        elif self.accepted is not None and not self.accepted.done():
            self.accepted.cancel()

    def session(self, ws) -> None:
        """In the stream thread, once Prack accepted: serve receive()
        requests until the application is done."""
        self.ws = ws
        self.loop.call_soon_threadsafe(_settle, self.accepted, None)
        while True:
            want = self.wants.get()
            if want is None:
                break
            try:
                message = ws.receive()
                result = {"type": "websocket.receive", "text": message} \
                    if isinstance(message, str) else {"type": "websocket.receive",
                                                      "bytes": message}
            except WebSocketClosed as closed:
                self.closed = True
                result = {"type": "websocket.disconnect", "code": closed.code,
                          "reason": closed.reason}
            except Exception as exc:
                self.closed = True
                log.warning("WebSocket %s: receiving failed: %s", self.req.id, exc)
                result = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            self.loop.call_soon_threadsafe(_settle_value, want, result)
        self.done.wait()
        if ws.closed is None and not ws.close_sent:
            ws.close(self.close_code, "")

    def refused(self, reason: str) -> None:
        """In the stream thread: Prack did not accept (the client went)."""
        self.closed = True
        self.loop.call_soon_threadsafe(_settle, self.accepted,
                                       ClientDisconnected("WebSocket not accepted: " + reason))

    async def receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.ws is None:
            if self.accepted is None:
                raise RuntimeError("receive() before websocket.accept")
            await self.accepted
        if self.closed and self.ws.closed is not None:
            closed = self.ws.closed
            return {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}
        want = self.loop.create_future()
        self.wants.put(want)
        return await want

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted is not None or self.denial is not None:
                raise RuntimeError("websocket.accept after the handshake was answered")
            headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                       for n, v in message.get("headers", ())]
            self.accepted = self.loop.create_future()
            self.decided.set_result(WebSocketResponse(self.session, message.get("subprotocol"),
                                                      headers, refused=self.refused))
            await self.accepted
        elif kind == "websocket.send":
            if self.ws is None:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.closed:
                raise ClientDisconnected("the WebSocket is closed")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                raise RuntimeError("websocket.send without text or bytes")
            await self._blocking(self.ws.send, data)
        elif kind == "websocket.close":
            if self.ws is None and not self.decided.done():
                self.closed = True
                self.decided.set_result(Response(403, [("Content-Type", "text/plain")], b""))
                return
            if self.closed:
                return
            self.closed = True
            await self._blocking(self.ws.close, int(message.get("code") or 1000),
                                 message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.decided.done():
                raise RuntimeError("a denial response after the handshake was answered")
            self.denial = (int(message["status"]),
                           [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                            for n, v in message.get("headers", ())])
        elif kind == "websocket.http.response.body":
            if self.denial is None or self.decided.done():
                raise RuntimeError("websocket.http.response.body out of order")
            self.denial_parts.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self.closed = True
                self.decided.set_result(Response(self.denial[0], self.denial[1],
                                                 b"".join(self.denial_parts)))
        else:
            raise RuntimeError("unexpected ASGI message %r in a WebSocket scope" % kind)

    async def _blocking(self, func, *args):
        try:
            return await self.loop.run_in_executor(self.handler.senders, func, *args)
        except WebSocketClosed:
            self.closed = True
            raise ClientDisconnected("the WebSocket is closed") from None


def _settle_value(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)
