"""The acceptor connection's state table: every transition method lands
where TRANSITIONS says, the table names no event without its method, and
no module but acceptor/connection.py moves a connection's state."""
from __future__ import annotations

import ast
import pathlib
import socket

import pytest

from prack.acceptor import connection
from prack.acceptor.connection import CLOSED, NAMES, READING, TRANSITIONS, Conn
from prack.protocol import http

ACCEPTOR = pathlib.Path(connection.__file__).parent

# The arguments each transition method takes, beyond the connection.
ARGS = {
    "queue": (7,),
    "take": (1.0,),
    "answer": (200, True),
    "next_request": (1.0,),
    "linger": (1.0,),
    "close": (),
    "upload": (0.0, 1.0),
    "body_done": (True, 1.0),
    "stream_start": (object(), 200, True),
    "end_stream": (),
    "upgrade": (object(), 1.0),
}


class _Sel:
    def register(self, *args):
        pass

    def unregister(self, *args):
        pass


@pytest.fixture
def make_conn():
    socks = []

    def make(state: int) -> Conn:
        a, b = socket.socketpair()
        socks.extend((a, b))
        conn = Conn(a, _Sel(), 0, http.RequestReader(http.Limits(1 << 20, 8192, 8192, 100)),
                    ("127.0.0.1", 1), 0.0)
        conn.state = state
        return conn
    yield make
    for s in socks:
        s.close()


def test_every_state_is_named_and_in_the_table():
    assert sorted(TRANSITIONS) == list(range(len(NAMES)))
    for state, events in TRANSITIONS.items():
        assert events["close"] == CLOSED, NAMES[state]


@pytest.mark.parametrize("state,event", [(s, e) for s, events in TRANSITIONS.items()
                                         for e in events])
def test_each_transition_lands_where_the_table_says(make_conn, state, event):
    conn = make_conn(state)
    getattr(conn, event)(*ARGS[event])
    assert conn.state == TRANSITIONS[state][event], (NAMES[state], event)


def test_every_transition_method_is_an_event_of_the_table():
    events = {e for evs in TRANSITIONS.values() for e in evs}
    assert set(ARGS) == events


def test_no_other_module_assigns_a_connection_state():
    for path in ACCEPTOR.glob("*.py"):
        if path.name == "connection.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                assert not (isinstance(target, ast.Attribute) and target.attr == "state"), \
                    "%s:%d assigns .state" % (path.name, node.lineno)


def test_slot_words_are_not_written_out_by_hand():
    for path in ACCEPTOR.glob("*.py"):
        text = path.read_text()
        assert "<< 2)" not in text and "key << " not in text, path.name


def test_a_new_connection_is_reading_and_a_closed_one_is_closed(make_conn):
    conn = make_conn(READING)
    assert conn.state == READING
    conn.close()
    assert conn.state == CLOSED and conn.sock is None
    conn.close()                            # idempotent
