"""The master's supervision under races: children dying, slow to start or hung (prack.master.arbiter)."""
from __future__ import annotations

import os


def test_api_process_that_dies_during_a_stop_is_replaced_for_the_last_responses(start_server):
    """A graceful stop waits for the acceptors' requests in flight, whose
    answers need the API process. One that died then was not respawned
    ("stopping"), so those clients got nothing until graceful_timeout cut
    them off, and workers could not post at all."""
    import base64
    import http.client
    import json
    import signal

    s = start_server("--log-level", "debug", acceptors=1, api_poll_timeout=5,
                     timeouts_graceful_timeout=20)
    client = s.raw(timeout=30)
    client.send(b"GET /in-flight HTTP/1.1\r\nHost: x\r\n\r\n")
    c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
    c.request("GET", "/api/v1/request")
    r = c.getresponse()
    assert r.status == 200
    ident = json.loads(r.read())["identifier"]
    c.close()
    [api] = s.pids("API process")
    mark = s.log_mark()
    os.kill(s.pid, signal.SIGTERM)
    s.wait_log(r"SIGTERM: graceful stop", since=mark)
    os.kill(api, signal.SIGKILL)
    s.wait_log(r"API process ready \(pid (?!%d\))" % api, since=mark)
    s.wait_log(r"acceptor 0 \(pid \d+\) linked", since=mark)
    c = http.client.HTTPConnection(s.api_host, s.api_port, timeout=10)
    c.request("POST", "/api/v1/response", json.dumps(
        {"identifier": ident, "code": 200, "body": base64.b64encode(b"made it").decode()}))
    r = c.getresponse()
    assert r.status == 200, r.read()
    r.read()
    c.close()
    got = client.read_response()
    assert (got.status, got.body) == (200, b"made it")
    assert s.proc.wait(15) == 0


def test_an_error_report_waits_for_its_acceptor_to_link_like_a_post(start_server):
    """After an API restart, a post for a request whose acceptor has not
    linked to the new API process yet is held (up to 3 s); an error report
    (POST /api/v2/requests/{id}/error) was answered 410 at once instead, and
    its client waited for response_timeout rather than getting its 502."""
    import json
    import select
    import signal

    s = start_server("--log-level", "debug", acceptors=1, timeouts_response_timeout=60)
    client = s.raw(timeout=10)
    client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    pull = s.raw_api()
    pull.send(b"GET /api/v2/requests?max=1&wait=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    [item] = json.loads(pull.read_response().body)["requests"]
    pull.close()
    [acceptor] = s.pids("acceptor")
    [api] = s.pids("API process")
    mark = s.log_mark()
    os.kill(acceptor, signal.SIGSTOP)      # cannot link to the next API process yet
    try:
        os.kill(api, signal.SIGKILL)
        s.wait_log(r"API process ready \(pid (?!%d\))" % api, since=mark)
        report = s.raw_api()
        report.send(b"POST /api/v2/requests/%s/error HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 0\r\n\r\n" % item["id"].encode())
        # Held: no answer while the acceptor is away (refused at once before).
        assert select.select([report.sock], [], [], 0.5)[0] == [], report.read_response()
    finally:
        os.kill(acceptor, signal.SIGCONT)
    r = report.read_response()
    assert r.status == 200 and json.loads(r.body) == {"message": "reported"}, r
    assert client.read_response().status == 502


def test_a_held_batch_waits_for_every_acceptor_it_names(start_server):
    """A v2 batch naming requests of two acceptors, posted after an API
    restart before either has relinked: it was held for the first one only,
    and replayed when that one linked with the second still missing, whose
    items were then reported "gone" (their clients waited for the 504)."""
    import json
    import select
    import signal

    s = start_server("--log-level", "debug", acceptors=2, timeouts_response_timeout=60)
    ids: dict[int, str] = {}
    clients = []
    while len(ids) < 2 and len(clients) < 40:
        for _ in range(4):
            c = s.raw(timeout=10)
            c.send(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % len(clients))
            clients.append(c)
        pull = s.raw_api()
        for _ in range(4):
            pull.send(b"GET /api/v2/requests?max=1&wait=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            [item] = json.loads(pull.read_response().body)["requests"]
            ids.setdefault(int(item["id"][4:8], 16), item["id"])
        pull.close()
    assert sorted(ids) == [0, 1]
    acceptors = [s.pids("acceptor", 0)[-1], s.pids("acceptor", 1)[-1]]
    [api] = s.pids("API process")
    mark = s.log_mark()
    for pid in acceptors:
        os.kill(pid, signal.SIGSTOP)
    try:
        os.kill(api, signal.SIGKILL)
        s.wait_log(r"API process ready \(pid (?!%d\))" % api, since=mark)
        post = s.raw_api()
        batch = json.dumps({"responses": [{"id": ids[0], "status": 200},
                                          {"id": ids[1], "status": 200}]}).encode()
        post.send(b"POST /api/v2/responses HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(batch), batch))
        assert select.select([post.sock], [], [], 0.3)[0] == []
        os.kill(acceptors[0], signal.SIGCONT)
        s.wait_log(r"acceptor 0 \(pid %d\) linked" % acceptors[0], since=mark)
        # Acceptor 1 is still away: the batch waits for it too.
        assert select.select([post.sock], [], [], 0.3)[0] == [], post.read_response()
    finally:
        for pid in acceptors:
            os.kill(pid, signal.SIGCONT)
    r = post.read_response()
    assert [x["status"] for x in json.loads(r.body)["results"]] == ["ok", "ok"], r.body
