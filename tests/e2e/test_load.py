"""End to end under load: 10,000 requests from 50 keep-alive clients through
2 acceptors and 4 workers; every response must be the one for its request."""
from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time

import pytest

REQUESTS = 10_000
CLIENTS = 50
WORKERS = 4


@pytest.mark.slow
def test_10k_requests_50_clients(start_server, worker_factory):
    s = start_server(acceptors=2, api_poll_timeout=1)
    workers = [worker_factory(s.api) for _ in range(WORKERS)]
    run = os.urandom(4).hex()
    per_client = REQUESTS // CLIENTS
    done = [0] * CLIENTS
    reconnects = [0] * CLIENTS
    errors: list[str] = []
    start = threading.Barrier(CLIENTS + 1)

    def client(t: int) -> None:
        conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
        sock = None
        try:
            start.wait(30)
            for i in range(per_client):
                rid = "%s-%02d-%03d" % (run, t, i)
                body = ("request %s " % rid).encode() + bytes([t, i % 256, 0, 255])
                conn.request("POST", "/load/%s?n=%d" % (rid, i), body=body,
                             headers={"X-Request-Id": rid})
                r = conn.getresponse()
                data = r.read()
                if sock is None:
                    sock = conn.sock
                elif conn.sock is not sock:
                    reconnects[t] += 1
                    sock = conn.sock
                if r.status != 200:
                    errors.append("%s: status %d %r" % (rid, r.status, data[:200]))
                    return
                echo = json.loads(data)
                env = echo["env"]
                got = (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_X_REQUEST_ID"],
                       base64.b64decode(echo["body"]))
                want = ("/load/" + rid, "n=%d" % i, rid, body)
                if got != want:
                    errors.append("%s: got the response for %r" % (rid, got))
                    return
                done[t] += 1
        except Exception as exc:     # reported below; a thread must not die silently
            errors.append("client %d: %r" % (t, exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(CLIENTS)]
    for th in threads:
        th.start()
    start.wait(30)
    t0 = time.monotonic()
    for th in threads:
        th.join(max(1.0, 150 - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    assert not any(th.is_alive() for th in threads), "clients still running after %.0fs" % elapsed
    total = sum(done)
    print("\n%d requests, %d clients, %d acceptors, %d workers: %.2fs, %.0f requests/s"
          % (total, CLIENTS, 2, WORKERS, elapsed, total / elapsed))
    assert not errors, errors[:10]
    assert total == REQUESTS
    assert sum(reconnects) == 0, "keep-alive connections were closed: %r" % reconnects
    # A client can read its response before the worker has read the API's
    # answer to its post: give the last posts their moment.
    deadline = time.monotonic() + 10
    while sum(w.handled for w in workers) < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(w.handled for w in workers) == REQUESTS
    assert all(status == 200 for w in workers for status in w.post_statuses)
    assert all(w.handled > 0 for w in workers), [w.handled for w in workers]
