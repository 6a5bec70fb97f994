"""Review of issue 7's large uploads and Expect: 100-continue: each test
reproduces a defect found by review (real server, real clients)."""
from __future__ import annotations

import json
import select

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
