"""WebSockets end to end: real prack-server, a real client (tests/wsclient.py)
and a worker speaking the documented API (GET .../events, POST .../send)."""
from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import signal
import socket
import threading
import time

import msgspec
import pytest

from conftest import rss_kib
from prack.protocol import websocket as ws
from wsclient import HandshakeRefused, WsClient, masked_frame


class WsWorker:
    """A worker on its own threads: it pulls requests (API v2) and accepts
    every WebSocket upgrade, except under /forbidden (403). Each WebSocket
    gets a thread that long-polls its events and echoes messages back; a
    text message "close CODE REASON" makes it close instead. Every event is
    recorded in `events[path]`; `ended` receives (path, close event, status
    of the call after it, seconds from the close event to then)."""

    def __init__(self, api: str, msgpack: bool = False, protocol: str | None = None,
                 hold: threading.Event | None = None):
        host, port = api.split("//", 1)[1].rsplit(":", 1)
        self.hold = hold        # when given, sessions fetch no events until it is set
        self.host, self.port = host, int(port)
        self.msgpack = msgpack
        self.protocol = protocol
        self.events: dict[str, list] = {}
        self.ended: queue.Queue = queue.Queue()
        self.errors: list = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._pull, daemon=True)]
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        assert not self.errors, self.errors

    # -- HTTP ---------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, conn, method: str, path: str, body=None):
        headers = {}
        if body is not None:
            if self.msgpack:
                body = msgspec.msgpack.encode(body)
                headers["Content-Type"] = "application/msgpack"
            else:
                body = json.dumps(body)
                headers["Content-Type"] = "application/json"
        if self.msgpack:
            headers["Accept"] = "application/msgpack"
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.getheader("Content-Type", "").startswith("application/msgpack"):
            return resp.status, msgspec.msgpack.decode(data)
        return resp.status, json.loads(data)

    def _pull(self) -> None:
        conn = self._conn()
        try:
            while not self._stop.is_set():
                try:
                    status, batch = self.call(conn, "GET", "/api/v2/requests?wait=0.5&max=16")
                except (ConnectionError, http.client.RemoteDisconnected):
                    conn.close()        # the API process restarted: reconnect
                    conn = self._conn()
                    self._stop.wait(0.05)
                    continue
                if status == 503:
                    return          # the server is stopping
                assert status == 200, batch
                for item in batch["requests"]:
                    self._handle(conn, item)
        except Exception as exc:        # reported by stop()
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def _handle(self, conn, item) -> None:
        env, ident = item["env"], item["id"]
        path = env["PATH_INFO"]
        if path.startswith("/forbidden") or "HTTP_UPGRADE" not in env:
            status = 403 if path.startswith("/forbidden") else 200
            body = b"no WebSockets here\n" if status == 403 else b"plain\n"
            resp = {"responses": [{"id": ident, "status": status,
                                   "headers": {"Content-Type": "text/plain"},
                                   "body": body if self.msgpack else
                                   base64.b64encode(body).decode()}]}
            self.call(conn, "POST", "/api/v2/responses", resp)
            return
        headers = {}
        if self.protocol and self.protocol in env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""):
            headers["Sec-WebSocket-Protocol"] = self.protocol
        status, answer = self.call(conn, "POST", "/api/v2/requests/%s/head" % ident,
                                   {"status": 101, "headers": headers})
        assert status == 200, answer
        self.events[path] = []
        t = threading.Thread(target=self._session, args=(ident, path), daemon=True)
        self._threads.append(t)
        t.start()

    def _data(self, event) -> str | bytes:
        if event["type"] == "binary" and not self.msgpack:
            return base64.b64decode(event["data"])
        return event["data"]

    def _out(self, kind: str, data) -> dict:
        if kind == "binary" and not self.msgpack:
            data = base64.b64encode(data).decode()
        return {"type": kind, "data": data}

    def _session(self, ident: str, path: str) -> None:
        conn = self._conn()
        base = "/api/v2/requests/%s/" % ident
        try:
            if self.hold is not None:
                self.hold.wait(30)
            while not self._stop.is_set():
                status, answer = self.call(conn, "GET", base + "events?wait=1&max=256")
                if status == 410:
                    self.ended.put((path, None, status, 0.0))
                    return
                assert status == 200, answer
                out = []
                for event in answer["events"]:
                    self.events[path].append(event)
                    if event["type"] == "close":
                        closed_at = time.monotonic()
                        try:
                            after, _ = self.call(conn, "GET", base + "events?wait=0")
                        except (ConnectionError, http.client.RemoteDisconnected):
                            # A stopping API process answers the close event
                            # with Connection: close, and may be gone by now.
                            after = "link lost"
                        self.ended.put((path, event, after, time.monotonic() - closed_at))
                        return
                    data = self._data(event)
                    if event["type"] == "text" and data.startswith("close "):
                        _, code, reason = data.split(" ", 2)
                        out.append({"type": "close", "code": int(code), "reason": reason})
                        break
                    out.append(self._out(event["type"], data))
                if out:
                    status, answer = self.call(conn, "POST", base + "send", {"messages": out})
                    if out[-1]["type"] == "close":
                        self.ended.put((path, out[-1], status, 0.0))
                        after, _ = self.call(conn, "GET", base + "events?wait=0")
                        assert after in (404, 410), after
                        return
                    if status == 410:
                        continue        # the client went: the events call says how
                    assert status == 200, answer
        except (ConnectionError, http.client.RemoteDisconnected):
            self.ended.put((path, None, "link lost", 0.0))     # the API process died
        except Exception as exc:
            self.errors.append("%s: %r" % (path, exc))
        finally:
            conn.close()

    def wait_end(self, path: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.ended.get(timeout=max(0.01, deadline - time.monotonic()))
            if got[0] == path:
                return got


@pytest.fixture(scope="module")
def wsserver(start_module_server):
    # The access log is on: a WebSocket is logged when it ends.
    return start_module_server("--access-log", websocket_max_message_size="64k")


@pytest.fixture(scope="module")
def worker(wsserver):
    w = WsWorker(wsserver.api)
    yield w
    w.stop()


def connect(server, path: str, **kw) -> WsClient:
    return WsClient(server.port, path, **kw)


# -- exchanging messages ---------------------------------------------------------------


def echo_after_api_restart(server, old_api_pid: int) -> None:
    """Once the API process that replaced `old_api_pid` is ready, a new
    WebSocket is accepted and echoes (a refusal is retried for up to 10 s,
    while the worker reconnects)."""
    server.wait_log(r"API process ready \(pid (?!%d\))" % old_api_pid)
    deadline = time.monotonic() + 10
    while True:
        try:
            client = connect(server, "/after")
            break
        except HandshakeRefused as exc:
            assert time.monotonic() < deadline, exc.status
    client.send("y")
    assert client.recv() == "y"
    client.close()
    client.recv_event()
    client.shutdown()

def test_ten_thousand_messages_echoed_in_order(wsserver, worker):
    client = connect(wsserver, "/echo-many")
    rng = __import__("random").Random(7)
    messages = []
    for i in range(10000):
        n = rng.choice((0, 1, 17, 200, 1500, 9000))
        if i % 2:
            messages.append(os.urandom(n))
        else:
            messages.append(("%05d:" % i + "é€" * n)[:max(6, n)])
    errors = []

    def send():
        try:
            for i, m in enumerate(messages):
                client.send(m, fragments=3 if i % 97 == 0 else 1)
        except OSError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    try:
        for i, expected in enumerate(messages):
            got = client.recv()
            assert got == expected, "message %d" % i
    finally:
        sender.join(30)
    assert not errors
    elapsed = time.monotonic() - started
    client.close(ws.CLOSE_NORMAL, "done")
    event = client.recv_event()
    assert isinstance(event, ws.Close) and event.code == ws.CLOSE_NORMAL
    assert client.wait_eof() == b""
    client.shutdown()
    path, close, after, _ = worker.wait_end("/echo-many")
    assert close == {"type": "close", "code": 1000, "reason": "done"}
    assert after == 410
    assert len(worker.events["/echo-many"]) == 10001
    print("10,000 messages echoed in %.2fs" % elapsed)


def test_early_frames_after_the_handshake_request_are_kept(wsserver, worker):
    # The client's first frame arrives in the same packet as its handshake.
    sock = socket.create_connection((wsserver.host, wsserver.port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /early HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
                 + masked_frame(ws.OP_TEXT, b"early bird"))
    buf = b""
    parser = ws.FrameParser(require_mask=False)
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: " + ws.accept_value(key) in head
    parser.feed(rest)
    events = list(parser.events())
    while not events:
        parser.feed(sock.recv(4096))
        events = list(parser.events())
    assert events[0].data == b"early bird"
    sock.sendall(masked_frame(ws.OP_CLOSE, ws.close_payload(1000)))
    sock.close()
    worker.wait_end("/early")


def test_ping_is_answered_by_prack(wsserver, worker):
    client = connect(wsserver, "/ping")
    client.ping(b"are you there")
    event = client.recv_event()
    assert isinstance(event, ws.Pong) and event.data == b"are you there"
    client.send("after ping")
    assert client.recv() == "after ping"
    client.close()
    assert isinstance(client.recv_event(), ws.Close)
    client.shutdown()
    worker.wait_end("/ping")
    # The worker saw the message and the close, never the ping.
    assert [e["type"] for e in worker.events["/ping"]] == ["text", "close"]


# -- closing -----------------------------------------------------------------------------

def test_client_close_reaches_the_worker_with_its_code(wsserver, worker):
    client = connect(wsserver, "/client-closes")
    client.send("hello")
    assert client.recv() == "hello"
    client.close(4001, "client is leaving")
    event = client.recv_event()
    assert isinstance(event, ws.Close) and event.code == 4001      # echoed
    assert client.wait_eof() == b""                                 # then the server closes
    client.shutdown()
    path, close, after, _ = worker.wait_end("/client-closes")
    assert close == {"type": "close", "code": 4001, "reason": "client is leaving"}
    assert after == 410
    wsserver.wait_log(r'"GET /client-closes HTTP/1.1" 101 \d+')


def test_worker_close_reaches_the_client_with_its_code(wsserver, worker):
    client = connect(wsserver, "/worker-closes")
    client.send("close 4002 worker is done")
    event = client.recv_event()
    assert isinstance(event, ws.Close)
    assert (event.code, event.reason) == (4002, "worker is done")
    client.close(4002)              # the client completes the handshake
    assert client.wait_eof() == b""
    client.shutdown()
    path, sent, status, _ = worker.wait_end("/worker-closes")
    assert sent["type"] == "close" and status == 200


def test_vanished_client_is_reported_quickly(wsserver, worker):
    client = connect(wsserver, "/vanish")
    client.send("x")
    assert client.recv() == "x"
    gone_at = time.monotonic()
    client.abort()
    path, close, after, _ = worker.wait_end("/vanish", timeout=5)
    noticed = time.monotonic() - gone_at
    assert close["type"] == "close" and close["code"] == ws.CLOSE_ABNORMAL
    assert after == 410
    print("vanished client noticed in %.3fs" % noticed)
    assert noticed < 1.0, noticed


# -- protocol errors --------------------------------------------------------------------

def expect_failure(server, worker, path: str, data: bytes, code: int) -> None:
    client = connect(server, path)
    client.send_raw(data)
    event = client.recv_event()
    assert isinstance(event, ws.Close) and event.code == code
    assert client.wait_eof() == b""
    client.shutdown()
    _, close, after, _ = worker.wait_end(path)
    assert close["code"] == code and after == 410


def test_unmasked_frame_closes_with_1002(wsserver, worker):
    expect_failure(wsserver, worker, "/unmasked", ws.frame(ws.OP_TEXT, b"no mask"),
                   ws.CLOSE_PROTOCOL_ERROR)


def test_reserved_opcode_closes_with_1002(wsserver, worker):
    expect_failure(wsserver, worker, "/opcode", masked_frame(0x3, b""), ws.CLOSE_PROTOCOL_ERROR)


def test_invalid_utf8_closes_with_1007(wsserver, worker):
    expect_failure(wsserver, worker, "/utf8", masked_frame(ws.OP_TEXT, b"ok\xff"),
                   ws.CLOSE_INVALID_DATA)


def test_oversized_message_closes_with_1009(wsserver, worker):
    # 64k is the limit: 40k + 40k in two fragments is over it.
    data = (masked_frame(ws.OP_BINARY, b"x" * 40000, fin=False)
            + masked_frame(ws.OP_CONTINUATION, b"x" * 40000))
    expect_failure(wsserver, worker, "/too-big", data, ws.CLOSE_MESSAGE_TOO_BIG)


# -- the handshake -------------------------------------------------------------------------

def test_worker_refusing_the_upgrade_gives_a_plain_answer(wsserver, worker):
    with pytest.raises(HandshakeRefused) as err:
        connect(wsserver, "/forbidden")
    assert err.value.status == 403
    assert err.value.body == b"no WebSockets here\n"
    assert b"upgrade" not in err.value.head.lower()


@pytest.mark.parametrize("version,status", [(b"8", 426), (b"13", 400)])
def test_invalid_upgrades_are_answered_by_prack(wsserver, worker, version, status):
    with socket.create_connection((wsserver.host, wsserver.port), timeout=10) as sock:
        key = b"short" if status == 400 else base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: " + version
                     + b"\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in data
        # RFC 9110 15.5.22: a 426 names the protocol to upgrade to (7.8:
        # with the upgrade connection option).
        assert b"\r\nUpgrade: websocket\r\n" in data
        assert b"\r\nConnection: Upgrade\r\n" in data
    assert "/bad" not in worker.events


def test_plain_request_on_the_same_server(wsserver, worker):
    conn = wsserver.client()
    conn.request("GET", "/plain")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"plain\n"


def test_subprotocol_chosen_by_the_worker(start_server):
    server = start_server()
    w = WsWorker(server.api, protocol="v2.chat")
    try:
        client = connect(server, "/proto", protocols=("v1.chat", "v2.chat"))
        assert client.protocol == "v2.chat"
        client.send(b"\x00\x01")
        assert client.recv() == b"\x00\x01"
        client.close()
        client.recv_event()
        client.shutdown()
        w.wait_end("/proto")
    finally:
        w.stop()


def test_msgpack_api(start_server):
    server = start_server()
    w = WsWorker(server.api, msgpack=True)
    try:
        client = connect(server, "/msgpack")
        for m in ("text ✓", b"\xff\x00binary", ""):
            client.send(m)
            assert client.recv() == m
        client.close(4100, "bye")
        client.recv_event()
        client.shutdown()
        _, close, after, _ = w.wait_end("/msgpack")
        assert close == {"type": "close", "code": 4100, "reason": "bye"}
        assert after == 410
    finally:
        w.stop()


def test_idle_connection_is_pinged_and_a_silent_one_dropped(start_server):
    server = start_server(websocket_ping_interval="0.3")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/idle")
        started = time.monotonic()
        event = client.recv_event()
        assert isinstance(event, ws.Ping), event
        assert time.monotonic() - started < 3
        # We never answer: the server drops us and tells the worker (1006).
        assert client.recv_event() is None
        client.shutdown()
        _, close, after, _ = w.wait_end("/idle")
        assert close["code"] == ws.CLOSE_ABNORMAL and after == 410
    finally:
        w.stop()


# -- backpressure -----------------------------------------------------------------------

def test_a_worker_that_does_not_fetch_events_slows_its_client(start_server):
    server = start_server(limits_stream_buffer="64k")
    hold = threading.Event()
    w = WsWorker(server.api, hold=hold)
    try:
        client = connect(server, "/slow-worker")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        payload = os.urandom(16384)
        total = 2000                # 32 MiB, far more than any buffer on the way
        sent = [0]

        def send():
            for i in range(total):
                client.send(payload[:-4] + i.to_bytes(4, "big"))
                sent[0] += 1

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        # The sender stalls: the acceptor stops reading once 64k of events
        # wait for the worker (then the socket buffers fill).
        last = -1
        while sent[0] != last:
            last = sent[0]
            sender.join(1.0)
        print("sender stalled after %d messages" % sent[0])
        assert sent[0] * 16384 < 12 << 20, sent[0]
        hold.set()
        for i in range(total):
            assert client.recv() == payload[:-4] + i.to_bytes(4, "big"), i
        sender.join(10)
        client.close()
        client.recv_event()
        client.shutdown()
        w.wait_end("/slow-worker")
    finally:
        hold.set()
        w.stop()


# -- the API's answers ------------------------------------------------------------------

class Api:
    def __init__(self, server):
        self.conn = server.api_client()

    def call(self, method: str, path: str, body=None):
        self.conn.request(method, path, None if body is None else json.dumps(body),
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def pull(self):
        status, batch = self.call("GET", "/api/v2/requests?wait=5")
        assert status == 200 and batch["requests"], batch
        return batch["requests"][0]["id"]


def upgrade_request(path: bytes = b"/x") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")


def test_api_errors(start_server):
    server = start_server()
    api = Api(server)
    raw = server.raw()
    raw.send(upgrade_request())
    ident = api.pull()
    base = "/api/v2/requests/%s/" % ident
    # Before the 101: not a WebSocket.
    assert api.call("GET", base + "events")[0] == 409
    assert api.call("POST", base + "send", {"messages": []})[0] == 409
    assert api.call("POST", base + "head", {"status": 101})[0] == 200
    bad = [
        {"messages": [{"type": "ping", "data": "x"}]},
        {"messages": [{"type": "text", "data": 5}]},
        {"messages": [{"type": "binary", "data": "not base64!"}]},
        {"messages": [{"type": "close", "code": 1006}]},
        {"messages": [{"type": "close", "code": 1000, "reason": "x" * 124}]},
        {"messages": [{"type": "close"}, {"type": "text", "data": "after"}]},
        {"message": []},
    ]
    for body in bad:
        status, answer = api.call("POST", base + "send", body)
        assert status == 400 and answer["error"], (body, answer)
    # Stream calls are not for WebSockets.
    conn = api.conn
    conn.request("POST", base + "body", b"raw chunk")
    resp = conn.getresponse()
    assert resp.status == 409 and b"send" in resp.read()
    assert api.call("POST", base + "end", {})[0] == 409
    assert api.call("GET", base + "events?wait=-1")[0] == 400
    assert api.call("GET", base + "events?max=0")[0] == 400
    assert api.call("GET", base + "events?bogus=1")[0] == 400
    assert api.call("GET", "/api/v2/requests/%s/events" % ("0" * 32))[0] == 404
    assert api.call("GET", "/api/v2/requests/zz/events")[0] == 400
    status, answer = api.call("GET", base + "events?wait=0")
    assert status == 200 and answer == {"events": []}
    status, answer = api.call("POST", base + "send", {"messages": [
        {"type": "text", "data": "hi"}, {"type": "close", "code": 4000, "reason": "r"}]})
    assert status == 200, answer
    # The worker closed: for it the request is answered.
    assert api.call("GET", base + "events")[0] == 404
    raw.close()


def test_101_to_a_request_that_is_not_an_upgrade(start_server):
    server = start_server()
    api = Api(server)
    raw = server.raw()
    raw.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    ident = api.pull()
    assert api.call("POST", "/api/v2/requests/%s/head" % ident, {"status": 101})[0] == 200
    assert raw.read_response().status == 502
    status, answer = api.call("GET", "/api/v2/requests/%s/events?wait=2" % ident)
    assert status == 200 and answer["events"][0]["code"] == ws.CLOSE_ABNORMAL
    assert api.call("GET", "/api/v2/requests/%s/events" % ident)[0] == 410
    raw.close()


def test_unoffered_subprotocol_gives_the_client_502(start_server):
    server = start_server()
    w = WsWorker(server.api, protocol="chat")
    try:
        with pytest.raises(HandshakeRefused) as err:
            connect(server, "/unoffered", protocols=("other",), headers=[
                ("Sec-WebSocket-Protocol", "chat-not")])
        assert err.value.status == 502
    finally:
        w.stop()


def test_graceful_stop_closes_websockets_with_1001(start_server):
    server = start_server()
    w = WsWorker(server.api)
    try:
        client = connect(server, "/stopping")
        client.send("x")
        assert client.recv() == "x"
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        event = client.recv_event()
        assert isinstance(event, ws.Close) and event.code == ws.CLOSE_GOING_AWAY
        client.close(ws.CLOSE_GOING_AWAY)
        client.wait_eof()
        client.shutdown()
        _, close, _, _ = w.wait_end("/stopping")
        assert close["code"] == ws.CLOSE_GOING_AWAY
        stopper.join(30)
        assert server.proc.returncode == 0
    finally:
        w.stop()


def test_a_websocket_end_is_fetched_after_the_api_process_began_stopping(start_server):
    """The master stops the acceptors, then the API process. Each WebSocket
    ended with a close event (1001) for its worker; the API process closed
    every idle worker connection as it began to stop, so a worker between
    two events calls lost its connection instead (the graceful-stop test
    above failed 4 times in 20 under load). Now the stop waits (up to its
    deadline) for those events to be fetched."""
    server = start_server("--log-level", "debug", acceptors=1)
    api = Api(server)
    got = {}
    opener = threading.Thread(target=lambda: got.setdefault("client", connect(server, "/late")))
    opener.start()
    ident = api.pull()
    status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident,
                              {"status": 101, "headers": {}})
    assert status == 200, answer
    opener.join(10)
    client = got["client"]
    events = Api(server)            # the session's connection, idle between calls
    status, answer = events.call("GET", "/api/v2/requests/%s/events?wait=0" % ident)
    assert (status, answer["events"]) == (200, [])

    mark = server.log_mark()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    try:
        event = client.recv_event()
        assert isinstance(event, ws.Close) and event.code == ws.CLOSE_GOING_AWAY
        client.close(ws.CLOSE_GOING_AWAY)
        client.wait_eof()
        client.shutdown()
        # The API process has begun its stop (after the acceptor's).
        server.wait_log(r"API process stopping \(1 WebSocket ends not yet fetched\)", since=mark)
        status, answer = events.call("GET", "/api/v2/requests/%s/events?wait=5" % ident)
        assert status == 200, answer
        close = answer["events"][-1]
        assert (close["type"], close["code"]) == ("close", ws.CLOSE_GOING_AWAY)
    finally:
        stopper.join(30)
    assert server.proc.returncode == 0


def test_api_process_death_closes_websockets_with_1011(start_server):
    import signal
    server = start_server("--log-level", "debug")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/api-dies")
        client.send("x")
        assert client.recv() == "x"
        [api_pid] = server.pids("API process")
        os.kill(api_pid, signal.SIGKILL)
        event = client.recv_event()
        assert isinstance(event, ws.Close) and event.code == ws.CLOSE_INTERNAL_ERROR
        client.close(ws.CLOSE_INTERNAL_ERROR)
        client.wait_eof()
        client.shutdown()
        # The new API process serves: a new WebSocket works.
        echo_after_api_restart(server, api_pid)
    finally:
        w.stop()


def test_upgrade_in_http10_is_an_ordinary_request(start_server):
    server = start_server()
    api = Api(server)
    raw = server.raw()
    raw.send(upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0"))
    ident = api.pull()          # queued, not refused
    status, answer = api.call("POST", "/api/v2/responses", {"responses": [
        {"id": ident, "status": 200, "body": base64.b64encode(b"ordinary").decode()}]})
    assert status == 200, answer
    resp = raw.read_response()
    assert resp.status == 200 and resp.body == b"ordinary"
    raw.close()


def test_a_client_that_never_reads_is_dropped_after_send_timeout(start_server):
    server = start_server(timeouts_send_timeout="1", limits_stream_buffer="64k")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/never-reads")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        errors = []

        def send():
            try:
                for _ in range(400):    # 25 MiB of echoes nobody reads
                    client.send(os.urandom(65536))
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        started = time.monotonic()
        sender.start()
        _, close, after, _ = w.wait_end("/never-reads", timeout=20)
        assert close["code"] == ws.CLOSE_ABNORMAL and after == 410
        assert time.monotonic() - started < 10
        sender.join(10)
        assert errors, "the connection should have been dropped"
        client.shutdown()
    finally:
        w.stop()


def test_events_of_the_other_generation_are_served_during_an_upgrade(tmp_path):
    """A worker holding a generation-1 WebSocket fetches its events from
    the shared API port after USR2 (generation 2 answers there and passes
    the long-poll on as a GET, with its query): the retiring acceptor's
    close (1001) reaches it."""
    from upgrade_helpers import code_copy, set_subreaper, start_upgrading
    if not set_subreaper(True):
        pytest.skip("needs prctl(PR_SET_CHILD_SUBREAPER) (Linux)")
    s = None
    try:
        code = code_copy(tmp_path / "code")
        s = start_upgrading(tmp_path, code, acceptors=1)
        api = Api(s)
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.sendall(upgrade_request(b"/old"))
        ident = api.pull()
        assert ident.startswith("0001")
        status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident, {"status": 101})
        assert status == 200, answer
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        api.conn.close()
        mark = s.log_mark()
        os.kill(s.master, signal.SIGUSR2)
        s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
        fresh = s.api_client()        # reaches generation 2
        fresh.request("GET", "/api/v2/requests/%s/events?wait=5" % ident)
        resp = fresh.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 200, answer
        assert answer["events"] == [{"type": "close", "code": ws.CLOSE_GOING_AWAY,
                                     "reason": "the server is shutting down"}], answer
        fresh.close()
        sock.sendall(ws_masked_close())
        while sock.recv(4096):
            pass
        sock.close()
        s.wait_log(r"prack.master: generation 1 retired", since=mark)
        assert s.stop_current() in (0, None), "\n".join(s.log)
        s.assert_clean()
        assert not any("Traceback" in line for line in s.log), "\n".join(s.log)
        s = None
    finally:
        if s is not None:
            s.stop_current(timeout=15)
        set_subreaper(False)


def ws_masked_close(code: int = ws.CLOSE_NORMAL) -> bytes:
    return masked_frame(ws.OP_CLOSE, ws.close_payload(code))


@pytest.mark.slow
def test_a_client_flooding_pings_without_reading_pongs_is_not_read_on(start_server):
    """Pongs wait for a client that does not read them, as echoes do: past
    limits.stream_buffer of them the acceptor stops reading the client
    (its sends stall) instead of queueing pongs without bound."""
    server = start_server(limits_stream_buffer="64k")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/ping-flood")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        batch = b"".join(masked_frame(ws.OP_PING, b"p" * 125) for _ in range(1000))
        cap = 400               # 52 MB of pings, far more than any buffer on the way
        sent = [0]

        def flood():
            try:
                for _ in range(cap):
                    client.sock.sendall(batch)
                    sent[0] += 1
            except OSError:
                pass

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        last = -1
        while sent[0] != last and sent[0] < cap:
            last = sent[0]
            sender.join(1.0)
        print("sender stalled after %d MB" % (sent[0] * len(batch) >> 20))
        assert sent[0] * len(batch) < 24 << 20, sent[0]
        client.abort()
        sender.join(10)
        _, close, _, _ = w.wait_end("/ping-flood")
        assert close["code"] == ws.CLOSE_ABNORMAL
    finally:
        w.stop()


def test_messages_after_the_workers_close_do_not_stall_the_closing_handshake(start_server):
    """Messages a client sends after the worker closed go nowhere (the
    worker is done); they must not fill the event window, which would stop
    the acceptor reading before the client's close frame, so the handshake
    would hang until its 5 s timeout."""
    server = start_server(limits_stream_buffer="64k")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/late-messages")
        client.send("close 4000 bye")
        event = client.recv_event()
        assert isinstance(event, ws.Close) and event.code == 4000, event
        started = time.monotonic()
        # Still in flight from the client's side when it saw the close.
        client.send_raw(b"".join(masked_frame(ws.OP_BINARY, os.urandom(16384))
                                 for _ in range(20)) + ws_masked_close(4000))
        assert client.wait_eof() == b""
        elapsed = time.monotonic() - started
        assert elapsed < ws.CLOSE_TIMEOUT / 2, elapsed
        client.shutdown()
        _, close, status, _ = w.wait_end("/late-messages")
        assert close["code"] == 4000 and status == 200
    finally:
        w.stop()


def test_endless_empty_fragments_do_not_grow_the_acceptor(start_server):
    """A fragmented message is held as its bytes, whatever the number of
    fragments: two million empty continuation frames (12 MB on the wire,
    a message of one byte) cost the acceptor nothing (a list of fragments
    grew by 8 bytes per frame, never counted against max_message_size)."""
    server = start_server("--log-level", "debug", acceptors=1)
    [pid] = server.pids("acceptor")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/fragments")
        empty = masked_frame(ws.OP_CONTINUATION, b"", fin=False) * 100_000
        client.send_raw(masked_frame(ws.OP_TEXT, b"a", fin=False) + empty)

        def sync():     # a pong proves that all before its ping was parsed
            client.ping(b"sync")
            event = client.recv_event()
            assert isinstance(event, ws.Pong) and event.data == b"sync", event
        sync()
        before = rss_kib(pid)
        for _ in range(20):
            client.send_raw(empty)
        sync()
        grown = rss_kib(pid) - before
        print("acceptor RSS grew by %d kB" % grown)
        client.send_raw(masked_frame(ws.OP_CONTINUATION, b"b"))
        assert client.recv() == "ab"
        assert grown < 6 * 1024, grown
        client.close()
        client.recv_event()
        client.shutdown()
        w.wait_end("/fragments")
    finally:
        w.stop()


@pytest.mark.slow
def test_a_large_batch_to_a_slow_client_costs_linear_time(start_server):
    """A send of many small messages to a client that is not reading: each
    message past the window waits for the client with no more than
    constant work (summing the whole pending buffer for each one made the
    acceptor quadratic: a 30,000-message batch blocked it, and every other
    client on it, for many seconds). Probes answered by the acceptor
    itself (a 426) measure how long it is blocked while the batch lands."""
    server = start_server(acceptors=1, limits_stream_buffer="64k")
    api = Api(server)
    box = []
    opener = threading.Thread(target=lambda: box.append(connect(server, "/batch")))
    opener.start()
    ident = api.pull()
    status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident, {"status": 101})
    assert status == 200, answer
    opener.join(10)
    [client] = box
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    count = 30000
    messages = [{"type": "binary", "data": base64.b64encode(i.to_bytes(4, "big") * 50).decode()}
                for i in range(count)]
    result = []
    sender = threading.Thread(target=lambda: result.append(api.call(
        "POST", "/api/v2/requests/%s/send" % ident, {"messages": messages})), daemon=True)
    api.conn.timeout = 60
    sender.start()
    probe = (b"GET /probe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n")
    worst = 0.0
    until = time.monotonic() + 4.0          # the batch lands in this time
    while time.monotonic() < until:
        at = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(probe)
            assert s.recv(64).startswith(b"HTTP/1.1 426 ")
        worst = max(worst, time.monotonic() - at)
    print("worst probe latency %.3f s" % worst)
    client.sock.settimeout(30)
    for i in range(count):
        assert client.recv() == i.to_bytes(4, "big") * 50, i
    sender.join(30)
    assert result and result[0][0] == 200, result
    assert worst < 0.5, worst
    client.close()
    client.recv_event()
    client.shutdown()


def test_a_paused_websocket_still_completes_the_closing_handshake(start_server):
    """A worker that has not fetched its events (the window is full, the
    acceptor stopped reading) closes: the window no longer matters, so the
    client's answering close frame is read at once instead of the
    connection hanging until the 5 s close timeout."""
    server = start_server(limits_stream_buffer="64k")
    api = Api(server)
    box = []
    opener = threading.Thread(target=lambda: box.append(connect(server, "/paused")))
    opener.start()
    ident = api.pull()
    status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident, {"status": 101})
    assert status == 200, answer
    opener.join(10)
    [client] = box
    client.send_raw(b"".join(masked_frame(ws.OP_BINARY, os.urandom(16384)) for _ in range(20)))
    status, answer = api.call("POST", "/api/v2/requests/%s/send" % ident,
                              {"messages": [{"type": "close", "code": 4001, "reason": "busy"}]})
    assert status == 200, answer
    event = client.recv_event()
    assert isinstance(event, ws.Close) and event.code == 4001, event
    started = time.monotonic()
    client.close(4001)
    assert client.wait_eof() == b""
    elapsed = time.monotonic() - started
    assert elapsed < ws.CLOSE_TIMEOUT / 2, elapsed
    client.shutdown()


def test_a_close_read_just_as_the_api_process_dies_leaves_no_traceback(start_server):
    """The acceptor reads a client's close frame and finds, sending the
    close event, that the API process has died: the lost link closes its
    WebSockets while this one is ending; nothing may fail twice. The
    acceptor is stopped while the client closes and the API process is
    killed, so both are ready at once, the client first."""
    server = start_server("--log-level", "debug", "--access-log", acceptors=1)
    [acceptor] = server.pids("acceptor")
    [api_pid] = server.pids("API process")
    w = WsWorker(server.api)
    try:
        client = connect(server, "/dying-link")
        client.send("x")
        assert client.recv() == "x"
        os.kill(acceptor, signal.SIGSTOP)
        try:
            client.close(4000)
            os.kill(api_pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(api_pid):      # its sockets close as it exits
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            os.kill(acceptor, signal.SIGCONT)
        client.wait_eof()
        client.shutdown()
        # The same acceptor serves on: a new WebSocket works.
        echo_after_api_restart(server, api_pid)
        assert server.pids("acceptor") == [acceptor], "the acceptor died"
        assert not any("Traceback" in line for line in server.log), "\n".join(server.log)
    finally:
        w.stop()


def _alive(pid: int) -> bool:
    """True until `pid` has exited (a zombie has exited)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_stops_fetching_events_is_bounded_by_stream_idle_timeout(start_server):
    """A full window stops the acceptor reading the client, so it cannot see
    the client leave: a worker that never fetches again (it died holding the
    WebSocket) would keep the connection forever. Past
    timeouts.stream_idle_timeout Prack closes it (1011) and the worker's
    state long-poll says "gone"."""
    server = start_server(limits_stream_buffer="64k", timeouts_stream_idle_timeout="1")
    api = Api(server)
    box = []
    opener = threading.Thread(target=lambda: box.append(connect(server, "/stalled")))
    opener.start()
    ident = api.pull()
    status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident, {"status": 101})
    assert status == 200, answer
    opener.join(10)
    [client] = box
    # Far more than the window: the client's FIN waits behind what is unread.
    client.send_raw(b"".join(masked_frame(ws.OP_BINARY, os.urandom(16384)) for _ in range(64)))
    client.shutdown()           # the client leaves; nobody reads its socket
    started = time.monotonic()
    state = None
    while time.monotonic() - started < 15:
        status, answer = api.call("GET", "/api/v2/requests/%s/state?wait=5" % ident)
        assert status == 200, answer
        state = answer["state"]
        if state == "gone":
            break
    assert state == "gone", state
    events = []
    while not events or events[-1]["type"] != "close":
        status, answer = api.call("GET", "/api/v2/requests/%s/events?wait=5" % ident)
        assert status == 200, answer
        events += answer["events"]
    assert events[-1]["code"] == ws.CLOSE_INTERNAL_ERROR, events[-1]
