"""Review findings in the master's supervision (src/prack/master.py)."""
from __future__ import annotations

import errno
import logging
import os

from prack import config, master, upgrade


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
    m = master.Master(config.load(None), None, upgrade.Inherited())
    calls = []

    def no_fork():
        calls.append(1)
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    m.respawn_at[(master.ACCEPTOR, 0)] = 0.0
    records = _Records()
    logger = logging.getLogger("prack.master")
    logger.addHandler(records)
    try:
        m._respawn_due(1.0)
        m._respawn_due(m.respawn_at[(master.ACCEPTOR, 0)])
    finally:
        logger.removeHandler(records)
    assert len(calls) == 2 and m.children == {}
    first, second = records.messages
    assert "acceptor 0: cannot start it: fork:" in first and "trying again in 0.1s" in first
    assert "trying again in 0.2s" in second
    assert (master.ACCEPTOR, 0) in m.respawn_at
