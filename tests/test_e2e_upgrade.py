"""End to end: zero-downtime upgrades (SIGUSR2, SIGHUP) under load.

The server runs from a copy of the code; before each upgrade the test changes
the version in that copy, so the new generation answering with the new
version proves that the new code (not a fork of the old) serves.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import shm_entries
from upgrade_helpers import (EchoWorker, Load, code_copy, livez, reap, set_subreaper,
                             set_version, start_upgrading)

UPGRADES = 10


@pytest.fixture
def adopt():
    """Make this process a child subreaper while the test runs."""
    if not set_subreaper(True):
        pytest.skip("needs prctl(PR_SET_CHILD_SUBREAPER) (Linux)")
    yield
    set_subreaper(False)


def retired_status(server, pid: int) -> int | None:
    if pid == server.proc.pid:
        return server.proc.wait(10)
    return reap(pid, 10)


def finish(server, before_shm):
    code = server.stop_current()
    assert code in (0, None), "exit %r\n%s" % (code, "\n".join(server.log))
    server.assert_clean()
    assert not any("Traceback" in line for line in server.log), "\n".join(server.log)
    assert shm_entries() <= before_shm


def test_ten_upgrades_under_load(tmp_path, adopt):
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=2)
    workers = [EchoWorker(s.api_host, s.api_port) for _ in range(3)]
    load = Load(s.host, s.port, keepalive=4, fresh=2, max_seconds=150)
    masters = [s.master]
    durations = []
    try:
        first = livez(s)
        assert first["generation"] == 1 and first["pid"] == s.master
        for i in range(1, UPGRADES + 1):
            version = "0.1.0+deploy%d" % i
            set_version(code, version)
            ok_before = load.ok
            t0 = time.monotonic()
            pid, generation, logged = s.upgrade()
            durations.append(time.monotonic() - t0)
            assert generation == i + 1 and logged == version
            assert pid not in masters
            masters.append(pid)
            info = livez(s)
            assert (info["version"], info["generation"], info["pid"]) == (version, i + 1, pid)
            # The old master exited by itself, with status 0; load went on.
            assert retired_status(s, masters[-2]) == 0
            deadline = time.monotonic() + 10
            while load.ok <= ok_before + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert load.ok > ok_before + 20, "no traffic served after upgrade %d" % i
    finally:
        load.stop()
        for w in workers:
            w.stop()
    print("\nupgrades: %d, requests: %d ok, %d failed; upgrade took %.2f-%.2fs (mean %.2fs); "
          "post retries %d" % (UPGRADES, load.ok, len(load.failures), min(durations),
                               max(durations), sum(durations) / len(durations),
                               sum(w.post_retries for w in workers)))
    assert load.failures == [], "\n".join(load.failures[:20])
    assert load.ok > 200
    finish(s, before)


def test_broken_new_generation_leaves_the_old_one_serving(tmp_path, adopt):
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nserver_header = \"Prack\"\n")
    s = start_upgrading(tmp_path, code, "-c", str(config), api_poll_timeout=1, acceptors=1)
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        master = s.master
        # A configuration error...
        config.write_text("[server]\nacceptors = \"many\"\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        line = s.wait_log(r"upgrade failed", since=mark)
        assert "server.acceptors" in line and "generation 1 keeps serving" in line, line
        # ...and code that does not import.
        config.write_text("[server]\nserver_header = \"Prack\"\n")
        with open(os.path.join(code, "prack", "master.py"), "a") as f:
            f.write("\nraise ImportError('deploy broke this module')\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        line = s.wait_log(r"upgrade failed", since=mark)
        assert "exited with code 1" in line, line
        s.wait_log(r"deploy broke this module", since=mark)
        # The old generation serves on, and a fixed deploy goes through.
        assert livez(s)["pid"] == master and s.master == master
        c = s.client()
        c.request("GET", "/still")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/still|"
        c.close()
        with open(os.path.join(code, "prack", "master.py")) as f:
            text = f.read()
        with open(os.path.join(code, "prack", "master.py"), "w") as f:
            f.write(text.replace("\nraise ImportError('deploy broke this module')\n", ""))
        pid, generation, _ = s.upgrade()
        assert generation == 2 and livez(s)["pid"] == pid
    finally:
        worker.stop()
    finish(s, before)


def test_sighup_reloads_the_configuration(tmp_path, adopt):
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nserver_header = \"Before\"\n")
    s = start_upgrading(tmp_path, code, "-c", str(config), api_poll_timeout=1, acceptors=1)
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        c = s.client()
        c.request("GET", "/a")
        r = c.getresponse()
        assert r.getheader("Server") == "Before" and r.read() == b"/a|"
        c.close()
        config.write_text("[server]\nserver_header = \"After\"\n")
        pid, generation, _ = s.upgrade(signal.SIGHUP)
        assert generation == 2
        c = s.client()
        c.request("GET", "/b")
        r = c.getresponse()
        assert r.getheader("Server") == "After" and r.read() == b"/b|"
        c.close()
    finally:
        worker.stop()
    finish(s, before)
