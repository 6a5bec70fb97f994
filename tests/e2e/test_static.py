"""Static files served by the acceptors ([static]): no worker is involved.

The module's server runs without any worker for the static tests, so every
answer here comes from the acceptors themselves.
"""
from __future__ import annotations

import email.utils
import os
import subprocess

import pytest

from conftest import prack_command

BIG = os.urandom(3 * 1024 * 1024 + 123)   # several sendfile() calls


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "hello.txt").write_bytes(b"Hello, static world!\n")
    (root / "big.bin").write_bytes(BIG)
    (root / "style.css").write_bytes(b"body { color: red }\n")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "empty").mkdir()
    (root / ".env").write_bytes(b"SECRET=1\n")
    (root / "sp ace.txt").write_bytes(b"spaced\n")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(b"do not serve\n")
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "inside").symlink_to(root / "hello.txt")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture(scope="module")
def srv_settings(site):
    """`srv` serves `site` under /static/."""
    return {"acceptors": 1, "static_root": str(site), "static_prefix": "/static/",
            "static_cache_control": "public, max-age=60", "timeouts_queue_timeout": 1}


def get(srv, path, method="GET", headers=()):
    with srv.raw() as c:
        extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers)
        c.send(b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method.encode(), path.encode(), extra))
        return c.read_response(head=method == "HEAD")


def test_file_with_validators(srv, site):
    r = get(srv, "/static/hello.txt")
    assert r.status == 200
    assert r.body == b"Hello, static world!\n"
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("Content-Length") == str(len(r.body))
    assert r.header("Accept-Ranges") == "bytes"
    assert r.header("Cache-Control") == "public, max-age=60"
    mtime = os.stat(site / "hello.txt").st_mtime
    assert r.header("Last-Modified") == email.utils.formatdate(int(mtime), usegmt=True)
    etag = r.header("ETag")
    assert etag.startswith('"') and etag.endswith('"')
    assert get(srv, "/static/style.css").header("Content-Type") == "text/css; charset=utf-8"
    assert get(srv, "/static/sp%20ace.txt").body == b"spaced\n"


def test_big_file_twice_on_one_connection(srv):
    with srv.raw(timeout=30) as c:
        for _ in range(2):
            c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            assert r.status == 200
            assert r.header("Content-Type") == "application/octet-stream"
            assert r.body == BIG


def test_head(srv):
    with srv.raw() as c:
        c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200 and r.body == b""
        assert r.header("Content-Length") == str(len(BIG))
        # RFC 9110 14.2: range handling is defined for GET only; a server
        # MUST ignore Range on other methods, HEAD included.
        c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200 and r.header("Content-Range") is None
        assert r.header("Content-Length") == str(len(BIG))
        # The connection goes on: nothing of the file was sent.
        c.send(b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"Hello, static world!\n"


def test_conditional_requests(srv):
    first = get(srv, "/static/hello.txt")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    r = get(srv, "/static/hello.txt", headers=[("If-None-Match", etag)])
    assert r.status == 304 and r.body == b""
    assert r.header("ETag") == etag and r.header("Content-Length") is None
    assert get(srv, "/static/hello.txt",
               headers=[("If-None-Match", '"other", W/%s' % etag)]).status == 304
    assert get(srv, "/static/hello.txt", headers=[("If-None-Match", "*")]).status == 304
    assert get(srv, "/static/hello.txt", headers=[("If-None-Match", '"nope"')]).status == 200
    assert get(srv, "/static/hello.txt", headers=[("If-Modified-Since", modified)]).status == 304
    assert get(srv, "/static/hello.txt",
               headers=[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")]).status == 200
    assert get(srv, "/static/hello.txt",
               headers=[("If-Modified-Since", "not a date")]).status == 200
    # RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since.
    assert get(srv, "/static/hello.txt", headers=[("If-None-Match", '"nope"'),
                                                  ("If-Modified-Since", modified)]).status == 200


def test_preconditions_if_match_if_unmodified_since(srv):
    """RFC 9110 13.1.1, 13.1.4, 13.2.2: an origin server MUST evaluate
    If-Match (strong comparison) and, without it, If-Unmodified-Since: a
    false condition is 412 and nothing is sent."""
    first = get(srv, "/static/hello.txt")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    cases = [
        ([("If-Match", etag)], 200),
        ([("If-Match", '"other", %s' % etag)], 200),
        ([("If-Match", "*")], 200),
        ([("If-Match", '"other"')], 412),
        ([("If-Match", "W/" + etag)], 412),                    # weak never matches
        ([("If-Unmodified-Since", modified)], 200),
        ([("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")], 412),
        ([("If-Unmodified-Since", "not a date")], 200),         # ignored
        ([("If-Match", etag), ("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")], 200),
        ([("If-Match", '"other"'), ("If-None-Match", etag)], 412),  # before 304
    ]
    for headers, status in cases:
        r = get(srv, "/static/hello.txt", headers=headers)
        assert r.status == status, headers
        if status == 200:
            assert r.body == b"Hello, static world!\n"
    assert get(srv, "/static/big.bin", headers=[("If-Match", '"other"')]).status == 412


@pytest.mark.parametrize("spec,status,part", [
    ("bytes=0-9", 206, (0, 9)),
    ("bytes=10-", 206, (10, len(BIG) - 1)),
    ("bytes=-5", 206, (len(BIG) - 5, len(BIG) - 1)),
    ("bytes=5-999999999", 206, (5, len(BIG) - 1)),
    ("bytes=%d-" % len(BIG), 416, None),
    ("bytes=-0", 416, None),
    ("bytes=0-1,5-6", 200, None),       # several ranges: the whole file
    ("bytes=9-5", 200, None),           # invalid: ignored
    ("items=0-5", 200, None),           # unknown unit: ignored
    ("bytes=x-5", 200, None),
    # Positions of thousands of digits (int() refuses past 4300): clamped.
    ("bytes=0-" + "9" * 5000, 206, (0, len(BIG) - 1)),
    ("bytes=-" + "9" * 5000, 206, (0, len(BIG) - 1)),
    ("bytes=" + "9" * 5000 + "-", 416, None),
])
def test_ranges(srv, spec, status, part):
    r = get(srv, "/static/big.bin", headers=[("Range", spec)])
    assert r.status == status
    if status == 206:
        first, last = part
        assert r.body == BIG[first:last + 1]
        assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, len(BIG))
    elif status == 416:
        assert r.header("Content-Range") == "bytes */%d" % len(BIG)
    else:
        assert r.body == BIG


def test_if_range(srv):
    etag = get(srv, "/static/hello.txt").header("ETag")
    r = get(srv, "/static/hello.txt", headers=[("Range", "bytes=0-4"), ("If-Range", etag)])
    assert (r.status, r.body) == (206, b"Hello")
    r = get(srv, "/static/hello.txt", headers=[("Range", "bytes=0-4"), ("If-Range", '"old"')])
    assert (r.status, r.body) == (200, b"Hello, static world!\n")


@pytest.mark.parametrize("path", [
    "/static/missing.txt",
    "/static/../test_e2e_static.py",
    "/static/%2e%2e/secret.txt",
    "/static/docs/..%2f..%2fsecret.txt",
    "/static/.env",
    "/static/escape",            # a symlink out of the root
    "/static/hello.txt%00.png",
    "/static/fifo",
    "/static/empty/",            # a directory without an index
])
def test_not_served(srv, path):
    r = get(srv, path)
    assert r.status == 404, path
    assert b"do not serve" not in r.body and b"SECRET" not in r.body


def test_symlink_inside_root_is_served(srv):
    assert get(srv, "/static/inside").body == b"Hello, static world!\n"


def test_directories(srv):
    r = get(srv, "/static/docs")
    assert r.status == 301 and r.header("Location") == "/static/docs/"
    r = get(srv, "/static/docs/")
    assert r.status == 200 and r.body == b"<h1>docs</h1>\n"
    assert r.header("Content-Type") == "text/html; charset=utf-8"


def test_other_methods(srv):
    r = get(srv, "/static/hello.txt", method="DELETE")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD"


def test_other_paths_still_go_to_workers(srv, module_worker_factory):
    # No worker yet: a dynamic request waits in the queue (504 after 1 s)
    # while a static one behind it on another connection is answered at once.
    with srv.raw(timeout=10) as dyn:
        dyn.send(b"GET /staticky HTTP/1.1\r\nHost: x\r\n\r\n")
        assert get(srv, "/static/hello.txt").status == 200
        assert dyn.read_response().status == 504
    module_worker_factory(srv.api)
    with srv.raw() as c:
        c.send(b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /dynamic HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /static/docs/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"Hello, static world!\n"
        r = c.read_response()
        assert r.status == 200 and b'"PATH_INFO": "/dynamic"' in r.body
        assert c.read_response().body == b"<h1>docs</h1>\n"


def test_bad_static_settings_named():
    for env, needle in (({"PRACK_STATIC_ROOT": "/no/such/dir"}, "static.root"),
                        ({"PRACK_STATIC_PREFIX": "static"}, "PRACK_STATIC_PREFIX")):
        p = subprocess.run(prack_command() + ["--check"], capture_output=True, text=True,
                           env={**os.environ, **env})
        assert p.returncode == 2
        assert needle in p.stderr and "Traceback" not in p.stderr


def test_changed_file_is_seen_at_once(srv, site):
    """Small files are kept in memory, keyed by size and modification time:
    a change on disk shows on the very next request."""
    f = site / "changing.txt"
    f.write_bytes(b"version one\n")
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    first = get(srv, "/static/changing.txt")
    assert first.body == b"version one\n"
    f.write_bytes(b"version two\n")         # same size, new mtime
    os.utime(f, ns=(1_700_000_001_000_000_000, 1_700_000_001_000_000_000))
    second = get(srv, "/static/changing.txt")
    assert second.body == b"version two\n"
    assert second.header("ETag") != first.header("ETag")
    f.write_bytes(b"v3\n")
    assert get(srv, "/static/changing.txt").body == b"v3\n"
    f.unlink()
    assert get(srv, "/static/changing.txt").status == 404


def test_http10_keep_alive_is_announced(srv):
    """An HTTP/1.0 connection stays open only if the response says
    Connection: keep-alive (RFC 9112 9.3); without it a 1.0 client waits for
    the close. Files, 304 and Prack's own answers (404) all say it."""
    with srv.raw() as c:
        etag = None
        for path, extra, status in (("/static/hello.txt", b"", 200),
                                    ("/static/big.bin", b"", 200),
                                    ("/static/hello.txt", None, 304),
                                    ("/static/nothing-here", b"", 404)):
            if extra is None:
                extra = b"If-None-Match: %s\r\n" % etag.encode()
            c.send(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n%s\r\n" % (path.encode(), extra))
            r = c.read_response()
            assert r.status == status
            assert r.header("Connection") == "keep-alive", path
            if etag is None:
                etag = r.header("ETag")             # hello.txt's, for the 304


def test_access_log_counts_the_file(start_server, site):
    """A file over SMALL_FILE goes out with sendfile; when the socket takes
    it all at once the access log line must still count its bytes."""
    (site / "mid.bin").write_bytes(b"m" * 100_000)
    s = start_server("--access-log", acceptors=1, static_root=str(site),
                     static_prefix="/static/")
    with s.raw() as c:
        c.send(b"GET /static/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and len(r.body) == 100_000
    line = s.wait_log(r'prack\.access: 127\.0\.0\.1 - "GET /static/mid\.bin HTTP/1\.1" 200 \d+ ')
    sent = int(line.split('" 200 ')[1].split()[0])
    assert 100_000 < sent < 100_000 + 1024


def test_half_closed_client_gets_the_whole_file(srv, site):
    """A client that shuts down its sending side right after its request
    (as `nc -N` does) still reads the whole answer being written. The file
    is larger than the two kernels' socket buffers together, so the end of
    the request arrives while the answer is still being written."""
    import socket as _socket
    huge = os.urandom(1 << 20) * 40
    (site / "huge.bin").write_bytes(huge)
    sock = _socket.create_connection((srv.host, srv.port), timeout=20)
    try:
        sock.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(_socket.SHUT_WR)
        data = bytearray()
        while chunk := sock.recv(1 << 20):
            data += chunk
    finally:
        sock.close()
        (site / "huge.bin").unlink()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == len(huge) and body == huge     # and then the server closed


def curl(srv, path, *args):
    """A real client's view: (status, headers text, body)."""
    import shutil
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    p = subprocess.run(["curl", "-s", "-D", "-", "--max-time", "10",
                        "http://%s:%d%s" % (srv.host, srv.port, path), *args],
                       capture_output=True, timeout=20)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    return int(head.split(None, 2)[1]), head.decode("latin-1"), body


@pytest.mark.parametrize("path", ["/static/hello.txt/", "/static/docs/index.html/",
                                  "/static/inside/"])
def test_a_file_named_with_a_trailing_slash_is_not_found(srv, path):
    """nginx answers 404 for a file asked as a directory; so does Prack."""
    status, _, body = curl(srv, path)
    assert status == 404 and b"Hello" not in body
    assert get(srv, path).status == 404
    assert curl(srv, path.rstrip("/"))[0] == 200


def test_two_range_fields_get_the_whole_file(srv):
    """RFC 9110 14.2: two Range fields are no valid Range; ignored."""
    status, head, body = curl(srv, "/static/big.bin", "-H", "Range: bytes=0-9",
                              "-H", "Range: bytes=20-29")
    assert status == 200 and body == BIG
    assert "content-range" not in head.lower()
    assert curl(srv, "/static/big.bin", "-H", "Range: bytes=0-9")[2] == BIG[:10]


def test_an_if_modified_since_in_the_future_gets_the_whole_file(srv):
    """RFC 9110 13.1.3: a date later than the server's clock is invalid."""
    import time
    future = email.utils.formatdate(time.time() + 30 * 86400, usegmt=True)
    c = srv.client()
    c.request("GET", "/static/hello.txt", headers={"If-Modified-Since": future})
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"Hello, static world!\n"
    c.close()
    status, _, body = curl(srv, "/static/hello.txt", "-H", "If-Modified-Since: " + future)
    assert status == 200 and body == b"Hello, static world!\n"
    # A valid date, not in the future, is still honoured.
    modified = get(srv, "/static/hello.txt").header("Last-Modified")
    assert curl(srv, "/static/hello.txt", "-H", "If-Modified-Since: " + modified)[0] == 304


def test_conditionals_with_an_impossible_date_are_ignored(srv):
    """Feb 31 is no HTTP-date (RFC 5322 3.3 via RFC 9110 5.6.7): the
    If-Modified-Since, If-Unmodified-Since or If-Range holding it is ignored."""
    for field, extra in (("If-Modified-Since", ()),
                         ("If-Unmodified-Since", ()),
                         ("If-Range", ("-H", "Range: bytes=0-4"))):
        status, _, body = curl(srv, "/static/hello.txt",
                               "-H", field + ": Sat, 31 Feb 2024 00:00:00 GMT", *extra)
        assert (status, body) == (200, b"Hello, static world!\n"), field


def test_date_conditionals_given_twice_are_ignored(srv):
    """RFC 9110 13.1.3, 13.1.4: a date field with two members is ignored."""
    modified = get(srv, "/static/hello.txt").header("Last-Modified")
    early = "Mon, 01 Jan 2001 00:00:00 GMT"
    for field in ("If-Modified-Since", "If-Unmodified-Since"):
        status, _, body = curl(srv, "/static/hello.txt", "-H", "%s: %s" % (field, modified),
                               "-H", "%s: %s" % (field, early))
        assert (status, body) == (200, b"Hello, static world!\n"), field
