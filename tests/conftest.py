"""Test harness: the real prack-server as a subprocess, and real workers.

`server` starts `prack-server` on loopback port 0, waits for its explicit
"ready:" log line (no sleeps), reads the bound ports from it, and stops it
with SIGTERM at the end of the test, checking that it exited cleanly and left
nothing behind in /dev/shm or its runtime directory.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

READY = re.compile(r"ready: public=http://([^ ]+):(\d+) api=http://([^ ]+):(\d+)")
START_TIMEOUT = 20.0


def prack_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "prack-server")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("prack-server")
    if found:
        return [found]
    return [sys.executable, "-m", "prack.cli"]


def shm_entries() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("prack")}
    except FileNotFoundError:
        return set()


class Server:
    """A running prack-server. `log` collects its stderr lines."""

    def __init__(self, args: list[str], env: dict[str, str], runtime_dir: str):
        self.runtime_dir = runtime_dir
        self.log: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(prack_command() + args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("prack-server did not become ready:\n" + "\n".join(self.log))
        m = self._match
        self.host, self.port = m.group(1), int(m.group(2))
        self.api_host, self.api_port = m.group(3), int(m.group(4))
        self.api = "http://%s:%d" % (self.api_host, self.api_port)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            if not self._ready.is_set():
                m = READY.search(line)
                if m:
                    self._match = m
                    self._ready.set()
        self._ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """PIDs of the master's children (Linux /proc, else pgrep)."""
        path = "/proc/%d/task/%d/children" % (self.pid, self.pid)
        if os.path.exists(path):
            with open(path) as f:
                return [int(p) for p in f.read().split()]
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def client(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def api_client(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.api_host, self.api_port, timeout=timeout)

    def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Block until a stderr line matches (an explicit signal, not a sleep)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = self.log[seen:]
            for line in lines:
                if rx.search(line):
                    return line
            seen += len(lines)
            time.sleep(0.02)
        raise AssertionError("no log line matching %r in:\n%s" % (pattern, "\n".join(self.log)))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("prack-server did not stop:\n" + "\n".join(self.log))
        self._reader.join(5)
        return code

    def assert_clean(self) -> None:
        left = os.listdir(self.runtime_dir) if os.path.isdir(self.runtime_dir) else []
        assert left == [], "runtime dir not cleaned: %r" % left


@pytest.fixture
def start_server(tmp_path):
    """start_server(*flags, **settings) -> Server. Settings are passed as
    PRACK_<SECTION>_<KEY> variables: start_server(timeouts_queue_timeout=1)."""
    servers: list[Server] = []
    before = shm_entries()

    def start(*flags: str, acceptors: int = 2, **settings) -> Server:
        runtime = tmp_path / ("run%d" % len(servers))
        runtime.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
        env["PRACK_SERVER_RUNTIME_DIR"] = str(runtime)
        for key, value in settings.items():
            env["PRACK_" + key.upper()] = str(value)
        args = ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", str(acceptors), *flags]
        server = Server(args, env, str(runtime))
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            code = server.stop()
            assert code == 0, "exit code %r\n%s" % (code, "\n".join(server.log))
        server.assert_clean()
        assert not any("Traceback" in line for line in server.log), "\n".join(server.log)
    assert shm_entries() <= before, "left in /dev/shm: %r" % (shm_entries() - before)


@pytest.fixture
def server(start_server):
    return start_server()


# -- workers -------------------------------------------------------------------

def echo_app(env, body):
    """Default worker app: echoes what it received as JSON."""
    payload = {"env": env, "body": base64.b64encode(body).decode()}
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class Worker:
    """A real worker loop on its own thread, speaking API v1 like the
    original Prack clients. `app(env, body) -> (status, headers, body)`."""

    def __init__(self, api: str, app=echo_app, post_path: str = "/api/v1/response"):
        host, port = api.split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.app = app
        self.post_path = post_path
        self.handled = 0
        self.post_statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("GET", "/api/v1/request")
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    continue
                job = json.loads(data)
                result = self.app(job["environment"], base64.b64decode(job["body"]))
                if result is None:      # the app chose not to answer
                    continue
                status, headers, body = result
                msg = {"identifier": job["identifier"], "code": status, "headers": headers,
                       "body": base64.b64encode(body).decode()}
                conn.request("POST", self.post_path, json.dumps(msg),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                self.post_statuses.append(r.status)
                self.handled += 1
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                    conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()


@pytest.fixture
def worker_factory():
    workers: list[Worker] = []

    def make(api: str, app=echo_app, **kw) -> Worker:
        w = Worker(api, app, **kw).__enter__()
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()
