"""Containers: the Dockerfile and docker-compose.yml say what they must (no
Docker engine is needed: they are parsed, and their commands are run here),
and the master behaves as PID 1 (run as the init of a new PID namespace with
`unshare --pid --fork --mount-proc`): it drains on SIGTERM and exits 0,
reaps orphans, and re-executes in place on SIGUSR2, keeping PID 1."""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import yaml

import conftest
from conftest import prack_command, shm_entries
from upgrade_helpers import EchoWorker, children_of, state, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- Dockerfile and compose --------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def test_dockerfile_is_multi_stage_slim_and_non_root():
    froms = instructions("FROM")
    assert len(froms) >= 2, froms
    assert all("slim" in f for f in froms), froms
    assert any("--from=build" in c for c in instructions("COPY"))
    # The last stage runs as a named, non-root user.
    last = max(i for i, (w, _) in enumerate(dockerfile()) if w == "FROM")
    users = [a for i, (w, a) in enumerate(dockerfile()) if w == "USER" and i > last]
    assert users and users[-1] not in ("root", "0"), users
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    exposed = {p for e in instructions("EXPOSE") for p in e.split()}
    assert {"8080", "4242"} <= exposed


def test_dockerfile_config_healthcheck_and_cmd_match_the_code(tmp_path):
    copies = instructions("COPY")
    assert any(c.split()[-1] == "/etc/prack/prack.toml" for c in copies), copies
    source = next(c.split()[-2] for c in copies if c.split()[-1] == "/etc/prack/prack.toml")
    config = ROOT / source
    [health] = instructions("HEALTHCHECK")
    assert "/livez" in health and ":4242" in health
    [cmd] = instructions("CMD")
    argv = json.loads(cmd)
    assert argv[0] == "prack-server"
    argv = [str(config) if a == "/etc/prack/prack.toml" else a for a in argv[1:]]
    # The image's configuration and command line are valid for this code.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    out = subprocess.run(prack_command() + argv + ["--check"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'bind = "0.0.0.0:8080"' in out.stdout and 'bind = "0.0.0.0:4242"' in out.stdout
    # Every PRACK_ variable the image and compose set names a real setting.
    envs = " ".join(instructions("ENV"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names = set(re.findall(r"(PRACK_[A-Z_]+)=", envs))
    names |= set(compose["services"]["front"].get("environment", {}))
    check_env = dict(env)
    for name in names:
        if name == "PRACK_CONFIG":
            check_env[name] = str(config)
        elif name == "PRACK_SERVER_RUNTIME_DIR":
            check_env[name] = str(tmp_path)
        else:
            check_env[name] = str(compose["services"]["front"]["environment"].get(name, ""))
    out = subprocess.run(prack_command() + ["--check"], capture_output=True, text=True,
                         env=check_env, timeout=60)
    assert out.returncode == 0, out.stderr


def test_compose_front_and_scalable_worker():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    front, worker = services["front"], services["worker"]
    assert front["build"] and "8080:8080" in front["ports"]
    # A worker scales with --scale worker=N: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["image"] == front["image"]
    cmd = worker["command"]
    assert cmd[0] == "python" and cmd[1] == "/opt/prack/examples/demo_worker.py"
    assert "http://front:4242" in cmd
    # The image ships that script, and the script takes those flags.
    assert any(c.split()[-1] == cmd[1] for c in instructions("COPY"))
    flags = [a for a in cmd[2:] if a.startswith("--")]
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "demo_worker.py"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in flags:
        assert flag in out.stdout, flag
    # A stop drains before Docker's own deadline.
    grace = int(front["stop_grace_period"].rstrip("s"))
    assert grace > int(front["environment"]["PRACK_TIMEOUTS_GRACEFUL_TIMEOUT"])


# -- PID 1 -------------------------------------------------------------------------

# --kill-child: if the test harness kills unshare, PID 1 goes too (and with
# it the whole namespace), so nothing outlives a failed test.
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


# Without root, a user namespace can grant what the PID namespace needs.
AS_USER = ["--user", "--map-root-user"]


def _unshare() -> tuple[list[str] | None, str]:
    """The unshare command that works here (None and the reason if none)."""
    why = ""
    for cmd in (UNSHARE, UNSHARE[:1] + AS_USER + UNSHARE[1:]):
        try:
            out = subprocess.run(cmd + ["true"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, str(exc)
        if out.returncode == 0:
            return cmd, ""
        why = out.stderr.strip()
    return None, why


@pytest.fixture
def pid1_server(start_server, monkeypatch):
    cmd, why = _unshare()
    if cmd is None:
        pytest.skip("cannot make a PID namespace here: %s" % why)
    plain = conftest.prack_command
    monkeypatch.setattr(conftest, "prack_command", lambda: cmd + plain())

    def start(*flags, **settings):
        s = start_server(*flags, **settings)
        s.nsenter = ["nsenter", "--preserve-credentials", "-U"] if "--user" in cmd \
            else ["nsenter"]
        [s.master_host_pid] = s.children()      # unshare's only child
        stop = s.stop

        def stop_master(sig=signal.SIGTERM, timeout=30.0):
            # unshare does not pass signals on: signal PID 1 itself; unshare
            # exits with its status.
            if s.proc.poll() is None:
                os.kill(s.master_host_pid, sig)
            return stop(sig, timeout)
        s.stop = stop_master
        return s
    return start


def test_pid1_reaps_orphans_and_drains_on_sigterm(pid1_server):
    s = pid1_server("--log-level", "debug", api_poll_timeout=1, acceptors=2)
    master = s.master_host_pid
    s.wait_log(r"ready: .* pid=1 ")
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        c = s.client()
        c.request("GET", "/as-pid-1")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/as-pid-1|"
        own = set(children_of(master))
        assert len(own) == 3
        # An orphan in the namespace is re-parented to PID 1, which must reap
        # it when it exits (or it stays a zombie for as long as we run).
        subprocess.run(s.nsenter + ["-t", str(master), "-p", "-m", "--", "sh", "-c",
                                    "sleep 1 & exit 0"], check=True, timeout=10)
        wait_until(lambda: len(set(children_of(master)) - own) == 1, 5, "the orphan")
        [orphan] = set(children_of(master)) - own
        wait_until(lambda: orphan not in children_of(master), 10, "the orphan to be reaped")
        assert all(state(p) != "Z" for p in children_of(master))
    finally:
        worker.stop()
    assert s.stop(signal.SIGTERM) == 0
    s.wait_log(r"SIGTERM: graceful stop")
    s.wait_log(r"prack.master: stopped")
    assert state(master) == "gone"


def test_pid1_usr2_reexecs_in_place(pid1_server, tmp_path):
    before = shm_entries()
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nserver_header = \"One\"\n")
    s = pid1_server("-c", str(config), "--log-level", "debug", api_poll_timeout=1, acceptors=1)
    master = s.master_host_pid
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        old = set(children_of(master))
        config.write_text("[server]\nserver_header = \"Two\"\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        s.wait_log(r"re-executing in place \(pid 1 stays\): generation 2", since=mark)
        s.wait_log(r"ready: .* pid=1 generation=2", since=mark)
        s.wait_log(r"the previous generation has retired", since=mark)
        new = set(children_of(master))
        assert len(new) == 2 and not new & old
        assert all(state(p) != "Z" for p in new)
        c = s.client()
        c.request("GET", "/after-reexec")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/after-reexec|"
        assert r.getheader("Server") == "Two"
        c.close()
        # A configuration that does not load never replaces PID 1.
        config.write_text("[server]\nacceptors = \"many\"\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        line = s.wait_log(r"upgrade failed", since=mark)
        assert "server.acceptors" in line and "generation 2 keeps serving" in line, line
        assert set(children_of(master)) == new
        c = s.client()
        c.request("GET", "/still")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/still|"
        c.close()
    finally:
        worker.stop()
    assert s.stop() == 0
    assert not any("re-executing" in line for line in s.log[mark:])
    assert shm_entries() <= before
