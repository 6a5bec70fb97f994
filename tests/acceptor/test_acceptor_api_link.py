"""An acceptor driven in process, for event orders an end-to-end test
cannot force (the API process dying between two frames of one read)."""
from __future__ import annotations

import errno
import selectors
import socket

from prack.acceptor.connection import QUEUED, STREAMING
from prack.ipc import frames, slots


def _client(acc, listener, clients, data: bytes):
    c = socket.create_connection(listener.getsockname())
    c.settimeout(5)
    clients.append(c)
    acc._on_accept(selectors.EVENT_READ)
    conn = next(k for k in acc.conns.values() if k.sock.getpeername() == c.getsockname())
    c.sendall(data)
    while conn.state != QUEUED:
        acc._on_readable(conn)
    return c, conn


def test_api_lost_while_handling_a_read_of_several_frames(acceptor):
    """Frame 1 answers a keep-alive client whose pipelined request is then
    queued; the wake-up for it finds the API process gone, and the acceptor
    reconnects. Frame 2, read in the same recv, must still be delivered, not
    crash the acceptor on a buffer emptied under the frame loop."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    a, conn_a = _client(acc, listener, clients,
                        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a2 HTTP/1.1\r\nHost: x\r\n\r\n")
    b, conn_b = _client(acc, listener, clients, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    ring = seg.ring(0)
    while ring.peek() is not None:      # the API process takes both records...
        ring.release()
    assert ring.sleep()                 # ...and sleeps: the next push wakes it
    acc._flush_api()
    api_side.recv(1 << 16)              # the acceptor's HELLO
    answers = []
    for conn, body in ((conn_a, b"answer a"), (conn_b, b"answer b")):
        answers += frames.response_frame(conn.slot, conn.key, 200, 0, b"", body)
    api_side.sendall(b"".join(answers))
    api_side.close()                    # the API process dies after writing both
    acc._on_api(selectors.EVENT_READ)
    assert conn_a.state == QUEUED       # a2 queued; its wake-up found the link gone
    assert conn_b.state != QUEUED and conn_b.status == 200
    assert b"answer b" in b.recv(1 << 16)
    assert b"answer a" in a.recv(1 << 16)


def test_a_failed_wake_up_does_not_drop_answers_still_unread(acceptor):
    """The API process answers a client and dies before the acceptor reads
    the link; the acceptor then queues another request, and the wake-up for
    it fails (EPIPE) before the link is read. The answer is in the socket:
    it must still reach its client, not be closed away with the socket
    (that client was then answered by nobody: its slot was already FREE)."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    a, conn_a = _client(acc, listener, clients, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    ring = seg.ring(0)
    view = ring.peek()                  # the API process takes the record...
    view.release()
    ring.release()
    assert ring.move(conn_a.slot, conn_a.key, slots.SLOT_QUEUED, slots.SLOT_TAKEN)
    assert ring.sleep()                 # ...and sleeps: the next push wakes it
    acc._flush_api()
    api_side.recv(1 << 16)              # the acceptor's HELLO
    # The worker's answer is delivered (TAKEN -> FREE, frame sent), then
    # the API process is killed.
    assert ring.move(conn_a.slot, conn_a.key, slots.SLOT_TAKEN, slots.SLOT_FREE)
    api_side.sendall(b"".join(frames.response_frame(conn_a.slot, conn_a.key, 200, 0, b"",
                                                    b"answer a")))
    api_side.close()
    # A new request is read before the link: its wake-up meets the dead peer.
    _client(acc, listener, clients, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):                  # the loop goes on: the link is read
        for key, mask in acc.sel.select(0.05):
            if key.data is not acc._on_accept:
                acc._on_event(key.data, mask)
    assert conn_a.status == 200
    assert b"answer a" in a.recv(1 << 16)
    assert acc.api is not None          # and the acceptor reconnected


class _Listener:
    """Stands in for the listening socket: hands out `results` in turn."""

    family = socket.AF_INET

    def __init__(self, results):
        self.results = list(results)

    def accept(self):
        r = self.results.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r


class _ResetSocket:
    """An accepted socket the peer already reset: BSD and macOS refuse
    setsockopt on it (EINVAL / ECONNRESET)."""

    family = socket.AF_INET
    closed = False

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        raise OSError(errno.EINVAL, "Invalid argument")

    def fileno(self):
        return 10_000

    def close(self):
        self.closed = True


def test_errors_of_one_new_connection_do_not_crash_the_acceptor(acceptor):
    """accept(2) passes a new connection's pending network errors on
    (ENETUNREACH, EHOSTUNREACH, EPERM from a firewall ...; Linux says to
    retry), and a reset connection may refuse setsockopt: each concerns one
    connection, and the acceptor goes on with the next."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    reset = _ResetSocket()
    real = socket.create_connection(listener.getsockname())
    clients.append(real)
    good = listener.accept()
    acc.listener = _Listener([OSError(errno.ENETUNREACH, "unreachable"),
                              OSError(errno.EPERM, "firewall"),
                              OSError(errno.EHOSTUNREACH, "unreachable"),
                              (reset, ("127.0.0.1", 1)),
                              good, BlockingIOError()])
    acc._on_accept(selectors.EVENT_READ)
    assert reset.closed
    conn, = acc.conns.values()
    assert conn.sock is good[0]
    acc.listener = listener


def test_a_client_leaving_a_stream_as_the_api_process_dies(acceptor):
    """The client of a streamed response closes; telling the API process
    (F_GONE) finds it dead, and the link's loss closes every streaming
    connection, this one included, from inside its own close. The
    acceptor closed it a second time there and crashed (the selector
    refused the closed socket), losing every connection it held."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    c, conn = _client(acc, listener, clients, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    other, other_conn = _client(acc, listener, clients, b"GET /o HTTP/1.1\r\nHost: x\r\n\r\n")
    ring = seg.ring(0)
    assert ring.move(conn.slot, conn.key, slots.SLOT_QUEUED, slots.SLOT_TAKEN)  # a worker's pull
    acc._flush_api()
    api_side.sendall(b"".join(bytes(b) for b in frames.response_frame(
        conn.slot, conn.key, 200, 0, b"", b"", kind=frames.F_START)))
    acc._on_api(selectors.EVENT_READ)
    assert conn.state == STREAMING
    api_side.close()                    # the API process dies
    c.close()                           # and the client leaves
    acc._on_readable(conn)
    assert conn.sock is None and conn.fd not in acc.conns
    assert acc.free_slots.count(conn.slot) == 1
    assert other_conn.sock is not None  # the others are still served
