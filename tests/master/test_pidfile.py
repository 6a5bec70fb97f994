"""The pidfile's names through an upgrade (prack.master.notify.Pidfile), as
the old master sees them: <pidfile> is never removed or renamed away while
a master of ours serves, and .oldbin names the old master meanwhile."""
from __future__ import annotations

import os

from prack.master.notify import Pidfile

OURS = "%d\n" % os.getpid()


def _replace(path, text):
    """What another master's write does: a whole file renamed over the name."""
    tmp = str(path) + ".other.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def test_an_upgrade_start_keeps_the_pidfile_and_adds_oldbin(tmp_path):
    path = tmp_path / "p.pid"
    pf = Pidfile(str(path))
    pf.write()
    assert path.read_text() == OURS
    pf.to_old()
    assert path.read_text() == OURS
    assert (tmp_path / "p.pid.oldbin").read_text() == OURS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pid", "p.pid.oldbin"]


def test_after_the_new_master_took_the_name_the_old_one_removes_only_oldbin(tmp_path):
    path = tmp_path / "p.pid"
    pf = Pidfile(str(path))
    pf.write()
    pf.to_old()
    _replace(path, "1\n")                   # the new master is ready
    pf.remove()                             # the old one has retired
    assert path.read_text() == "1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pid"]


def test_a_failed_upgrade_leaves_our_pidfile_and_removes_oldbin(tmp_path):
    path = tmp_path / "p.pid"
    pf = Pidfile(str(path))
    pf.write()
    pf.to_old()
    pf.from_old()
    assert path.read_text() == OURS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pid"]


def test_a_failed_upgrade_takes_the_name_back_from_a_new_master_that_wrote_it(tmp_path):
    """The new master may have written <pidfile> and then failed (its ready
    report lost): the old master, which serves on, names itself again."""
    path = tmp_path / "p.pid"
    pf = Pidfile(str(path))
    pf.write()
    pf.to_old()
    _replace(path, "1\n")
    pf.from_old()
    assert path.read_text() == OURS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pid"]


def test_another_masters_files_are_left_alone(tmp_path):
    path = tmp_path / "p.pid"
    pf = Pidfile(str(path))
    path.write_text("1\n")
    pf.to_old()                             # not ours: no .oldbin either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pid"]
    pf.from_old()                           # no upgrade of ours: nothing to undo
    pf.remove()
    assert path.read_text() == "1\n"
    pf.write()
    pf.remove()
    assert list(tmp_path.iterdir()) == []


def test_no_path_means_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pf = Pidfile("")
    pf.write()
    pf.to_old()
    pf.from_old()
    pf.remove()
    assert list(tmp_path.iterdir()) == []


# -- at start: a pidfile left by an instance that did not stop ----------------------

def test_a_start_removes_a_pidfile_whose_process_is_gone(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / "prack.pid"
    path.write_text("%d\n" % gone.pid)
    Pidfile(str(path)).replace_stale()
    assert not path.exists()


def test_a_start_removes_a_pidfile_naming_a_process_that_is_not_prack(tmp_path):
    import subprocess

    other = subprocess.Popen(["sleep", "30"])
    try:
        path = tmp_path / "prack.pid"
        path.write_text("%d\n" % other.pid)
        Pidfile(str(path)).replace_stale()
        assert not path.exists()
    finally:
        other.kill()
        other.wait()


def test_a_start_keeps_a_pidfile_naming_its_own_pid(tmp_path):
    path = tmp_path / "prack.pid"
    path.write_text(OURS)               # a re-exec in place keeps its PID
    Pidfile(str(path)).replace_stale()
    assert path.read_text() == OURS
