"""An acceptor's deadlines, checked in process: the housekeeping tick is
called with the time the test chooses (the clock the acceptor is given),
so each limit is seen to hold just before it and to act at it, without a
real wait. The end-to-end tests in tests/e2e/test_errors.py check the same
limits against a running server."""
from __future__ import annotations

import select
import selectors
import socket
import time

from prack.acceptor.connection import LINGER, QUEUED, READING, STREAMING, TAKEN, WRITING
from prack.ipc import frames
from prack.ipc.slots import SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN

EPS = 0.001


def _connect(acc, listener, clients):
    c = socket.create_connection(listener.getsockname())
    c.settimeout(5)
    clients.append(c)
    acc._on_accept(selectors.EVENT_READ)
    conn = next(k for k in acc.conns.values() if k.sock.getpeername() == c.getsockname())
    return c, conn


def _send(acc, c, conn, data: bytes) -> None:
    """The client sends; the acceptor reads all of it."""
    c.sendall(data)
    while conn.sock is not None and select.select([conn.sock], [], [], 0.05)[0]:
        acc._on_readable(conn)


def _answer(c) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _nothing_sent(c) -> bool:
    c.setblocking(False)
    try:
        return c.recv(1, socket.MSG_PEEK) is None
    except BlockingIOError:
        return True
    finally:
        c.settimeout(5)


def test_header_timeout_answers_408_and_closes(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_HEADER_TIMEOUT="7",
                                                      PRACK_TIMEOUTS_KEEPALIVE_TIMEOUT="30")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"GET / HTTP/1.1\r\nHo")
    deadline = conn.deadline
    acc._scan(deadline - EPS)
    assert conn.state == READING and _nothing_sent(c)
    # More of the head later does not buy more time: the deadline is the
    # whole head's, not one between reads.
    _send(acc, c, conn, b"st: x\r\nX-Slow: y")
    assert conn.deadline == deadline
    acc._scan(deadline)
    head = _answer(c)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close\r\n" in head
    assert conn.state == LINGER


def test_header_timeout_is_the_configured_one(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_HEADER_TIMEOUT="7",
                                                      PRACK_TIMEOUTS_KEEPALIVE_TIMEOUT="30")
    c, conn = _connect(acc, listener, clients)
    # Accepted: the keep-alive clock runs until the first byte ...
    assert 29 < conn.deadline - time.monotonic() <= 30
    _send(acc, c, conn, b"GET")
    # ... and from the first byte, the head's.
    assert 6 < conn.deadline - time.monotonic() <= 7


def test_idle_connection_closed_silently_after_keepalive_timeout(make_acceptor):
    acc, seg, listener, api_listener, api_side, clients = make_acceptor(
        PRACK_TIMEOUTS_KEEPALIVE_TIMEOUT="5")
    c, conn = _connect(acc, listener, clients)
    # One request, answered: the connection goes back to waiting.
    _send(acc, c, conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.state == QUEUED
    api_side.sendall(bytes(b"".join(
        frames.response_frame(conn.slot, conn.key, 200, 0, b"", b"ok"))))
    acc._on_api(selectors.EVENT_READ)
    assert _answer(c).startswith(b"HTTP/1.1 200 ")
    assert conn.state == READING and conn.reader.idle
    acc._scan(conn.deadline - EPS)
    assert conn.sock is not None
    acc._scan(conn.deadline)
    assert conn.sock is None
    assert c.recv(65536) == b""             # closed, without an answer


def test_a_connection_that_never_sends_is_closed_after_keepalive_timeout(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_KEEPALIVE_TIMEOUT="5")
    c, conn = _connect(acc, listener, clients)
    acc._scan(conn.deadline - EPS)
    assert conn.sock is not None
    acc._scan(conn.deadline)
    assert conn.sock is None and c.recv(100) == b""


def test_body_timeout_after_the_head_not_header_timeout(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_HEADER_TIMEOUT="1",
                                                      PRACK_TIMEOUTS_BODY_TIMEOUT="10")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    assert conn.body_since
    assert conn.deadline == conn.body_since + 10
    acc._scan(conn.body_since + 5)          # past header_timeout: still reading
    assert conn.state == READING and _nothing_sent(c)
    acc._scan(conn.deadline)
    assert _answer(c).startswith(b"HTTP/1.1 408 ")
    assert conn.state == LINGER


def test_body_timeout_counts_between_reads(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_BODY_TIMEOUT="10")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
    first = conn.deadline
    _send(acc, c, conn, b"345")
    assert conn.deadline >= first           # each read of the body re-arms it
    assert conn.deadline > conn.body_since + 10 - EPS


def test_min_body_rate_answers_408_to_a_slow_body(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_BODY_TIMEOUT="600",
                                                      PRACK_TIMEOUTS_MIN_BODY_RATE="1000")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    _send(acc, c, conn, b"x" * 3000)
    since = conn.body_since
    assert conn.body_read == 3000
    # Within the first seconds of grace, a slow start is allowed.
    acc._scan(since + 4.9)
    assert conn.state == READING and _nothing_sent(c)
    # 3000 bytes in 2.9 s is over 1000 bytes/s ...
    acc._scan(since + 2.9)
    assert conn.state == READING
    # ... in 6 s it is under.
    acc._scan(since + 6)
    head = _answer(c)
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close\r\n" in head


def test_queue_timeout_withdraws_the_request_with_504(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_QUEUE_TIMEOUT="3")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"GET /q HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.state == QUEUED
    assert conn.deadline == conn.started + 3
    slot, key = conn.slot, conn.key
    ring = seg.ring(0)
    acc._scan(conn.deadline - EPS)
    assert conn.state == QUEUED
    acc._scan(conn.deadline)
    head = _answer(c)
    assert head.startswith(b"HTTP/1.1 504 ")
    assert b"Connection:" not in head       # a timeout is not a protocol error
    assert ring.holds(slot, key, SLOT_GONE)
    assert conn.state == READING            # kept alive, for the next request


def test_a_request_taken_meanwhile_gets_response_timeout_instead(make_acceptor):
    acc, seg, listener, api_listener, api_side, clients = make_acceptor(
        PRACK_TIMEOUTS_QUEUE_TIMEOUT="3", PRACK_TIMEOUTS_RESPONSE_TIMEOUT="20")
    c, conn = _connect(acc, listener, clients)
    _send(acc, c, conn, b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
    ring = seg.ring(0)
    slot, key = conn.slot, conn.key
    assert ring.move(slot, key, SLOT_QUEUED, SLOT_TAKEN)    # as a worker's pull does
    now = conn.deadline
    acc._scan(now)
    assert conn.state == TAKEN and conn.deadline == now + 20
    acc._scan(now + 20 - EPS)
    assert conn.state == TAKEN
    acc._flush_api()                        # the HELLO, as the loop would
    api_side.setblocking(False)
    try:
        while api_side.recv(65536):
            pass
    except BlockingIOError:
        pass
    acc._scan(now + 20)
    assert _answer(c).startswith(b"HTTP/1.1 504 ")
    assert ring.holds(slot, key, SLOT_GONE)
    # The worker holding it is told (F_GONE).
    api_side.settimeout(5)
    data = api_side.recv(65536)
    gone = frames.stream_frame(frames.F_GONE, slot, key)
    assert b"".join(bytes(b) for b in gone) in data


def test_a_client_that_does_not_read_its_answer_is_closed_after_send_timeout(make_acceptor):
    acc, seg, listener, _, _, clients = make_acceptor(PRACK_TIMEOUTS_SEND_TIMEOUT="9")
    c, conn = _connect(acc, listener, clients)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    _send(acc, c, conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    big = b"x" * (8 << 20)
    acc.responses.respond(conn, 200, 0, b"", big, 0)
    assert conn.state == WRITING and conn.out
    acc._scan(conn.deadline - EPS)
    assert conn.sock is not None
    acc._scan(conn.deadline)
    assert conn.sock is None


def _streaming(acc, seg, api_side, c, conn, block: bytes = b""):
    """The request queued, taken by a worker, answered with F_START."""
    _send(acc, c, conn, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seg.ring(0).move(conn.slot, conn.key, SLOT_QUEUED, SLOT_TAKEN)
    acc._flush_api()
    api_side.sendall(b"".join(bytes(b) for b in frames.response_frame(
        conn.slot, conn.key, 200, 0, block, b"", kind=frames.F_START)))
    acc._on_api(selectors.EVENT_READ)
    assert conn.state == STREAMING
    assert _answer(c).startswith(b"HTTP/1.1 200 ")


def test_a_silent_worker_is_cut_off_after_stream_idle_timeout(make_acceptor):
    acc, seg, listener, _, api_side, clients = make_acceptor(
        PRACK_TIMEOUTS_STREAM_IDLE_TIMEOUT="12")
    c, conn = _connect(acc, listener, clients)
    _streaming(acc, seg, api_side, c, conn)
    last = conn.stream.last_data
    acc._scan(last + 12 - EPS)
    assert conn.state == STREAMING
    acc._scan(last + 12)
    assert conn.sock is None


def test_a_quiet_event_stream_gets_a_comment_every_sse_keepalive(make_acceptor):
    acc, seg, listener, _, api_side, clients = make_acceptor(
        PRACK_TIMEOUTS_SSE_KEEPALIVE="4", PRACK_TIMEOUTS_STREAM_IDLE_TIMEOUT="600")
    c, conn = _connect(acc, listener, clients)
    _streaming(acc, seg, api_side, c, conn, b"Content-Type: text/event-stream\r\n")
    last = conn.stream.last_write
    acc._scan(last + 4 - EPS)
    assert _nothing_sent(c)
    acc._scan(last + 4)
    assert c.recv(100) == b"3\r\n:\n\n\r\n"       # a comment line, as one chunk
