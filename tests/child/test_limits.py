"""raise_fd_limit: a child lifts its open-file limit towards what it needs,
never past the hard limit, and says what it got. Run in a forked process,
so the test's own limit is left alone."""
from __future__ import annotations

import os
import resource

from prack.child.limits import raise_fd_limit


def in_child(soft: int, hard: int, wanted: int) -> tuple[int, int, int]:
    """(returned, soft after, hard after) in a child started at soft/hard."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            got = raise_fd_limit(wanted)
            now = resource.getrlimit(resource.RLIMIT_NOFILE)
            os.write(w, b"%d %d %d" % (got, now[0], now[1]))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return tuple(int(x) for x in data.split())


def test_raised_within_the_hard_limit():
    assert in_child(256, 1024, 600) == (600, 600, 1024)


def test_capped_at_the_hard_limit():
    assert in_child(256, 1024, 5000) == (1024, 1024, 1024)


def test_never_lowered():
    assert in_child(900, 1024, 300) == (900, 900, 1024)
