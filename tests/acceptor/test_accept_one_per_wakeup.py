"""Review D: the acceptor takes one connection per listener wake-up, a
refused one included."""
from __future__ import annotations

import selectors
import socket


def test_a_full_acceptor_refuses_one_connection_per_wake_up(acceptor):
    """Every acceptor is woken for a new connection and takes one
    (ACCEPT_BATCH), so a burst spreads over them. A full one (no free slot)
    refused every pending connection in one wake-up (refusals did not
    count): with a burst, most of it got 503 while another acceptor had
    room. It now refuses one, and leaves the rest to the others."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    acc.free_slots.clear()            # as if max_connections were reached
    for _ in range(5):
        c = socket.create_connection(listener.getsockname())
        c.settimeout(5)
        clients.append(c)
    answered = []
    for wake in range(1, 6):
        acc._on_accept(selectors.EVENT_READ)
        answered = [c for c in clients if _got_503(c)]
        assert len(answered) == wake, (wake, len(answered))
    assert not acc.conns


def _got_503(c: socket.socket) -> bool:
    c.setblocking(False)
    try:
        data = c.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    finally:
        c.setblocking(True)
    return data.startswith(b"HTTP/1.1 503 ")
