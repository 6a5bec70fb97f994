"""Taking new connections off a non-blocking listener, as both children do
(an acceptor its clients, the API process its workers and acceptor links).

accept(2) can fail in three ways that need three answers:
- nothing pending (EAGAIN): the wake-up is over;
- no descriptor or memory left (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
  listener stays readable, so the loop stops watching it until its next
  tick (ChildLoop._pause_accepting), or it would spin;
- an error of the one connection being accepted (Linux passes a new
  connection's pending network errors on and says to retry; EPERM is a
  firewall rule): go on with the next one.
"""
from __future__ import annotations

import errno

# Out of descriptors or memory: pause, do not spin.
EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Errors that concern only the connection being accepted (accept(2), Linux).
RETRY = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ETIMEDOUT") if hasattr(errno, name))


def accept_connections(listener, take, exhausted, batch: int = 64, tries: int = 64,
                       failed=None) -> None:
    """Accept from `listener` until nothing is pending, `batch` connections
    were taken or `tries` accept calls were made. take(sock, addr) returns
    whether the connection counts against the batch; exhausted(exc) is
    called when descriptors or memory ran out (and accepting stops). Other
    errors re-raise, or go to failed(exc), which ends this wake-up."""
    taken = 0
    for _ in range(tries):
        if taken == batch:
            return
        try:
            sock, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in EXHAUSTED:
                exhausted(exc)
                return
            if exc.errno in RETRY:
                continue
            if failed is None:
                raise
            failed(exc)
            return
        if take(sock, addr):
            taken += 1
