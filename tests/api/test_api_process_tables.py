"""The API process is composed: ApiServer holds the loop and three tables,
and each feature registers its handlers there (prack.api.process)."""
from __future__ import annotations

import pathlib


from prack.api import lifecycle, posts, pulls, streams, uploads, websockets
from prack.api.process import ApiServer
from prack.child.loop import ChildLoop
from prack.ipc import frames

API_DIR = pathlib.Path(__file__).resolve().parents[2] / "src" / "prack" / "api"


def test_the_process_has_one_base_the_shared_loop():
    assert ApiServer.__bases__ == (ChildLoop,)


def test_every_endpoint_is_one_entry_of_a_table(inprocess_api):
    assert {path: set(methods) for path, methods in inprocess_api.routes.items()} == {
        "/api/v1/request": {"GET", "POST"},
        "/api/v1/response": {"POST"},
        "/api/v2/requests": {"GET"},
        "/api/v2/responses": {"POST"},
        "/livez": {"GET", "HEAD"},
        "/readyz": {"GET", "HEAD"},
    }
    assert {verb: set(methods) for verb, methods in inprocess_api.id_routes.items()} == {
        "error": {"POST"}, "input": {"GET"}, "head": {"POST"}, "body": {"POST"},
        "end": {"POST"}, "state": {"GET"}, "events": {"GET"}, "send": {"POST"},
    }


def test_each_handler_belongs_to_the_feature_that_owns_it(inprocess_api):
    owner = {
        "/api/v1/request": pulls.Pulls, "/api/v2/requests": pulls.Pulls,
        "/api/v1/response": posts.Posts, "/api/v2/responses": posts.Posts,
        "/livez": lifecycle.Lifecycle, "/readyz": lifecycle.Lifecycle,
    }
    for path, methods in inprocess_api.routes.items():
        for method, handler in methods.items():
            expected = posts.Posts if (path, method) == ("/api/v1/request", "POST") \
                else owner[path]
            assert type(handler.__self__) is expected, (path, method)
    id_owner = {"error": posts.Posts, "input": uploads.Uploads, "head": streams.Streams,
                "body": streams.Streams, "end": streams.Streams, "state": streams.Streams,
                "events": websockets.WebSockets, "send": websockets.WebSockets}
    for verb, methods in inprocess_api.id_routes.items():
        for handler in methods.values():
            assert type(handler.__self__) is id_owner[verb], verb


def test_one_table_handles_every_frame_an_acceptor_sends(inprocess_api):
    assert set(inprocess_api.link_handlers) == {frames.F_WAKE, frames.F_HELLO, frames.F_ACK,
                                      frames.F_GONE, frames.F_INPUT_DONE, frames.F_WS_EVENT}


def test_no_slot_word_is_written_out_by_hand():
    """Slot words go through Ring.mark/move/swap/holds (prack.ipc.slots
    declares their layout once)."""
    for path in API_DIR.glob("*.py"):
        text = path.read_text()
        assert "<< 2) |" not in text and "<< 2 |" not in text, path.name


def test_every_module_stays_small():
    for path in API_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) < 800, path.name
