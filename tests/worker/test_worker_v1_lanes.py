"""Review D: the SDK's lanes on API v1."""
from __future__ import annotations

import http.client

from prack.config import BY_NAME
from prack.worker import lanes
from prack.worker.sdk import Response, Worker


def test_a_v1_lane_outwaits_the_longest_poll_a_front_may_make(start_server, monkeypatch):
    """GET /api/v1/request takes no `wait`: it long-polls for the front's
    api.poll_timeout (up to the config's bound). A v1 lane's connection used
    the lanes' timeout (wait + 30 s), so against a front with poll_timeout
    60 it timed out on every idle poll, called the front down, backed off,
    and could drop a request the front handed over as it hung up."""
    made = []

    class Recording(lanes.Connection):
        def __init__(self, host, port, timeout):
            made.append(timeout)
            super().__init__(host, port, timeout)

    monkeypatch.setattr(lanes, "Connection", Recording)
    server = start_server(api_poll_timeout=60)
    worker = Worker(lambda req: Response(200, [], b"v1 " + req.env["PATH_INFO"].encode()),
                    [server.api], concurrency=1, wait=1.0, api="v1").start()
    try:
        c = server.client()
        c.request("GET", "/x")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"v1 /x")
    finally:
        worker.stop()
        # the lane is in a 60 s poll: it is not waited for here
    longest = BY_NAME["api.poll_timeout"].max
    assert made, "the lane made no connection"
    assert min(made) > longest, (made, longest)
