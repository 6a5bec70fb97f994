"""Run an ASGI 3 application (HTTP and lifespan scopes) as a Prack handler.

The application runs on one asyncio event loop in its own thread; each
request, handed over by a pool thread, is a task on that loop, so requests
are concurrent as the application expects. The response is gathered whole
(Prack does not stream) and returned to the SDK.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import urllib.parse

from prack.worker.sdk import Request, Response

log = logging.getLogger("prack.worker")

_INTERNAL_ERROR = Response(500, [("Content-Type", "text/plain; charset=utf-8")],
                           b"Internal Server Error\n")
_HEADER_KEYS = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}


def scope_for(req: Request, state: dict) -> dict:
    """The ASGI HTTP scope of a Prack request."""
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

    def __call__(self, req: Request) -> Response:
        return asyncio.run_coroutine_threadsafe(self._call(req), self.loop).result()

    async def _call(self, req: Request) -> Response:
        scope = scope_for(req, self.state)
        body_sent = False
        finished = asyncio.Event()
        status = None
        headers: list = []
        chunks: list[bytes] = []

        async def receive():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal status, headers
            kind = message["type"]
            if kind == "http.response.start":
                if status is not None:
                    raise RuntimeError("http.response.start sent twice")
                status = int(message["status"])
                headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                           for n, v in message.get("headers", ())]
            elif kind == "http.response.body":
                if status is None:
                    raise RuntimeError("http.response.body before http.response.start")
                if finished.is_set():
                    raise RuntimeError("http.response.body after the response ended")
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    finished.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("ASGI application failed on %s %s", scope["method"], scope["path"])
            if not finished.is_set():
                return _INTERNAL_ERROR
        finally:
            finished.set()
        if status is None:
            log.error("ASGI application returned without a response to %s %s",
                      scope["method"], scope["path"])
            return _INTERNAL_ERROR
        return Response(status, headers, b"".join(chunks))
