"""A full acceptor stops watching the shared listener, so a new connection
goes to an acceptor with room (or waits in the kernel's listen queue), and
watches it again as soon as one of its connections ends (issue 16)."""
from __future__ import annotations

import logging
import selectors
import socket

import pytest


def _connect(listener, clients) -> socket.socket:
    c = socket.create_connection(listener.getsockname())
    c.settimeout(5)
    clients.append(c)
    return c


def _watched(acc, listener) -> bool:
    return any(key.fileobj is listener for key in acc.sel.get_map().values())


def _fill(acc, listener, clients) -> None:
    for _ in range(acc.nslots):
        _connect(listener, clients)
        acc._on_accept(selectors.EVENT_READ)
    assert len(acc.conns) == acc.nslots


def test_taking_the_last_free_slot_stops_watching_the_listener(acceptor):
    acc, seg, listener, api_listener, api_side, clients = acceptor
    _fill(acc, listener, clients)
    assert not _watched(acc, listener)
    # The next connection is left in the listen queue for another acceptor:
    # this one is not woken for it and refuses nothing.
    waiting = _connect(listener, clients)
    assert not [key for key, _ in acc.sel.select(0) if key.fileobj is listener]
    assert len(acc.conns) == acc.nslots
    waiting.setblocking(False)
    with pytest.raises(BlockingIOError):
        waiting.recv(1)         # no 503, no close: nothing at all


def test_a_freed_slot_takes_the_connection_waiting_in_the_queue(acceptor):
    acc, seg, listener, api_listener, api_side, clients = acceptor
    _fill(acc, listener, clients)
    waiting = _connect(listener, clients)
    acc.close(next(iter(acc.conns.values())))     # one client's connection ends
    assert _watched(acc, listener)
    woken = [key for key, _ in acc.sel.select(5) if key.fileobj is listener]
    assert woken, "the waiting connection did not wake the acceptor"
    acc._on_accept(selectors.EVENT_READ)
    assert len(acc.conns) == acc.nslots
    assert waiting.getsockname() in [conn.sock.getpeername() for conn in acc.conns.values()]
    assert not _watched(acc, listener)          # full again


def test_a_full_acceptor_that_stops_does_not_watch_its_closed_listener(acceptor):
    """Connections ending during a graceful stop free slots, but the
    listener was closed by the stop: it must not be watched again."""
    acc, seg, listener, api_listener, api_side, clients = acceptor
    _fill(acc, listener, clients)
    acc._begin_stop()
    for conn in list(acc.conns.values()):
        acc.close(conn)
    assert listener.fileno() == -1
    assert not _watched(acc, listener)
    assert not acc.full


def test_filling_up_is_logged_once_a_minute_not_at_every_connection(acceptor, caplog):
    acc, seg, listener, api_listener, api_side, clients = acceptor
    caplog.set_level(logging.WARNING, logger="prack.acceptor")
    _fill(acc, listener, clients)
    for _ in range(3):          # under load: a slot frees, the next connection fills it
        acc.close(next(iter(acc.conns.values())))
        _connect(listener, clients)
        acc._on_accept(selectors.EVENT_READ)
        assert acc.full
    full = [r for r in caplog.records if "connection slots in use" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in full]
    assert "all 8 connection slots in use" in full[0].getMessage()
