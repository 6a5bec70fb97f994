"""An acceptor driven in process: a real listener, ring and API link, its
event handlers called by the test instead of its loop, and its deadlines
checked by calling its housekeeping with the time the test chooses."""
from __future__ import annotations

import os
import selectors
import socket

import pytest

from prack import config
from prack.acceptor.process import Acceptor
from prack.ipc.ring import Segment


def _build(tmp_path, env: dict):
    cfg = config.load(None, env=env)
    seg = Segment.create(1, 8, 1 << 20)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    api_path = str(tmp_path / "api.sock")
    api_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    api_listener.bind(api_path)
    api_listener.listen(4)
    status_r, status_w = os.pipe()
    acc = Acceptor(cfg, 0, 1, listener, seg, api_path, status_w)
    acc.sel.register(listener, selectors.EVENT_READ, acc._on_accept)
    acc._connect_api()
    api_side, _ = api_listener.accept()
    clients: list = []

    def teardown():
        for conn in list(acc.conns.values()):
            acc.close(conn)
        for s in clients + [api_side, api_listener, listener]:
            s.close()
        if acc.api is not None:
            acc.api.close()
        acc.sel.close()
        seg.close()
        os.close(status_r)
        os.close(status_w)
    return (acc, seg, listener, api_listener, api_side, clients), teardown


@pytest.fixture
def acceptor(tmp_path):
    parts, teardown = _build(tmp_path, {})
    yield parts
    teardown()


@pytest.fixture
def make_acceptor(tmp_path):
    """make_acceptor(PRACK_TIMEOUTS_HEADER_TIMEOUT="7", ...): an acceptor
    with those settings (at most one per test)."""
    teardowns = []

    def make(**env):
        parts, teardown = _build(tmp_path, env)
        teardowns.append(teardown)
        return parts
    yield make
    for teardown in teardowns:
        teardown()
