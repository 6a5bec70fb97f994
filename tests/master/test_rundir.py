"""The runtime directory's lock: made locked, swept only when no process
holds it, removed by the last process of a generation whose master died."""
from __future__ import annotations

import os

from prack.master import rundir


def test_make_names_a_locked_directory_and_leaves_no_staging_name(tmp_path):
    made = rundir.make(str(tmp_path))
    try:
        assert os.listdir(tmp_path) == [os.path.basename(made.path)]
        assert os.path.basename(made.path).startswith("prack-")
        assert os.listdir(made.path) == [rundir.LOCK_NAME]
        assert rundir.sweep(str(tmp_path)) == []        # held: never removed
        assert os.path.isdir(made.path)
    finally:
        made.release()


def test_sweep_removes_only_directories_whose_lock_is_free(tmp_path):
    stale = rundir.make(str(tmp_path))
    os.mkdir(os.path.join(stale.path, "spool"))
    stale.release()                     # its whole generation is gone
    live = rundir.make(str(tmp_path))
    legacy = tmp_path / ("prack-" + "ab" * 6)    # no lock file: an older version's
    legacy.mkdir()
    half = tmp_path / ".prack-0123456789ab.new"  # being made by another master
    half.mkdir()
    other = tmp_path / "not-prack"
    other.mkdir()
    try:
        assert rundir.sweep(str(tmp_path)) == [stale.path]
        assert sorted(os.listdir(tmp_path)) == sorted(
            [os.path.basename(live.path), legacy.name, half.name, other.name])
    finally:
        live.release()


def test_leave_removes_directory_and_pidfile_only_for_the_last_holder(tmp_path):
    made = rundir.make(str(tmp_path))
    pidfile = tmp_path / "prack.pid"
    pidfile.write_text("4242\n")
    # Another process of the generation still holds the lock (here: a second
    # descriptor of the same open file, as a forked sibling has).
    sibling = os.dup(made.lock_fd)
    rundir.leave(made.path, made.lock_fd, str(pidfile), 4242)
    assert os.path.isdir(made.path) and pidfile.exists()
    rundir.leave(made.path, sibling, str(pidfile), 4242)      # the last one out
    assert not os.path.exists(made.path)
    assert not pidfile.exists()


def test_leave_keeps_a_pidfile_naming_another_master(tmp_path):
    made = rundir.make(str(tmp_path))
    pidfile = tmp_path / "prack.pid"
    pidfile.write_text("777\n")         # a new master already wrote its own
    rundir.leave(made.path, made.lock_fd, str(pidfile), 4242)
    assert not os.path.exists(made.path)
    assert pidfile.read_text() == "777\n"
