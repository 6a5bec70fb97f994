"""Review D: the acceptor takes one connection per listener wake-up."""
from __future__ import annotations

import selectors
import socket


def test_an_acceptor_takes_one_connection_per_wake_up(acceptor):
    """Every acceptor is woken for a new connection and takes one
    (ACCEPT_BATCH), so a burst spreads over them instead of landing on
    whichever woke first. (A full acceptor once refused one connection per
    wake-up with a 503; it now leaves the listener instead:
    test_full_acceptor_leaves_the_listener.py.)"""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    for _ in range(5):
        c = socket.create_connection(listener.getsockname())
        c.settimeout(5)
        clients.append(c)
    for wake in range(1, 6):
        acc._on_accept(selectors.EVENT_READ)
        assert len(acc.conns) == wake
    ours = sorted(conn.sock.getpeername() for conn in acc.conns.values())
    assert ours == sorted(c.getsockname() for c in clients)
