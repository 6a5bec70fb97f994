"""The old master's side of the hand-over: what a starting successor reports
on its pipe (prack.master.upgrade.Successor)."""
from __future__ import annotations

import os

from prack.master import upgrade


def _successor():
    pipe_r, pipe_w = os.pipe()
    os.set_blocking(pipe_r, False)
    return upgrade.Successor(4242, pipe_r, 2, 0.0, "SIGUSR2"), pipe_w


def test_a_report_split_across_reads_is_read_whole():
    succ, pipe_w = _successor()
    try:
        assert succ.read() is None            # nothing yet
        os.write(pipe_w, b"fail")
        assert succ.read() is None and succ.reason == ""
        os.write(pipe_w, b"ed bad config\nrea")
        assert succ.read() is None and succ.reason == "bad config"
        os.write(pipe_w, b"dy 4242\n")
        assert succ.read() == succ.READY
    finally:
        os.close(pipe_w)
        succ.close()


def test_end_of_file_is_reported_once_and_close_is_idempotent():
    succ, pipe_w = _successor()
    os.close(pipe_w)
    assert succ.read() == succ.CLOSED
    succ.close()
    assert succ.pipe == -1
    succ.close()


def test_in_place_follows_server_reexec():
    assert upgrade.in_place("in-place")
    assert not upgrade.in_place("spawn")
    assert upgrade.in_place("auto") == (os.getpid() == 1)
