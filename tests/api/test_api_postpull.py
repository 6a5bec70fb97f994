"""End to end: POST /api/v2/responses?max=N&wait=S posts a batch's answers
and pulls the next batch in the same call (JSON and msgpack), against a real
server: results and requests together, the long poll and its timeout, bad
calls that pull nothing, a worker that vanishes mid-wait (nothing lost), a
stop, a post held until its acceptor relinks, items passed on to the other
generation during an upgrade, and the SDK's lanes making one call per batch."""
from __future__ import annotations

import base64
import json
import os
import select
import signal
import threading
import time

import msgspec
import pytest

from conftest import shm_entries
from prack.api import pulls as api
from prack.protocol import messages
REQ = b"GET /pp/%d HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def srv(start_module_server):
    """One acceptor (arrival order is processing order), no workers."""
    return start_module_server(acceptors=1, api_poll_timeout=5)


def call(server, method, path, body=None, msgpack=False):
    """One API call: (status, decoded body)."""
    c = server.api_client()
    headers = {}
    if body is not None:
        codec = msgspec.msgpack if msgpack else msgspec.json
        body = body if isinstance(body, bytes) else codec.encode(body)
        headers["Content-Type"] = "application/msgpack" if msgpack else "application/json"
    if msgpack:
        headers["Accept"] = "application/msgpack"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    ctype = r.getheader("Content-Type")
    c.close()
    assert ctype == ("application/msgpack" if msgpack else "application/json"), (r.status, data)
    return r.status, (msgspec.msgpack if msgpack else msgspec.json).decode(data)


def queue(server, paths):
    clients = []
    for i in paths:
        c = server.raw()
        c.send(REQ % i)
        clients.append(c)
    return clients


def pull(server, n, msgpack=False):
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        status, batch = call(server, "GET", "/api/v2/requests?max=%d&wait=2" % n,
                             msgpack=msgpack)
        assert status == 200, batch
        got += batch["requests"]
    assert len(got) == n, got
    return got


def item(ident, body=b"ok", msgpack=False, status=200):
    return {"id": ident, "status": status,
            "body": body if msgpack else base64.b64encode(body).decode()}


def parked(server):
    """A call round-trips: the API process (one loop) has handled whatever
    was sent to it before."""
    assert call(server, "GET", "/api/v2/nope")[0] == 404


def raw_post(sock, query, payload: bytes, msgpack=False):
    ctype = b"application/msgpack" if msgpack else b"application/json"
    sock.send(b"POST /api/v2/responses%s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (query, ctype, len(payload), payload))


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_post_and_pull(srv, msgpack):
    clients = queue(srv, [0, 1])
    got = pull(srv, 2, msgpack)
    later = queue(srv, [2, 3])
    parked(srv)
    status, answer = call(srv, "POST", "/api/v2/responses?max=8&wait=2", {"responses": [
        item(r["id"], r["env"]["PATH_INFO"].encode(), msgpack) for r in got]}, msgpack)
    assert status == 200
    assert list(answer) == ["results", "requests"]
    assert answer["results"] == [{"id": r["id"], "status": "ok"} for r in got]
    nxt = answer["requests"]
    while len(nxt) < 2:         # the second one may have come after the take
        nxt += pull(srv, 1, msgpack)
    assert [r["env"]["PATH_INFO"] for r in nxt] == ["/pp/2", "/pp/3"]
    for r in nxt:
        assert set(r) == {"id", "env", "body", "deadline"}
        assert r["body"] == (b"" if msgpack else "")
    for i, c in enumerate(clients):
        assert c.read_response().body == b"/pp/%d" % i
        c.close()
    # The last answers, as an old worker posts them: results alone.
    status, answer = call(srv, "POST", "/api/v2/responses", {"responses": [
        item(r["id"], b"late", msgpack) for r in nxt]}, msgpack)
    assert (status, answer) == (200, {"results": [{"id": r["id"], "status": "ok"}
                                                  for r in nxt]})
    for c in later:
        assert c.read_response().body == b"late"
        c.close()


def test_the_combined_answer_is_the_documented_struct():
    """The two encoded maps joined give messages.ResultsAndRequests, in both
    encodings (also with no requests, and with more than 15 items)."""
    results = [messages.ItemResult("a" * 32, "ok"), messages.ItemResult("b", "invalid", "why")]
    items = [messages.RequestItem("%032x" % i, {"PATH_INFO": "/%d" % i}, b"\x00\xff", 1.5)
             for i in range(20)]
    for module in (msgspec.json, msgspec.msgpack):
        for reqs in ([], items[:1], items):
            joined = api._results_and_requests(module.encode(messages.ResultBatch(results)),
                                               module.encode(messages.RequestBatch(reqs)),
                                               module is msgspec.msgpack)
            assert module.decode(joined, type=messages.ResultsAndRequests) == \
                messages.ResultsAndRequests(results, reqs)


def test_results_for_every_kind_of_item_then_the_next_batch(srv):
    clients = queue(srv, [10, 11, 12])
    got = {r["env"]["PATH_INFO"]: r["id"] for r in pull(srv, 3)}
    nxt = queue(srv, [13])
    parked(srv)
    stale = "0" * 32
    status, answer = call(srv, "POST", "/api/v2/responses?max=4&wait=3", {"responses": [
        item(got["/pp/10"], b"ten"),
        item(stale),                                          # unknown
        {"id": got["/pp/11"], "status": "abc"},               # invalid: its client 502
        {"id": got["/pp/12"], "status": 200, "headers": {"Bad Name": "x"}},
        item(got["/pp/10"]),                                  # answered already
    ]})
    assert status == 200
    assert [(r["id"], r["status"]) for r in answer["results"]] == [
        (got["/pp/10"], "ok"), (stale, "unknown"), (got["/pp/11"], "invalid"),
        (got["/pp/12"], "invalid"), (got["/pp/10"], "unknown")]
    assert answer["results"][2]["error"].startswith("status")
    [r] = answer["requests"]
    assert r["env"]["PATH_INFO"] == "/pp/13"
    assert [c.read_response().status for c in clients] == [200, 502, 502]
    call(srv, "POST", "/api/v2/responses", {"responses": [item(r["id"])]})
    assert nxt[0].read_response().body == b"ok"
    for c in clients + nxt:
        c.close()


def test_wait_and_its_timeout(srv):
    [c] = queue(srv, [20])
    [r] = pull(srv, 1)
    t0 = time.monotonic()
    status, answer = call(srv, "POST", "/api/v2/responses?max=8&wait=0.3",
                          {"responses": [item(r["id"])]})
    waited = time.monotonic() - t0
    assert (status, answer) == (200, {"results": [{"id": r["id"], "status": "ok"}],
                                      "requests": []})
    assert 0.25 <= waited < 4, waited
    assert c.read_response().body == b"ok"
    c.close()
    # wait=0: at once; only `max` given: waits (up to poll_timeout) like a pull.
    t0 = time.monotonic()
    assert call(srv, "POST", "/api/v2/responses?wait=0", {"responses": []}) == \
        (200, {"results": [], "requests": []})
    assert time.monotonic() - t0 < 2
    with srv.raw_api() as w:
        raw_post(w, b"?max=2", b'{"responses":[]}')
        parked(srv)
        assert select.select([w.sock], [], [], 0.3)[0] == []     # waiting
        later = queue(srv, [21])
        resp = w.read_response()
        assert resp.status == 200
        [r] = resp.json()["requests"]
        assert resp.json()["results"] == [] and r["env"]["PATH_INFO"] == "/pp/21"
    call(srv, "POST", "/api/v2/responses", {"responses": [item(r["id"])]})
    assert later[0].read_response().body == b"ok"
    later[0].close()


@pytest.mark.parametrize("query, name", [("max=0", "max"), ("wait=soon", "wait"),
                                         ("max=1&max=2", "max"), ("limit=3", "limit")])
def test_bad_parameters_deliver_and_pull_nothing(srv, query, name):
    [c] = queue(srv, [30])
    [r] = pull(srv, 1)
    [waiting] = queue(srv, [31])
    parked(srv)
    status, answer = call(srv, "POST", "/api/v2/responses?" + query,
                          {"responses": [item(r["id"], b"no")]})
    assert status == 400 and answer["error"].startswith(name + ":"), answer
    # Nothing delivered: the answer can be posted now; nothing pulled either.
    [queued] = pull(srv, 1)
    assert queued["env"]["PATH_INFO"] == "/pp/31"
    status, answer = call(srv, "POST", "/api/v2/responses", {"responses": [
        item(r["id"], b"yes"), item(queued["id"])]})
    assert [x["status"] for x in answer["results"]] == ["ok", "ok"]
    assert c.read_response().body == b"yes"
    assert waiting.read_response().body == b"ok"
    c.close()
    waiting.close()


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_an_undecodable_batch_pulls_nothing(srv, msgpack):
    [c] = queue(srv, [40])
    parked(srv)
    for body in (b"{not json", b'{"responses": 5}', b"\xc1"):
        status, answer = call(srv, "POST", "/api/v2/responses?max=4&wait=0", body, msgpack)
        assert status == 400 and answer["error"], answer
    [r] = pull(srv, 1, msgpack)
    assert r["env"]["PATH_INFO"] == "/pp/40"
    call(srv, "POST", "/api/v2/responses", {"responses": [item(r["id"])]})
    assert c.read_response().body == b"ok"
    c.close()


def test_a_worker_that_vanishes_mid_wait_loses_nothing(srv):
    """Requests are taken only for a waiter still connected: the request
    that comes after the worker went is handed to the next one."""
    [c] = queue(srv, [50])
    [r] = pull(srv, 1)
    w = srv.raw_api()
    raw_post(w, b"?max=4&wait=5", json.dumps({"responses": [item(r["id"])]}).encode())
    parked(srv)
    assert c.read_response().body == b"ok"       # delivered; the pull waits
    c.close()
    w.close()
    parked(srv)         # the API process has seen it go
    [c] = queue(srv, [51])
    [r] = pull(srv, 1)
    assert r["env"]["PATH_INFO"] == "/pp/51"
    call(srv, "POST", "/api/v2/responses", {"responses": [item(r["id"], b"kept")]})
    assert c.read_response().body == b"kept"
    c.close()


def test_pipelined_post_and_pulls(srv):
    """A post-and-pull then a plain pull on one connection: each answered in
    turn, the second only once the first has gone."""
    clients = queue(srv, [60, 61])
    got = pull(srv, 2)
    with srv.raw_api() as w:
        payload = json.dumps({"responses": [item(r["id"]) for r in got]}).encode()
        raw_post(w, b"?max=1&wait=0", payload)
        w.send(b"GET /api/v2/requests?max=1&wait=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = w.read_response(), w.read_response()
    assert first.json() == {"results": [{"id": r["id"], "status": "ok"} for r in got],
                            "requests": []}
    assert second.json() == {"requests": []}
    for c in clients:
        assert c.read_response().body == b"ok"
        c.close()


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_a_waiting_post_and_pull_during_stop_gets_its_results(start_server, msgpack):
    """Its answers went through: 200 with the results and no requests (a
    plain pull gets 503 then), in the call's encoding."""
    s = start_server(acceptors=1, api_poll_timeout=10)
    [c] = queue(s, [70])
    [r] = pull(s, 1, msgpack)
    codec = msgspec.msgpack if msgpack else msgspec.json
    with s.raw_api() as w, s.raw_api() as p:
        raw_post(w, b"?max=4&wait=10",
                 codec.encode({"responses": [item(r["id"], msgpack=msgpack)]}), msgpack)
        p.send(b"GET /api/v2/requests?max=4&wait=10 HTTP/1.1\r\nHost: x\r\n"
               b"Accept: application/%s\r\n\r\n" % (b"msgpack" if msgpack else b"json"))
        parked(s)
        assert c.read_response().body == b"ok"
        c.close()
        s.proc.send_signal(signal.SIGTERM)
        resp = w.read_response()
        assert resp.status == 200
        assert resp.header("Content-Type") == "application/%s" % ("msgpack" if msgpack
                                                                    else "json")
        assert codec.decode(resp.body) == {"results": [{"id": r["id"], "status": "ok"}],
                                           "requests": []}
        resp = p.read_response()
        assert resp.status == 503
        assert codec.decode(resp.body) == {"error": "the server is shutting down"}
    assert s.stop() == 0


def test_a_held_post_and_pull_delivers_then_pulls(start_server):
    """Posted to a restarted API process before the acceptor has relinked:
    held, then delivered when it links, and then the pull goes on."""
    s = start_server("--log-level", "debug", acceptors=1, api_poll_timeout=10)
    [c] = queue(s, [80])
    [r] = pull(s, 1)
    [acceptor] = s.pids("acceptor", 0)[-1:]
    [api_pid] = s.pids("API process")
    mark = s.log_mark()
    os.kill(acceptor, signal.SIGSTOP)
    try:
        os.kill(api_pid, signal.SIGKILL)
        s.wait_log(r"API process ready \(pid (?!%d\))" % api_pid, since=mark)
        post = s.raw_api()
        raw_post(post, b"?max=2&wait=5", json.dumps({"responses": [item(r["id"])]}).encode())
        assert select.select([post.sock], [], [], 0.3)[0] == []     # held
    finally:
        os.kill(acceptor, signal.SIGCONT)
    s.wait_log(r"acceptor 0 \(pid %d\) linked" % acceptor, since=mark)
    assert c.read_response().body == b"ok"
    c.close()
    parked(s)
    assert select.select([post.sock], [], [], 0.2)[0] == []         # now pulling
    [nxt] = queue(s, [81])
    resp = post.read_response()
    assert resp.status == 200
    answer = resp.json()
    assert answer["results"] == [{"id": r["id"], "status": "ok"}]
    assert [x["env"]["PATH_INFO"] for x in answer["requests"]] == ["/pp/81"]
    call(s, "POST", "/api/v2/responses", {"responses": [item(answer["requests"][0]["id"])]})
    assert nxt.read_response().body == b"ok"
    nxt.close()
    post.close()


def test_items_passed_on_during_an_upgrade_then_the_pull(tmp_path):
    """After an upgrade, a post-and-pull to the new generation answering a
    request of the old one: the item is passed on, its result comes back,
    and the new generation's next request comes with it."""
    from upgrade_helpers import set_subreaper
    if not set_subreaper(True):
        pytest.skip("needs prctl(PR_SET_CHILD_SUBREAPER) (Linux)")
    try:
        _upgrade_then_post_and_pull(tmp_path)
    finally:
        set_subreaper(False)


def _upgrade_then_post_and_pull(tmp_path):
    from upgrade_helpers import code_copy, start_upgrading
    before = shm_entries()
    s = start_upgrading(tmp_path, code_copy(tmp_path / "code"), api_poll_timeout=5,
                        acceptors=1)
    try:
        mark = _post_and_pull_across_generations(s)
        s.close_clients()
        s.wait_log(r"prack.master: generation 1 retired", since=mark)
    except BaseException:
        s.close_clients()
        s.stop_current()        # no server left behind by a failure
        raise
    code = s.stop_current()
    assert code in (0, None), "exit %r\n%s" % (code, "\n".join(s.log))
    s.assert_clean()
    assert not any("Traceback" in line for line in s.log), "\n".join(s.log)
    assert shm_entries() <= before


def _post_and_pull_across_generations(s) -> int:
    old = s.raw(timeout=20)
    old.send(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")
    [r] = pull(s, 1, msgpack=True)
    mark = s.log_mark()
    os.kill(s.master, signal.SIGUSR2)
    s.wait_log(r"generation 2 \(pid \d+\) is ready; generation 1 .* retires", since=mark)
    new = s.raw(timeout=20)
    got = {}

    def post():
        got["answer"] = call(s, "POST", "/api/v2/responses?max=2&wait=5", {"responses": [
            item(r["id"], b"old", msgpack=True)]}, msgpack=True)

    t = threading.Thread(target=post)
    t.start()
    assert old.read_response().body == b"old"     # passed on to generation 1
    new.send(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
    t.join(15)
    status, answer = got["answer"]
    assert status == 200
    assert answer["results"] == [{"id": r["id"], "status": "ok"}]
    [n] = answer["requests"]
    assert n["env"]["PATH_INFO"] == "/new" and n["id"].startswith("0002")
    assert r["id"].startswith("0001")
    call(s, "POST", "/api/v2/responses", {"responses": [item(n["id"], b"new", True)]}, True)
    assert new.read_response().body == b"new"
    return mark



def test_openapi_documents_the_combined_call():
    """docs/openapi.yaml: the ResultsAndRequests schema matches the Struct,
    and the post's query parameters are the pull's."""
    import pathlib

    import yaml
    spec = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "docs" /
                           "openapi.yaml").read_text())
    schema = spec["components"]["schemas"]["ResultsAndRequests"]
    fields = msgspec.structs.fields(messages.ResultsAndRequests)
    assert set(schema["properties"]) == {f.encode_name for f in fields}
    assert set(schema["required"]) == {f.encode_name for f in fields if f.required}
    post = spec["paths"]["/api/v2/responses"]["post"]
    pull = spec["paths"]["/api/v2/requests"]["get"]
    assert {p["name"] for p in post["parameters"]} == {p["name"] for p in pull["parameters"]}
    assert "%d" % api.MAX_BATCH in {p["name"]: p for p in post["parameters"]}["max"]["description"]
