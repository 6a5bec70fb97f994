"""Test harness: the real prack-server as a subprocess, and real workers.

`server` starts `prack-server` on loopback port 0, waits for its explicit
"ready:" log line (no sleeps), reads the bound ports from it, and stops it
with SIGTERM at the end of the test, checking that it exited cleanly and left
nothing behind in /dev/shm or its runtime directory. `srv` is one such server
shared by the tests of a module (its settings: the `srv_settings` fixture).

Markers: every test under tests/e2e/ is marked `e2e` here, by its path, and
so is any other test that starts a real server, so `-m "not e2e"` is the fast
run of the unit tests; `slow` marks the tests that take more than about 5 s
each (`-m "not slow"` leaves them out).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from prack import config
from prack.acceptor.process import Acceptor
from prack.ipc.ring import Segment

READY = re.compile(r"ready: public=http://([^ ]+):(\d+) api=http://([^ ]+):(\d+)")
START_TIMEOUT = 20.0
E2E_DIR = pathlib.Path(__file__).parent / "e2e"
# The fixtures that start a real prack-server (`server` and `srv` use them).
SERVER_FIXTURES = frozenset({"start_server", "start_module_server"})


def pytest_collection_modifyitems(items) -> None:
    """Mark `e2e` every test collected from tests/e2e/ (a new file there is
    covered without a line of its own), and every other test that starts a
    real prack-server through these fixtures (the SDK's tests against a real
    front, for one), so that `-m "not e2e"` is a quick run. (A test that
    starts a server some other way, e.g. through tests/upgrade_helpers.py,
    is not seen here: it belongs in tests/e2e/.)"""
    e2e = pytest.mark.e2e
    for item in items:
        if (E2E_DIR in item.path.parents
                or not SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))):
            item.add_marker(e2e)


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

    def __init__(self, args: list[str], env: dict[str, str], runtime_dir: str,
                 preexec_fn=None):
        self.runtime_dir = runtime_dir
        self.log: list[str] = []
        self.killed = False     # a test SIGKILLed the master: its exit code is -9
        self._clients: list = []     # closed at teardown (ResourceWarning is an error)
        self._ready = threading.Event()
        self.proc = subprocess.Popen(prack_command() + args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if (not self._ready.wait(START_TIMEOUT) or self.proc.poll() is not None
                or not hasattr(self, "_match")):
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            self.proc.stdout.close()
            self.proc.stderr.close()
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
        return self._track(http.client.HTTPConnection(self.host, self.port, timeout=timeout))

    def api_client(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return self._track(
            http.client.HTTPConnection(self.api_host, self.api_port, timeout=timeout))

    def raw(self, timeout: float = 10.0) -> "RawClient":
        """A plain socket to the public port, for byte-exact requests."""
        return self._track(RawClient(self.host, self.port, timeout))

    def raw_api(self, timeout: float = 10.0) -> "RawClient":
        return self._track(RawClient(self.api_host, self.api_port, timeout))

    def _track(self, client):
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    def pids(self, role: str, index: int = 0) -> list[int]:
        """PIDs logged for a child ("acceptor" or "API process"), oldest
        first; needs --log-level debug."""
        if role == "acceptor":
            pattern = r"acceptor %d ready \(pid (\d+)\)" % index
        else:
            pattern = r"API process ready \(pid (\d+)\)"
        self.wait_log(pattern)     # a child may log after the master's "ready"
        rx = re.compile(pattern)
        return [int(m.group(1)) for m in map(rx.search, list(self.log)) if m]

    def kill_master(self) -> None:
        """kill -9 of the master alone (its children live on)."""
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def wait_children_gone(self, timeout: float) -> None:
        """Block until every process of the server has exited: the end of
        its stderr, which each child holds until it exits."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), \
            "children still running after %.1fs:\n%s" % (timeout, "\n".join(self.log))

    def log_mark(self) -> int:
        """The number of log lines so far, for wait_log(..., since=mark)."""
        return len(self.log)

    def wait_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> str:
        """Block until a stderr line matches (an explicit signal, not a sleep);
        `since` skips the lines before a log_mark()."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = since
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
            self._release()     # no pipes left for a later test to trip over
            raise AssertionError("prack-server did not stop:\n" + "\n".join(self.log))
        self._release()
        return code

    def _release(self) -> None:
        """After the process has exited: finish reading its log, close pipes."""
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def assert_clean(self) -> None:
        left = os.listdir(self.runtime_dir) if os.path.isdir(self.runtime_dir) else []
        assert left == [], "runtime dir not cleaned: %r" % left


class _Servers:
    """Starts servers under `base` and checks, when done, that each one
    exited with 0, logged no traceback and left nothing behind."""

    def __init__(self, base):
        self.base = base
        self.servers: list[Server] = []
        self.before = shm_entries()

    def start(self, *flags: str, acceptors: int = 2, nofile: int | None = None,
              **settings) -> Server:
        """`nofile` caps the server's open descriptors (RLIMIT_NOFILE)."""
        runtime = self.base / ("run%d" % len(self.servers))
        runtime.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
        env["PRACK_SERVER_RUNTIME_DIR"] = str(runtime)
        for key, value in settings.items():
            env["PRACK_" + key.upper()] = str(value)
        args = ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", str(acceptors), *flags]
        preexec = None
        if nofile is not None:
            import resource

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        server = Server(args, env, str(runtime), preexec)
        self.servers.append(server)
        return server

    def finish(self) -> None:
        for server in self.servers:
            server.close_clients()
            if server.proc.poll() is None:
                code = server.stop()
            else:
                code = server.proc.returncode
                server._release()
            expected = -signal.SIGKILL if server.killed else 0
            assert code == expected, "exit code %r\n%s" % (code, "\n".join(server.log))
            server.assert_clean()
            assert not any("Traceback" in line for line in server.log), "\n".join(server.log)
        assert shm_entries() <= self.before, \
            "left in /dev/shm: %r" % (shm_entries() - self.before)


@pytest.fixture
def start_server(tmp_path):
    """start_server(*flags, **settings) -> Server. Settings are passed as
    PRACK_<SECTION>_<KEY> variables: start_server(timeouts_queue_timeout=1)."""
    servers = _Servers(tmp_path)
    yield servers.start
    servers.finish()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory):
    """Like start_server, for a server shared by the tests of a module (the
    checks run when the module is done)."""
    servers = _Servers(tmp_path_factory.mktemp("shared"))
    yield servers.start
    servers.finish()


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture(scope="module")
def srv_settings() -> dict:
    """The settings of `srv`. These defaults: one acceptor (so arrival order
    is processing order) and 5 s long polls; a module that needs others
    overrides this fixture (scope="module") with its own dict."""
    return {"acceptors": 1, "api_poll_timeout": 5}


@pytest.fixture(scope="module")
def srv(start_module_server, srv_settings):
    """A server shared by the tests of a module, without workers (each test
    pulls and answers by hand, or only needs a request refused)."""
    return start_module_server(**srv_settings)


# -- one-shot calls and bounded waits ----------------------------------------------

def _get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(server, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    """GET `path` from the public port on a connection of its own: (status, body)."""
    return _get(server.host, server.port, path, timeout)


def api_get(server, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    """GET `path` from the worker API on a connection of its own: (status, body)."""
    return _get(server.api_host, server.api_port, path, timeout)


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB (Linux /proc)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def wait_for(cond, timeout: float = 10.0, what: str = "condition"):
    """Poll `cond` until it returns something true, and return that; a
    bounded wait (no fixed sleeps): past `timeout` the test fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


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
        self._conn = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:   # wake the thread out of a long poll at once
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(15)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                    conn.connect()
                    self._conn = conn
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


def _workers():
    """Yields make(api, app, **kw) -> a started Worker; stops them all after."""
    workers: list[Worker] = []

    def make(api: str, app=echo_app, **kw) -> Worker:
        w = Worker(api, app, **kw).__enter__()
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


@pytest.fixture
def worker_factory():
    yield from _workers()


@pytest.fixture(scope="module")
def module_worker_factory():
    """worker_factory for workers of a start_module_server server."""
    yield from _workers()


class Recorder:
    """An app wrapper that records every request a worker was given:
    `worker_factory(api, Recorder())`; `.seen` holds (env, body) pairs."""

    def __init__(self, app=echo_app):
        self.app = app
        self.seen: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, env, body):
        with self.lock:
            self.seen.append((env, body))
        return self.app(env, body)

    @property
    def paths(self) -> list[str]:
        with self.lock:
            return [env["PATH_INFO"] for env, _ in self.seen]


@pytest.fixture
def recorder():
    return Recorder


# -- raw HTTP over a socket -----------------------------------------------------

class RawResponse:
    def __init__(self, status: int, reason: str, version: str, headers: list, body: bytes):
        self.status, self.reason, self.version = status, reason, version
        self.headers = headers          # [(name, value)] in order, names as sent
        self.body = body

    def header(self, name: str, default=None):
        values = self.all(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<RawResponse %d %r %r>" % (self.status, self.headers, self.body[:200])


class RawClient:
    """A client socket that sends bytes verbatim and parses responses itself.
    Every read is bounded by `timeout` (a hang fails the test, it does not
    pass it)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_response(self, head: bool = False) -> RawResponse:
        """One response; `head=True` for the answer to HEAD (no body)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("connection closed before a response head: %r" % self.buf)
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), "bad header line %r" % line
            headers.append((name, value.strip(" \t")))
        resp = RawResponse(int(status), reason, version, headers, b"")
        code = int(status)
        if head or code < 200 or code in (204, 304):
            return resp
        lengths = resp.all("Content-Length")
        if lengths:
            assert len(lengths) == 1, resp
            n = int(lengths[0])
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("connection closed in a response body")
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            assert resp.header("Transfer-Encoding") is None, resp
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self) -> bool:
        """True when the server closed the connection (EOF or reset) with
        nothing more to read; False if bytes arrived instead. Waits at most
        the socket timeout (then raises)."""
        if self.buf:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        if data:
            self.buf += data
            return False
        return True

    def assert_closed(self) -> None:
        assert self.closed_by_peer(), "connection still open; got %r" % self.buf

    def close(self) -> None:
        self.sock.close()


def read_head(f) -> tuple[bytes, dict]:
    """A response head from a file over a client socket: (status line,
    {lower-case name: value})."""
    status = f.readline()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_chunk(f) -> tuple[int, bytes]:
    """One chunk of a chunked body from a file over a client socket: (size, data)."""
    size = int(f.readline().split(b";")[0], 16)
    data = f.read(size)
    assert f.read(2) == b"\r\n"
    return size, data


# -- an acceptor driven in process ----------------------------------------------------------
# A real listener, ring and API link, its event handlers called by the test
# instead of its loop, and its deadlines checked by calling its housekeeping
# with the time the test chooses.

def _build_acceptor(tmp_path, env: dict):
    cfg = config.load(None, env=env)
    seg = Segment.create(1, 8, 1 << 20)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    api_path = str(tmp_path / "api.sock")
    api_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    api_listener.bind(api_path)
    api_listener.listen(4)
    status_r, status_w = os.pipe()
    acc = Acceptor(cfg, 0, 1, listener, seg, api_path, status_w)
    acc.sel.register(listener, selectors.EVENT_READ, acc._on_accept)
    acc._connect_api()
    api_side, _ = api_listener.accept()
    clients: list = []

    def teardown():
        for conn in list(acc.conns.values()):
            acc.close(conn)
        for s in clients + [api_side, api_listener, listener]:
            s.close()
        if acc.api is not None:
            acc.api.close()
        acc.sel.close()
        seg.close()
        os.close(status_r)
        os.close(status_w)
    return (acc, seg, listener, api_listener, api_side, clients), teardown


@pytest.fixture
def acceptor(tmp_path):
    parts, teardown = _build_acceptor(tmp_path, {})
    yield parts
    teardown()


@pytest.fixture
def make_acceptor(tmp_path):
    """make_acceptor(PRACK_TIMEOUTS_HEADER_TIMEOUT="7", ...): an acceptor
    with those settings (at most one per test)."""
    teardowns = []

    def make(**env):
        parts, teardown = _build_acceptor(tmp_path, env)
        teardowns.append(teardown)
        return parts
    yield make
    for teardown in teardowns:
        teardown()


# -- an API process driven in process ---------------------------------------------------------

class _NoRings:
    """A segment with no rings: the API process's tables and connections
    are tested without shared memory."""
    nrings = 2
    nslots = 8

    def ring(self, i):
        return None


@pytest.fixture
def inprocess_api():
    """An ApiServer built in the test process (its loop not run), on a
    socketpair standing for each of its listeners."""
    from prack.api.process import ApiServer
    a, b = socket.socketpair()
    server = ApiServer(config.load(None, env={}), 1, a, b, _NoRings(), -1)
    yield server
    server.sel.close()
    a.close()
    b.close()


# -- a scripted front ----------------------------------------------------------------------------

def scripted_front(connections: list[list]):
    """A listening socket on loopback that takes one connection per entry of
    `connections` and answers each request it reads there with the next of
    that entry's answers: bytes to send, b"" to close the connection at once,
    None to hold the call until the client goes; after the last answer it
    closes that connection. The requests read are collected as (connection
    number, request). Returns (listener, thread, requests)."""
    lst = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[int, bytes]] = []

    def serve():
        for number, answers in enumerate(connections):
            conn, _ = lst.accept()
            with conn:
                buf = b""
                for answer in answers:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
                    n = int(length.group(1)) if length else 0
                    while len(buf) < n:
                        buf += conn.recv(65536)
                    seen.append((number, head + b"\r\n\r\n" + buf[:n]))
                    buf = buf[n:]
                    if answer is None:          # hold the call until the client goes
                        while conn.recv(65536):
                            pass
                        break
                    if not answer:
                        break
                    conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lst, t, seen
