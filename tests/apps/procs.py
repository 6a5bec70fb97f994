"""Processes and servers for the worker tests: `prack-worker` as a real
subprocess, and the conventional servers the results are compared with."""
from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def worker_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    exe = os.path.join(os.path.dirname(sys.executable), "prack-worker")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-m", "prack.worker.cli"]


class WorkerProcess:
    """`prack-worker ARGS` with its stderr collected line by line."""

    def __init__(self, *args: str):
        env = dict(os.environ)
        # The apps are imported as apps.<name> from tests/; keep the caller's
        # PYTHONPATH (e.g. src for a development tree), made absolute.
        paths = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests")] + paths)
        self.log: list[str] = []
        self.proc = subprocess.Popen(worker_command() + list(args), cwd=str(ROOT / "tests"),
                                     env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_log(self, pattern: str, timeout: float = 15.0, since: int = 0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log[since:]:
                if rx.search(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError("no worker log line matching %r in:\n%s"
                             % (pattern, "\n".join(self.log)))

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` (None: none, it was sent already) and wait for the exit."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("prack-worker did not stop:\n" + "\n".join(self.log))
        self._reader.join(5)
        self.proc.stderr.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self.proc.stderr.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WerkzeugServer:
    """A WSGI app under werkzeug's threaded server, in this process."""

    def __init__(self, app):
        from werkzeug.serving import make_server
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class UvicornServer:
    """An ASGI app under uvicorn, in a thread of this process."""

    def __init__(self, app):
        import uvicorn
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:       # uvicorn's own "started" flag
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
