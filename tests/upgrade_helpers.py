"""Helpers for the upgrade, supervision and container tests.

* `code_copy()` puts a copy of the prack package (compiled core included) in
  a temporary directory that the server runs from (PYTHONPATH), so a test can
  change the code on disk between upgrades, as a deploy does.
* `UpgradingServer` follows the master across generations: the current
  master's PID comes from the last `ready:` line. The test process is made a
  child subreaper, so a new generation's master (whose parent, the old
  master, exits) is re-parented to it and its exit status can be checked.
* `Load` is a bounded load generator: keep-alive clients and clients that
  open a connection per request, every response checked against its request.
* `EchoWorker` answers with the request's path, body and the acceptor index
  (from the identifier), and retries a POST that failed on the way (a real
  worker's duty: the identifier makes a repeat harmless).
"""
from __future__ import annotations

import base64
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time

from conftest import Server

READY_PID = re.compile(r"ready: .* pid=(\d+) generation=(\d+) version=(\S+)")
PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0


def reap(pid: int, timeout: float) -> int | None:
    """Wait for an adopted process; its exit status, or None if not ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            raise AssertionError("pid %d did not exit" % pid)
        time.sleep(0.02)


def code_copy(dest) -> str:
    """A copy of the importable prack package under dest; returns dest."""
    import prack
    src = os.path.dirname(prack.__file__)
    shutil.copytree(src, os.path.join(dest, "prack"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(dest)


def set_version(code_dir: str, version: str) -> None:
    path = os.path.join(code_dir, "prack", "__init__.py")
    with open(path) as f:
        text = f.read()
    text = re.sub(r'__version__ = "[^"]*"', '__version__ = "%s"' % version, text)
    with open(path, "w") as f:
        f.write(text)


class UpgradingServer(Server):
    """A Server whose master may change across USR2 upgrades."""

    def masters(self) -> list[tuple[int, int, str]]:
        """(pid, generation, version) of every ready line so far."""
        return [(int(m.group(1)), int(m.group(2)), m.group(3))
                for m in map(READY_PID.search, list(self.log)) if m]

    @property
    def master(self) -> int:
        return self.masters()[-1][0]

    def upgrade(self, sig=signal.SIGUSR2, timeout: float = 30.0) -> tuple[int, int, str]:
        """Signal the current master, wait for the new generation to be ready
        and the old one to retire; (pid, generation, version) of the new."""
        old = self.master
        mark = self.log_mark()
        os.kill(old, sig)
        line = self.wait_log(r"prack.master: ready: ", timeout=timeout, since=mark)
        self.wait_log(r"\[%d\] prack.master: generation \d+ retired" % old, timeout=timeout,
                      since=mark)
        m = READY_PID.search(line)
        return int(m.group(1)), int(m.group(2)), m.group(3)

    def stop_current(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Stop whichever master serves now; its exit status (None when it is
        not a child of ours)."""
        pid = self.master
        os.kill(pid, sig)
        if pid == self.proc.pid:
            code = self.proc.wait(timeout)
        else:
            code = reap(pid, timeout)
            self.proc.wait(timeout)
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "a process still holds the server's stderr"
        self._release()
        return code


def livez(server, timeout: float = 10.0) -> dict:
    conn = http.client.HTTPConnection(server.api_host, server.api_port, timeout=timeout)
    try:
        conn.request("GET", "/livez")
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


# -- workers -------------------------------------------------------------------

def echo(env, body, identifier):
    text = "%s|%s" % (env["PATH_INFO"], body.decode())
    return 200, {"X-Acceptor": str(int(identifier[4:8], 16))}, text.encode()


class EchoWorker:
    def __init__(self, host: str, port: int, app=echo):
        self.host, self.port, self.app = host, port, app
        self.handled = 0
        self.post_retries = 0
        self.retry_statuses: list[int] = []
        self.lost_posts: list[str] = []        # paths whose answer died in transit
        self._stop = threading.Event()
        self._conn = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(15)

    def _connect(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self._conn = conn
        return conn

    def _post(self, conn, msg: bytes):
        conn.request("POST", "/api/v1/response", msg, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._connect()
                conn.request("GET", "/api/v1/request")
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    continue
                job = json.loads(data)
                status, headers, body = self.app(job["environment"],
                                                 base64.b64decode(job["body"]),
                                                 job["identifier"])
                msg = json.dumps({"identifier": job["identifier"], "code": status,
                                  "headers": headers,
                                  "body": base64.b64encode(body).decode()}).encode()
                try:
                    self._post(conn, msg)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    self.post_retries += 1
                    conn = self._connect()
                    status = self._post(conn, msg)
                    self.retry_statuses.append(status)
                    if status != 200:
                        self.lost_posts.append(job["environment"]["PATH_INFO"])
                self.handled += 1
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                    conn = None
                self._stop.wait(0.02)
        if conn is not None:
            conn.close()


# -- load ------------------------------------------------------------------------

class Load:
    """`keepalive` clients reusing one connection, `fresh` clients opening one
    per request; runs until stop() or `max_seconds`. Every response must be
    200 and echo its own request's path and body."""

    def __init__(self, host: str, port: int, keepalive: int = 4, fresh: int = 2,
                 max_seconds: float = 120.0, timeout: float = 20.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.ok = 0
        self.failures: list[str] = []
        self.failed: list[tuple[str, int | None]] = []
        self.failed_paths: list[str] = []
        self.by_acceptor: dict[int, int] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._until = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._keepalive, args=(i,), daemon=True)
                        for i in range(keepalive)]
        self.threads += [threading.Thread(target=self._fresh, args=(i,), daemon=True)
                         for i in range(fresh)]
        for t in self.threads:
            t.start()

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._until

    def _check(self, what: str, resp, path: str, body: str) -> int:
        data = resp.read()
        expected = ("%s|%s" % (path, body)).encode()
        if resp.status != 200 or data != expected:
            raise AssertionError("%s: got %d %r, expected %r" % (what, resp.status, data[:200],
                                                                 expected))
        return int(resp.getheader("X-Acceptor", "-1"))

    def _record(self, acceptor: int | None, failure: str | None, kind: str = "",
                last: int | None = None, path: str = "") -> None:
        """A success (served by `acceptor`), or a failure: `kind` is
        "keep-alive" or "fresh", `last` the acceptor that served this
        keep-alive connection's previous request (None: none yet)."""
        with self.lock:
            if failure is None:
                self.ok += 1
                self.by_acceptor[acceptor] = self.by_acceptor.get(acceptor, 0) + 1
            else:
                self.failures.append(failure)
                self.failed.append((kind, last))
                self.failed_paths.append(path)

    def _keepalive(self, cid: int) -> None:
        conn = None
        n = 0
        last = None
        while self._running():
            n += 1
            path, body = "/ka/%d/%d" % (cid, n), "k%d-%d" % (cid, n)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                last = None
            try:
                conn.request("POST", path, body)
                acc = self._check("keep-alive %d #%d" % (cid, n), conn.getresponse(), path, body)
                self._record(acc, None)
                last = acc
            except Exception as exc:    # noqa: BLE001 - every failure is counted
                self._record(None, "keep-alive %d #%d (acceptor %s): %r" % (cid, n, last, exc),
                             "keep-alive", last, path)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self, cid: int) -> None:
        n = 0
        while self._running():
            n += 1
            path, body = "/new/%d/%d" % (cid, n), "n%d-%d" % (cid, n)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request("POST", path, body, {"Connection": "close"})
                acc = self._check("fresh %d #%d" % (cid, n), conn.getresponse(), path, body)
                self._record(acc, None)
            except Exception as exc:    # noqa: BLE001
                self._record(None, "fresh %d #%d: %r" % (cid, n, exc), "fresh", None, path)
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self.threads), "a load thread hangs"


def children_of(pid: int) -> list[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def state(pid: int) -> str:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def log_time(line: str) -> float:
    """The timestamp of a server log line, in seconds (same day)."""
    m = re.match(r"\S+ (\d\d):(\d\d):(\d\d),(\d{3}) ", line)
    h, mi, sec, ms = map(int, m.groups())
    return h * 3600 + mi * 60 + sec + ms / 1000


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def start_upgrading(base, code_dir: str, *flags, acceptors=2, public_flag=True,
                    **settings) -> UpgradingServer:
    """`public_flag=False` leaves -b out (the public address then comes from
    the configuration file, which an upgrade reads again)."""
    runtime = base / "run"
    runtime.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env["PRACK_SERVER_RUNTIME_DIR"] = str(runtime)
    env["PYTHONPATH"] = code_dir
    for key, value in settings.items():
        env[key if key.isupper() else "PRACK_" + key.upper()] = str(value)
    args = ["--api-bind", "127.0.0.1:0", "-a", str(acceptors), *flags]
    if public_flag:
        args = ["-b", "127.0.0.1:0"] + args
    return UpgradingServer(args, env, str(runtime))
