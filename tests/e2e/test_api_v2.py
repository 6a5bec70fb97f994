"""End to end: the batched worker API v2 (JSON and msgpack), driven by hand
against a real server, with clients on raw sockets."""
from __future__ import annotations

import base64
import json
import signal
import time

import msgspec
import pytest

REQ = b"GET /v2/%d HTTP/1.1\r\nHost: x\r\n\r\n"


def call(server, method, path, body=None, headers=None, msgpack=False):
    """One API call: (status, headers, decoded body)."""
    c = server.api_client()
    hdrs = dict(headers or {})
    if msgpack:
        hdrs.setdefault("Accept", "application/msgpack")
        if body is not None and not isinstance(body, bytes):
            body = msgspec.msgpack.encode(body)
            hdrs.setdefault("Content-Type", "application/msgpack")
    elif body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=hdrs)
    r = c.getresponse()
    data = r.read()
    ctype = r.getheader("Content-Type")
    if ctype == "application/msgpack":
        decoded = msgspec.msgpack.decode(data)
    else:
        assert ctype == "application/json", (r.status, ctype, data)
        decoded = json.loads(data)
    c.close()
    return r.status, r.headers, decoded


def queue(server, n, first=0, body=b""):
    """n clients, each with one request sent (PATH_INFO /v2/<i>)."""
    clients = []
    for i in range(first, first + n):
        c = server.raw()
        if body:
            c.send(b"POST /v2/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % (i, len(body)) + body)
        else:
            c.send(REQ % i)
        clients.append(c)
    return clients


def pull_all(server, n, msgpack=False):
    """Pull until n requests have come (several batches if need be)."""
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        status, _, batch = call(server, "GET", "/api/v2/requests?max=%d&wait=2" % n,
                                msgpack=msgpack)
        assert status == 200, batch
        got += batch["requests"]
    assert len(got) == n, got
    return got


def item(ident, status=200, headers=None, body=b"ok", msgpack=False):
    out = {"id": ident, "status": status,
           "body": body if msgpack else base64.b64encode(body).decode()}
    if headers is not None:
        out["headers"] = headers
    return out


def test_batch_pull_and_post(srv):
    clients = queue(srv, 3)
    t0 = time.time()
    got = pull_all(srv, 3)
    assert [r["env"]["PATH_INFO"] for r in got] == ["/v2/0", "/v2/1", "/v2/2"]
    for r in got:
        assert set(r) == {"id", "env", "body", "deadline"}
        assert len(r["id"]) == 32 and r["body"] == ""
        # response_timeout defaults to 60 s, counted from the take.
        assert t0 + 55 < r["deadline"] < time.time() + 61
    status, _, res = call(srv, "POST", "/api/v2/responses", {"responses": [
        item(r["id"], 201, [["X-N", r["env"]["PATH_INFO"]], ["Set-Cookie", "a=1"],
                            ["Set-Cookie", "b=2"]], r["env"]["PATH_INFO"].encode())
        for r in got]})
    assert status == 200
    assert res == {"results": [{"id": r["id"], "status": "ok"} for r in got]}
    for i, c in enumerate(clients):
        resp = c.read_response()
        assert resp.status == 201
        assert resp.body == b"/v2/%d" % i
        assert resp.header("X-N") == "/v2/%d" % i
        assert resp.all("Set-Cookie") == ["a=1", "b=2"]      # order and repeats kept
        c.close()


def test_max_bounds_the_batch(srv):
    clients = queue(srv, 3)
    status, _, first = call(srv, "GET", "/api/v2/requests?max=2&wait=2")
    assert status == 200 and len(first["requests"]) <= 2
    rest = pull_all(srv, 3 - len(first["requests"]))
    got = first["requests"] + rest
    call(srv, "POST", "/api/v2/responses", {"responses": [item(r["id"]) for r in got]})
    for c in clients:
        assert c.read_response().body == b"ok"
        c.close()


def test_max_beyond_the_server_maximum_is_capped(srv):
    for value in ["257", "99999999999999999999"]:
        status, _, batch = call(srv, "GET", "/api/v2/requests?wait=0&max=" + value)
        assert (status, batch) == (200, {"requests": []})


def test_empty_list_after_wait(srv):
    t0 = time.monotonic()
    status, _, batch = call(srv, "GET", "/api/v2/requests?max=8&wait=0.3")
    waited = time.monotonic() - t0
    assert (status, batch) == (200, {"requests": []})
    assert 0.25 <= waited < 4, waited
    t0 = time.monotonic()
    status, _, batch = call(srv, "GET", "/api/v2/requests?wait=0")
    assert (status, batch) == (200, {"requests": []})
    assert time.monotonic() - t0 < 2


def test_long_poll_answers_when_the_first_request_arrives(srv):
    """A waiting batch pull does not wait to fill `max`."""
    with srv.raw_api() as w:
        t0 = time.monotonic()
        w.send(b"GET /api/v2/requests?max=50&wait=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        # Another call round-trips: the API process (one loop) has parked the pull.
        assert call(srv, "GET", "/nope")[0] == 404
        clients = queue(srv, 1)
        r = w.read_response()
        took = time.monotonic() - t0
    assert r.status == 200
    batch = r.json()
    assert len(batch["requests"]) == 1
    assert took < 3.5, took
    call(srv, "POST", "/api/v2/responses", {"responses": [item(batch["requests"][0]["id"])]})
    assert clients[0].read_response().body == b"ok"
    clients[0].close()


@pytest.mark.parametrize("query, name", [
    ("max=0", "max"), ("max=abc", "max"), ("max=-1", "max"), ("max=1.5", "max"),
    ("wait=-1", "wait"), ("wait=nan", "wait"), ("wait=soon", "wait"), ("wait=inf", "wait"),
    ("max=1&max=2", "max"), ("limit=3", "limit"),
])
def test_bad_parameters(srv, query, name):
    status, _, body = call(srv, "GET", "/api/v2/requests?" + query)
    assert status == 400
    assert body["error"].startswith(name + ":"), body


def test_msgpack_round_trip(srv):
    payload = bytes(range(256)) * 4
    clients = queue(srv, 2, body=payload)
    got = pull_all(srv, 2, msgpack=True)
    for r in got:
        assert r["body"] == payload          # raw bytes, no base64
        assert r["env"]["CONTENT_LENGTH"] == str(len(payload))
        assert isinstance(r["deadline"], float)
    status, headers, res = call(srv, "POST", "/api/v2/responses", {"responses": [
        item(r["id"], 200, {"Content-Type": "application/octet-stream"}, payload[::-1],
             msgpack=True) for r in got]}, msgpack=True)
    assert status == 200 and headers["Content-Type"] == "application/msgpack"
    assert [x["status"] for x in res["results"]] == ["ok", "ok"]
    for c in clients:
        resp = c.read_response()
        assert resp.body == payload[::-1]
        c.close()


def test_one_bad_item_loses_nothing_else(srv):
    clients = queue(srv, 4)
    got = pull_all(srv, 4)
    by_path = {r["env"]["PATH_INFO"]: r["id"] for r in got}
    stale = "0" * 32
    batch = {"responses": [
        item(by_path["/v2/0"], body=b"zero"),
        item(stale),                                               # unknown
        item(by_path["/v2/1"], headers={"Bad Name": "x"}),         # invalid: client 502
        {"id": by_path["/v2/2"], "status": "abc"},                 # undecodable: client 502
        item(by_path["/v2/3"], body=b"three"),
        item(by_path["/v2/0"]),                                    # answered already
        {"status": 200},                                           # no id
    ]}
    status, _, res = call(srv, "POST", "/api/v2/responses", batch)
    assert status == 200
    results = res["results"]
    assert [r["status"] for r in results] == ["ok", "unknown", "invalid", "invalid", "ok",
                                              "unknown", "invalid"]
    assert "Bad Name" in results[2]["error"]
    assert results[3]["error"].startswith("status:") and results[3]["id"] == by_path["/v2/2"]
    assert results[6]["id"] == "" and "id" in results[6]["error"]
    bodies = [c.read_response() for c in clients]
    assert [b.status for b in bodies] == [200, 502, 502, 200]
    assert bodies[0].body == b"zero" and bodies[3].body == b"three"
    for c in clients:
        c.close()


def test_malformed_batch(srv):
    for body in [b"{", b"[]", b'{"responses": 3}', b'{"nope": []}']:
        status, _, res = call(srv, "POST", "/api/v2/responses", body,
                              {"Content-Type": "application/json"})
        assert status == 400 and isinstance(res["error"], str), body
    status, _, res = call(srv, "POST", "/api/v2/responses", b"\xc1",
                          {"Content-Type": "application/msgpack"})
    assert status == 400 and "msgpack" in res["error"]


def test_worker_reports_an_error(srv):
    clients = queue(srv, 1)
    (r,) = pull_all(srv, 1)
    mark = srv.log_mark()
    status, _, res = call(srv, "POST", "/api/v2/requests/%s/error" % r["id"],
                          {"error": "database down\r\nFAKE LOG LINE" + "x" * 2000})
    assert (status, res) == (200, {"message": "reported"})
    assert clients[0].read_response().status == 502
    line = srv.wait_log("worker reported an error for request %s" % r["id"], since=mark)
    assert "database down\\r\\nFAKE LOG LINE" in line and len(line) < 1000
    assert not any(l.startswith("FAKE") for l in srv.log)
    status, _, res = call(srv, "POST", "/api/v2/requests/%s/error" % r["id"], {"error": "again"})
    assert status == 404
    status, _, res = call(srv, "POST", "/api/v2/requests/nothex/error", {"error": "x"})
    assert status == 400 and res["error"].startswith("id:")
    status, headers, _ = call(srv, "GET", "/api/v2/requests/%s/error" % r["id"])
    assert status == 405 and headers["Allow"] == "POST"
    clients[0].close()


def test_routes_and_methods(srv):
    status, headers, _ = call(srv, "POST", "/api/v2/requests", {})
    assert status == 405 and headers["Allow"] == "GET"
    status, headers, _ = call(srv, "GET", "/api/v2/responses")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, body = call(srv, "GET", "/api/v2/responses", msgpack=True)
    assert status == 405 and headers["Content-Type"] == "application/msgpack"
    assert "error" in body
    for path in ["/api/v2", "/api/v2/request", "/api/v2/requests/x"]:
        assert call(srv, "GET", path)[0] == 404, path


def test_late_response_is_gone(start_server):
    s = start_server(acceptors=1, timeouts_response_timeout=0.3)
    (client,) = queue(s, 1)
    (r,) = pull_all(s, 1)
    assert r["deadline"] < time.time() + 1
    assert client.read_response().status == 504
    status, _, res = call(s, "POST", "/api/v2/responses", {"responses": [item(r["id"])]})
    assert status == 200 and res["results"][0]["status"] == "gone"
    status, _, res = call(s, "POST", "/api/v2/requests/%s/error" % r["id"], {"error": "late"})
    assert status == 410
    client.close()


def test_waiting_pull_during_stop_gets_503_in_its_encoding(start_server):
    s = start_server(acceptors=1, api_poll_timeout=10)
    with s.raw_api() as w:
        w.send(b"GET /api/v2/requests?max=4&wait=10 HTTP/1.1\r\nHost: x\r\n"
               b"Accept: application/msgpack\r\n\r\n")
        assert call(s, "GET", "/nope")[0] == 404        # the pull is parked
        s.proc.send_signal(signal.SIGTERM)
        r = w.read_response()
    assert r.status == 503 and r.header("Content-Type") == "application/msgpack"
    assert msgspec.msgpack.decode(r.body) == {"error": "the server is shutting down"}
    assert s.stop() == 0
