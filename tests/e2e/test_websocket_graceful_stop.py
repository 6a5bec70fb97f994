"""Review D: a graceful stop ends every WebSocket with 1001, and the worker
gets that close event even when its events connection was idle (between
two calls) as the API process began to stop."""
from __future__ import annotations

import threading

from prack.protocol import websocket as ws
from test_websocket import Api, connect


def test_a_websocket_end_is_fetched_after_the_api_process_began_stopping(start_server):
    """The master stops the acceptors, then the API process. Each WebSocket
    ended with a close event (1001) for its worker; the API process closed
    every idle worker connection as it began to stop, so a worker between
    two events calls lost its connection instead (tests/test_e2e_websocket's
    graceful-stop test failed 4 times in 20 under load, before this session
    too). Now the stop waits (up to its deadline) for those events to be
    fetched."""
    server = start_server("--log-level", "debug", acceptors=1)
    api = Api(server)
    got = {}
    opener = threading.Thread(target=lambda: got.setdefault("client", connect(server, "/late")))
    opener.start()
    ident = api.pull()
    status, answer = api.call("POST", "/api/v2/requests/%s/head" % ident,
                              {"status": 101, "headers": {}})
    assert status == 200, answer
    opener.join(10)
    client = got["client"]
    events = Api(server)            # the session's connection, idle between calls
    status, answer = events.call("GET", "/api/v2/requests/%s/events?wait=0" % ident)
    assert (status, answer["events"]) == (200, [])

    mark = server.log_mark()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    try:
        event = client.recv_event()
        assert isinstance(event, ws.Close) and event.code == ws.CLOSE_GOING_AWAY
        client.close(ws.CLOSE_GOING_AWAY)
        client.wait_eof()
        client.shutdown()
        # The API process has begun its stop (after the acceptor's).
        server.wait_log(r"API process stopping \(1 WebSocket ends not yet fetched\)", since=mark)
        status, answer = events.call("GET", "/api/v2/requests/%s/events?wait=5" % ident)
        assert status == 200, answer
        close = answer["events"][-1]
        assert (close["type"], close["code"]) == ("close", ws.CLOSE_GOING_AWAY)
    finally:
        stopper.join(30)
    assert server.proc.returncode == 0
