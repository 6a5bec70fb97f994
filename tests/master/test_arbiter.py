"""The master's supervision loop, driven in process: no children forked."""
from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import subprocess
import time

import pytest

from prack import config
from prack.master import arbiter, upgrade


@pytest.fixture
def master(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    m = arbiter.Master(config.load(None), None, upgrade.Inherited())
    m.sel = selectors.DefaultSelector()
    m.wake_r, m.wake_w = socket.socketpair()
    m.sel.register(m.wake_r, selectors.EVENT_READ, m._on_signal)
    m.status_r, m.status_w = os.pipe()
    m.listener = socket.socket()
    m.api_listener = socket.socket()
    m.link_listener = socket.socket()
    m.forward_listener = socket.socket()
    # A stand-in successor process: SIGTERMed by the stop, reaped by Popen.
    sleeper = subprocess.Popen(["sleep", "60"])
    monkeypatch.setattr(m, "_reap", lambda: None)
    yield m, sleeper
    sleeper.kill()
    sleeper.wait()
    for sock in (m.wake_r, m.wake_w, m.listener, m.api_listener, m.link_listener,
                 m.forward_listener):
        if sock is not None:
            sock.close()
    for fd in (m.status_r, m.status_w):
        try:
            os.close(fd)
        except OSError:
            pass
    m.sel.close()


def _successor(m, pid: int) -> int:
    """Start watching a successor's pipe, as an upgrade does; the write end."""
    pipe_r, pipe_w = os.pipe()
    os.set_blocking(pipe_r, False)
    m.successor = upgrade.Successor(pid, pipe_r, 2, time.monotonic() + 60, "SIGUSR2")
    m.sel.register(pipe_r, selectors.EVENT_READ, m._on_successor)
    return pipe_w


def test_a_stop_in_the_same_turn_as_the_successors_report_stops_gracefully(master):
    """A SIGTERM and a line from a starting successor woke the loop together:
    the stop forgets the successor and closes its pipe, and the pipe's
    stale event then ran `_on_successor` with no successor: the master died
    on an AttributeError and SIGKILLed its children instead of draining."""
    m, sleeper = master
    pipe_w = _successor(m, sleeper.pid)
    try:
        m.wake_w.send(bytes([signal.SIGTERM]))
        os.write(pipe_w, b"failed not yet\n")
        m._loop()       # returns once the (childless) generation has stopped
    finally:
        os.close(pipe_w)
    assert m.stopping and m.successor is None
    assert sleeper.wait(timeout=10) == -signal.SIGTERM


def test_a_child_forked_after_the_successors_pipe_closed_starts(master, monkeypatch):
    """A successor that reported `failed` closes its pipe before it exits;
    until it is reaped the master still holds it as its successor, with the
    pipe closed (-1). A child forked in that window closed fd -1, crashed
    on EBADF and was respawned as a failure."""
    m, sleeper = master
    pipe_w = _successor(m, sleeper.pid)
    os.close(pipe_w)
    m._on_successor(selectors.EVENT_READ)    # end of file: the pipe is closed
    assert m.successor is not None and m.successor.pipe == -1

    class Built:
        def __init__(self, *args, **kwargs):
            self.args = args
            self.beat = kwargs.get("beat")

    monkeypatch.setattr(arbiter, "ApiServer", Built)
    m.listener.close()
    m.listener = None
    child = m._child_process(arbiter.API, 0)
    assert isinstance(child, Built) and child.beat is not None


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_failed_fork_is_retried_not_fatal(monkeypatch):
    """fork() failing (EAGAIN: a container's pids limit, RLIMIT_NPROC; or
    ENOMEM) while the master respawns a child raised out of the master's loop:
    its cleanup SIGKILLed every other child, so one failed respawn took the
    whole server down. Now the child is tried again later, with backoff."""
    m = arbiter.Master(config.load(None), None, upgrade.Inherited())
    calls = []

    def no_fork():
        calls.append(1)
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    m.respawns.at[(arbiter.ACCEPTOR, 0)] = 0.0
    records = _Records()
    logger = logging.getLogger("prack.master")
    logger.addHandler(records)
    try:
        m._spawn_due(1.0)
        m._spawn_due(m.respawns.at[(arbiter.ACCEPTOR, 0)])
    finally:
        logger.removeHandler(records)
    assert len(calls) == 2 and len(m.own) == 0
    first, second = records.messages
    assert "acceptor 0: cannot start it: fork:" in first and "trying again in 0.1s" in first
    assert "trying again in 0.2s" in second
    assert (arbiter.ACCEPTOR, 0) in m.respawns.at


def test_the_pidfile_is_written_before_the_ready_line(master, tmp_path, monkeypatch):
    """A script that waits for the "ready:" line and then reads the pidfile
    finds it: the file is in place before the line is logged."""
    from prack.master.notify import Pidfile
    m, _ = master
    path = tmp_path / "prack.pid"
    m.pidfile = Pidfile(str(path))
    m.listener.close()
    m.api_listener.close()
    m.listener = socket.create_server(("127.0.0.1", 0))
    m.api_listener = socket.create_server(("127.0.0.1", 0))
    seen = []

    class AtReady(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("ready:"):
                seen.append(path.exists())

    handler = AtReady()
    logger = logging.getLogger("prack.master")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        m._announce()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        m.pidfile.remove()
    assert seen == [True]
