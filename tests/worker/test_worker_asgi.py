"""The ASGI adapter: a real Starlette application (with a lifespan) behind
Prack answering exactly as under uvicorn."""
from __future__ import annotations

import asyncio

from apps import starlette_app
from apps.compare import REQUESTS, compare, fetch
from apps.procs import UvicornServer, WorkerProcess
from prack.worker.asgi import ASGIHandler, scope_for
from prack.worker.sdk import Request

ENV = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/a%20b", "QUERY_STRING": "x=1",
       "SERVER_NAME": "example.com", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.0",
       "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5555", "CONTENT_TYPE": "text/plain",
       "CONTENT_LENGTH": "2", "HTTP_X_FORWARDED_FOR": "1.2.3.4", "rack.url_scheme": "http"}


def test_scope():
    scope = scope_for(Request("0" * 32, ENV, b"hi", 2e9), {"k": 1})
    assert scope["type"] == "http" and scope["http_version"] == "1.0"
    assert scope["path"] == "/a b" and scope["raw_path"] == b"/a%20b"
    assert scope["query_string"] == b"x=1"
    assert sorted(scope["headers"]) == [(b"content-length", b"2"), (b"content-type", b"text/plain"),
                                        (b"x-forwarded-for", b"1.2.3.4")]
    assert scope["client"] == ("10.0.0.1", 5555) and scope["server"] == ("example.com", 8080)
    assert scope["state"] == {"k": 1}


def test_websocket_scope():
    env = dict(ENV, SERVER_PROTOCOL="HTTP/1.1", HTTP_UPGRADE="websocket",
               HTTP_CONNECTION="keep-alive, Upgrade", HTTP_SEC_WEBSOCKET_PROTOCOL="chat, json",
               HTTP_SEC_WEBSOCKET_VERSION="13", HTTP_SEC_WEBSOCKET_KEY="dGhlIHNhbXBsZSBub25jZQ==")
    scope = scope_for(Request("0" * 32, env, b"", 2e9), {})
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["subprotocols"] == ["chat", "json"] and "method" not in scope
    assert (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==") in scope["headers"]
    # Upgrade in HTTP/1.0 means nothing (RFC 9110 7.8); nor without Connection: upgrade.
    for other in (dict(env, SERVER_PROTOCOL="HTTP/1.0"), dict(env, HTTP_CONNECTION="close"),
                  dict(env, REQUEST_METHOD="POST")):
        assert scope_for(Request("0" * 32, other, b"", 2e9), {})["type"] == "http"


def test_lifespan_and_failures_in_process():
    events = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                events.append(msg["type"])
                if msg["type"] == "lifespan.startup":
                    scope["state"]["ready"] = True
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = (await receive())["body"]
        if scope["path"] == "/fail":
            raise RuntimeError("fail")
        if scope["path"] == "/silent":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-ready", str(scope["state"]["ready"]).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    handler = ASGIHandler(app)
    handler.start()
    try:
        resp = handler(Request("0" * 32, ENV, b"hi", 2e9))
        # more_body=True: streamed; each send() returns once its chunk is taken.
        assert (resp.status, resp.headers) == (200, [("x-ready", "True")])
        assert list(resp.body) == [b"hi", b"!"]
        resp.body.close()
        for path in ["/fail", "/silent"]:
            assert handler(Request("0" * 32, dict(ENV, PATH_INFO=path), b"", 2e9)).status == 500
    finally:
        handler.close()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_app_without_lifespan_is_served():
    async def app(scope, receive, send):
        assert scope["type"] == "http", "no lifespan here"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    handler = ASGIHandler(app)
    handler.start()
    try:
        assert handler(Request("0" * 32, ENV, b"", 2e9)).status == 204
    finally:
        handler.close()


def test_starlette_behind_prack_matches_uvicorn(start_server):
    server = start_server()
    conventional = UvicornServer(starlette_app.app)
    try:
        with WorkerProcess("--interface", "asgi", "--api", server.api, "--concurrency", "4", "--wait", "1",
                           "apps.starlette_app:app") as worker:
            assert compare(server.port, conventional.port,
                           REQUESTS + [("GET", "/state", None, {})]) >= 15
            assert fetch(server.port, "GET", "/state", None, {})[2] == b'{"started":"yes"}'
            assert worker.stop() == 0
    finally:
        conventional.close()
