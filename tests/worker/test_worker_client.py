"""The worker's one HTTP/1.1 client (prack.worker.client) against scripted
fronts on loopback: a body read as the caller reads, the once-only retry on a
kept-alive connection the front closed, abort, and the pool's rules."""
from __future__ import annotations

import http.client
import re
import select
import socket
import threading

import pytest

from conftest import scripted_front as scripted
from prack.worker.client import STALE, Connection, Front, Lease


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def read_all(conn: Connection, size: int) -> bytes:
    out = b""
    buf = bytearray(size)
    while True:
        n = conn.readinto(buf)
        if not n:
            return out
        out += bytes(buf[:n])


def test_a_body_is_read_as_the_caller_reads_then_the_connection_goes_on():
    body = bytes(range(256)) * 40
    lst, t, seen = scripted([[ok(body), ok(b"next"),
                              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\n0\r\n\r\n",
                              b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.open("GET", "/input", None, {"Accept": "x/y"}) == 200
        assert read_all(conn, 1000) == body
        assert conn.sock is not None and not conn.left
        assert conn.call("GET", "/after") == (200, b"next")
        assert conn.open("GET", "/chunked") == 200
        assert read_all(conn, 2) == b"abc"
        assert conn.open("GET", "/missing") == 404
        assert conn.read_rest() == b"nope"
        conn.close()
        t.join(5)
    assert [n for n, _ in seen] == [0, 0, 0, 0]
    assert seen[0][1].startswith(b"GET /input HTTP/1.1\r\nAccept: x/y\r\nHost: 127.0.0.1:")


def test_a_body_to_the_close_and_a_body_cut_short():
    lst, t, _ = scripted([[b"HTTP/1.0 200 OK\r\n\r\nto the end"]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.open("GET", "/") == 200
        assert read_all(conn, 4) == b"to the end"
        assert conn.sock is None
        t.join(5)
    lst, t, _ = scripted([[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.open("GET", "/") == 200
        t.join(5)
        with pytest.raises(http.client.IncompleteRead):
            read_all(conn, 100)
        assert conn.sock is None


def test_a_kept_alive_connection_the_front_closed_is_retried_once_when_allowed():
    # The front answers one call, then closes the connection unasked (an
    # idle limit, a restart): the next call that may be repeated goes on a
    # new connection; one that may not fails as RemoteDisconnected.
    lst, t, seen = scripted([[ok(b"one")], [ok(b"two")]])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.call("GET", "/1") == (200, b"one")
        assert conn.call("GET", "/2", None, {}, True) == (200, b"two")
        conn.close()
        t.join(5)
    assert [(n, r.split(b" ")[1]) for n, r in seen] == [(0, b"/1"), (1, b"/2")]

    lst, t, _ = scripted([[ok(b"one")], []])
    with lst:
        conn = Connection("127.0.0.1", lst.getsockname()[1], 10)
        assert conn.call("GET", "/1") == (200, b"one")
        with pytest.raises(STALE):
            conn.call("POST", "/2", b"x", {})
        # A new connection closed without an answer is not retried either.
        with pytest.raises(STALE):
            conn.call("GET", "/3", None, {}, True)
        t.join(5)


def test_an_aborted_call_is_not_retried_and_its_connection_not_pooled():
    # A long poll in progress on a kept-alive connection is ended by abort()
    # from another thread, as Watch.finish() and WebSocket.release() do: it
    # fails at once, on no new connection (the retry would wait out the
    # timeout here: nothing answers a second connection).
    lst, t, seen = scripted([[ok(b"one"), None]])
    with lst:
        front = Front("http://127.0.0.1:%d" % lst.getsockname()[1], 3)
        lease = Lease(front)
        assert lease.call("GET", "/1") == (200, b"one")
        failed = []

        def poll():
            try:
                lease.call("GET", "/long-poll")
            except OSError as exc:
                failed.append(exc)

        thread = threading.Thread(target=poll)
        thread.start()
        for _ in range(500):
            if len(seen) == 2:
                break
            thread.join(0.01)
        lease.abort()
        thread.join(5)
        assert not thread.is_alive()
        assert isinstance(failed[0], STALE), failed
        lease.close()
        assert front.idle == []
        t.join(5)
    assert [n for n, _ in seen] == [0, 0]


def test_a_lease_aborted_before_its_call_does_not_retry_it():
    lst, t, seen = scripted([[ok(b"one")]])
    with lst:
        front = Front("http://127.0.0.1:%d" % lst.getsockname()[1], 3)
        lease = Lease(front)
        assert lease.call("GET", "/1") == (200, b"one")
        lease.close()
        assert len(front.idle) == 1             # usable: back in the pool
        t.join(5)                               # the front has closed its side
        lease = Lease(front)
        lease.abort()
        with pytest.raises(STALE):
            lease.call("GET", "/long-poll")
        lease.close()
        assert front.idle == []


def test_the_pool_takes_back_only_usable_connections():
    lst, t, seen = scripted([[ok(b"a")], [b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                          b"Content-Length: 1\r\n\r\nb"]])
    with lst:
        front = Front("http://127.0.0.1:%d" % lst.getsockname()[1], 3)
        conn = front.borrow()
        assert conn.open("GET", "/a") == 200
        front.give_back(conn)                   # its body not read: not reusable
        assert front.idle == [] and conn.sock is None
        lease = Lease(front)
        assert lease.call("GET", "/b") == (200, b"b")
        assert lease.conn is None               # closed by the front's answer
        lease.close()
        assert front.idle == []
        t.join(5)
    assert [n for n, _ in seen] == [0, 1]


def test_a_large_body_is_read_over_a_pooled_connection_the_front_closed():
    """Request.input borrows a pooled connection; after the API process was
    restarted (an upgrade, a crash) that connection is closed: the read goes
    on a new one, as every other call about a request does, instead of
    failing the handler."""
    from prack.worker.streams import remote_input

    body = b"spooled body " * 1000
    lst, t, seen = scripted([[ok(b"one")], [ok(body)]])
    with lst:
        front = Front("http://127.0.0.1:%d" % lst.getsockname()[1], 3)
        lease = Lease(front)
        assert lease.call("GET", "/1") == (200, b"one")
        lease.close()
        assert len(front.idle) == 1
        # Until the front has closed it (readable: at its end).
        assert select.select([front.idle[0].sock], [], [], 5)[0]
        with remote_input(front, "/api/v2/requests/x/input", len(body)) as f:
            assert f.read() == body
        assert len(front.idle) == 1             # read to its end: back in the pool
        front.close_idle()
        t.join(5)
    assert [n for n, _ in seen] == [0, 1]
