"""End to end: ordinary HTTP traffic through a real prack-server and real
v1 workers (the echo app answers with the environment and body it got)."""
from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import select
import shutil
import subprocess

import pytest


def echoed(resp_body: bytes) -> tuple[dict, bytes]:
    data = json.loads(resp_body)
    return data["env"], base64.b64decode(data["body"])


@pytest.fixture(scope="module")
def served(start_module_server, module_worker_factory):
    """A server with one echo worker, shared by the tests of this module."""
    s = start_module_server(api_poll_timeout=1)
    module_worker_factory(s.api)
    return s


# -- requests and the environment ------------------------------------------------

def test_get_environment(served):
    s = served
    c = s.client()
    c.request("GET", "/some/path%20x?a=1&b=two", headers={
        "X-Custom": "v1", "Accept": "text/plain"})
    r = c.getresponse()
    env, body = echoed(r.read())
    assert r.status == 200
    assert body == b""
    local_port = c.sock.getsockname()[1]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/some/path%20x"
    assert env["QUERY_STRING"] == "a=1&b=two"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(s.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["rack.url_scheme"] == "http"
    assert env["HTTP_X_CUSTOM"] == "v1"
    assert env["HTTP_ACCEPT"] == "text/plain"
    assert env["HTTP_HOST"] == "127.0.0.1:%d" % s.port
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert all(isinstance(v, str) for v in env.values()), env


def test_post_binary_body(served):
    payload = bytes(range(256)) * 40 + b"\r\n\r\n\x00"
    c = served.client()
    c.request("POST", "/upload", body=payload,
              headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    env, body = echoed(r.read())
    assert r.status == 200
    assert body == payload
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "application/octet-stream"
    assert env["CONTENT_LENGTH"] == str(len(payload))
    assert env["QUERY_STRING"] == ""
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_host_header_gives_server_name_and_port(served):
    with served.raw() as c:
        c.send(b"GET /h HTTP/1.1\r\nHost: Example.COM:8181\r\n\r\n")
        env, _ = echoed(c.read_response().body)
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8181")
        c.send(b"GET /h HTTP/1.1\r\nHost: example.org\r\n\r\n")
        env, _ = echoed(c.read_response().body)
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "80")
        c.send(b"GET http://proxy.example:9/abs?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
        env, _ = echoed(c.read_response().body)
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("proxy.example", "9")
        assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/abs", "q=1")
        # The received Host is ignored (RFC 9112 3.2.2): apps see the target's.
        assert env["HTTP_HOST"] == "proxy.example:9"


def test_repeated_headers_joined(served):
    with served.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nAccept: 1\r\nX-Multi: b\r\n"
               b"X-MULTI: c\r\nCookie: k=1\r\nCookie: j=2\r\nX-Empty:\r\n\r\n")
        r = c.read_response()
        env, _ = echoed(r.body)
    assert r.status == 200
    assert env["HTTP_X_MULTI"] == "a, b, c"
    assert env["HTTP_COOKIE"] == "k=1; j=2"
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_ACCEPT"] == "1"


def test_underscore_header_names_dropped(served):
    with served.raw() as c:
        c.send(b"GET /u? HTTP/1.1\r\nHost: [::1]:8080\r\nX_Forwarded_For: evil\r\n"
               b"X-Forwarded-For: good\r\n\r\n")
        env, _ = echoed(c.read_response().body)
    assert env["HTTP_X_FORWARDED_FOR"] == "good"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/u", "")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "8080")


def test_date_and_server_headers(served):
    c = served.client()
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    assert r.getheader("Server") == "Prack"
    date = email.utils.parsedate_to_datetime(r.getheader("Date"))
    assert date.tzinfo is not None
    assert r.getheader("Content-Length") is not None


def test_keep_alive_reuses_one_connection(served):
    c = served.client()
    c.request("GET", "/first")
    r = c.getresponse()
    assert echoed(r.read())[0]["PATH_INFO"] == "/first"
    sock = c.sock
    port = sock.getsockname()[1]
    for i in range(5):
        c.request("POST", "/n%d" % i, body=b"body %d" % i)
        r = c.getresponse()
        env, body = echoed(r.read())
        assert r.status == 200 and not r.will_close
        assert (env["PATH_INFO"], body) == ("/n%d" % i, b"body %d" % i)
        assert env["REMOTE_PORT"] == str(port)
        assert c.sock is sock, "http.client had to reconnect"


def test_pipelined_requests_answered_in_order(served):
    with served.raw() as c:
        c.send(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
               + b"POST /p3 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nlast")
        paths = []
        for _ in range(4):
            r = c.read_response()
            assert r.status == 200
            env, body = echoed(r.body)
            paths.append((env["PATH_INFO"], body))
    assert paths == [("/p0", b""), ("/p1", b""), ("/p2", b""), ("/p3", b"last")]


def test_chunked_upload(served):
    chunks = [b"hello ", b"\x00\xff binary ", b"world" * 1000]

    c = served.client()
    c.request("POST", "/chunked", body=iter(chunks), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    env, body = echoed(r.read())
    assert r.status == 200
    assert body == b"".join(chunks)
    assert env["CONTENT_LENGTH"] == str(len(body))
    assert "HTTP_TRANSFER_ENCODING" not in env


def test_request_split_anywhere(served):
    """A head and chunked body cut at every byte position parse the same."""
    req = (b"POST /split?q=1 HTTP/1.1\r\nHost: x\r\nX-A: a\r\nTransfer-Encoding: chunked\r\n"
           b"\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: v\r\n\r\n")
    with served.raw() as c:
        for k in range(1, len(req)):
            c.send(req[:k])
            select.select([c.sock], [], [], 0.002)    # client pacing: two reads, mostly
            c.send(req[k:])
            r = c.read_response()
            assert r.status == 200, (k, r)
            env, body = echoed(r.body)
            assert (env["PATH_INFO"], env["HTTP_X_A"], body) == ("/split", "a", b"abcde"), k


def test_chunked_upload_raw_with_trailer_then_pipelined(served):
    with served.raw() as c:
        c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n"
               b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        env, body = echoed(c.read_response().body)
        assert (env["PATH_INFO"], body, env["CONTENT_LENGTH"]) == ("/c", b"hello!", "6")
        env, body = echoed(c.read_response().body)
        assert (env["PATH_INFO"], body) == ("/after", b"")


def test_expect_100_continue(served):
    with served.raw() as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 11\r\n\r\n")
        interim = c.read_response()
        assert (interim.version, interim.status, interim.reason) == ("HTTP/1.1", 100, "Continue")
        assert interim.headers == []
        c.send(b"hello world")
        r = c.read_response()
        env, body = echoed(r.body)
        assert r.status == 200
        assert body == b"hello world"
        assert env["HTTP_EXPECT"] == "100-continue"
        # The connection stays usable.
        c.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert echoed(c.read_response().body)[0]["PATH_INFO"] == "/next"


def test_head_has_headers_but_no_body(served):
    with served.raw() as c:
        c.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200
        assert r.header("Content-Type") == "application/json"
        assert int(r.header("Content-Length")) > 0
        assert r.header("Date") and r.header("Server") == "Prack"
        # No body bytes follow: the next response starts right away.
        c.send(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body.startswith(b"{")
        assert echoed(r.body)[0]["PATH_INFO"] == "/g"


def test_http10_closes_by_default(served):
    with served.raw() as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        env, _ = echoed(r.body)
        assert r.status == 200
        assert r.header("Connection") == "close"
        assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(served.port))
        c.assert_closed()


def test_http10_keep_alive_when_asked(served):
    with served.raw() as c:
        for i in range(3):
            c.send(b"GET /ka%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.read_response()
            assert r.status == 200
            assert r.header("Connection").lower() == "keep-alive"
            assert echoed(r.body)[0]["PATH_INFO"] == "/ka%d" % i
        c.send(b"GET /end HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
        c.assert_closed()


def test_http11_connection_close_from_client(served):
    with served.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.header("Connection") == "close"
        c.assert_closed()


# -- what workers send -------------------------------------------------------------

def custom_app(env, body):
    path = env["PATH_INFO"]
    if path == "/wrong-length":
        return 200, {"Content-Length": "3"}, b"twelve bytes"
    if path == "/cookies":
        return 200, {"Set-Cookie": ["a=1; Path=/", "b=2"], "X-Lines": "one\ntwo"}, b"ok"
    if path == "/close":
        return 200, {"Connection": "close"}, b"bye"
    if path == "/hop":
        return 200, {"Transfer-Encoding": "chunked", "Keep-Alive": "timeout=99",
                     "Upgrade": "h2c", "X-Kept": "yes"}, b"plain body"
    if path == "/status":
        return "201", {"Location": "/made"}, b"created"
    if path == "/empty":
        return 204, {"Content-Length": "10"}, b""
    if path == "/no-body":
        return 200, {}, b""
    if path == "/big":
        n = int(env["QUERY_STRING"])
        return 200, {"X-Sha256": hashlib.sha256(body).hexdigest()}, \
            (b"0123456789abcdef" * (n // 16 + 1))[:n]
    if path == "/declared":
        return 200, {"Content-Length": "1234"}, b""
    if path == "/not-modified":
        return 304, {"ETag": '"v1"'}, b"must not be sent"
    if path == "/odd-status":
        return 599, {}, b"odd"
    if path == "/own-server":
        return 200, {"Server": "MyApp/1", "Date": "Mon, 01 Jan 2001 00:00:00 GMT"}, b"x"
    return 404, {}, b"no"


@pytest.fixture(scope="module")
def custom(start_module_server, module_worker_factory):
    s = start_module_server(api_poll_timeout=1)
    module_worker_factory(s.api, custom_app)
    return s


def test_content_length_is_computed_by_prack(custom):
    with custom.raw() as c:
        c.send(b"GET /wrong-length HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.all("Content-Length") == ["12"]
        assert r.body == b"twelve bytes"
        # Framing held: the connection is still in step.
        c.send(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body, r.header("Location")) == (201, b"created", "/made")


def test_list_and_newline_headers_become_several_lines(custom):
    with custom.raw() as c:
        c.send(b"GET /cookies HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert r.all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert r.all("X-Lines") == ["one", "two"]


def test_worker_connection_close_closes_client(custom):
    with custom.raw() as c:
        c.send(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"bye")
        assert r.all("Connection") == ["close"]
        c.assert_closed()


def test_worker_hop_by_hop_headers_dropped(custom):
    with custom.raw() as c:
        c.send(b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        names = {n.lower() for n, _ in r.headers}
        assert "transfer-encoding" not in names
        assert "keep-alive" not in names
        assert "upgrade" not in names
        assert r.header("X-Kept") == "yes"
        assert r.body == b"plain body"
        assert r.header("Content-Length") == "10"
        c.send(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 204
        assert r.header("Content-Length") is None


def test_empty_bodies(custom):
    """Responses without a body (they once hung the API process)."""
    with custom.raw() as c:
        for _ in range(2):
            c.send(b"GET /no-body HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")
            c.send(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            assert (r.status, r.header("Content-Length")) == (204, None)
            c.send(b"HEAD /no-body HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response(head=True)
            assert r.status == 200


def test_large_upload_and_download(custom):
    upload = bytes(range(256)) * 4096          # 1 MiB: exactly limits.max_body_size
    size = 20_000_000
    with custom.raw(timeout=30) as c:
        c.send(b"POST /big?%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % (size, len(upload)) + upload)
        r = c.read_response()
        assert r.status == 200
        assert r.header("X-Sha256") == hashlib.sha256(upload).hexdigest()
        assert len(r.body) == size and r.body[:32] == b"0123456789abcdef" * 2
        c.send(b"GET /big?10 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"0123456789"


def test_head_uses_declared_length(custom):
    with custom.raw() as c:
        c.send(b"HEAD /declared HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(head=True)
        assert (r.status, r.all("Content-Length")) == (200, ["1234"])
        c.send(b"GET /declared HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.all("Content-Length"), r.body) == (200, ["0"], b"")


def test_304_and_odd_status(custom):
    with custom.raw() as c:
        c.send(b"GET /not-modified HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("ETag"), r.header("Content-Length")) == (304, '"v1"', None)
        c.send(b"GET /odd-status HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()       # in step: no body bytes were sent for the 304
        assert (r.status, r.body) == (599, b"odd")


def test_worker_own_server_and_date(custom):
    c = custom.client()
    c.request("GET", "/own-server")
    r = c.getresponse()
    r.read()
    assert r.headers.get_all("Server") == ["MyApp/1"]
    assert r.headers.get_all("Date") == ["Mon, 01 Jan 2001 00:00:00 GMT"]


def test_v1_original_post_path(start_server, worker_factory):
    s = start_server(api_poll_timeout=1)
    worker_factory(s.api, post_path="/api/v1/request")
    c = s.client()
    c.request("PUT", "/orig", body=b"data")
    r = c.getresponse()
    env, body = echoed(r.read())
    assert (r.status, env["REQUEST_METHOD"], body) == (200, "PUT", b"data")


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_curl_client(served):
    url = "http://%s:%d/curl/path?x=y" % (served.host, served.port)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "-H", "X-From: curl", "--data-binary", "@-",
         "-H", "Content-Type: text/plain", url, url],
        input=b"curl body", capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # Two URLs on one command line: curl reuses the connection for the second.
    first, second = out.stdout.split(b"}{", 1)
    env, body = echoed(first + b"}")
    assert env["PATH_INFO"] == "/curl/path" and env["QUERY_STRING"] == "x=y"
    assert env["HTTP_X_FROM"] == "curl"
    assert env["HTTP_USER_AGENT"].startswith("curl/")
    assert body == b"curl body"
    env2, _ = echoed(b"{" + second)
    assert env2["REMOTE_PORT"] == env["REMOTE_PORT"]

    head = subprocess.run(["curl", "-sS", "-I", "--max-time", "15", url],
                          capture_output=True, timeout=30)
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nServer: Prack\r\n" in head.stdout


def test_access_log_and_server_header(start_server, worker_factory):
    s = start_server("--access-log", acceptors=1, api_poll_timeout=1, server_server_header="")
    worker_factory(s.api)
    with s.raw() as c:
        c.send(b"GET /logged?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("Server") is None           # server_header = "" leaves it out
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n")
        r = c.read_response()
        assert r.status == 400 and r.header("Server") is None
    s.wait_log(r'prack\.access: 127\.0\.0\.1 - "GET /logged\?x=1 HTTP/1\.1" 200 \d+ ')
    s.wait_log(r'prack\.access: 127\.0\.0\.1 - "- [^"]*" 400 \d+ ')
