"""End to end: large request bodies (spooled to the runtime directory and
read by workers with GET /api/v2/requests/{id}/input) and Expect:
100-continue answered only once a worker takes the request (one pull lets
only the uploads it can take start). A real prack-server, real clients
(http.client, curl, raw sockets)."""
from __future__ import annotations

import base64
import glob
import hashlib
import http.client
import json
import os
import random
import select
import signal
import subprocess
import threading
import time

import pytest

from conftest import api_get, wait_for

MiB = 1 << 20
BIG = 100 * MiB
EXPECT_HEAD = (b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n")


def blocks(total: int, seed: int, size: int = MiB):
    """`total` pseudo-random bytes in pieces (never all in memory)."""
    rnd = random.Random(seed)
    left = total
    while left:
        n = min(size, left)
        yield rnd.randbytes(n)
        left -= n


def digest(total: int, seed: int) -> str:
    h = hashlib.sha256()
    for b in blocks(total, seed):
        h.update(b)
    return h.hexdigest()


def rss(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def front_rss(server) -> int:
    """Resident memory of the acceptors and the API process together."""
    return sum(rss(pid) for pid in server.children())


class RssPeak:
    """Samples front_rss while an upload runs (a measurement, not a timing
    assertion)."""

    def __init__(self, server):
        self.server = server
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, front_rss(self.server))
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, front_rss(self.server))


class InputWorker:
    """A v2 worker on a thread: for each request it reads the body (from
    prack.input when spooled, else the item) and answers with JSON naming
    its size and SHA-256. `app(env, read_body)` may answer differently."""

    def __init__(self, server, app=None):
        self.server = server
        self.app = app or self.digest_app
        self.seen: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def digest_app(self, env, read_body):
        h = hashlib.sha256()
        n = 0
        for piece in read_body():
            h.update(piece)
            n += len(piece)
        body = json.dumps({"n": n, "sha256": h.hexdigest()}).encode()
        return 200, body

    def _run(self):
        c = http.client.HTTPConnection(self.server.api_host, self.server.api_port, timeout=60)
        try:
            while not self._stop.is_set():
                c.request("GET", "/api/v2/requests?wait=0.5")
                r = c.getresponse()
                data = r.read()
                if r.status != 200:
                    continue
                for item in json.loads(data)["requests"]:
                    env = item["env"]
                    self.seen.append(item)

                    def read_body(env=env, item=item):
                        if "prack.input" not in env:
                            yield base64.b64decode(item["body"])
                            return
                        c.request("GET", env["prack.input"])
                        resp = c.getresponse()
                        assert resp.status == 200, (resp.status, resp.read())
                        assert resp.getheader("Content-Type") == "application/octet-stream"
                        assert int(resp.getheader("Content-Length")) == int(env["CONTENT_LENGTH"])
                        while True:
                            piece = resp.read(256 * 1024)
                            if not piece:
                                break
                            yield piece
                    status, body = self.app(env, read_body)
                    c.request("POST", "/api/v2/responses", json.dumps({"responses": [
                        {"id": item["id"], "status": status,
                         "body": base64.b64encode(body).decode()}]}),
                        {"Content-Type": "application/json"})
                    c.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()

    def stop(self):
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def input_worker():
    workers = []

    def make(server, app=None):
        w = InputWorker(server, app)
        workers.append(w)
        return w
    yield make
    for w in workers:
        w.stop()


def spool_files(server) -> list[str]:
    return glob.glob(os.path.join(server.runtime_dir, "*", "spool", "*"))


def upload_server(start_server, *flags, **kw):
    settings = dict(limits_max_body_size="200M", acceptors=1)
    settings.update(kw)
    return start_server(*flags, **settings)


# -- 100 MiB, bounded memory -----------------------------------------------------

@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_100_mib_upload_is_byte_exact_in_bounded_memory(start_server, input_worker, framing):
    s = upload_server(start_server)
    input_worker(s)
    expected = digest(BIG, 7)
    c = s.client(timeout=60)
    c.request("GET", "/warm")            # the front's baseline after a first request
    c.getresponse().read()
    before = front_rss(s)
    started = time.monotonic()
    with RssPeak(s) as peak:
        if framing == "chunked":
            c.request("POST", "/up", body=blocks(BIG, 7), encode_chunked=True,
                      headers={"Transfer-Encoding": "chunked"})
        else:
            c.request("POST", "/up", body=blocks(BIG, 7),
                      headers={"Content-Length": str(BIG)})
        r = c.getresponse()
        answer = json.loads(r.read())
    took = time.monotonic() - started
    growth = peak.peak - before
    print("\n%s 100 MiB upload: %.2fs, front RSS %.1f MiB -> peak %.1f MiB (growth %.1f MiB, "
          "%d samples)" % (framing, took, before / MiB, peak.peak / MiB, growth / MiB,
                           peak.samples))
    assert r.status == 200
    assert answer == {"n": BIG, "sha256": expected}
    assert growth < 32 * MiB
    wait_for(lambda: not spool_files(s), what="the spool file to go")


def test_curl_upload_with_expect_goes_through_the_spool(start_server, input_worker, tmp_path):
    # curl sends Expect: 100-continue for a body this large and waits for the 100
    s = upload_server(start_server)
    input_worker(s)
    path = tmp_path / "body"
    with open(path, "wb") as f:
        for b in blocks(8 * MiB, 3):
            f.write(b)
    out = subprocess.run(["curl", "-sS", "--max-time", "60", "--data-binary", "@%s" % path,
                          "-H", "Content-Type: application/octet-stream",
                          "http://%s:%d/curl" % (s.host, s.port)],
                         capture_output=True, check=True)
    assert json.loads(out.stdout) == {"n": 8 * MiB, "sha256": digest(8 * MiB, 3)}
    wait_for(lambda: not spool_files(s), what="the spool file to go")


# -- Expect: 100-continue -----------------------------------------------------------

def readable_within(sock, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


@pytest.mark.parametrize("size", [11, 3 * MiB])
def test_expect_gets_no_100_until_a_worker_takes_the_request(start_server, input_worker, size):
    s = upload_server(start_server)
    body = b"".join(blocks(size, 11))
    with s.raw(timeout=30) as c:
        c.send(EXPECT_HEAD % size)
        # No worker: the request is queued, but no 100 comes.
        assert not readable_within(c.sock, 1.0)
        input_worker(s)
        interim = c.read_response()
        assert (interim.status, interim.reason) == (100, "Continue")
        c.send(body)
        r = c.read_response()
        assert r.status == 200
        assert r.json() == {"n": size, "sha256": hashlib.sha256(body).hexdigest()}
        # the connection stays usable
        c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
    wait_for(lambda: not spool_files(s), what="the spool file to go")


def test_small_expect_bodies_arrive_inline_to_v1_and_v2_workers(start_server, worker_factory,
                                                                 recorder, input_worker):
    s = upload_server(start_server)
    for version in ("v1", "v2"):
        if version == "v1":
            rec = recorder()
            w = worker_factory(s.api, rec)
        else:
            w = input_worker(s)
        with s.raw() as c:
            for _ in range(2):      # twice on one connection
                c.send(EXPECT_HEAD % 11)
                assert c.read_response().status == 100
                c.send(b"hello world")
                r = c.read_response()
                assert r.status == 200
        if version == "v1":
            env, body = rec.seen[-1]
            assert body == b"hello world" and env["CONTENT_LENGTH"] == "11"
            assert "prack.input" not in env
        else:
            item = w.seen[-1]
            assert base64.b64decode(item["body"]) == b"hello world"
            assert item["env"]["CONTENT_LENGTH"] == "11" and "prack.input" not in item["env"]
        w.stop()


def test_expect_chunked_body_gets_its_length(start_server, input_worker):
    s = upload_server(start_server, limits_inline_body_size="64k")
    w = input_worker(s)
    for size in (1000, 300_000):
        body = b"".join(blocks(size, 5))
        with s.raw() as c:
            c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            assert c.read_response().status == 100
            c.send(b"%x\r\n%s\r\n0\r\n\r\n" % (size, body))
            r = c.read_response()
            assert r.json() == {"n": size, "sha256": hashlib.sha256(body).hexdigest()}
        assert w.seen[-1]["env"]["CONTENT_LENGTH"] == str(size)
        assert ("prack.input" in w.seen[-1]["env"]) == (size > 64 * 1024)


def test_early_body_bytes_are_bounded_and_kept(start_server, input_worker):
    # A client that does not wait for the 100: the acceptor reads a bounded
    # amount, then stops (TCP pushes back); nothing is lost.
    s = upload_server(start_server)
    body = b"".join(blocks(16 * MiB, 9))
    with s.raw(timeout=30) as c:
        c.send(EXPECT_HEAD % len(body))
        c.sock.setblocking(False)
        sent = 0
        try:
            while sent < len(body):
                sent += c.sock.send(body[sent:sent + 65536])
        except BlockingIOError:
            pass
        c.sock.setblocking(True)
        c.sock.settimeout(30)
        assert sent < len(body)          # the server stopped reading
        input_worker(s)
        assert c.read_response().status == 100
        c.send(body[sent:])
        r = c.read_response()
        assert r.json() == {"n": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_expect_unanswered_in_the_queue_gets_504_and_close(start_server):
    # The answer comes before the body was read: the connection closes after
    # it (RFC 9110 10.1.1), the client may or may not have sent the body.
    s = upload_server(start_server, timeouts_queue_timeout=1)
    with s.raw() as c:
        c.send(EXPECT_HEAD % 10)
        r = c.read_response()
        assert r.status == 504 and r.header("Connection") == "close"
        c.assert_closed()


EXPECT = (b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
          b"Expect: 100-continue\r\n\r\n")


def test_one_pull_lets_only_the_uploads_it_wants_start(start_server):
    """A worker pulling one request took every Expect: 100-continue request
    in the queue and sent each client its 100 Continue: all of them uploaded
    at once (bodies up to inline_body_size each held by the API process
    until some worker pulls them), into a queue one worker serves one by
    one. Uploads now start as workers can take them (one per worker
    connection at a time); the others keep waiting for their 100."""
    s = start_server("--log-level", "debug", acceptors=1, timeouts_queue_timeout=60,
                     timeouts_response_timeout=60)
    clients = []
    for _ in range(6):
        c = s.raw(timeout=10)
        c.send(EXPECT)
        clients.append(c)
    api = s.raw_api(timeout=10)
    api.send(b"GET /api/v2/requests?max=1&wait=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    # The pull's 100 goes out; that client sends its body; the pull gets it.
    continued = []
    by_sock = {c.sock: c for c in clients}
    ready = select.select(list(by_sock), [], [], 5)[0]
    assert ready, "no client got its 100 Continue"
    for c in map(by_sock.get, ready):
        assert c.read_response().status == 100
        continued.append(c)
        c.send(b"hello world")
    r = api.read_response()
    [item] = json.loads(r.body)["requests"]
    assert item["body"] == "aGVsbG8gd29ybGQ="
    # At most one more upload starts ahead of the next pull; the rest wait.
    waiting = [c.sock for c in clients if c not in continued]
    more = select.select(waiting, [], [], 1.0)[0]
    assert len(continued) + len(more) <= 2, \
        "%d of 6 clients were told to upload for one pull" % (len(continued) + len(more))
    api.close()
    for c in clients:
        c.close()


# -- limits -----------------------------------------------------------------------------

def test_413_early_from_content_length(start_server, input_worker):
    s = upload_server(start_server, limits_max_body_size="2M", limits_inline_body_size="64k")
    input_worker(s)
    with s.raw() as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * MiB + 1))
        r = c.read_response()
        assert r.status == 413 and r.header("Connection") == "close"
    with s.raw() as c:                  # with Expect: no 100 first
        c.send(EXPECT_HEAD % (2 * MiB + 1))
        r = c.read_response()
        assert r.status == 413
    assert not spool_files(s)


def test_413_as_soon_as_a_chunked_body_passes_the_limit(start_server, input_worker):
    s = upload_server(start_server, limits_max_body_size="2M", limits_inline_body_size="64k")
    w = input_worker(s)
    with s.raw(timeout=30) as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (MiB, b"a" * MiB)
        c.send(piece * 2)
        c.send(b"%x\r\n" % 1000 + b"a" * 10)  # passes 2M with this chunk's size
        r = c.read_response()
        assert r.status == 413
    wait_for(lambda: not spool_files(s), what="the spool file to go")
    assert w.seen == []


# -- the input call ----------------------------------------------------------------------

def test_input_call_errors(start_server):
    s = upload_server(start_server, limits_inline_body_size="64k")
    assert api_get(s, "/api/v2/requests/nothex/input")[0] == 400
    status, data = api_get(s, "/api/v2/requests/%s/input" % ("0001" + "0" * 12 + "1" * 16))
    assert status == 404 and "error" in json.loads(data)
    # an inline body: 404, it is in the item; the client gone: 410
    with s.raw() as c:
        c.send(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        status, data = api_get(s, "/api/v2/requests?wait=5")
        item = json.loads(data)["requests"][0]
        status, data = api_get(s, "/api/v2/requests/%s/input" % item["id"])
        assert status == 404 and "not spooled" in json.loads(data)["error"]
    body = b"b" * 100_000
    c = s.raw()
    c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    status, data = api_get(s, "/api/v2/requests?wait=5")
    item = json.loads(data)["requests"][0]
    assert item["body"] == "" and item["env"]["CONTENT_LENGTH"] == str(len(body))
    assert item["env"]["prack.input"] == "/api/v2/requests/%s/input" % item["id"]
    status, data = api_get(s, item["env"]["prack.input"])
    assert status == 200 and data == body
    c.close()
    wait_for(lambda: api_get(s, item["env"]["prack.input"])[0] == 410, what="410 once gone")
    wait_for(lambda: not spool_files(s), what="the spool file to go")


def test_worker_answering_without_reading_the_input(start_server, input_worker):
    # A worker may refuse an upload (401) without reading it: the client
    # gets the answer and the spool file goes.
    s = upload_server(start_server, limits_inline_body_size="64k")
    input_worker(s, app=lambda env, read_body: (401, b"who are you?\n"))
    body = b"".join(blocks(2 * MiB, 1))
    with s.raw(timeout=30) as c:
        c.send(EXPECT_HEAD % len(body))
        assert c.read_response().status == 100
        c.send(body)
        r = c.read_response()
        assert (r.status, r.body) == (401, b"who are you?\n")
    wait_for(lambda: not spool_files(s), what="the spool file to go")


# -- cleanup ------------------------------------------------------------------------------

@pytest.mark.parametrize("expect", [False, True])
def test_client_leaving_mid_upload_leaves_no_spool_file(start_server, input_worker, expect):
    s = upload_server(start_server, limits_inline_body_size="64k")
    if expect:
        w = input_worker(s)
    c = s.raw(timeout=30)
    head = EXPECT_HEAD if expect else b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    c.send(head % (50 * MiB))
    if expect:
        assert c.read_response().status == 100
    c.send(b"x" * MiB)
    wait_for(lambda: spool_files(s), what="a spool file")
    c.close()
    wait_for(lambda: not spool_files(s), what="the spool file to go")
    if expect:
        # the parked request was dropped: a worker is never handed it
        with s.raw() as c2:
            c2.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c2.read_response().status == 200
        assert [i["env"]["PATH_INFO"] for i in w.seen] == ["/next"]


def test_killed_acceptor_spool_files_are_removed_by_its_successor(start_server):
    s = upload_server(start_server, "--log-level", "debug", limits_inline_body_size="64k")
    pid = s.pids("acceptor", 0)[-1]
    c = s.raw(timeout=30)
    c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (50 * MiB))
    c.send(b"x" * MiB)
    wait_for(lambda: spool_files(s), what="a spool file")
    mark = s.log_mark()
    os.kill(pid, signal.SIGKILL)
    s.wait_log(r"acceptor 0 ready \(pid (?!%d\))" % pid, since=mark)
    s.wait_log(r"acceptor 0: removed 1 spool file", since=mark)
    assert not spool_files(s)
    c.close()


def test_api_process_killed_during_a_deferred_upload(start_server, input_worker):
    # The parked request died with the API process: its client gets 503 (it
    # may retry), its spool file goes, and the next API process serves on.
    s = upload_server(start_server, "--log-level", "debug", limits_inline_body_size="64k")
    pid = s.pids("API process")[-1]
    input_worker(s)
    c = s.raw(timeout=30)
    c.send(EXPECT_HEAD % (50 * MiB))
    assert c.read_response().status == 100
    c.send(b"x" * MiB)
    wait_for(lambda: spool_files(s), what="a spool file")
    mark = s.log_mark()
    os.kill(pid, signal.SIGKILL)
    r = c.read_response()
    assert r.status == 503 and r.header("Connection") == "close"
    c.close()
    wait_for(lambda: not spool_files(s), what="the spool file to go")
    s.wait_log(r"API process ready \(pid (?!%d\))" % pid, since=mark)
    input_worker(s)
    with s.raw() as c2:
        c2.send(EXPECT_HEAD % 5)
        assert c2.read_response().status == 100
        c2.send(b"hello")
        assert c2.read_response().json()["n"] == 5


# -- upgrades -------------------------------------------------------------------------------

def test_input_of_the_other_generation_is_served_during_an_upgrade(tmp_path):
    """A worker holding a generation-1 request with a spooled body reads it
    from the shared API port after the upgrade (generation 2 answers there)."""
    from conftest import shm_entries
    from upgrade_helpers import code_copy, set_subreaper, start_upgrading
    if not set_subreaper(True):
        pytest.skip("needs prctl(PR_SET_CHILD_SUBREAPER) (Linux)")
    try:
        before = shm_entries()
        code = code_copy(tmp_path / "code")
        s = start_upgrading(tmp_path, code, api_poll_timeout=1, acceptors=1,
                            limits_max_body_size="200M", limits_inline_body_size="64k")
        body = b"".join(blocks(300_000, 4))
        client = s.raw(timeout=20)
        client.send(b"POST /old HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body)
        status, data = api_get(s, "/api/v2/requests?wait=5")
        [item] = json.loads(data)["requests"]
        assert item["id"].startswith("0001")
        mark = s.log_mark()
        os.kill(s.master, signal.SIGUSR2)
        s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
        status, data = api_get(s, item["env"]["prack.input"])
        assert status == 200 and data == body
        c = s.api_client()
        c.request("POST", "/api/v2/responses", json.dumps({"responses": [
            {"id": item["id"], "status": 200, "body": base64.b64encode(b"got it").decode()}]}),
            {"Content-Type": "application/json"})
        r = c.getresponse()
        assert json.loads(r.read())["results"][0]["status"] == "ok"
        c.close()
        assert client.read_response().body == b"got it"
        # answered: the file has gone, the call says so
        status, _ = api_get(s, item["env"]["prack.input"])
        assert status == 404
        client.close()
        s.wait_log(r"prack.master: generation 1 retired", since=mark)
        code = s.stop_current()
        assert code in (0, None), "\n".join(s.log)
        s.assert_clean()
        assert not any("Traceback" in line for line in s.log), "\n".join(s.log)
        assert shm_entries() <= before
    finally:
        set_subreaper(False)


def test_a_spool_file_that_cannot_be_written_gets_503(tmp_path):
    # The server's file size limit (RLIMIT_FSIZE) stands in for a full disk:
    # the write fails (EFBIG), the client gets 503 and the file goes.
    import resource
    from conftest import Server
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    env.update(PRACK_SERVER_RUNTIME_DIR=str(runtime), PRACK_LIMITS_MAX_BODY_SIZE="200M",
               PRACK_LIMITS_INLINE_BODY_SIZE="64k")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * MiB, 32 * MiB))
    s = Server(["-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", "1"], env,
               str(runtime), limit)
    try:
        with s.raw(timeout=30) as c:
            c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (40 * MiB))
            # a little past the limit (not all: unread bytes would reset the
            # connection and could destroy the answer)
            for piece in blocks(32 * MiB + 256 * 1024, 2):
                c.send(piece)
            r = c.read_response()
            assert r.status == 503 and b"cannot store the request body" in r.body
        wait_for(lambda: not spool_files(s), what="the spool file to go")
        s.wait_log("cannot write a spool file")
    finally:
        s.close_clients()
        assert s.stop() == 0
    s.assert_clean()


def test_body_timeout_applies_to_a_deferred_upload(start_server, input_worker):
    s = upload_server(start_server, limits_inline_body_size="64k", timeouts_body_timeout=1)
    w = input_worker(s)
    with s.raw(timeout=30) as c:
        c.send(EXPECT_HEAD % (10 * MiB))
        assert c.read_response().status == 100
        c.send(b"x" * (200 * 1024))         # then nothing more
        r = c.read_response()
        assert r.status == 408 and r.header("Connection") == "close"
    wait_for(lambda: not spool_files(s), what="the spool file to go")
    with s.raw() as c2:                     # the worker never got the upload
        c2.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c2.read_response().status == 200
    assert [i["env"]["PATH_INFO"] for i in w.seen] == ["/next"]


def test_expect_refused_by_a_full_queue_closes_the_connection(start_server):
    # More Expect requests than the ring holds (no worker): those refused get
    # 503 before their body was read, so their connections close.
    ring = 2 * (0 + 2 * 1024) + 65536
    s = upload_server(start_server, limits_inline_body_size=0, limits_max_header_size="1k",
                      limits_ring_size=ring)
    clients = [s.raw() for _ in range(400)]       # ~330 bytes a record: 200 fit
    for c in clients:
        c.send(EXPECT_HEAD % 10)
    refused = []
    deadline = time.monotonic() + 10
    while len(refused) < 100 and time.monotonic() < deadline:
        ready, _, _ = select.select([c.sock for c in clients], [], [], 1.0)
        if not ready:
            break
        for c in [c for c in clients if c.sock in ready]:
            r = c.read_response()
            assert r.status == 503 and r.header("Connection") == "close", r
            c.assert_closed()
            clients.remove(c)
            refused.append(c)
    assert refused, "the ring never filled"
    for c in clients + refused:
        c.close()
