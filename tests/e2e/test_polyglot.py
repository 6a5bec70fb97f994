"""The example workers in other languages (examples/: Ruby through Rack and
Rack::Lint, Node.js, Go, PHP, and the README's curl script) serve real
requests, end to end.

Each test starts the worker first, against an API port where nothing listens
yet: it must keep retrying, not crash. Then the real prack-server starts on
that port; the worker's first answer is an empty long poll (no request has
been sent yet), after which http.client drives requests through the public
port on one keep-alive connection and checks the exact responses. The server
is then stopped and started again on the same port, and the worker must
serve again. SIGTERM must then stop the worker with exit status 0.

A missing runtime fails the test, naming what to install: `make test` runs
tests/install-deps.sh, which installs them.
"""
from __future__ import annotations

import dataclasses
import http.client
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
INSTALL = "run `bash tests/install-deps.sh` as root (it installs %s from Debian)"


@dataclasses.dataclass
class Example:
    name: str              # as the greeting spells it
    runtime: str           # the program that must be on PATH
    packages: str          # what install-deps.sh installs for it
    full: bool = True      # serves /echo's X-Echo-* headers, /cookies, /binary


EXAMPLES_BY_ID = {
    "ruby": Example("Ruby", "ruby", "ruby, ruby-rack"),
    "node": Example("Node.js", "node", "nodejs"),
    "go": Example("Go", "go", "golang-go"),
    "php": Example("PHP", "php", "php-cli"),
    "curl": Example("curl", "curl", "curl", full=False),
}


def require(example: Example) -> None:
    """Fail (never skip) when the runtime is missing."""
    if shutil.which(example.runtime) is None:
        pytest.fail("%s is not installed: %s" % (example.runtime, INSTALL % example.packages))
    if example.runtime == "ruby":
        probe = subprocess.run(["ruby", "-e", 'require "rack"'], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.fail("the rack gem is missing: %s\n%s" % (INSTALL % "ruby-rack", probe.stderr))


@pytest.fixture(scope="session")
def go_worker(tmp_path_factory) -> str:
    """examples/go built once per session, with a private GOCACHE and
    GOPATH (a CI user may have no writable home) and no network."""
    require(EXAMPLES_BY_ID["go"])
    base = tmp_path_factory.mktemp("go")
    env = dict(os.environ, GOCACHE=str(base / "cache"), GOPATH=str(base / "path"),
               GOPROXY="off", GOFLAGS="-mod=mod", GO111MODULE="on")
    binary = str(base / "prack-go-worker")
    out = subprocess.run(["go", "build", "-o", binary, "."], cwd=EXAMPLES / "go", env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, "go build failed:\n" + out.stderr
    return binary


def command(example_id: str, api: str, request) -> list[str]:
    if example_id == "go":
        return [request.getfixturevalue("go_worker"), api]
    return {
        "ruby": ["ruby", str(EXAMPLES / "ruby" / "worker.rb"), api],
        "node": ["node", str(EXAMPLES / "node" / "worker.js"), api],
        "php": ["php", str(EXAMPLES / "php" / "worker.php"), api],
        "curl": ["bash", str(EXAMPLES / "curl_worker.sh"), api],
    }[example_id]


class WorkerProcess:
    """A worker subprocess whose stderr lines are collected as they come."""

    def __init__(self, args: list[str]):
        env = {k: v for k, v in os.environ.items() if k != "PRACK_API"}
        self.log: list[str] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.log)

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 15.0) -> int:
        """Block until a stderr line matches (the worker's own signal, not a
        sleep); returns the number of lines seen, for `since`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = list(self.log)
            for i in range(since, len(lines)):
                if rx.search(lines[i]):
                    return i + 1
            if self.proc.poll() is not None and len(self.log) == len(lines):
                break
            time.sleep(0.02)
        raise AssertionError("worker (exit %r) logged no line matching %r:\n%s"
                             % (self.proc.poll(), pattern, self.text()))

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM; the exit status (the worker is killed if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._reader.join(5)
        self.proc.stderr.close()
        return code


def reserve_refusing_port() -> socket.socket:
    """A bound socket that does not listen: connections to its port are
    refused until it is closed and the server binds the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def fetch(conn: http.client.HTTPConnection, method: str, target: str, body=None, headers=None):
    conn.request(method, target, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


@pytest.mark.parametrize("example_id", list(EXAMPLES_BY_ID))
def test_example_worker(example_id, start_server, request):
    example = EXAMPLES_BY_ID[example_id]
    require(example)
    placeholder = reserve_refusing_port()
    api_port = placeholder.getsockname()[1]
    worker = WorkerProcess(command(example_id, "http://127.0.0.1:%d" % api_port, request))
    try:
        # Down: the worker retries with a message instead of crashing.
        mark = worker.wait_log(r"cannot reach http://127\.0\.0\.1:%d" % api_port)
        assert worker.proc.poll() is None, worker.text()
        placeholder.close()
        server = start_server("--api-bind", "127.0.0.1:%d" % api_port, acceptors=1,
                              api_poll_timeout=0.3)
        # Up: nothing has been sent yet, so the answer that made it say
        # "connected" was an empty long poll (404), which it must survive.
        worker.wait_log(r"connected to http://127\.0\.0\.1:%d" % api_port, since=mark)
        if example_id == "ruby":
            assert re.search(r"through Rack::Lint", worker.text()), worker.text()

        conn = server.client(timeout=15)
        resp, body = fetch(conn, "GET", "/")
        assert (resp.status, body) == (200, ("Hello from %s ✓\n" % example.name).encode())
        assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"
        sock = conn.sock      # every request below must reuse this connection

        payload = bytes(range(256)) * 3 + "é✓\r\n".encode() + os.urandom(200_000)
        resp, body = fetch(conn, "POST", "/echo?x=1&y=%20z", payload,
                           {"X-Test": b"caf\xe9 \xff ok", "Content-Type": "application/x-demo"})
        assert resp.status == 200 and body == payload, (resp.status, len(body))
        assert resp.getheader("Content-Type") == "application/octet-stream"
        if example.full:
            assert resp.getheader("X-Echo-Method") == "POST"
            assert resp.getheader("X-Echo-Path") == "/echo"
            assert resp.getheader("X-Echo-Query") == "x=1&y=%20z"
            # http.client decodes header bytes as ISO-8859-1: byte for byte.
            assert resp.getheader("X-Echo-Header") == "caf\xe9 \xff ok"

        resp, body = fetch(conn, "HEAD", "/")
        assert (resp.status, body) == (200, b"")
        assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"

        resp, body = fetch(conn, "POST", "/echo", b"")
        assert (resp.status, body) == (200, b"")

        resp, body = fetch(conn, "GET", "/missing?q=1")
        assert (resp.status, body) == (404, b"Not found: /missing\n")

        if example.full:
            resp, body = fetch(conn, "GET", "/cookies")
            assert (resp.status, body) == (200, b"two cookies\n")
            # Path's case differs between libraries (Rack writes "path").
            cookies = [c.lower() for c in resp.headers.get_all("Set-Cookie")]
            assert cookies == ["a=1; path=/", "b=2; path=/"], resp.headers.items()

            resp, body = fetch(conn, "GET", "/binary")
            assert (resp.status, body) == (200, bytes(range(256)))
            assert resp.getheader("Content-Type") == "application/octet-stream"

        if example_id == "ruby":
            # config.ru's /broken returns a 204 with a content type: with
            # Rack::Lint in the path that is caught and becomes a 500.
            mark = len(worker.log)
            resp, body = fetch(conn, "GET", "/broken")
            assert (resp.status, body) == (500, b"Internal Server Error\n")
            worker.wait_log(r"Rack::Lint::LintError.*204", since=mark)

        assert conn.sock is sock, "the client connection was not kept alive"
        conn.close()

        # The server goes away under a connected worker and comes back on
        # the same port: the worker rides it out and serves again.
        mark = len(worker.log)
        assert server.stop() == 0, "\n".join(server.log)
        mark = worker.wait_log(r"cannot reach http://127\.0\.0\.1:%d" % api_port, since=mark)
        server = start_server("--api-bind", "127.0.0.1:%d" % api_port, acceptors=1,
                              api_poll_timeout=0.3)
        worker.wait_log(r"connected to http://127\.0\.0\.1:%d" % api_port, since=mark)
        resp, body = fetch(server.client(timeout=15), "GET", "/")
        assert (resp.status, body) == (200, ("Hello from %s ✓\n" % example.name).encode())
    finally:
        placeholder.close()
        code = worker.terminate()
    assert code == 0, "exit status %r after SIGTERM:\n%s" % (code, worker.text())
    # Every answer was accepted by the API (none malformed, none late).
    assert not re.search(r"response refused|was refused|posting .* failed|panic|fatal",
                         worker.text()), worker.text()


def test_readme_shows_the_curl_worker():
    """The README's shell worker is examples/curl_worker.sh, which the test
    above runs: the two cannot drift apart."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A worker in ten lines of Python", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's worker section lost the curl worker"
    assert block.group(1) == (EXAMPLES / "curl_worker.sh").read_text()
