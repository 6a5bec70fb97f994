"""The buffered non-blocking connection both children use: output that
waits for the socket, a file region after it, the selector's events kept
in step, and re-entry turned into another turn of one loop."""
from __future__ import annotations

import os
import selectors
import socket

import pytest

from prack.child.connection import EVENT_READ, EVENT_WRITE, Connection


@pytest.fixture
def pair():
    sel = selectors.DefaultSelector()
    a, b = socket.socketpair()
    a.setblocking(False)
    yield sel, a, b
    for s in (a, b):
        s.close()
    sel.close()


def test_output_waits_for_a_full_socket_and_goes_when_it_drains(pair):
    sel, a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = Connection(a, sel)
    assert sel.get_key(a).events == EVENT_READ
    big = b"x" * (1 << 20)
    assert conn.add_output([big])                # was empty: the caller flushes
    sent = conn.flush()
    assert 0 < sent < len(big) and conn.sending()
    assert not conn.add_output([b"tail"])        # a flush is already waiting
    conn.want_writes()
    assert sel.get_key(a).events == EVENT_READ | EVENT_WRITE
    got = 0
    b.settimeout(5)
    while conn.sending():
        got += len(b.recv(1 << 20))
        conn.flush()
    conn.drop_writes()
    assert sel.get_key(a).events == EVENT_READ
    b.setblocking(False)
    try:
        while True:
            data = b.recv(1 << 20)
            if not data:
                break
            got += len(data)
    except BlockingIOError:
        pass
    assert got == len(big) + 4


def test_a_file_region_follows_the_buffers(pair, tmp_path):
    sel, a, b = pair
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    conn = Connection(a, sel)
    conn.file = [os.open(path, os.O_RDONLY), 2, 5]
    conn.add_output([b"head:"])
    assert conn.flush() == 5
    assert conn.file is None                     # sent, and its descriptor closed
    b.settimeout(5)
    assert b.recv(100) == b"head:23456"


def test_flush_reports_a_peer_that_has_gone(pair):
    sel, a, b = pair
    conn = Connection(a, sel)
    b.close()
    conn.add_output([b"x" * 100000])
    assert conn.flush() == -1


def test_watch_registers_modifies_and_unregisters(pair):
    sel, a, b = pair
    conn = Connection(a, sel, 0)
    with pytest.raises(KeyError):
        sel.get_key(a)
    conn.watch(EVENT_READ)
    assert sel.get_key(a).events == EVENT_READ and sel.get_key(a).data is conn
    conn.watch(EVENT_READ | EVENT_WRITE)
    assert sel.get_key(a).events == EVENT_READ | EVENT_WRITE
    conn.watch(0)
    with pytest.raises(KeyError):
        sel.get_key(a)


def test_drive_turns_a_nested_call_into_another_turn(pair):
    sel, a, b = pair
    conn = Connection(a, sel)
    depth = []
    turns = []

    def step(c):
        depth.append(len(depth))
        turns.append(len(turns))
        if len(turns) < 3:
            c.drive(step)                        # re-entry: only asks for a turn
        depth.pop()
    conn.drive(step)
    assert turns == [0, 1, 2] and not depth and not conn.processing


def test_drive_goes_on_while_the_step_says_so_and_stops_when_closed(pair):
    sel, a, b = pair
    conn = Connection(a, sel)
    calls = []

    def step(c):
        calls.append(1)
        if len(calls) == 2:
            c.release()
        return True
    conn.drive(step)
    assert len(calls) == 2 and conn.sock is None


def test_release_is_idempotent_and_closes_the_file(pair, tmp_path):
    sel, a, b = pair
    path = tmp_path / "f"
    path.write_bytes(b"x")
    conn = Connection(a, sel)
    fd = os.open(path, os.O_RDONLY)
    conn.file = [fd, 0, 1]
    conn.add_output([b"pending"])
    conn.release()
    conn.release()
    assert conn.sock is None and conn.out == [] and conn.file is None
    with pytest.raises(OSError):
        os.fstat(fd)


def test_receive_tells_nothing_yet_from_a_peer_that_has_gone(pair):
    sel, a, b = pair
    conn = Connection(a, sel)
    assert conn.receive() is None                # nothing waits
    b.sendall(b"abc")
    assert conn.receive() == b"abc"
    b.close()
    assert conn.receive() == b""                 # closed


def test_receive_reports_a_reset_as_gone(pair):
    sel, a, b = pair
    conn = Connection(a, sel)
    a.sendall(b"unread")
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    b.close()                                    # unread bytes: a reset
    assert conn.receive() == b""
