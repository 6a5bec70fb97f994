"""The servers Prack is compared with, and Prack itself, as benchmark
configurations. Each writes its own config and hello app into a scratch
directory, starts on a free loopback port, waits until it answers, and
reports the PIDs of its whole process tree (for CPU and memory figures).

    cfg = CONFIGS["uvicorn-2"]
    with cfg.start(workdir) as run:
        measure.wrk(run.url + "/", ...); run.pids()
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

from measure import tree

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, "apps")
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/", timeout: float = 30.0) -> None:
    """Until the server answers a request with a 2xx (its readiness)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if 200 <= r.status < 300:
                return
            last = r.status
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError("no answer on port %d within %gs: %r" % (port, timeout, last))


class Running:
    """A started configuration: `url`, `pids()`, and stop on exit."""

    def __init__(self, url: str, procs: list[subprocess.Popen], extra_pids=lambda: []):
        self.url = url
        self.procs = procs
        self._extra = extra_pids

    def pids(self) -> list[int]:
        roots = [p.pid for p in self.procs if p.poll() is None] + list(self._extra())
        return tree(roots)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        # Processes that are not our children (Mongrel2 daemonizes: its
        # server is named only by its pid file) are stopped too, or each run
        # would leave one behind.
        extra = [pid for pid in self._extra() if pid not in {p.pid for p in self.procs}]
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for pid in extra:
            _signal(pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        deadline = time.monotonic() + 20
        while extra and time.monotonic() < deadline:
            extra = [pid for pid in extra if _signal(pid, 0)]
            if extra:
                time.sleep(0.05)
        for pid in extra:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> bool:
    """Send sig to pid; False when there is no such process any more."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn(cmd: list[str], cwd: str | None = None, env: dict | None = None,
           log: str | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    finally:
        if log:
            out.close()


def version_of(cmd: list[str], pattern: str = r"[\d.]+") -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(0) if m else (out.stdout + out.stderr).strip()[:60]


# -- nginx ---------------------------------------------------------------------------

def _nginx_conf(work: str, port: int, workers: int, body: str) -> str:
    conf = os.path.join(work, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(textwrap.dedent("""\
            %sworker_processes %d;
            daemon off;
            master_process on;
            pid %s/nginx.pid;
            error_log %s/nginx-error.log warn;
            events { worker_connections 20000; }
            http {
                access_log off;
                keepalive_requests 1000000;
                client_body_temp_path %s/tmp-body;
                proxy_temp_path %s/tmp-proxy;
                include /etc/nginx/mime.types;
                server {
                    listen 127.0.0.1:%d;
            %s
                }
            }
            """) % (user, workers, work, work, work, work, port, textwrap.indent(body, " " * 8)))
    return conf


def start_nginx_hello(work: str, workers: int = 2) -> Running:
    port = free_port()
    conf = _nginx_conf(work, port, workers, textwrap.dedent("""\
        location / {
            default_type text/plain;
            return 200 "Hello, World!";
        }"""))
    p = _spawn(["nginx", "-c", conf, "-p", work], log=os.path.join(work, "nginx.log"))
    wait_http(port)
    return Running("http://127.0.0.1:%d" % port, [p])


def start_nginx_static(work: str, root: str, workers: int = 1) -> Running:
    port = free_port()
    conf = _nginx_conf(work, port, workers, "root %s;\nsendfile on;" % root)
    p = _spawn(["nginx", "-c", conf, "-p", work], log=os.path.join(work, "nginx.log"))
    wait_http(port, "/" + sorted(os.listdir(root))[0])
    return Running("http://127.0.0.1:%d" % port, [p])


# -- Python app servers -----------------------------------------------------------------

def start_uvicorn(work: str, workers: int = 1, app: str = "hello_asgi:app") -> Running:
    port = free_port()
    cmd = [os.path.join(BIN, "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--app-dir", APPS]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    p = _spawn(cmd, log=os.path.join(work, "uvicorn.log"))
    wait_http(port)
    return Running("http://127.0.0.1:%d" % port, [p])


def start_gunicorn(work: str, workers: int = 2, app: str = "hello_wsgi:app",
                   port: int | None = None) -> Running:
    port = port or free_port()
    p = _spawn([os.path.join(BIN, "gunicorn"), "-w", str(workers), "-k", "sync",
                "-b", "127.0.0.1:%d" % port, "--chdir", APPS, "--log-level", "warning", app],
               log=os.path.join(work, "gunicorn.log"))
    wait_http(port)
    return Running("http://127.0.0.1:%d" % port, [p])


def start_nginx_gunicorn(work: str, workers: int = 2) -> Running:
    up = start_gunicorn(work, workers)
    port = free_port()
    conf = _nginx_conf(work, port, 2, textwrap.dedent("""\
        location / {
            proxy_pass %s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }""" % up.url))
    # nginx -> gunicorn as a user would set it up: an upstream keep-alive is
    # of no use with sync workers, which close every connection.
    p = _spawn(["nginx", "-c", conf, "-p", work], log=os.path.join(work, "nginx.log"))
    wait_http(port)
    return Running("http://127.0.0.1:%d" % port, up.procs + [p])


# -- Mongrel2 -----------------------------------------------------------------------------

def start_mongrel2(work: str, handlers: int = 2) -> Running:
    port = free_port()
    send_port, recv_port = free_port(), free_port()
    ident = str(uuid.uuid4())
    for d in ("run", "logs", "tmp"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    with open(os.path.join(work, "m2.conf"), "w") as f:
        f.write(textwrap.dedent("""\
            hello = Handler(send_spec='tcp://127.0.0.1:%d', send_ident='%s',
                            recv_spec='tcp://127.0.0.1:%d', recv_ident='')
            main = Server(uuid='%s', access_log='/logs/access.log',
                          error_log='/logs/error.log', chroot='./', default_host='localhost',
                          name='bench', pid_file='/run/mongrel2.pid', port=%d, bind_addr='127.0.0.1',
                          hosts=[Host(name='localhost', routes={'/': hello})])
            settings = {"zeromq.threads": 1, "limits.content_length": 2097152,
                        "upload.temp_store": "/tmp/upload.XXXXXX"}
            servers = [main]
            """) % (send_port, str(uuid.uuid4()), recv_port, ident, port))
    subprocess.run(["m2sh", "load", "-config", "m2.conf", "-db", "m2.sqlite"], cwd=work,
                   check=True, capture_output=True)
    server = _spawn(["mongrel2", "m2.sqlite", ident], cwd=work,
                    log=os.path.join(work, "mongrel2.log"))
    hs = [_spawn([sys.executable, os.path.join(APPS, "m2_handler.py"),
                  "tcp://127.0.0.1:%d" % send_port, "tcp://127.0.0.1:%d" % recv_port],
                 log=os.path.join(work, "handler.log")) for _ in range(handlers)]

    def pidfile():
        try:
            with open(os.path.join(work, "run", "mongrel2.pid")) as f:
                return [int(f.read().strip())]
        except (OSError, ValueError):
            return []

    run = Running("http://127.0.0.1:%d" % port, hs + [server], pidfile)
    try:
        wait_http(port)
    except RuntimeError:
        run.stop()
        raise
    return run


# -- Prack ------------------------------------------------------------------------------

def prack_command() -> list[str]:
    exe = os.path.join(BIN, "prack-server")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "prack.cli"]


class PrackRunning(Running):
    def __init__(self, url, procs, api, ready):
        super().__init__(url, procs)
        self.api = api
        self.ready_line = ready


def start_prack(work: str, worker_cmd: list[str], workers: int = 2, acceptors: int = 2,
                extra: list[str] | None = None, settings: dict | None = None,
                ready_path: str = "/") -> PrackRunning:
    """prack-server plus `workers` copies of worker_cmd (with {api} in it
    replaced by the API URL); `settings` as PRACK_<SECTION>_<KEY> values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env.update({"PRACK_" + k.upper(): str(v) for k, v in (settings or {}).items()})
    env["PRACK_SERVER_RUNTIME_DIR"] = os.path.join(work, "prack-run")
    os.makedirs(env["PRACK_SERVER_RUNTIME_DIR"], exist_ok=True)
    proc = subprocess.Popen(prack_command() + ["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0",
                                               "-a", str(acceptors)] + (extra or []),
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    rx = re.compile(r"ready: public=(http://[^ ]+) api=(http://[^ ]+)")
    m = None
    for line in proc.stderr:
        m = rx.search(line)
        if m:
            break
    if m is None:
        proc.wait()
        raise RuntimeError("prack-server did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    url, api = m.group(1), m.group(2)
    ws = [_spawn([a.replace("{api}", api) for a in worker_cmd],
                 log=os.path.join(work, "worker.log")) for _ in range(workers)]
    run = PrackRunning(url, [proc] + ws, api, m.group(0))
    try:
        wait_http(int(url.rsplit(":", 1)[1]), ready_path)
    except RuntimeError:
        run.stop()
        raise
    return run


def peer_versions() -> dict[str, str]:
    py = [sys.executable, "-c"]
    return {
        "nginx": version_of(["nginx", "-v"], r"(?<=nginx/)[\d.]+"),
        "mongrel2": version_of(["dpkg-query", "-W", "-f", "${Version}", "mongrel2-core"],
                               r"\S+"),
        "uvicorn": version_of(py + ["import uvicorn; print(uvicorn.__version__)"]),
        "gunicorn": version_of(py + ["import gunicorn; print(gunicorn.__version__)"]),
        "pyzmq": version_of(py + ["import zmq; print(zmq.__version__)"]),
        "wrk": version_of(["wrk", "-v"], r"(?<=wrk )\S+"),
        "python": sys.version.split()[0],
    }


def which_missing() -> list[str]:
    return [tool for tool in ("nginx", "mongrel2", "m2sh", "wrk") if shutil.which(tool) is None]
