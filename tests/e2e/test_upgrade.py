"""End to end: zero-downtime upgrades (SIGUSR2, SIGHUP) under load.

The server runs from a copy of the code; before each upgrade the test changes
the version in that copy, so the new generation answering with the new
version proves that the new code (not a fork of the old) serves.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import prack_command, shm_entries
from upgrade_helpers import (EchoWorker, Load, children_of, code_copy, livez, reap,
                             set_subreaper, set_version, start_upgrading)

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
    pidfile = tmp_path / "prack.pid"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    s = start_upgrading(tmp_path, code, "-c", str(config), api_poll_timeout=1, acceptors=1,
                        server_pidfile=pidfile, NOTIFY_SOCKET=tmp_path / "notify.sock")
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        master = s.master
        assert "MAINPID=%d" % master in notify.recv(4096).decode().split("\n")
        assert pidfile.read_text() == "%d\n" % master
        # A configuration error...
        config.write_text("[server]\nacceptors = \"many\"\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        line = s.wait_log(r"upgrade failed", since=mark)
        assert "server.acceptors" in line and "generation 1 keeps serving" in line, line
        # ...and code that does not import.
        config.write_text("[server]\nserver_header = \"Prack\"\n")
        with open(os.path.join(code, "prack", "master", "arbiter.py"), "a") as f:
            f.write("\nraise ImportError('deploy broke this module')\n")
        mark = s.log_mark()
        os.kill(master, signal.SIGUSR2)
        line = s.wait_log(r"upgrade failed", since=mark)
        assert "exited with code 1" in line, line
        s.wait_log(r"deploy broke this module", since=mark)
        # The old generation serves on (and is still the one the pidfile
        # and systemd know), and a fixed deploy goes through.
        assert livez(s)["pid"] == master and s.master == master
        assert pidfile.read_text() == "%d\n" % master
        assert not os.path.exists(str(pidfile) + ".oldbin")
        assert [notify.recv(4096) for _ in range(4)] == [b"RELOADING=1", b"READY=1"] * 2
        c = s.client()
        c.request("GET", "/still")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/still|"
        c.close()
        with open(os.path.join(code, "prack", "master", "arbiter.py")) as f:
            text = f.read()
        with open(os.path.join(code, "prack", "master", "arbiter.py"), "w") as f:
            f.write(text.replace("\nraise ImportError('deploy broke this module')\n", ""))
        pid, generation, _ = s.upgrade()
        assert generation == 2 and livez(s)["pid"] == pid
        assert notify.recv(4096) == b"RELOADING=1"
        assert "MAINPID=%d" % pid in notify.recv(4096).decode().split("\n")
        assert pidfile.read_text() == "%d\n" % pid
        assert not os.path.exists(str(pidfile) + ".oldbin")
    finally:
        worker.stop()
    finish(s, before)
    assert notify.recv(4096) == b"STOPPING=1"
    notify.close()
    assert not pidfile.exists()


class PidfileWatch:
    """Reads <pidfile> (and <pidfile>.oldbin) in a tight loop on a thread,
    no sleep in it: every content each name showed, in order, and how many
    reads found no <pidfile> once it had first appeared."""

    def __init__(self, path) -> None:
        self.path, self.old = str(path), str(path) + ".oldbin"
        self.shown: list[bytes] = []         # <pidfile>'s successive contents
        self.old_shown: list[bytes] = []     # <pidfile>.oldbin's
        self.reads = self.missing = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _run(self) -> None:
        while not self._done.is_set():
            text = self._read(self.path)
            self.reads += 1
            if text is None:
                self.missing += bool(self.shown)
            elif not self.shown or self.shown[-1] != text:
                self.shown.append(text)
            old = self._read(self.old)
            if old is not None and (not self.old_shown or self.old_shown[-1] != old):
                self.old_shown.append(old)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(10)


def test_the_pidfile_is_never_missing_during_an_upgrade(tmp_path, adopt):
    """A script may read the pidfile at any moment: through two upgrades and
    a failed one it always finds it, naming the old master until the new one
    is ready and the new one from then on (never a half-written PID), while
    <pidfile>.oldbin names the old master during each upgrade."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nserver_header = \"Prack\"\n")
    pidfile = tmp_path / "prack.pid"
    # Watched from before the start: the file is written just after the
    # "ready:" line that start_upgrading waits for.
    watch = PidfileWatch(pidfile)
    try:
        s = start_upgrading(tmp_path, code, "-c", str(config), acceptors=1,
                            server_pidfile=pidfile)
        first = s.master
        second = s.upgrade()[0]         # returns on the old master's "retired" line
        third = s.upgrade()[0]
        config.write_text("[server]\nacceptors = \"many\"\n")
        mark = s.log_mark()
        os.kill(third, signal.SIGUSR2)
        s.wait_log(r"\[%d\] prack.master: SIGUSR2: upgrade failed" % third, since=mark)
        reads = watch.reads
        while watch.reads < reads + 10 and watch.running():    # a few reads more
            pass
    finally:
        watch.stop()
    assert watch.missing == 0, "no pidfile in %d of %d reads" % (watch.missing, watch.reads)
    assert watch.shown == [b"%d\n" % pid for pid in (first, second, third)]
    assert watch.old_shown[:2] == [b"%d\n" % first, b"%d\n" % second]
    assert set(watch.old_shown) <= {b"%d\n" % pid for pid in (first, second, third)}
    assert pidfile.read_text() == "%d\n" % third
    assert not os.path.exists(str(pidfile) + ".oldbin")
    finish(s, before)
    assert not pidfile.exists()


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


def _pull(host, port) -> str:
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", "/api/v1/request")
        r = c.getresponse()
        assert r.status == 200
        return json.loads(r.read())["identifier"]
    finally:
        c.close()


def _answer(ident: str, text: bytes) -> bytes:
    return json.dumps({"identifier": ident, "code": 200,
                       "body": base64.b64encode(text).decode()}).encode()


def test_responses_reach_their_generation_whichever_api_process_gets_them(tmp_path, adopt):
    """A worker that opens a connection per call may post to the other
    generation's API process: the post is passed on, both ways."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=1)
    old_client = s.raw(timeout=20)
    old_client.send(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")
    old_ident = _pull(s.api_host, s.api_port)
    assert old_ident.startswith("0001")
    old_master = s.master
    old_dirs = set(os.listdir(s.runtime_dir))
    mark = s.log_mark()
    os.kill(old_master, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
    # The old generation waits for its last request; the new one serves.
    [old_dir] = old_dirs
    new_client = s.raw(timeout=20)
    new_client.send(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
    new_ident = _pull(s.api_host, s.api_port)
    assert new_ident.startswith("0002")
    # A generation-2 answer handed to generation 1's API process...
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(s.runtime_dir, old_dir, "worker.sock"))
        body = _answer(new_ident, b"to the new one")
        sock.sendall(b"POST /api/v1/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(body), body))
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    r = new_client.read_response()
    assert (r.status, r.body) == (200, b"to the new one")
    # ...and a generation-1 answer posted on the shared port (only the new
    # generation accepts there now).
    c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
    c.request("POST", "/api/v1/response", _answer(old_ident, b"to the old one"))
    resp = c.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    c.close()
    r = old_client.read_response()
    assert (r.status, r.body) == (200, b"to the old one")
    old_client.close()
    new_client.close()
    s.wait_log(r"\[%d\] prack.master: generation 1 retired" % old_master, since=mark)
    assert s.proc.wait(10) == 0
    finish(s, before)


def _call_v2(host, port, method, path, payload=None, msgpack=False):
    import msgspec
    codec = msgspec.msgpack if msgpack else msgspec.json
    ctype = "application/msgpack" if msgpack else "application/json"
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request(method, path, None if payload is None else codec.encode(payload),
                  {"Content-Type": ctype, "Accept": ctype})
        r = c.getresponse()
        return r.status, codec.decode(r.read())
    finally:
        c.close()


def test_v2_batches_reach_both_generations(tmp_path, adopt):
    """An SDK worker batches answers to requests pulled from both
    generations and posts them to whichever API process it reaches: each
    item gets to its own generation, the results come back in order, and an
    error report for the old generation is passed on too."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=1)
    olds = []
    for path in (b"/old-a", b"/old-b"):
        c = s.raw(timeout=20)
        c.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        status, got = _call_v2(s.api_host, s.api_port, "GET", "/api/v2/requests?max=1&wait=5",
                               msgpack=True)
        assert status == 200 and len(got["requests"]) == 1
        olds.append((c, got["requests"][0]["id"]))
    mark = s.log_mark()
    os.kill(s.master, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
    new_client = s.raw(timeout=20)
    new_client.send(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
    status, got = _call_v2(s.api_host, s.api_port, "GET", "/api/v2/requests?max=1&wait=5",
                           msgpack=True)
    new_id = got["requests"][0]["id"]
    assert new_id.startswith("0002") and olds[0][1].startswith("0001")
    # One msgpack batch on the shared port (only generation 2 accepts there).
    items = [{"id": olds[0][1], "status": 201, "headers": [["X-Gen", "1"]], "body": b"old"},
             {"id": new_id, "status": 202, "headers": [["X-Gen", "2"]], "body": b"new"},
             {"id": "0001" + "0" * 28, "status": 200, "body": b"nobody"}]
    status, got = _call_v2(s.api_host, s.api_port, "POST", "/api/v2/responses",
                           {"responses": items}, msgpack=True)
    assert status == 200
    assert [(r["id"], r["status"]) for r in got["results"]] == [
        (olds[0][1], "ok"), (new_id, "ok"), ("0001" + "0" * 28, "unknown")]
    r = olds[0][0].read_response()
    assert (r.status, r.header("X-Gen"), r.body) == (201, "1", b"old")
    r = new_client.read_response()
    assert (r.status, r.header("X-Gen"), r.body) == (202, "2", b"new")
    # A worker giving up on an old-generation request, reported to the new one.
    status, got = _call_v2(s.api_host, s.api_port, "POST",
                           "/api/v2/requests/%s/error" % olds[1][1], {"error": "boom"})
    assert status == 200, got
    assert olds[1][0].read_response().status == 502
    for c, _ in olds:
        c.close()
    new_client.close()
    s.wait_log(r"prack.master: generation 1 retired", since=mark)
    finish(s, before)


def _upgrade_holding_one_request(tmp_path):
    """A one-acceptor server with a generation-1 request pulled (its client
    waiting), upgraded to generation 2: (shm before, server, client,
    identifier, log mark of the upgrade)."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=1)
    client = s.raw(timeout=20)
    client.send(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")
    old_ident = _pull(s.api_host, s.api_port)
    mark = s.log_mark()
    os.kill(s.master, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
    return before, s, client, old_ident, mark


def test_error_report_passed_on_is_answered_in_the_encoding_asked_for(tmp_path, adopt):
    """An error report without a body (so no Content-Type) from a worker that
    accepts msgpack, for the other generation's request: the answer relayed
    from there must be msgpack too, not JSON labelled msgpack."""
    import msgspec
    before, s, client, old_ident, mark = _upgrade_holding_one_request(tmp_path)
    c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
    c.request("POST", "/api/v2/requests/%s/error" % old_ident, b"",
              {"Accept": "application/msgpack"})
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 200, body
    assert r.getheader("Content-Type") == "application/msgpack"
    assert msgspec.msgpack.decode(body) == {"message": "reported"}, body
    assert client.read_response().status == 502
    client.close()
    s.wait_log(r"prack.master: generation 1 retired", since=mark)
    finish(s, before)


def test_a_large_batch_passed_on_gets_all_its_results(tmp_path, adopt):
    """A v2 batch with many items for the other generation: their results
    come back as one answer, which was cut at 64 KiB, so the whole batch was
    reported "its generation did not answer" although it had been delivered."""
    before, s, client, old_ident, mark = _upgrade_holding_one_request(tmp_path)
    stale = ["0001%028x" % (i + 1) for i in range(1500)]     # unknown to generation 1
    items = [{"id": old_ident, "status": 200, "body": b"all of it"}] + \
        [{"id": ident, "status": 200} for ident in stale]
    status, got = _call_v2(s.api_host, s.api_port, "POST", "/api/v2/responses",
                           {"responses": items}, msgpack=True)
    assert status == 200
    assert [(r["id"], r["status"]) for r in got["results"]] == \
        [(old_ident, "ok")] + [(ident, "unknown") for ident in stale]
    r = client.read_response()
    assert (r.status, r.body) == (200, b"all of it")
    client.close()
    s.wait_log(r"prack.master: generation 1 retired", since=mark)
    finish(s, before)


def test_a_malformed_v1_answer_for_the_other_generation_gets_its_client_a_502(tmp_path, adopt):
    """A v1 post that does not decode (bad base64 here) but names a request
    of the other generation: its client must get 502 at once, as it does
    for this generation's requests, not wait for response_timeout."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=1,
                        timeouts_response_timeout=60)
    client = s.raw(timeout=10)
    client.send(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")
    old_ident = _pull(s.api_host, s.api_port)
    mark = s.log_mark()
    os.kill(s.master, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
    c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
    c.request("POST", "/api/v1/response", json.dumps(
        {"identifier": old_ident, "code": 200, "body": "not base64!"}).encode())
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    assert r.status == 400 and body["error"].startswith("body"), body
    assert client.read_response().status == 502
    client.close()
    s.wait_log(r"prack.master: generation 1 retired", since=mark)
    finish(s, before)


def test_ttin_without_a_spare_ring_starts_a_bigger_generation(tmp_path, adopt):
    """The rings are fixed per generation: SIGTTIN grows the server through a
    new generation; SIGUSR2 keeps the count, SIGHUP goes back to the file."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nacceptors = 1\n")
    s = start_upgrading(tmp_path, code, "-c", str(config), api_poll_timeout=1, acceptors=1)
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        pid, generation, _ = s.upgrade(signal.SIGTTIN)
        assert generation == 2
        assert re.search(r"acceptors=2 pid=%d " % pid, s.wait_log(r"ready: .*pid=%d " % pid))
        assert len(children_of(pid)) == 3
        pid, generation, _ = s.upgrade(signal.SIGUSR2)
        assert len(children_of(pid)) == 3
        pid, generation, _ = s.upgrade(signal.SIGHUP)
        assert generation == 4 and len(children_of(pid)) == 2
        c = s.client()
        c.request("GET", "/grown")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/grown|"
        c.close()
    finally:
        worker.stop()
    finish(s, before)


def test_systemd_socket_activation(tmp_path):
    """LISTEN_FDS/LISTEN_PID (fds from 3, named by LISTEN_FDNAMES): the
    server binds nothing itself and serves on the sockets it was given."""
    before = shm_entries()
    api = socket.create_server(("127.0.0.1", 0))
    public = socket.create_server(("127.0.0.1", 0))
    # A launcher in the role of systemd; api first, to check the names count.
    launcher = ("import os, sys; os.dup2(%d, 3); os.dup2(%d, 4); "
                "os.environ.update(LISTEN_FDS='2', LISTEN_FDNAMES='api:public', "
                "LISTEN_PID=str(os.getpid())); os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
                % (api.fileno(), public.fileno()))
    command = prack_command()
    if command[0] == sys.executable:
        command = command[1:]
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env["PRACK_SERVER_RUNTIME_DIR"] = str(runtime)
    # Addresses nobody could bind (port 1): only the given sockets can serve.
    proc = subprocess.Popen([sys.executable, "-c", launcher] + command +
                            ["-b", "127.0.0.1:1", "--api-bind", "127.0.0.1:1", "-a", "1"],
                            env=env, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, pass_fds=(api.fileno(), public.fileno()))
    api_port, public_port = api.getsockname()[1], public.getsockname()[1]
    api.close()
    public.close()
    log = []
    try:
        for line in proc.stderr:        # bounded: the server exits on error
            log.append(line)
            if "ready:" in line:
                break
        assert "ready: public=http://127.0.0.1:%d api=http://127.0.0.1:%d " % (
            public_port, api_port) in log[-1], log
        worker = EchoWorker("127.0.0.1", api_port)
        c = http.client.HTTPConnection("127.0.0.1", public_port, timeout=10)
        c.request("GET", "/activated")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/activated|"
        c.close()
        worker.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log += proc.stderr.readlines()
        proc.stderr.close()
    assert not any("Traceback" in line for line in log), log
    assert os.listdir(runtime) == []
    assert shm_entries() <= before


def test_sighup_with_a_new_port_binds_it(tmp_path, adopt):
    """A listener is inherited only while the configured port still matches;
    a changed port is bound by the new generation (and the old one closes)."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    config = tmp_path / "prack.toml"
    config.write_text("[server]\nbind = \"127.0.0.1:0\"\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    s = start_upgrading(tmp_path, code, "-c", str(config), public_flag=False,
                        api_poll_timeout=1, acceptors=1)
    worker = EchoWorker(s.api_host, s.api_port)
    try:
        old_port = s.port
        # A port someone else holds: the new generation cannot start.
        with socket.create_server(("127.0.0.1", 0)) as taken:
            busy = taken.getsockname()[1]
            config.write_text("[server]\nbind = \"127.0.0.1:%d\"\n" % busy)
            mark = s.log_mark()
            s.proc.send_signal(signal.SIGHUP)
            line = s.wait_log(r"upgrade failed", since=mark)
        assert "server.bind 127.0.0.1:%d: cannot listen" % busy in line, line
        assert "generation 1 keeps serving" in line
        c = http.client.HTTPConnection("127.0.0.1", old_port, timeout=10)
        c.request("GET", "/stays")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/stays|"
        c.close()
        config.write_text("[server]\nbind = \"127.0.0.1:%d\"\n" % free)
        mark = s.log_mark()
        s.upgrade(signal.SIGHUP)
        s.wait_log(r"ready: public=http://127.0.0.1:%d " % free, since=mark)
        c = http.client.HTTPConnection("127.0.0.1", free, timeout=10)
        c.request("GET", "/moved")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"/moved|"
        c.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", old_port), timeout=5).close()
    finally:
        worker.stop()
    finish(s, before)


def test_in_place_reexec_keeps_the_pid_under_load(tmp_path):
    """server.reexec = in-place (what PID 1 does by itself): the master execs
    the new code over itself, keeps its PID, and retires and reaps the old
    children once its own are ready; nothing fails meanwhile."""
    before = shm_entries()
    code = code_copy(tmp_path / "code")
    s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=2,
                        server_reexec="in-place")
    workers = [EchoWorker(s.api_host, s.api_port) for _ in range(2)]
    load = Load(s.host, s.port, keepalive=3, fresh=1, max_seconds=60)
    try:
        for i in (1, 2):
            set_version(code, "0.1.0+inplace%d" % i)
            old = set(children_of(s.pid))
            mark = s.log_mark()
            s.proc.send_signal(signal.SIGUSR2)
            s.wait_log(r"re-executing in place \(pid %d stays\)" % s.pid, since=mark)
            s.wait_log(r"ready: .* pid=%d generation=%d version=0.1.0\+inplace%d"
                       % (s.pid, i + 1, i), since=mark)
            s.wait_log(r"the previous generation has retired", since=mark)
            assert livez(s)["version"] == "0.1.0+inplace%d" % i
            assert not set(children_of(s.pid)) & old
            assert s.proc.poll() is None
            ok = load.ok
            deadline = time.monotonic() + 10
            while load.ok < ok + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        load.stop()
        for w in workers:
            w.stop()
    print("\nin-place re-exec x2: %d ok, %d failed" % (load.ok, len(load.failures)))
    assert load.failures == [], "\n".join(load.failures)
    assert s.stop() == 0
    s.assert_clean()
    assert not any("Traceback" in line for line in s.log)
    assert shm_entries() <= before


# -- the hand-over contract, unit by unit ------------------------------------------

def test_inherited_contract_from_a_predecessor():
    from prack.master import upgrade
    a, b = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    r, w = os.pipe()
    env = {upgrade.ENV_LISTEN_FDS: "public:%d,api:%d" % (a.detach(), b.detach()),
           upgrade.ENV_UPGRADE_FD: str(w), upgrade.ENV_GENERATION: "7",
           upgrade.ENV_ACCEPTORS: "3", upgrade.ENV_PREDECESSOR_DIR: "/run/old"}
    inh = upgrade.Inherited.from_environment(env)
    try:
        assert (inh.generation, inh.acceptors, inh.predecessor_dir) == (7, 3, "/run/old")
        public = inh.listener("public", "127.0.0.1:0")
        port = public.getsockname()[1]
        # A changed port is bound anew: the inherited socket is dropped.
        assert inh.listener("api", "127.0.0.1:1") is None
        inh.report("ready 42")
        inh.report("ready again")          # once only
        assert os.read(r, 100) == b"ready 42\n"
        assert os.read(r, 100) == b""      # the write end is closed
        assert port and upgrade.next_generation(0xFFFF) == 1
    finally:
        public.close()
        inh.close_unused()
        os.close(r)


def test_inherited_contract_from_systemd():
    from prack.master import upgrade
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}     # not for us: ignored
    assert upgrade.Inherited.from_environment(env).listeners == {}
    env = {}
    inh = upgrade.Inherited.from_environment(env)
    assert (inh.generation, inh.acceptors, inh.upgrade_fd) == (1, None, None)
