"""End to end: stopping, crashing children, startup errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import echo_app, prack_command, shm_entries

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def held_app(release: threading.Event, got: threading.Event, answer=True):
    """An app that signals `got` when it has a request and answers only once
    `release` is set (bounded, so a broken test cannot hang a thread)."""
    def app(env, body):
        got.set()
        release.wait(30)
        return echo_app(env, body) if answer else None
    return app


def wait_exit(server, timeout: float) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("server still running after %.1fs:\n%s"
                             % (timeout, "\n".join(server.log)))


# -- graceful stop ---------------------------------------------------------------

def test_sigterm_lets_in_flight_request_finish(start_server, worker_factory):
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=2)
    release, got = threading.Event(), threading.Event()
    held = held_app(release, got)
    app = lambda env, body: held(env, body) if env["PATH_INFO"] == "/in-flight" else \
        echo_app(env, body)
    worker_factory(s.api, app)
    worker_factory(s.api, app)
    idle = s.raw()                     # served once, then idle: the stop closes it
    idle.send(GET % b"warm")
    assert idle.read_response().status == 200
    client = s.raw(timeout=20)
    client.send(GET % b"in-flight")
    assert got.wait(10), "the worker never got the request"
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log(r"SIGTERM: graceful stop")
    # Both acceptors have begun to drain; one holds the in-flight request.
    s.wait_log(r"acceptor \d draining 1 connections")
    s.wait_log(r"acceptor \d draining 0 connections")
    idle.assert_closed()
    release.set()
    r = client.read_response()
    assert r.status == 200
    assert r.header("Connection") == "close"
    assert b"/in-flight" in r.body
    client.assert_closed()
    client.close()
    assert wait_exit(s, 15) == 0


def test_new_connections_refused_during_graceful_stop(start_server, worker_factory):
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=1)
    release, got = threading.Event(), threading.Event()
    worker_factory(s.api, held_app(release, got))
    client = s.raw(timeout=20)
    client.send(GET % b"in-flight")
    assert got.wait(10)
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log(r"acceptor 0 draining 1 connections")
    # Nobody will serve a new connection now: it must not be left hanging.
    t0 = time.monotonic()
    try:
        late = socket.create_connection((s.host, s.port), timeout=5)
    except ConnectionRefusedError:
        pass
    else:
        with late:
            late.sendall(GET % b"late")
            try:
                data = late.recv(100)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                release.set()
                pytest.fail("a connection made during the graceful stop hangs")
            assert data == b"" or data.startswith(b"HTTP/1.1 503"), data
    assert time.monotonic() - t0 < 4
    release.set()
    assert client.read_response().status == 200
    client.close()
    assert wait_exit(s, 15) == 0


def test_second_sigterm_stops_at_once(start_server, worker_factory):
    s = start_server(api_poll_timeout=1, timeouts_graceful_timeout=60)
    release, got = threading.Event(), threading.Event()
    worker_factory(s.api, held_app(release, got, answer=False))
    client = s.raw(timeout=20)
    client.send(GET % b"stuck")
    assert got.wait(10)
    try:
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log(r"SIGTERM: graceful stop \(up to 60s\)")
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert wait_exit(s, 10) == 0
        assert time.monotonic() - t0 < 5
        s.wait_log(r"SIGTERM again: stopping now")
        client.assert_closed()      # no response: the request was cut off
    finally:
        release.set()


def test_sigint_stops_gracefully(start_server, worker_factory):
    s = start_server(api_poll_timeout=1)
    worker_factory(s.api)
    c = s.client()
    c.request("GET", "/")
    assert c.getresponse().read()
    assert s.stop(signal.SIGINT) == 0
    s.wait_log(r"SIGINT: graceful stop")
    s.wait_log(r"prack.master: stopped")


def test_ttou_and_ttin_remove_and_add_an_acceptor(start_server, worker_factory):
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=2)
    worker_factory(s.api)
    last = s.pids("acceptor", 1)[0]
    mark = s.log_mark()
    s.proc.send_signal(signal.SIGTTOU)
    s.wait_log(r"SIGTTOU: stopping acceptor 1 gracefully \(1 acceptors left\)", since=mark)
    s.wait_log(r"acceptor 1 \(pid %d\) exited with code 0 \(removed by SIGTTOU\)" % last,
               since=mark)
    assert last not in s.children() and len(s.children()) == 2
    c = s.client()
    c.request("GET", "/fewer")
    assert b"/fewer" in c.getresponse().read()
    s.proc.send_signal(signal.SIGTTOU)          # one acceptor is the floor
    s.wait_log(r"SIGTTOU: one acceptor is the fewest; ignored", since=mark)
    # The ring of acceptor 1 is still there: SIGTTIN starts one in place.
    s.proc.send_signal(signal.SIGTTIN)
    s.wait_log(r"SIGTTIN: acceptor 1 added \(2 acceptors\)", since=mark)
    s.wait_log(r"acceptor 1 ready \(pid (?!%d\))" % last, since=mark)
    assert len(s.children()) == 3
    for i in range(4):
        c = s.client()
        c.request("GET", "/more/%d" % i)
        assert b"/more/%d" % i in c.getresponse().read()


# -- children that die -----------------------------------------------------------------

def test_acceptor_killed_is_respawned(start_server, worker_factory, recorder):
    before = shm_entries()
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=1)
    old = s.pids("acceptor", 0)
    assert len(old) == 1 and old[0] in s.children()
    # A request queued in the acceptor that dies: it must not reach a worker
    # later (its client is gone with the process).
    doomed = s.raw()
    doomed.send(GET % b"doomed")
    with s.raw() as probe:        # arrival order: once this is answered, "doomed" is queued
        probe.send(b"BAD\r\n\r\n")
        assert probe.read_response().status == 400
    os.kill(old[0], signal.SIGKILL)
    s.wait_log(r"acceptor 0 \(pid %d\) was killed by SIGKILL.*restarting" % old[0])
    assert doomed.closed_by_peer()
    s.wait_log(r"acceptor 0 ready \(pid (?!%d\))" % old[0])
    new = s.pids("acceptor", 0)[-1]
    assert new != old[0] and new in s.children()

    app = recorder()
    worker_factory(s.api, app)
    for i in range(5):
        c = s.client()
        c.request("GET", "/after/%d" % i)
        r = c.getresponse()
        assert r.status == 200 and b"/after/%d" % i in r.read()
    assert app.paths == ["/after/%d" % i for i in range(5)]

    assert s.stop() == 0
    s.assert_clean()
    assert shm_entries() <= before
    assert not any("Traceback" in line for line in s.log)


def test_both_acceptors_killed_connections_wait_in_backlog(start_server, worker_factory):
    """While no acceptor runs, the master keeps the listening socket: a
    connection made meanwhile is served by the respawned acceptor."""
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=1)
    worker_factory(s.api)
    pid = s.pids("acceptor", 0)[0]
    os.kill(pid, signal.SIGSTOP)
    c = s.raw(timeout=20)
    c.send(GET % b"waiting")
    os.kill(pid, signal.SIGKILL)
    s.wait_log(r"acceptor 0 \(pid %d\) was killed" % pid)
    r = c.read_response()
    assert r.status == 200 and b"/waiting" in r.body


def test_api_process_killed_request_queued_meanwhile_is_served(start_server, worker_factory,
                                                                recorder):
    before = shm_entries()
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=1)
    api_pid = s.pids("API process")[0]
    os.kill(api_pid, signal.SIGSTOP)          # down, as far as anyone can tell
    client = s.raw(timeout=20)
    client.send(GET % b"while-down")
    with s.raw() as probe:                    # arrival order: "while-down" is queued
        probe.send(b"BAD\r\n\r\n")
        assert probe.read_response().status == 400
    os.kill(api_pid, signal.SIGKILL)
    s.wait_log(r"api 0 \(pid %d\) was killed by SIGKILL.*restarting" % api_pid)
    s.wait_log(r"API process ready \(pid (?!%d\))" % api_pid)
    assert s.pids("API process")[-1] in s.children()

    app = recorder()
    worker_factory(s.api, app)
    r = client.read_response()
    assert r.status == 200 and b"/while-down" in r.body
    client.send(GET % b"next")
    assert client.read_response().status == 200
    assert app.paths == ["/while-down", "/next"]

    assert s.stop() == 0
    s.assert_clean()
    assert shm_entries() <= before


def test_api_process_killed_while_worker_holds_request(start_server):
    """Identifiers outlive the API process: a worker that pulled a request
    before the restart answers it afterwards."""
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=1)
    client = s.raw(timeout=20)
    client.send(GET % b"held")
    w = s.api_client()
    w.request("GET", "/api/v1/request")
    r = w.getresponse()
    assert r.status == 200
    ident = json.loads(r.read())["identifier"]
    w.close()
    api_pid = s.pids("API process")[0]
    mark = s.log_mark()
    os.kill(api_pid, signal.SIGKILL)
    s.wait_log(r"api 0 \(pid %d\) was killed by SIGKILL.*restarting" % api_pid, since=mark)
    s.wait_log(r"API process ready \(pid (?!%d\))" % api_pid, since=mark)
    s.wait_log(r"acceptor 0 \(pid \d+\) linked", since=mark)    # the acceptor is back
    body = json.dumps({"identifier": ident, "code": 200, "body": "YWZ0ZXI="})
    w = s.api_client()
    w.request("POST", "/api/v1/response", body)
    r = w.getresponse()
    assert r.status == 200, r.read()
    r.read()
    resp = client.read_response()
    assert (resp.status, resp.body) == (200, b"after")


# -- startup errors ------------------------------------------------------------------

def run_server(tmp_path, *args, env_extra=None, timeout=20):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env["PRACK_SERVER_RUNTIME_DIR"] = str(tmp_path / "run")
    env.update(env_extra or {})
    return subprocess.run(prack_command() + list(args), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(out) -> list[str]:
    assert "Traceback" not in out.stderr, out.stderr
    return [line for line in out.stderr.splitlines() if line.startswith("prack-server: error:")]


@pytest.mark.parametrize("which", ["server.bind", "api.bind"])
def test_port_in_use(tmp_path, which):
    before = shm_entries()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = "127.0.0.1:%d" % taken.getsockname()[1]
        if which == "server.bind":
            args = ["-b", busy, "--api-bind", "127.0.0.1:0"]
        else:
            args = ["-b", "127.0.0.1:0", "--api-bind", busy]
        out = run_server(tmp_path, *args, "-a", "1")
    assert out.returncode == 2, out.stderr
    lines = error_lines(out)
    assert len(lines) == 1 and out.stderr == lines[0] + "\n", out.stderr
    assert which in lines[0] and busy in lines[0], lines
    assert "in use" in lines[0].lower()
    assert out.stdout == ""
    assert shm_entries() <= before
    run = tmp_path / "run"
    assert not run.exists() or os.listdir(run) == []


@pytest.mark.parametrize("toml,key", [
    ('[server]\nacceptors = "many"\n', "server.acceptors"),
    ('[limits]\nmax_body = 5\n', "limits.max_body"),
    ('[timeouts]\nqueue_timeout = -1\n', "timeouts.queue_timeout"),
    ('[server\nbind = "x"\n', "prack.toml"),
])
def test_bad_config_file(tmp_path, toml, key):
    path = tmp_path / "prack.toml"
    path.write_text(toml)
    out = run_server(tmp_path, "-c", str(path))
    assert out.returncode == 2, out.stderr
    lines = error_lines(out)
    assert len(lines) == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert key in lines[0], lines


def test_bad_environment_value(tmp_path):
    out = run_server(tmp_path, env_extra={"PRACK_LIMITS_MAX_HEADERS": "0"})
    assert out.returncode == 2
    lines = error_lines(out)
    assert len(lines) == 1 and "PRACK_LIMITS_MAX_HEADERS" in lines[0], out.stderr
