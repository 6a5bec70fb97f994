"""The worker REST API's bodies (msgspec Structs): what workers pull and post
on API v1 (JSON) and v2 (JSON, or msgpack on request). The worker SDK
decodes the same shapes."""
from __future__ import annotations

import msgspec

# A header value as the clients of the original Prack write it in JSON: text,
# or a number or boolean (PHP's json_encode of an integer Content-Length),
# sent as its JSON text; an array repeats the field; null leaves it out.
# Decoding these stays in msgspec: a JSON string is read as fast as with a
# str-only type. v2 msgpack keeps the typed form (TypedResponseItem).
HeaderScalar = str | int | float | bool
HeaderValue = HeaderScalar | list[HeaderScalar] | None

# -- worker API v1 -------------------------------------------------------------

class PulledRequest(msgspec.Struct):
    """GET /api/v1/request -> 200. `body` is bytes, which JSON carries as
    base64."""
    identifier: str
    environment: dict[str, str]
    body: bytes


class PostedResponse(msgspec.Struct):
    """POST /api/v1/response (or /api/v1/request, the original protocol).
    `body` is base64; a body that msgspec's strict reading refuses (line
    breaks, no padding, the URL-safe alphabet) is read again by
    `reread_posted_response`."""
    identifier: str
    code: int | str
    headers: dict[str, HeaderValue] | None = None
    body: bytes | None = None


class _PostedResponseText(msgspec.Struct):
    """PostedResponse with its body left as text, for the lenient reading."""
    identifier: str
    code: int | str
    headers: dict[str, HeaderValue] | None = None
    body: str | None = None


_decode_posted_text = msgspec.json.Decoder(_PostedResponseText).decode
_decode_base64 = msgspec.json.Decoder(bytes).decode
# RFC 2045 6.8: line breaks (and other whitespace) are not data; RFC 4648 5:
# the URL-safe alphabet writes 62 and 63 as - and _.
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
_WHITESPACE = (b"\n", b"\r", b" ", b"\t", b"\v", b"\f")
_WHITESPACE_BYTES = b"".join(_WHITESPACE)
_BAD_BODY = ("invalid base64 (the standard or URL-safe alphabet, with or without "
             "padding and line breaks)")


def decode_base64_lenient(text: str) -> bytes:
    """Base64 as the original Prack read it: line breaks and other
    whitespace anywhere (Ruby's Base64.encode64, Perl's MIME::Base64, PHP's
    chunk_split), padding optional, the URL-safe alphabet too. Anything else
    is refused (ValueError): a stray character is not skipped."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(_BAD_BODY) from None
    if len(data) < 16384:
        data = data.translate(_URL_SAFE, _WHITESPACE_BYTES)
    else:
        # On large bodies one replace per kind of whitespace present is four
        # times as fast as a translate that deletes (most hold only \n, or
        # \r\n); on small ones the loop costs more than it saves.
        for space in _WHITESPACE:
            if space in data:
                data = data.replace(space, b"")
        if b"-" in data or b"_" in data:
            data = data.translate(_URL_SAFE)
    if b'"' in data or b"\\" in data:
        raise ValueError(_BAD_BODY)
    # msgspec's strict base64 reader, on the cleaned text as a JSON string:
    # three times as fast as binascii's (strict_mode), and as strict.
    try:
        return _decode_base64(b'"%s%s"' % (data, b"=" * (-len(data) % 4)))
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ValueError(_BAD_BODY) from None


def reread_posted_response(data, exc: Exception) -> PostedResponse:
    """The second reading of a v1 post that the strict decoder refused with
    `exc`: when only its body was refused, the body is read leniently
    (decode_base64_lenient). Raises msgspec.ValidationError (or `exc`)
    when the post is invalid anyway. A clean post never comes here: the
    strict reading, in C, stays the fast path."""
    if not (isinstance(exc, msgspec.ValidationError) and str(exc).endswith("- at `$.body`")):
        raise exc
    msg = _decode_posted_text(data)
    body = msg.body
    if body is not None:
        try:
            body = decode_base64_lenient(body)
        except ValueError as bad:
            raise msgspec.ValidationError("%s - at `$.body`" % bad) from None
    return PostedResponse(msg.identifier, msg.code, msg.headers, body)


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
    """One response of POST /api/v2/responses in JSON. Headers are an
    object as in v1 or a list of [name, value] pairs (order and repeats
    kept); values and the status are read as leniently as v1's."""
    id: str
    status: int | str
    headers: dict[str, HeaderValue] | list[tuple[str, HeaderScalar | None]] | None = None
    body: bytes | None = None


class TypedResponseItem(msgspec.Struct):
    """ResponseItem in msgpack: typed, as a msgpack encoder writes it (the
    status an integer, header values strings)."""
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
