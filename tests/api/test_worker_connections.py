"""The API process's worker connections are the children's buffered
Connection (child/connection.py): a spooled body goes out a few rounds per
wake-up, the call stays in progress until all of it has, and pipelined
calls are handled one after another in one loop."""
from __future__ import annotations

import os
import socket

import pytest

from prack.api.process import WorkerConn
from prack.child.connection import EVENT_READ, EVENT_WRITE


@pytest.fixture
def worker(inprocess_api):
    ours, theirs = socket.socketpair()
    inprocess_api._take_worker(ours, None)
    [conn] = inprocess_api.workers.values()
    yield conn, theirs
    inprocess_api._close_worker(conn)
    theirs.close()


def _drain(sock) -> bytes:
    sock.setblocking(False)
    got = b""
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            got += data
    except BlockingIOError:
        pass
    return got


def test_a_spooled_body_holds_the_call_until_all_of_it_has_gone(inprocess_api, worker, tmp_path):
    conn, theirs = worker
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    body = os.urandom(WorkerConn.FILE_ROUNDS * WorkerConn.FILE_CHUNK + 12345)
    path = tmp_path / "body"
    path.write_bytes(body)
    conn.busy = True
    inprocess_api.reply_file(conn, b"application/octet-stream", os.open(path, os.O_RDONLY), len(body))
    assert conn.busy and conn.file is not None
    assert inprocess_api.sel.get_key(conn.sock).events == EVENT_READ | EVENT_WRITE
    got = b""
    while conn.file is not None:
        got += _drain(theirs)
        inprocess_api._on_worker(conn, EVENT_WRITE)
    got += _drain(theirs)
    assert got.endswith(body)
    assert not conn.busy                                # the next call may go on
    assert inprocess_api.sel.get_key(conn.sock).events == EVENT_READ


def test_pipelined_calls_are_answered_in_order_without_nesting(inprocess_api, worker):
    conn, theirs = worker
    calls = 1000        # past the recursion limit, had each answer nested the next
    theirs.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * calls)
    inprocess_api._on_worker(conn, EVENT_READ)
    answers = 0
    while answers < calls:
        answers += _drain(theirs).count(b"HTTP/1.1 404")
        if conn.out:
            inprocess_api._on_worker(conn, EVENT_WRITE)   # answers that waited for the socket
    assert not conn.processing and not conn.reader.buf
