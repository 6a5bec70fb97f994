"""Review findings in the master's in-place re-exec (server.reexec = "in-place",
what PID 1 in a container does): a stop must never be lost or hang because an
upgrade is under way.

Both tests shape the new image through a `sitecustomize` module put on the
server's PYTHONPATH (Python imports it at start, before prack runs): it makes
the `--check` run slow, or the new image's acceptors die at once, so the
window under test is open for as long as the test needs, with no timing race.
"""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import pytest

from upgrade_helpers import children_of, wait_until

SITECUSTOMIZE = textwrap.dedent("""\
    import os, sys
    mode = os.environ.get("REVIEW_A_MODE")
    if mode == "slow-check" and "--check" in sys.orig_argv:
        import time
        time.sleep(float(os.environ["REVIEW_A_SECONDS"]))
    elif mode == "slow-child-start":
        # A respawned child is slow to reach its first instruction (a busy
        # machine): the window between fork() and its own signal handling.
        import time
        import prack.master.generation
        start = prack.master.generation._child_main
        def slow(*args, **kw):
            if os.path.exists(os.environ["REVIEW_A_FLAG"]):
                with open(os.environ["REVIEW_A_FLAG"] + ".pid", "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(float(os.environ["REVIEW_A_SECONDS"]))
            return start(*args, **kw)
        prack.master.generation._child_main = slow
    elif mode == "slow-new-image" and os.environ.get("PRACK_RETIRING_CHILDREN"):
        # The re-executed image takes its time to start (imports, a busy
        # machine): the window before it has its signal handlers.
        import time
        with open(os.environ["REVIEW_A_FLAG"], "w") as f:
            f.write("starting")
        time.sleep(float(os.environ["REVIEW_A_SECONDS"]))
    elif mode == "broken-acceptors" and os.environ.get("PRACK_RETIRING_CHILDREN"):
        # Only the re-executed image: its acceptors die as they start, so
        # it never becomes ready and the old children keep serving.
        import prack.acceptor.process
        prack.acceptor.process.Acceptor.run = lambda self: os._exit(3)
""")


@pytest.fixture
def shaped(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = [str(site)] + [os.path.abspath(p) for p in
                          os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))

    def shape(mode: str, seconds: float = 0.0) -> None:
        monkeypatch.setenv("REVIEW_A_MODE", mode)
        monkeypatch.setenv("REVIEW_A_SECONDS", str(seconds))
        monkeypatch.setenv("REVIEW_A_FLAG", str(tmp_path / "slow"))
    return shape


def _get(s, path: str) -> int:
    c = s.client()
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def test_stop_during_the_in_place_check_is_not_lost(start_server, shaped):
    """SIGTERM while the master runs `--check` before exec'ing itself: the
    signal's wake-up byte was still unread when execve() closed the wake-up
    socket, so the new image never saw it and kept serving."""
    shaped("slow-check", 4.0)
    s = start_server("--log-level", "debug", server_reexec="in-place", acceptors=1,
                     timeouts_graceful_timeout=2)
    mark = s.log_mark()
    os.kill(s.pid, signal.SIGUSR2)
    wait_until(lambda: any("--check" in _cmdline(p) for p in children_of(s.pid)), 10,
               "the --check run")
    os.kill(s.pid, signal.SIGTERM)
    try:
        code = s.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("the SIGTERM sent during the check was lost:\n"
                             + "\n".join(s.log[mark:])) from None
    assert code == 0
    s.wait_log(r"prack.master: stopped", since=mark)
    assert not any("re-executing in place" in line for line in s.log[mark:])


def test_stop_before_the_in_place_image_is_ready(start_server, shaped):
    """A stop while the re-executed image is not ready yet (its acceptors
    keep dying): the previous generation's children, which it holds, must
    stop too, or the master waits for them for ever."""
    shaped("broken-acceptors")
    s = start_server("--log-level", "debug", server_reexec="in-place", acceptors=1,
                     timeouts_graceful_timeout=2, timeouts_queue_timeout=1)
    old = set(children_of(s.pid))
    assert len(old) == 2
    mark = s.log_mark()
    os.kill(s.pid, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(re-executed in place\) takes over 2 children", since=mark)
    s.wait_log(r"acceptor 0 \(pid \d+\) exited with code 3", since=mark)
    assert _get(s, "/old-still-serves") == 504     # the old acceptor answers (no worker)
    os.kill(s.pid, signal.SIGTERM)
    try:
        code = s.proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the master waits for ever:\n" + "\n".join(s.log[mark:])) from None
    assert code == 0
    assert not any(os.path.exists("/proc/%d" % pid) and _state(pid) != "Z" for pid in old)


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_signal_to_a_child_just_forked_does_not_reach_the_master(start_server, shaped,
                                                                   tmp_path):
    """Between fork() and the child's own signal set-up, the child ran the
    master's handlers, and the wake-up fd it inherited is the master's: a
    SIGTERM for the child (the master's own stop, SIGTTOU) landed in the
    master as a second stop signal ("stopping now": everything killed)."""
    shaped("slow-child-start", 3.0)
    s = start_server("--log-level", "debug", acceptors=1)
    [acceptor] = s.pids("acceptor")
    (tmp_path / "slow").write_text("")
    mark = s.log_mark()
    os.kill(acceptor, signal.SIGKILL)
    s.wait_log(r"acceptor 0 \(pid %d\) was killed by SIGKILL" % acceptor, since=mark)
    wait_until(lambda: (tmp_path / "slow.pid").exists(), 10, "the new acceptor")
    new = int((tmp_path / "slow.pid").read_text())
    os.kill(new, signal.SIGTERM)        # for the child only
    # The child stops when its loop starts (a graceful stop with nothing to
    # finish) and is respawned; the master never heard a stop signal.
    s.wait_log(r"acceptor 0 \(pid %d\) exited with code 0; restarting" % new, since=mark,
               timeout=15)
    assert not any("graceful stop" in line for line in s.log[mark:]), "\n".join(s.log[mark:])
    (tmp_path / "slow").unlink()
    s.wait_log(r"acceptor 0 is back", since=mark, timeout=15)


def test_stop_while_the_in_place_image_starts(start_server, shaped, tmp_path):
    """SIGTERM after the exec, before the new image has installed its
    handlers: the default action killed the master outright (its children
    orphaned, its runtime directory left behind; as PID 1 the signal was
    dropped instead). The signals are now blocked across the exec and taken
    once the new image is set up: a graceful stop."""
    shaped("slow-new-image", 2.0)
    s = start_server("--log-level", "debug", server_reexec="in-place", acceptors=1,
                     timeouts_graceful_timeout=2)
    mark = s.log_mark()
    os.kill(s.pid, signal.SIGUSR2)
    wait_until(lambda: (tmp_path / "slow").exists(), 15, "the new image")
    os.kill(s.pid, signal.SIGTERM)
    try:
        code = s.proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError("no stop:\n" + "\n".join(s.log[mark:])) from None
    assert code == 0, "exit %r:\n%s" % (code, "\n".join(s.log[mark:]))
    s.wait_log(r"SIGTERM: graceful stop", since=mark)
    s.wait_log(r"prack.master: stopped", since=mark)
