"""The example workers ride out the API process closing their kept-alive
connection (api.idle_timeout, api.max_connections; issue 14), as they ride
out a restarted front: a scripted front answers a pull, then closes that
connection, unread, as soon as the worker's post arrives on it (the race an
idle close can lose: the post was on its way). The worker must send the post
again on a new connection, with the same answer, and carry on pulling.

Go's and Node's, Ruby's and PHP's example workers run here; the curl
script and the README's ten-line worker open a new connection for every
call, and the Python SDK's retry is tested in tests/worker/. A missing
runtime fails the test (as in test_polyglot.py)."""
from __future__ import annotations

import base64
import json
import select
import socket
import threading

import pytest

from test_polyglot import EXAMPLES_BY_ID, WorkerProcess, command, go_worker, require  # noqa: F401

IDENT = "0123456789abcdef" * 2
ENV = {
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "rack.url_scheme": "http",
    "HTTP_HOST": "127.0.0.1:8080",
}


def read_call(conn: socket.socket, buf: bytearray) -> tuple[bytes, bytes] | None:
    """(request line, body) of one HTTP/1.1 call, or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    del buf[:len(head) + 4 + length]
    return head.split(b"\r\n")[0], rest[:length]


def answer(conn: socket.socket, status: bytes, body: bytes) -> None:
    conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)


class ScriptedFront:
    """Connection 1: the pull gets a request, then the post on it is met by
    a close (nothing read: the worker sees a reset). Later connections: a
    post is recorded and thanked; pulls get 404 (nothing pending)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.posts: list[tuple[int, dict]] = []      # (connection number, JSON)
        self.posted = threading.Event()
        self.done = False
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        number = 0
        while not self.done:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = bytearray()
        try:
            if number == 1:
                call = read_call(conn, buf)
                assert call is not None and call[0].startswith(b"GET /api/v1/request")
                answer(conn, b"200 OK", json.dumps(
                    {"identifier": IDENT, "environment": ENV, "body": ""}).encode())
                select.select([conn], [], [], 30)       # the post is arriving
                conn.close()                            # unread: a reset
                return
            while True:
                call = read_call(conn, buf)
                if call is None:
                    return
                line, body = call
                if line.startswith(b"POST /api/v1/re"):
                    self.posts.append((number, json.loads(body)))
                    answer(conn, b"200 OK", b'{"message":"thank you"}')
                    self.posted.set()
                else:
                    select.select([conn], [], [], 0.2)
                    answer(conn, b"404 Not Found", b'{"error":"There are no requests pending"}')
        except OSError:
            pass

    def close(self) -> None:
        self.done = True
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("example_id", ["go", "node", "ruby", "php"])
def test_post_met_by_a_closed_connection_is_sent_again(example_id, request):
    require(EXAMPLES_BY_ID[example_id])
    front = ScriptedFront()
    worker = WorkerProcess(command(example_id, front.url, request))
    try:
        assert front.posted.wait(30), worker.text()
        number, posted = front.posts[0]
        assert number >= 2 and posted["identifier"] == IDENT, front.posts
        assert int(posted["code"]) == 200
        assert base64.b64decode(posted["body"])          # the app's page, whole
        assert len(front.posts) == 1, front.posts        # sent again once, not more
    finally:
        code = worker.terminate()
        front.close()
    assert code == 0, worker.text()
