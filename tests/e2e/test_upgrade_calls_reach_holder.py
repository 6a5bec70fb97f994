"""End to end, across an upgrade (SIGUSR2): a worker's calls on a request it
pulled from the old generation reach the generation that holds it, whichever
API process the worker asks (here GET .../state, plain and long-polled,
until the client leaves and the old generation retires)."""
from __future__ import annotations

import json

from conftest import api_get
from test_upgrade import _upgrade_holding_one_request, adopt, finish  # noqa: F401


def _state(s, ident: str, query: str = "") -> tuple[int, dict]:
    status, body = api_get(s, "/api/v2/requests/%s/state%s" % (ident, query), timeout=10)
    return status, json.loads(body)


def test_state_of_the_other_generations_request_is_asked_there(tmp_path, adopt):  # noqa: F811
    """After an upgrade, a worker's new connection reaches the new API
    process: GET .../state of a request pulled from the old generation was
    404 "unknown" there (the other calls are passed on), so a worker
    watching for cancellation dropped a request whose client still waits."""
    before, s, client, old_ident, mark = _upgrade_holding_one_request(tmp_path)
    try:
        assert _state(s, old_ident) == (200, {"state": "open"})
        assert _state(s, old_ident, "?wait=0.2") == (200, {"state": "open"})
        client.close()      # the client leaves: the old generation says so
        assert _state(s, old_ident, "?wait=5") == (200, {"state": "gone"})
        s.wait_log(r"prack.master: generation 1 retired", since=mark)
    except BaseException:
        s.stop_current()    # the new master is adopted, not the fixture's
        raise
    finish(s, before)
