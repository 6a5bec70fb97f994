"""Idle worker connections on the API port: which ones to close.

A worker's HTTP client may keep a connection open after its call and never
use it again (Go's, when a response body is left unclosed): one connection
per request, forever. The original Prack closed every API connection after
its answer, which hid this; Prack keeps them alive, so it must close them
itself. Two rules, as an HTTP server does with its keep-alive clients (nginx
reuses its connections the same way when they run short):

- a connection with no call in progress for `timeout` seconds is closed;
- near the process's cap, the longest-idle ones are closed to make room.

A connection with a call in progress (a long poll, a held or forwarded post,
an answer still being sent) is never idle. The decisions take the time as
an argument, so they can be tested with a fake clock; the API process
closes what they return.
"""
from __future__ import annotations

# Bytes read on a connection stamp it (WorkerConn.last, 0 until the first
# read; WorkerConn.born is when it was accepted); a connection with a call
# in progress is stamped again at each look, so idleness counts from the
# end of its last call, give or take one look.


def is_idle(conn) -> bool:
    """No call in progress and nothing half-received or unsent."""
    return not (conn.busy or conn.out or conn.file is not None or conn.reader.buf)


def is_spare(conn) -> bool:
    """Idle after at least one call: a keep-alive connection. A new one that
    has sent nothing yet is not taken to make room: its first request may be
    on its way, and a client retries a request only on a reused connection."""
    return conn.last != 0.0 and is_idle(conn)


class IdleWorkers:
    """The idle rules for one API process's worker connections: `timeout`
    seconds, at most `cap` connections."""

    def __init__(self, timeout: float, cap: int) -> None:
        self.timeout = timeout
        self.cap = cap
        # Room made at once when the cap is reached: a batch, so that the
        # sort by idleness runs once per cap/16 new connections, not each.
        self.batch = max(1, cap // 16)
        self.every = min(1.0, timeout / 4)
        self.next_look = 0.0

    def expired(self, conns, now: float) -> list:
        """The connections idle for longer than the timeout (looked at about
        once a second; [] in between)."""
        if now < self.next_look:
            return []
        self.next_look = now + self.every
        limit = now - self.timeout
        out = []
        for conn in conns:
            if not is_idle(conn):
                conn.last = now
            elif (conn.last or conn.born) < limit:
                out.append(conn)
        return out

    def full(self, count: int) -> bool:
        return count >= self.cap

    def make_room(self, conns) -> list:
        """The longest-idle connections to close so that a batch of new ones
        fits under the cap: at most `batch`, each a keep-alive connection
        with no call in progress (is_spare; [] when there is none)."""
        conns = list(conns)
        need = len(conns) - self.cap + self.batch
        if need <= 0:
            return []
        idle = [conn for conn in conns if is_spare(conn)]
        idle.sort(key=lambda conn: conn.last)
        return idle[:need]
