"""Prack's Python worker SDK and its WSGI/ASGI adapters.

`serve(handler, fronts=[...], concurrency=N)` pulls requests from one or
more Prack fronts and answers each with `handler(Request) -> Response`;
`prack-worker module:app` runs a WSGI or ASGI application that way.
"""
from prack.worker.sdk import (DEFAULT_FRONT, ClientGone, Request, Response, WebSocket,
                              WebSocketClosed, WebSocketResponse, Worker, serve)

__all__ = ["DEFAULT_FRONT", "ClientGone", "Request", "Response", "WebSocket", "WebSocketClosed",
           "WebSocketResponse", "Worker", "serve"]
