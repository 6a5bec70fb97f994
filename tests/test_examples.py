"""The workers shown to users really work: the README's ten-line worker and
the demo worker `make run` starts, each as a real process against a real
server, driven by curl and http.client."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


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
