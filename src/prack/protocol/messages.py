"""The worker REST API's bodies (msgspec Structs): what workers pull and post
on API v1 (JSON) and v2 (JSON, or msgpack on request). The worker SDK
decodes the same shapes."""
from __future__ import annotations

import msgspec

# -- worker API v1 -------------------------------------------------------------

class PulledRequest(msgspec.Struct):
    """GET /api/v1/request -> 200. `body` is bytes, which JSON carries as
    base64."""
    identifier: str
    environment: dict[str, str]
    body: bytes


class PostedResponse(msgspec.Struct):
    """POST /api/v1/response (or /api/v1/request, the original protocol)."""
    identifier: str
    code: int | str
    headers: dict[str, str | list[str]] | None = None
    body: bytes | None = None


class Message(msgspec.Struct):
    message: str


class Error(msgspec.Struct):
    """Every API error; also the body of POST /api/v2/requests/{id}/error."""
    error: str


# -- worker API v2 ---------------------------------------------------------------
# JSON by default (bytes as base64), msgpack (bytes raw) on request.

class RequestItem(msgspec.Struct):
    """One request of a v2 batch. `deadline` is a Unix time (seconds): past
    it Prack has answered the client 504 and a response gets `gone`."""
    id: str
    env: dict[str, str]
    body: bytes
    deadline: float


class RequestBatch(msgspec.Struct):
    """GET /api/v2/requests -> 200 (an empty list when nothing came in time)."""
    requests: list[RequestItem]


def msgpack_request_batch(items: list[bytes], count: int | None = None) -> bytes:
    """The msgpack RequestBatch of RequestItems encoded one by one (each while
    its record is in the ring, the environment spliced in as the acceptor
    encoded it): a one-key map and an array header before the items.
    `count`: the number of items when a part holds several."""
    n = len(items) if count is None else count
    if n < 16:
        head = b"\x81\xa8requests" + bytes((0x90 | n,))
    elif n < 0x10000:
        head = b"\x81\xa8requests\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\x81\xa8requests\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


class ResponseItem(msgspec.Struct):
    """One response of POST /api/v2/responses. Headers are an object as in
    v1 or a list of [name, value] pairs (order and repeats kept)."""
    id: str
    status: int
    headers: dict[str, str | list[str]] | list[tuple[str, str]] | None = None
    body: bytes | None = None


class ResponseBatch(msgspec.Struct):
    """POST /api/v2/responses. Items are decoded one by one, so one bad item
    does not lose the others."""
    responses: list[msgspec.Raw]


class ItemResult(msgspec.Struct, omit_defaults=True):
    """The outcome of one posted response: ok, gone, unknown or invalid."""
    id: str
    status: str
    error: str | None = None


class ResultBatch(msgspec.Struct):
    results: list[ItemResult]


class ResultsAndRequests(msgspec.Struct):
    """POST /api/v2/responses?max=N&wait=S (post and pull in one call): the
    results of the posted items, then the next batch of requests, pulled as
    GET /api/v2/requests would (an empty list when none came in time)."""
    results: list[ItemResult]
    requests: list[RequestItem]
