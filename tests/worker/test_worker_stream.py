"""The SDK and its adapters against a real prack-server: streamed responses
(each chunk reaches the client while the application is still producing the
next), disconnect notices, large request bodies and WebSockets.

The worker runs in this process (sdk.Worker on threads) so the tests can hold
an application between two chunks with an Event they release; every wait is
bounded."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time

import pytest

from conftest import read_head, wait_for

from prack.worker import sdk
from prack.worker.asgi import ASGIHandler
from prack.worker.wsgi import WSGIHandler

WAIT = 10.0          # bound on every wait for something that should happen


class Running:
    """sdk.Worker around `handler` for the server, stopped at the end."""

    def __init__(self, server, handler, concurrency: int = 2):
        self.handler = handler
        start = getattr(handler, "start", None)
        if start is not None:
            start()
        self.worker = sdk.Worker(handler, [server.api], concurrency, wait=0.5).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.worker.stop()
        assert self.worker.join(WAIT), "streams still open at the end of the test"
        close = getattr(self.handler, "close", None)
        if close is not None:
            close()


def get(server, path: str, version: str = "HTTP/1.1"):
    """A GET on a raw socket; returns (socket file, status line, headers)."""
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    sock.sendall(("GET %s %s\r\nHost: test\r\n\r\n" % (path, version)).encode())
    f = sock.makefile("rb")
    status, headers = read_head(f)
    return sock, f, status, headers


def read_chunk(f) -> bytes:
    """One chunk of a chunked body (b"" for the last; the trailer section
    and its final CRLF are left to read)."""
    size = int(f.readline().split(b";")[0], 16)
    if size == 0:
        return b""
    data = f.read(size)
    assert f.readline() == b"\r\n"
    return data


def test_sdk_generator_chunks_leave_as_they_are_made(start_server):
    server = start_server(acceptors=1)
    release = threading.Event()
    closed = threading.Event()

    def body():
        try:
            yield b"first\n"
            assert release.wait(WAIT)
            yield b"second\n"
        finally:
            closed.set()

    def handler(request):
        return sdk.Response(200, [("Content-Type", "text/plain")], body(),
                            trailers=None)

    with Running(server, handler):
        sock, f, status, headers = get(server, "/")
        try:
            assert status.startswith(b"HTTP/1.1 200")
            assert headers.get("transfer-encoding") == "chunked"
            assert read_chunk(f) == b"first\n"       # while the generator waits
            assert not closed.is_set()
            release.set()
            assert read_chunk(f) == b"second\n"
            assert read_chunk(f) == b""
            assert closed.wait(WAIT)                 # the SDK closed the generator
        finally:
            sock.close()


def test_sdk_body_kinds(start_server):
    """bytes, a list or tuple of bytes (joined) and None (empty) are whole
    responses with a Content-Length; an iterator is chunked."""
    server = start_server(acceptors=1)
    bodies = {"/bytes": b"abc", "/list": [b"a", b"bc"], "/tuple": (b"ab", b"c"), "/none": None,
              "/iter": iter([b"a", b"b", b"c"])}

    def handler(request):
        return sdk.Response(200, [], bodies[request.env["PATH_INFO"]])

    with Running(server, handler):
        conn = server.client()
        for path, body in bodies.items():
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.read() == (b"" if path == "/none" else b"abc"), path
            if path == "/iter":
                assert resp.getheader("Transfer-Encoding") == "chunked"
            else:
                assert resp.getheader("Content-Length") == ("0" if body is None else "3"), path


def test_sdk_trailers_filled_in_by_the_generator(start_server):
    """Response.trailers, set while the body is produced, follow the last
    chunk."""
    server = start_server(acceptors=1)

    def handler(request):
        resp = sdk.Response(200, [("Trailer", "X-Checksum")], None)

        def body():
            digest = hashlib.sha256()
            for part in (b"alpha ", b"beta"):
                digest.update(part)
                yield part
            resp.trailers = {"X-Checksum": digest.hexdigest()}

        resp.body = body()
        return resp

    with Running(server, handler):
        sock, f, status, headers = get(server, "/")
        try:
            assert read_chunk(f) + read_chunk(f) == b"alpha beta"
            assert read_chunk(f) == b""
            trailer = f.readline()
            assert trailer.decode().strip() == "X-Checksum: " + hashlib.sha256(
                b"alpha beta").hexdigest()
            assert f.readline() == b"\r\n"
        finally:
            sock.close()


def test_wsgi_generator_streams_and_is_closed(start_server):
    """A WSGI application returning a generator: each chunk reaches the
    client when it is yielded, not when the application finishes; close()
    is called (PEP 3333). HTTP/1.0 gets a close-delimited body."""
    server = start_server(acceptors=1)
    release = threading.Event()
    closed = []

    class Body:
        def __init__(self):
            self.parts = self.produce()

        def produce(self):
            yield b"data: one\n\n"
            assert release.wait(WAIT)
            yield b"data: two\n\n"

        def __iter__(self):
            return self.parts

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Body()

    with Running(server, WSGIHandler(app)):
        sock, f, status, headers = get(server, "/events")
        try:
            assert headers.get("content-type") == "text/event-stream"
            assert read_chunk(f) == b"data: one\n\n"
            release.set()
            assert read_chunk(f) == b"data: two\n\n"
            assert read_chunk(f) == b""
        finally:
            sock.close()
        deadline = time.monotonic() + WAIT
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closed == [True]

        release.set()
        sock, f, status, headers = get(server, "/events", "HTTP/1.0")
        try:
            assert status.startswith(b"HTTP/1.") and b" 200 " in status
            assert "transfer-encoding" not in headers and "content-length" not in headers
            assert f.read() == b"data: one\n\ndata: two\n\n"      # until the close
        finally:
            sock.close()


def test_wsgi_list_is_one_response(start_server):
    server = start_server(acceptors=1)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"all ", b"at once"]

    with Running(server, WSGIHandler(app)):
        conn = server.client()
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == "11"
        assert resp.read() == b"all at once"


def test_asgi_more_body_streams(start_server):
    server = start_server(acceptors=1)
    release = threading.Event()
    sent = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        sent.append("first")         # send() returned: Prack took the chunk
        await asyncio.get_running_loop().run_in_executor(None, release.wait, WAIT)
        await send({"type": "http.response.body", "body": b"second\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with Running(server, ASGIHandler(app)):
        sock, f, status, headers = get(server, "/")
        try:
            assert read_chunk(f) == b"first\n"
            wait_for(lambda: sent == ["first"], WAIT)    # its post was answered
            release.set()
            assert read_chunk(f) == b"second\n"
            assert read_chunk(f) == b""
        finally:
            sock.close()


def _hang_up(sock) -> float:
    """Close the client side abruptly; the time it happened."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    return time.monotonic()


def test_sdk_notices_a_disconnect_within_a_second(start_server):
    """A handler streaming slowly learns that its client went within 1 s
    (request.wait_gone), and its generator is closed."""
    server = start_server(acceptors=1)
    noticed = []
    closed = threading.Event()

    def body(request):
        try:
            yield b"tick\n"
            if request.wait_gone(WAIT):
                noticed.append(time.monotonic())
            yield b"late\n"
        finally:
            closed.set()

    def handler(request):
        return sdk.Response(200, [("Content-Type", "text/plain")], body(request))

    with Running(server, handler):
        sock, f, status, headers = get(server, "/")
        assert read_chunk(f) == b"tick\n"
        f.close()
        left = _hang_up(sock)
        assert closed.wait(WAIT)
        assert noticed and noticed[0] - left < 1.0


def test_a_handler_at_work_learns_its_client_went(start_server):
    """Not only streams: a handler busy on an ordinary request can ask
    (request.is_gone / wait_gone), and learns of the hang-up within 1 s."""
    server = start_server(acceptors=1)
    started = threading.Event()
    noticed = []

    def handler(request):
        assert request.is_gone() is False
        started.set()
        if request.wait_gone(WAIT):
            noticed.append(time.monotonic())
        return sdk.Response(200, [], b"too late")

    with Running(server, handler):
        sock = socket.create_connection((server.host, server.port), timeout=WAIT)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        assert started.wait(WAIT)
        left = _hang_up(sock)
        wait_for(lambda: noticed, WAIT)
        assert noticed[0] - left < 1.0


def test_a_slow_client_slows_the_generator(start_server):
    """Backpressure: while the client reads nothing, the generator stops
    being asked for chunks long before its end; then every byte arrives in
    order."""
    server = start_server(acceptors=1)
    chunk = 64 * 1024
    total = 64 * 1024 * 1024
    produced = [0]

    def body():
        for i in range(total // chunk):
            produced[0] += chunk
            yield (b"%08d" % i) * (chunk // 8)

    with Running(server, lambda request: sdk.Response(200, [], body())):
        sock, f, status, headers = get(server, "/big")
        try:
            assert headers.get("transfer-encoding") == "chunked"
            # Wait until production stalls (no progress for half a second).
            deadline = time.monotonic() + WAIT
            last, since = -1, time.monotonic()
            while time.monotonic() - since < 0.5:
                assert time.monotonic() < deadline, "the generator never stalled"
                if produced[0] != last:
                    last, since = produced[0], time.monotonic()
                time.sleep(0.02)
            assert produced[0] < total // 4, produced[0]
            got = 0
            i = 0
            pending = b""
            while True:
                data = read_chunk(f)
                if not data:
                    break
                pending += data
                while len(pending) >= chunk:
                    assert pending[:chunk] == (b"%08d" % i) * (chunk // 8)
                    pending = pending[chunk:]
                    i += 1
                got += len(data)
            assert got == total and not pending
        finally:
            sock.close()


def test_asgi_disconnect_is_delivered(start_server):
    """After its body, an ASGI application's receive() returns
    http.disconnect when the client goes (within 1 s); a later send()
    raises an OSError."""
    server = start_server(acceptors=1)
    events = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello\n", "more_body": True})
        message = await receive()
        events.append((message["type"], time.monotonic()))
        try:
            await send({"type": "http.response.body", "body": b"more\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"more\n", "more_body": True})
        except OSError as exc:
            events.append(("send failed", exc))
        done.set()

    with Running(server, ASGIHandler(app)):
        sock, f, status, headers = get(server, "/")
        assert read_chunk(f) == b"hello\n"
        f.close()
        left = _hang_up(sock)
        assert done.wait(WAIT)
    assert events[0][0] == "http.disconnect" and events[0][1] - left < 1.0
    assert events[1][0] == "send failed"


def test_stream_error_aborts_the_response(start_server):
    """A generator that raises mid-stream: the client's response ends
    incomplete (no last chunk) and the connection closes."""
    server = start_server(acceptors=1)

    def body():
        yield b"partial\n"
        raise RuntimeError("the database went away")

    with Running(server, lambda request: sdk.Response(200, [], body())):
        sock, f, status, headers = get(server, "/")
        try:
            assert read_chunk(f) == b"partial\n"
            with pytest.raises((ValueError, ConnectionError)):
                read_chunk(f)          # EOF where the next chunk size should be
        finally:
            sock.close()
    server.wait_log("the database went away|abort", timeout=WAIT)


LARGE = 3 * 1024 * 1024


def _upload(server, path: str, payload: bytes):
    conn = server.client(timeout=30)
    conn.request("POST", path, body=payload, headers={"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_large_body_through_wsgi_input(start_server):
    """A body larger than limits.inline_body_size stays with Prack
    (prack.input); wsgi.input streams it to the application byte-exact."""
    server = start_server(acceptors=1, limits_inline_body_size=65536,
                          limits_max_body_size=16 * 1024 * 1024)
    payload = os.urandom(LARGE)
    seen = {}

    def app(environ, start_response):
        seen["prack.input"] = environ.get("prack.input")
        digest = hashlib.sha256()
        stream = environ["wsgi.input"]
        while True:
            piece = stream.read(100000)
            if not piece:
                break
            digest.update(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest.hexdigest().encode()]

    with Running(server, WSGIHandler(app)):
        assert _upload(server, "/up", payload) == (200, hashlib.sha256(payload).hexdigest()
                                                   .encode())
        assert seen["prack.input"]                      # it did not travel inline
        small = b"x" * 1000
        assert _upload(server, "/up", small)[1] == hashlib.sha256(small).hexdigest().encode()


def test_large_body_as_request_body_after_100_continue(start_server):
    """The SDK's request.body reads a spooled body whole; the client, which
    asked for 100-continue, sends it only once the worker took the request."""
    server = start_server(acceptors=1, limits_inline_body_size=65536,
                          limits_max_body_size=16 * 1024 * 1024)
    payload = os.urandom(LARGE)

    def handler(request):
        body = request.body
        return sdk.Response(200, [], b"%d %s" % (len(body), hashlib.sha256(body).hexdigest()
                                                  .encode()))

    with Running(server, handler):
        with server.raw(timeout=WAIT) as client:
            client.send(b"PUT /up HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                        b"Content-Length: %d\r\n\r\n" % LARGE)
            interim = client.read_response()
            assert interim.status == 100
            client.send(payload)
            resp = client.read_response()
            assert resp.status == 200
            assert resp.body == b"%d %s" % (LARGE, hashlib.sha256(payload).hexdigest().encode())


def test_large_body_through_asgi_receive(start_server):
    server = start_server(acceptors=1, limits_inline_body_size=65536,
                          limits_max_body_size=16 * 1024 * 1024)
    payload = os.urandom(LARGE)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        digest = hashlib.sha256()
        messages = 0
        while True:
            message = await receive()
            digest.update(message["body"])
            messages += 1
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": b"%s %d" % (digest.hexdigest().encode(), messages)})

    with Running(server, ASGIHandler(app)):
        status, body = _upload(server, "/up", payload)
        digest, messages = body.split()
        assert status == 200 and digest == hashlib.sha256(payload).hexdigest().encode()
        assert int(messages) > 1                      # it came in pieces


# -- WebSockets -----------------------------------------------------------------------

def starlette_echo():
    """A Starlette WebSocket endpoint written for uvicorn, unchanged."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    closes = []

    async def echo(websocket):
        await websocket.accept(subprotocol="echo" if "echo" in websocket.scope["subprotocols"]
                               else None)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    closes.append(message.get("code"))
                    return
                if message.get("text") is not None:
                    if message["text"] == "close me":
                        await websocket.close(code=4000, reason="as asked")
                        return
                    await websocket.send_text("echo: " + message["text"])
                else:
                    await websocket.send_bytes(message["bytes"][::-1])
        except WebSocketDisconnect as exc:
            closes.append(exc.code)

    async def refuse(websocket):
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/refuse", refuse)])
    return app, closes


def test_starlette_websocket_endpoint_behind_prack(start_server):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    server = start_server(acceptors=1)
    app, closes = starlette_echo()
    url = "ws://%s:%d" % (server.host, server.port)
    with Running(server, ASGIHandler(app), concurrency=2):
        with connect(url + "/ws", subprotocols=["echo"], open_timeout=WAIT) as ws:
            assert ws.subprotocol == "echo"
            for i in range(50):
                ws.send("hello %d" % i)
                assert ws.recv(timeout=WAIT) == "echo: hello %d" % i
            ws.send(b"\x00\x01\x02")
            assert ws.recv(timeout=WAIT) == b"\x02\x01\x00"
        # The client's close reached the application.
        deadline = time.monotonic() + WAIT
        while not closes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closes == [1000]
        # The application's close (code and reason) reaches the client.
        with connect(url + "/ws", open_timeout=WAIT) as ws:
            ws.send("close me")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=WAIT)
            assert (ws.close_code, ws.close_reason) == (4000, "as asked")
        # Closing before accepting is a 403.
        with pytest.raises(InvalidStatus) as refused:
            with connect(url + "/refuse", open_timeout=WAIT):
                pass
        assert refused.value.response.status_code == 403
        # Open WebSockets do not hold the worker's lanes: more of them than
        # lanes are served at once.
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(connect(url + "/ws", open_timeout=WAIT))
                       for _ in range(5)]
            for i, ws in enumerate(sockets):
                ws.send("n%d" % i)
            assert [ws.recv(timeout=WAIT) for ws in sockets] == ["echo: n%d" % i
                                                                  for i in range(5)]


def test_sdk_websocket_session(start_server):
    """The SDK's own WebSocket API: accept with a subprotocol, receive and
    send, the client's close seen as WebSocketClosed."""
    from websockets.sync.client import connect

    server = start_server(acceptors=1)
    closed = []

    def session(ws):
        try:
            while True:
                message = ws.receive()
                ws.send_many([message, message])
        except sdk.WebSocketClosed as exc:
            closed.append(exc.code)
            raise

    def handler(request):
        if sdk.is_websocket(request.env):
            return sdk.WebSocketResponse(session, subprotocol="dup")
        return sdk.Response(426, [("Content-Type", "text/plain")], b"WebSockets only\n")

    with Running(server, handler):
        url = "ws://%s:%d/" % (server.host, server.port)
        with connect(url, subprotocols=["dup"], open_timeout=WAIT) as ws:
            assert ws.subprotocol == "dup"
            ws.send("a")
            assert [ws.recv(timeout=WAIT), ws.recv(timeout=WAIT)] == ["a", "a"]
            ws.send(b"b")
            assert [ws.recv(timeout=WAIT), ws.recv(timeout=WAIT)] == [b"b", b"b"]
            # Many at once, both ways, in order (batches of events and sends).
            for i in range(1000):
                ws.send("m%d" % i)
            got = [ws.recv(timeout=WAIT) for _ in range(2000)]
            assert got == ["m%d" % (i // 2) for i in range(2000)]
        deadline = time.monotonic() + WAIT
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closed == [1000]
        conn = server.client()
        conn.request("GET", "/")
        assert conn.getresponse().status == 426
