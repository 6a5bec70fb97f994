"""The accept loop both children use: a batch per wake-up, the errors of
one connection skipped, an exhausted process pausing instead of spinning."""
from __future__ import annotations

import errno

import pytest

from prack.child.accept import accept_connections


class _Listener:
    """Hands out `results` in turn (a connection, or an error to raise)."""

    def __init__(self, results):
        self.results = list(results)
        self.calls = 0

    def accept(self):
        self.calls += 1
        r = self.results.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r


def _conn(n):
    return ("sock%d" % n, ("127.0.0.1", n))


def test_takes_until_nothing_is_pending():
    taken = []
    lst = _Listener([_conn(1), _conn(2), BlockingIOError()])
    accept_connections(lst, lambda s, a: taken.append(s) or True, None)
    assert taken == ["sock1", "sock2"]


def test_stops_after_the_batch():
    taken = []
    lst = _Listener([_conn(1), _conn(2), _conn(3)])
    accept_connections(lst, lambda s, a: taken.append(s) or True, None, batch=1)
    assert taken == ["sock1"] and lst.calls == 1


def test_a_connection_that_does_not_count_leaves_room_in_the_batch():
    taken = []
    lst = _Listener([_conn(1), _conn(2), BlockingIOError()])
    accept_connections(lst, lambda s, a: taken.append(s) or s == "sock2", None, batch=1)
    assert taken == ["sock1", "sock2"]


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPERM, errno.ENETUNREACH,
                                  errno.EHOSTUNREACH, errno.EPROTO])
def test_errors_of_one_connection_are_skipped(code):
    taken = []
    lst = _Listener([OSError(code, "x"), _conn(1), BlockingIOError()])
    accept_connections(lst, lambda s, a: taken.append(s) or True, None)
    assert taken == ["sock1"]


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_exhaustion_pauses_accepting(code):
    paused = []
    lst = _Listener([OSError(code, "x"), _conn(1)])
    accept_connections(lst, lambda s, a: True, paused.append)
    assert [e.errno for e in paused] == [code] and lst.calls == 1


def test_other_errors_raise_or_go_to_failed():
    with pytest.raises(OSError):
        accept_connections(_Listener([OSError(errno.EBADF, "x")]), lambda s, a: True, None)
    failed = []
    accept_connections(_Listener([OSError(errno.EBADF, "x")]), lambda s, a: True, None,
                       failed=failed.append)
    assert [e.errno for e in failed] == [errno.EBADF]


def test_tries_bound_one_wake_up():
    lst = _Listener([OSError(errno.ECONNABORTED, "x")] * 10)
    accept_connections(lst, lambda s, a: True, None, tries=4)
    assert lst.calls == 4
