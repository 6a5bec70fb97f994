"""The workers shown to users really work: the README's ten-line worker, the
demo worker `make run` starts, the SSE clock and the WebSocket chat, each as a
real process against a real server, driven by curl, http.client and a
WebSocket client."""
import http.client
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_worker(api: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## A worker in ten lines of Python\s+```python\n(.*?)```", text, re.S)
    assert block, "README lost its worker example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12
    assert 'API = "http://127.0.0.1:4242/api/v1/"' in code
    return code.replace("http://127.0.0.1:4242", api)


def run_worker(args):
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop_worker(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


def test_readme_worker(start_server, tmp_path):
    server = start_server(acceptors=1, api_poll_timeout=0.5)
    script = tmp_path / "worker.py"
    script.write_text(readme_worker(server.api))
    worker = run_worker([sys.executable, str(script)])
    try:
        conn = server.client()
        for path in ("/anything", "/other?x=1"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"Hello from " + path.split("?")[0].encode()
            assert resp.getheader("Content-Type") == "text/plain"
        conn.close()
    finally:
        stop_worker(worker)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_demo_worker_with_curl(start_server):
    server = start_server()
    worker = run_worker([sys.executable, str(ROOT / "examples" / "demo_worker.py"),
                         "--api", server.api, "--threads", "2"])
    try:
        out = subprocess.run(["curl", "-sS", "--max-time", "20", "-d", "abc",
                              "http://%s:%d/anything?q=1" % (server.host, server.port)],
                             capture_output=True, text=True, check=True).stdout
        assert "Hello from a Prack worker!" in out
        assert "method: POST" in out and "path: /anything" in out
        assert "query: q=1" in out and "body: 3 bytes" in out
    finally:
        stop_worker(worker)


def test_example_config_is_accepted(tmp_path):
    """examples/prack.toml passes --check (every setting at its default)."""
    exe = os.path.join(os.path.dirname(sys.executable), "prack-server")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "prack.cli"]
    out = subprocess.run(cmd + ["-c", str(ROOT / "examples" / "prack.toml"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'bind = "127.0.0.1:8080"' in out.stdout


def _worker_env() -> dict:
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@pytest.mark.slow
def test_sse_example(start_server):
    """examples/sse/clock.py: the page, and a clock whose events arrive one
    by one, in order, as a chunked text/event-stream."""
    server = start_server(acceptors=1)
    worker = subprocess.Popen([sys.executable, str(ROOT / "examples" / "sse" / "clock.py"),
                               "--api", server.api, "--threads", "2"], env=_worker_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        conn = server.client()
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"EventSource" in resp.read()
        conn.request("GET", "/clock?interval=0.05&count=5")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.getheader("Transfer-Encoding") == "chunked"
        events = [e for e in resp.read().decode().split("\n\n") if e.startswith("id:")]
        assert [e.splitlines()[0] for e in events] == ["id: %d" % n for n in range(1, 6)]
        assert all(e.splitlines()[1] == "event: tick" for e in events)
        conn.request("GET", "/clock?interval=x")
        resp = conn.getresponse()
        assert resp.status == 400
        resp.read()
        # A stop: the endless clock gets the example's 2 s of grace, then is
        # aborted (the client's stream ends without its last chunk); the
        # worker exits 0.
        conn.request("GET", "/clock?interval=0.2")
        resp = conn.getresponse()
        assert resp.readline().startswith(b"retry:")
        worker.terminate()
        with pytest.raises(http.client.IncompleteRead):
            while resp.read(1024):
                pass
        assert worker.wait(20) == 0
        assert "aborting them" in worker.stderr.read()
        conn.close()
    finally:
        stop_worker(worker)


def test_websocket_example(start_server):
    """examples/websocket/chat.py under prack-worker --interface asgi: a
    Starlette application, unchanged; the room relays text to everyone."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from apps.procs import worker_command

    server = start_server(acceptors=1)
    worker = subprocess.Popen(worker_command() + ["--interface", "asgi", "--api", server.api,
                                                  "--concurrency", "2", "--wait", "1",
                                                  "chat:app"],
                              cwd=str(ROOT / "examples" / "websocket"), env=_worker_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = "ws://%s:%d" % (server.host, server.port)
    try:
        conn = server.client()
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"new WebSocket" in resp.read()
        conn.close()
        with connect(url + "/ws", subprotocols=["chat"], open_timeout=20) as alice, \
                connect(url + "/ws", open_timeout=20) as bob:
            assert alice.subprotocol == "chat" and bob.subprotocol is None
            alice.send("hello from alice")
            assert alice.recv(timeout=10) == "hello from alice"
            assert bob.recv(timeout=10) == "hello from alice"
            bob.send(b"\x01\x02")
            assert bob.recv(timeout=10) == b"\x01\x02"        # binary: back to its sender
        with connect(url + "/ws/bye", open_timeout=20) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert (ws.close_code, ws.close_reason) == (4000, "bye")
        with pytest.raises(InvalidStatus) as refused:
            with connect(url + "/ws/refuse", open_timeout=20):
                pass
        assert refused.value.response.status_code == 403
    finally:
        stop_worker(worker)
