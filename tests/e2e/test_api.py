"""End to end: the worker API v1, driven by hand (http.client and raw
sockets) against a real server, with clients on raw sockets; and the API
process's own HTTP: keep-alive, pipelining, health routes, limits, and
workers that misbehave (pipelining without reading, running it out of
descriptors)."""
from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import time

import pytest

from conftest import rss_kib

REQ = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


def api(server, method, path, body=None, headers=None, conn=None):
    """One API call: (status, response headers, decoded JSON body)."""
    c = conn or server.api_client()
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    assert r.getheader("Content-Type") == "application/json", (r.status, data)
    return r.status, r.headers, json.loads(data) if data else None


def pull(server, conn=None) -> dict:
    status, _, job = api(server, "GET", "/api/v1/request", conn=conn)
    assert status == 200, job
    return job


def answer(ident, code=200, headers=None, body=b"ok") -> dict:
    msg = {"identifier": ident, "code": code, "body": base64.b64encode(body).decode()}
    if headers is not None:
        msg["headers"] = headers
    return msg


def queued(server, request: bytes = REQ):
    """A client with its request sent; nobody has answered it yet."""
    c = server.raw()
    c.send(request)
    return c


def probe(server) -> None:
    """A bad request on a new connection, answered by the acceptor itself."""
    with server.raw() as c:
        c.send(b"BAD\r\n\r\n")
        assert c.read_response().status == 400


# -- pulling --------------------------------------------------------------------

def test_poll_timeout_with_no_requests(start_server):
    s = start_server(acceptors=1, api_poll_timeout=0.3)
    t0 = time.monotonic()
    status, _, body = api(s, "GET", "/api/v1/request")
    waited = time.monotonic() - t0
    assert status == 404
    assert body == {"error": "There are no requests pending"}
    assert 0.25 <= waited < 5, waited


def test_poll_timeout_zero_answers_at_once(start_server):
    s = start_server(acceptors=1, api_poll_timeout=0)
    t0 = time.monotonic()
    status, _, body = api(s, "GET", "/api/v1/request")
    assert (status, body) == (404, {"error": "There are no requests pending"})
    assert time.monotonic() - t0 < 2
    client = queued(s)
    # One acceptor handles events in arrival order: once a later connection's
    # bad request is answered, the first request is in the queue.
    probe(s)
    status, _, job = api(s, "GET", "/api/v1/request")
    assert status == 200
    assert job["environment"]["PATH_INFO"] == "/hello"
    assert api(s, "POST", "/api/v1/response", answer(job["identifier"]))[0] == 200
    assert client.read_response().body == b"ok"


def test_pull_gives_identifier_environment_and_base64_body(srv):
    payload = bytes(range(256)) + b"\r\n\x00end"
    client = queued(srv, b"PUT /p/q?r=s HTTP/1.1\r\nHost: h.example:81\r\n"
                         b"Content-Type: application/x-thing\r\nContent-Length: %d\r\n"
                         b"X-A: 1\r\n\r\n" % len(payload) + payload)
    status, headers, job = api(srv, "GET", "/api/v1/request")
    assert status == 200
    assert set(job) == {"identifier", "environment", "body"}
    assert re.fullmatch(r"[0-9a-f]{32}", job["identifier"])
    env = job["environment"]
    assert env["REQUEST_METHOD"] == "PUT"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/p/q", "r=s")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", "81")
    assert env["CONTENT_TYPE"] == "application/x-thing"
    assert env["CONTENT_LENGTH"] == str(len(payload))
    assert env["HTTP_X_A"] == "1"
    assert env["REMOTE_PORT"] == str(client.sock.getsockname()[1])
    assert all(isinstance(v, str) for v in env.values())
    assert base64.b64decode(job["body"], validate=True) == payload

    status, _, body = api(srv, "POST", "/api/v1/response", answer(
        job["identifier"], 201, {"X-Reply": "yes"}, b"made"))
    assert (status, body) == (200, {"message": "thank you"})
    r = client.read_response()
    assert (r.status, r.body, r.header("X-Reply")) == (201, b"made", "yes")


def test_long_poll_woken_by_new_request(start_server):
    """A worker already waiting gets a request as soon as it arrives, on
    whichever acceptor it lands."""
    s = start_server(acceptors=2, api_poll_timeout=20)
    for i in range(6):
        with s.raw_api() as w:
            w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            client = queued(s, b"GET /wake/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            r = w.read_response()
            assert r.status == 200
            assert time.monotonic() - t0 < 5
            job = r.json()
            assert job["environment"]["PATH_INFO"] == "/wake/%d" % i
        assert api(s, "POST", "/api/v1/response", answer(job["identifier"]))[0] == 200
        assert client.read_response().status == 200


def test_original_protocol_endpoint(srv):
    client = queued(srv)
    job = pull(srv)
    status, _, body = api(srv, "POST", "/api/v1/request", answer(job["identifier"], body=b"v1"))
    assert (status, body) == (200, {"message": "thank you"})
    r = client.read_response()
    assert (r.status, r.body) == (200, b"v1")


def test_code_as_numeric_string(srv):
    client = queued(srv)
    job = pull(srv)
    status, _, _ = api(srv, "POST", "/api/v1/response",
                       answer(job["identifier"], "202", {"X-S": "1"}, b"accepted"))
    assert status == 200
    r = client.read_response()
    assert (r.status, r.reason, r.body) == (202, "Accepted", b"accepted")


def test_headers_and_body_optional(srv):
    client = queued(srv)
    job = pull(srv)
    status, _, _ = api(srv, "POST", "/api/v1/response",
                       {"identifier": job["identifier"], "code": 200})
    assert status == 200
    r = client.read_response()
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")


# -- identifiers ------------------------------------------------------------------------

def test_same_identifier_twice(srv):
    client = queued(srv)
    job = pull(srv)
    assert api(srv, "POST", "/api/v1/response", answer(job["identifier"]))[0] == 200
    assert client.read_response().body == b"ok"
    status, _, body = api(srv, "POST", "/api/v1/response", answer(job["identifier"], body=b"2"))
    assert status == 404
    assert "error" in body
    # The client got exactly one response.
    client.send(REQ)
    job = pull(srv)
    api(srv, "POST", "/api/v1/response", answer(job["identifier"], body=b"third"))
    assert client.read_response().body == b"third"


def test_forged_identifiers(srv):
    client = queued(srv)
    job = pull(srv)
    real = job["identifier"]
    forged = [
        secrets.token_hex(16),                      # anything well-formed
        real[:16] + secrets.token_hex(8),           # the right slot, a wrong key
        real[:4] + "00ff" + real[8:],               # an acceptor that does not exist
        real[:8] + "7fffffff" + real[16:],          # a slot that does not exist
        "%04x" % ((int(real[:4], 16) + 1) & 0xffff) + real[4:],   # another generation
    ]
    for ident in forged:
        status, _, body = api(srv, "POST", "/api/v1/response", answer(ident, body=b"evil"))
        assert status == 404, (ident, body)
        assert "error" in body
    # The real one still works, and the client got nothing from the forgeries.
    assert api(srv, "POST", "/api/v1/response", answer(real, body=b"real"))[0] == 200
    assert client.read_response().body == b"real"


@pytest.mark.parametrize("ident", [
    "xyz", "", "0" * 31, "0" * 33, "G" * 32, "ABCDEF" + "0" * 26, 12345, None, ["0" * 32],
])
def test_malformed_identifier(srv, ident):
    status, _, body = api(srv, "POST", "/api/v1/response", {"identifier": ident, "code": 200})
    assert status == 400
    assert "identifier" in body["error"]


# -- invalid posts ----------------------------------------------------------------------

def test_malformed_json(srv):
    for raw in [b"{not json", b"", b"[]", b"null", b'{"code": 200}', b"\xff\xfe"]:
        status, _, body = api(srv, "POST", "/api/v1/response", raw)
        assert status == 400, raw
        assert isinstance(body["error"], str) and body["error"], raw


def bad_post(server, msg_for, field):
    """Post a bad response for a live request: 400 naming `field`, and the
    client gets a clean 502 (and its connection stays usable)."""
    client = queued(server)
    job = pull(server)
    msg = msg_for(job["identifier"])
    status, _, body = api(server, "POST", "/api/v1/response",
                          msg if isinstance(msg, (bytes, str)) else json.dumps(msg))
    assert status == 400, body
    assert field in body["error"], body
    r = client.read_response()
    assert r.status == 502
    assert r.body == b"Bad Gateway\n"
    names = {n.lower() for n, _ in r.headers}
    assert names <= {"date", "server", "content-type", "content-length"}, r.headers
    # Too late to answer now.
    assert api(server, "POST", "/api/v1/response", answer(job["identifier"]))[0] == 404
    client.send(REQ)
    job = pull(server)
    api(server, "POST", "/api/v1/response", answer(job["identifier"], body=b"next"))
    assert client.read_response().body == b"next"
    return body


def test_invalid_base64_body(srv):
    body = bad_post(srv, lambda i: {"identifier": i, "code": 200, "body": "!!!notbase64"},
                    "body")
    assert body["error"].startswith("body")


def test_wrong_types(srv):
    bad_post(srv, lambda i: {"identifier": i, "code": 200, "headers": "X-A: 1"}, "headers")
    # Numbers and booleans are header values now (issue 14); an object is not.
    bad_post(srv, lambda i: {"identifier": i, "code": 200, "headers": {"X-A": {"n": 5}}},
             "headers")
    bad_post(srv, lambda i: {"identifier": i, "code": 200, "headers": {"X-A": [[1]]}},
             "headers")
    bad_post(srv, lambda i: {"identifier": i, "code": 200.5}, "code")
    bad_post(srv, lambda i: {"identifier": i}, "code")


def test_unreadable_post_leaves_request_answerable(srv):
    """Without a readable identifier nothing can be failed: the request is
    still the worker's to answer."""
    client = queued(srv)
    job = pull(srv)
    truncated = '{"identifier": "%s", "code": 200, ' % job["identifier"]
    status, _, body = api(srv, "POST", "/api/v1/response", truncated)
    assert status == 400 and "JSON" in body["error"]
    assert api(srv, "POST", "/api/v1/response", answer(job["identifier"], body=b"ok2"))[0] == 200
    assert client.read_response().body == b"ok2"


@pytest.mark.parametrize("code", [42, 100, 199, 1000, -200, "abc", "20", "2000", "", "２００"])
def test_bad_status_code(srv, code):
    bad_post(srv, lambda i: answer(i, code), "code")


@pytest.mark.parametrize("name", ["Bad Name", "", "X:Y", "X\r\nY", "Ñame", "a\x00"])
def test_header_name_not_a_token(srv, name):
    bad_post(srv, lambda i: answer(i, 200, {name: "v"}), "header")


@pytest.mark.parametrize("value", [
    "a\r\nInjected: yes", "a\rInjected: yes", "a\x00b", ["a\nInjected: yes"], ["ok", "x\x7f"],
    "\r\n\r\nHTTP/1.1 200 OK",
], ids=["crlf", "cr", "nul", "lf-in-list", "del-in-list", "split"])
def test_control_characters_in_header_value(srv, value):
    bad_post(srv, lambda i: answer(i, 200, {"X-Value": value}, b"SMUGGLED"), "X-Value")


def test_header_values_accepted(srv):
    client = queued(srv)
    job = pull(srv)
    headers = {"X-Tab": "a\tb", "X-Utf8": "caf\u00e9", "X-Trim": "  padded  ",
               "X-Empty": "", "Content-Type": "text/x; charset=latin-1"}
    assert api(srv, "POST", "/api/v1/response", answer(job["identifier"], 200, headers))[0] == 200
    r = client.read_response()
    assert r.status == 200
    assert r.header("X-Tab") == "a\tb"
    assert r.header("X-Trim") == "padded"
    assert r.header("X-Empty") == ""
    assert r.header("Content-Type") == "text/x; charset=latin-1"


# -- clients that leave -----------------------------------------------------------------

def test_client_gone_while_worker_holds_request(srv):
    first = queued(srv, b"GET /leaving HTTP/1.1\r\nHost: x\r\n\r\n")
    job1 = pull(srv)
    first.close()
    # One acceptor reads events in arrival order: once the next client's
    # request is handed out, the first one's close has been seen.
    second = queued(srv, b"GET /staying HTTP/1.1\r\nHost: x\r\n\r\n")
    job2 = pull(srv)
    assert job2["environment"]["PATH_INFO"] == "/staying"
    status, _, body = api(srv, "POST", "/api/v1/response", answer(job1["identifier"]))
    assert status == 410
    assert body == {"error": "the client has gone"}
    assert api(srv, "POST", "/api/v1/response", answer(job2["identifier"], body=b"2"))[0] == 200
    assert second.read_response().body == b"2"


def test_client_gone_while_queued_is_never_handed_out(start_server, worker_factory, recorder):
    s = start_server(acceptors=1, api_poll_timeout=1)
    first = queued(s, b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
    # One acceptor handles readiness in arrival order, and a later
    # connection's bad request is answered at once: once that answer is in,
    # everything that was ready before it has been handled.
    probe(s)            # the request is queued (read before the close)...
    first.close()
    probe(s)            # ...and the close has been seen
    second = queued(s, b"GET /kept HTTP/1.1\r\nHost: x\r\n\r\n")
    app = recorder()
    worker_factory(s.api, app)
    assert second.read_response().status == 200
    third = queued(s, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert third.read_response().status == 200
    assert app.paths == ["/kept", "/after"]


def test_queue_timeout_withdraws_request(start_server):
    s = start_server(acceptors=1, api_poll_timeout=0, timeouts_queue_timeout=0.5)
    client = queued(s)
    assert client.read_response().status == 504
    status, _, body = api(s, "GET", "/api/v1/request")
    assert (status, body) == (404, {"error": "There are no requests pending"})


def test_answer_after_response_timeout(start_server):
    s = start_server(acceptors=1, api_poll_timeout=5, timeouts_response_timeout=0.5)
    client = queued(s)
    job = pull(s)
    assert client.read_response().status == 504
    status, _, _ = api(s, "POST", "/api/v1/response", answer(job["identifier"]))
    assert status == 410
    # The connection is in step: the next request is served normally.
    client.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    job = pull(s)
    assert job["environment"]["PATH_INFO"] == "/next"
    api(s, "POST", "/api/v1/response", answer(job["identifier"], body=b"fine"))
    assert client.read_response().body == b"fine"


# -- the API's own HTTP ----------------------------------------------------------------

def test_api_keep_alive(srv):
    conn = srv.api_client()
    clients = []
    for i in range(4):
        clients.append(queued(srv, b"GET /ka/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i))
        job = pull(srv, conn)
        sock = conn.sock
        status, headers, body = api(srv, "POST", "/api/v1/response",
                                    answer(job["identifier"], body=b"%d" % i), conn=conn)
        assert status == 200
        assert conn.sock is sock and sock is not None, "the API closed the connection"
        assert headers.get("Connection") is None
    for i, c in enumerate(clients):
        assert c.read_response().body == b"%d" % i
    # Errors on the API are answered on the same connection too.
    assert api(srv, "GET", "/nope", conn=conn)[0] == 404
    assert conn.sock is sock


def test_api_pipelined_calls(srv):
    with srv.raw_api() as w:
        w.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        for _ in range(3):
            r = w.read_response()
            assert r.status == 404 and r.version == "HTTP/1.1"


def test_api_connection_close(srv):
    with srv.raw_api() as w:
        w.send(b"GET /api/v1/other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = w.read_response()
        assert r.status == 404
        assert r.header("Connection") == "close"
        w.assert_closed()
    client = queued(srv)
    with srv.raw_api() as w:
        w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = w.read_response()
        assert r.status == 200 and r.header("Connection") == "close"
        w.assert_closed()
    body = json.dumps(answer(r.json()["identifier"])).encode()
    with srv.raw_api() as w:
        w.send(b"POST /api/v1/response HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = w.read_response()
        assert r.status == 200 and r.json() == {"message": "thank you"}
        w.assert_closed()     # HTTP/1.0 without keep-alive
    assert client.read_response().body == b"ok"


def test_unknown_path_and_wrong_method(srv):
    for path in ["/", "/api", "/api/v1", "/api/v2/request", "/api/v1/request/x",
                 "/api/v1/responses"]:
        status, _, body = api(srv, "GET", path)
        assert status == 404, path
        assert isinstance(body["error"], str)
    status, headers, body = api(srv, "DELETE", "/api/v1/request")
    assert status == 405 and "error" in body
    assert set(headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    for method in ["GET", "PUT", "DELETE"]:
        status, headers, body = api(srv, method, "/api/v1/response")
        assert status == 405 and "error" in body
        assert headers["Allow"] == "POST"


def test_health_methods(start_server):
    """/livez and /readyz: GET and HEAD; any other method is the routes
    table's 405 with Allow (the handler's own method check was dead code)."""
    import http.client
    s = start_server()
    for path in ("/livez", "/readyz"):
        c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
        c.request("POST", path, b"{}")
        r = c.getresponse()
        assert (r.status, r.getheader("Allow")) == (405, "GET, HEAD"), path
        assert b"error" in r.read()
        c.request("HEAD", path)
        r = c.getresponse()
        assert r.status in (200, 503) and r.read() == b""
        assert int(r.getheader("Content-Length")) > 0
        c.close()


def test_api_protocol_error(srv):
    with srv.raw_api() as w:
        w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n")
        r = w.read_response()
        assert r.status == 400
        assert r.header("Content-Type") == "application/json"
        assert "error" in r.json()
        w.assert_closed()


def test_api_head(srv):
    """HEAD gets a head only, and never takes a request out of the queue."""
    client = queued(srv)
    with srv.raw_api() as w:
        w.send(b"HEAD /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
        r = w.read_response(head=True)
        assert r.status == 405
        w.send(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert w.read_response(head=True).status == 404
        # In step: the next response starts right after the heads.
        w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
        r = w.read_response()
        assert r.status == 200, r
        job = r.json()
    assert job["environment"]["PATH_INFO"] == "/hello"
    assert api(srv, "POST", "/api/v1/response", answer(job["identifier"]))[0] == 200
    assert client.read_response().status == 200


def test_idle_worker_polling_again_and_again(start_server):
    """Each long poll gets exactly one answer, however often it expired
    before (a worker idle for several poll periods stays in step)."""
    s = start_server(acceptors=1, api_poll_timeout=0.2)
    with s.raw_api() as w:
        for _ in range(4):
            t0 = time.monotonic()
            w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
            r = w.read_response()
            assert r.status == 404
            assert time.monotonic() - t0 >= 0.15, "an answer left over from an earlier poll"
        client = queued(s)
        w.send(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
        r = w.read_response()
        assert r.status == 200, r
        job = r.json()
        body = json.dumps(answer(job["identifier"])).encode()
        w.send(b"POST /api/v1/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % len(body) + body)
        r = w.read_response()
        assert r.json() == {"message": "thank you"}
        assert client.read_response().status == 200


def test_api_out_of_file_descriptors(start_server):
    """At the descriptor limit the API process pauses accepting workers
    instead of spinning on accept(); it recovers once some close."""
    s = start_server(acceptors=1, api_poll_timeout=1, nofile=40)
    t0 = time.monotonic()
    workers = [s.raw_api() for _ in range(60)]
    # Either accept() fails (EMFILE) or the API process's cap of worker
    # connections, fitted to the limit, is reached first: both pause accepts.
    paused = r"API process: (accept: Too many open files|\d+ worker connections, none idle)"
    s.wait_log(paused)
    for w in workers[:5]:                       # the first ones were accepted
        for _ in range(10):
            w.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert w.read_response().status == 404
    for w in workers:
        w.close()
    assert api(s, "GET", "/nope")[0] == 404     # accepted after the pause
    elapsed = time.monotonic() - t0
    warnings = sum(re.search(paused, line) is not None for line in s.log)
    assert warnings <= 3 + 5 * elapsed, "%d warnings in %.1fs" % (warnings, elapsed)


def test_worker_sock_accept_failure_pauses_instead_of_spinning(tmp_path):
    """accept() on worker.sock failing with EMFILE: the listener stays
    readable, so returning without pausing (as the worker port does) made the
    API loop spin, silently, until a descriptor came free."""
    import errno
    import selectors

    from prack import config
    from prack.api.process import ApiServer

    class FullListener:
        """worker.sock of a process out of descriptors."""

        def __init__(self, sock):
            self.sock = sock

        def fileno(self):
            return self.sock.fileno()

        def accept(self):
            raise OSError(errno.EMFILE, "Too many open files")

    class Segment:
        nrings = 1
        nslots = 4

        def ring(self, i):
            return None

    real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    real.bind(str(tmp_path / "worker.sock"))
    real.listen(1)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(str(tmp_path / "worker.sock"))     # readable from now on
    cfg = config.load(None)
    api = ApiServer(cfg, 1, real, real, Segment(), -1, forward_listener=FullListener(real))
    try:
        api.sel.register(api.forward_listener, selectors.EVENT_READ, api._on_accept_forwarded)
        for key, mask in api.sel.select(1):
            key.data(mask)
        assert all(key.fileobj is not api.forward_listener
                   for key in api.sel.get_map().values()), "still watched: the loop spins"
        assert [lst for lst, _ in api._paused] == [api.forward_listener]
    finally:
        api.sel.close()
        peer.close()
        real.close()


def test_api_request_too_large(start_server):
    s = start_server(acceptors=1, api_max_request_size="1k")
    client = queued(s)
    job = pull(s)
    big = json.dumps(answer(job["identifier"], body=b"x" * 2000)).encode()
    with s.raw_api() as w:
        w.send(b"POST /api/v1/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % len(big))
        r = w.read_response()
        assert r.status == 413 and "error" in r.json()
        w.assert_closed()
    # The identifier was never read: the request is still the worker's.
    assert api(s, "POST", "/api/v1/response", answer(job["identifier"], body=b"small"))[0] == 200
    assert client.read_response().body == b"small"


# -- workers that pipeline: the API process reads no further than it answers -------

def _api_rss_kib(s) -> int:
    [line] = [l for l in s.log if "API process ready (pid" in l][-1:]
    return rss_kib(int(line.rsplit("(pid ", 1)[1].rstrip(")")))


def test_bytes_pipelined_behind_a_long_poll_are_bounded(start_server):
    """While a call is in progress (a long poll here; also a held or a
    forwarded post), the API process went on reading whatever the worker sent
    and buffered all of it: memory grew without bound. It now keeps at most
    one more request's worth and stops reading (TCP pushes back)."""
    s = start_server("--log-level", "debug", api_poll_timeout=60, api_max_request_size="64K")
    s.wait_log(r"API process ready \(pid")
    before = _api_rss_kib(s)
    sock = socket.create_connection((s.api_host, s.api_port), timeout=10)
    try:
        sock.sendall(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(3)
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            while sent < (96 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
        except socket.timeout:
            pass
        # Kernel buffers take some (at most tcp_rmem's 32 MiB + tcp_wmem's
        # 4 MiB by default); the API process itself no more than
        # max_request_size + max_header_size (+ one read).
        assert sent < (48 << 20), "the API process read %d MiB behind a long poll" % (sent >> 20)
        assert _api_rss_kib(s) - before < 16 << 10
    finally:
        sock.close()



def test_a_worker_that_does_not_read_cannot_pull_everything(start_server):
    """A worker pipelining pulls without reading the answers: the API process
    answered one call after another into its send buffer, so that worker
    took every queued request (and held it in the API's memory) while the
    workers that do read got nothing. Now the next pipelined call waits
    until the previous answer has left."""
    import http.client
    import json
    import time

    # Answers of 4 MiB (3 MB bodies in base64): the socket buffers between
    # the API process and that worker hold only a few of them.
    n = 16
    # (The bodies stay inline: spooled ones would make the answers small.)
    s = start_server(acceptors=1, limits_ring_size="64M", limits_max_body_size="4M",
                     limits_inline_body_size="4M", api_poll_timeout=30,
                     timeouts_graceful_timeout=1)
    bad = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    bad.connect((s.api_host, s.api_port))
    try:
        bad.sendall(b"GET /api/v1/request HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        body = b"x" * 3_000_000
        for i in range(n):
            s.raw(timeout=30).send(b"POST /r%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                   % (i, len(body)) + body)
        got = 0
        deadline = time.monotonic() + 15
        c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
        while got < n // 2 and time.monotonic() < deadline:
            c.request("GET", "/api/v2/requests?max=%d&wait=1" % n)
            r = c.getresponse()
            assert r.status == 200
            got += len(json.loads(r.read())["requests"])
        c.close()
        assert got >= n // 2, "the worker that reads got %d of %d requests" % (got, n)
    finally:
        bad.close()
