"""The idle rules of the API port's worker connections (api/idle.py), on a
fake clock and stand-in connections: which ones are closed for idling past
api.idle_timeout, and which make room at api.max_connections."""
from __future__ import annotations

from prack.api.idle import IdleWorkers, is_spare


class Reader:
    def __init__(self):
        self.buf = bytearray()


class Conn:
    """What the rules read of a WorkerConn."""

    def __init__(self, born: float, last: float = 0.0, busy: bool = False):
        self.born = born
        self.last = last
        self.busy = busy
        self.out: list = []
        self.file = None
        self.reader = Reader()

    def __repr__(self):
        return "Conn(born=%s, last=%s, busy=%s)" % (self.born, self.last, self.busy)


def test_idle_past_the_timeout_is_closed():
    rules = IdleWorkers(timeout=70, cap=100)
    quiet = Conn(born=0, last=10)
    recent = Conn(born=0, last=50)
    assert rules.expired([quiet, recent], now=79) == []
    rules.next_look = 0
    assert rules.expired([quiet, recent], now=81) == [quiet]


def test_a_never_used_connection_counts_from_its_accept():
    rules = IdleWorkers(timeout=10, cap=100)
    fresh = Conn(born=100)
    assert rules.expired([fresh], now=105) == []
    rules.next_look = 0
    assert rules.expired([fresh], now=111) == [fresh]


def test_a_call_in_progress_is_never_idle_and_counts_from_its_end():
    """A long poll (busy) outlives the timeout; once answered, its idleness
    counts from the last look that saw it busy."""
    rules = IdleWorkers(timeout=10, cap=100)
    poll = Conn(born=0, last=1, busy=True)
    for now in (5, 20, 40):
        rules.next_look = 0
        assert rules.expired([poll], now=now) == []
    assert poll.last == 40
    poll.busy = False
    rules.next_look = 0
    assert rules.expired([poll], now=45) == []
    rules.next_look = 0
    assert rules.expired([poll], now=51) == [poll]


def test_unsent_answers_half_read_calls_and_files_are_not_idle():
    rules = IdleWorkers(timeout=1, cap=100)
    sending, reading, filing = Conn(0, 1), Conn(0, 1), Conn(0, 1)
    sending.out.append(b"x")
    reading.reader.buf += b"GET / HT"
    filing.file = [3, 0, 10]
    assert rules.expired([sending, reading, filing], now=100) == []


def test_looks_about_once_a_second():
    rules = IdleWorkers(timeout=10, cap=100)
    old = Conn(born=0, last=1)
    assert rules.expired([old], now=100) == [old]
    assert rules.expired([old], now=100.5) == []
    assert rules.expired([old], now=101) == [old]


def test_room_is_made_from_the_longest_idle_keep_alive_connections():
    rules = IdleWorkers(timeout=1000, cap=32)          # a batch of 2
    conns = [Conn(born=0, last=10 + i) for i in range(32)]
    conns[0].busy = True                                 # a long poll: kept
    conns[1].last = 0.0                                  # never used: kept
    assert rules.full(len(conns))
    assert rules.make_room(conns) == [conns[2], conns[3]]


def test_no_room_when_nothing_is_spare():
    rules = IdleWorkers(timeout=1000, cap=16)
    conns = [Conn(born=0, last=5, busy=True) for _ in range(16)]
    assert rules.make_room(conns) == []
    assert not rules.full(15)


def test_spare_means_used_and_idle():
    assert is_spare(Conn(born=0, last=3))
    assert not is_spare(Conn(born=0))
    assert not is_spare(Conn(born=0, last=3, busy=True))
