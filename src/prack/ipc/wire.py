"""Message shapes shared by the acceptors, the API process and workers.

Three wires meet here:

* ring records (acceptor -> API process, through shared memory),
* frames on the Unix socket between each acceptor and the API process,
* the worker REST API's JSON bodies (msgspec Structs).

Identifiers handed to workers encode everything routing needs: generation,
acceptor index, connection slot and the request's random 62-bit key. The key
is what makes a stale or forged identifier useless: the acceptor's slot table
(in the segment) only accepts the key of the request it is waiting on.
"""
from __future__ import annotations

import re
import struct

import msgspec

# -- ring records ------------------------------------------------------------
# generation, acceptor, slot, key, queued_at (unix seconds), env_len, body_len, flags;
# then the environment (a msgpack map of strings) and the body
RECORD = struct.Struct("<HHIQdIII")
# RECORD flags
RECF_INPUT_PENDING = 1   # Expect: 100-continue: the body is read only once a worker takes it

# -- slot words ----------------------------------------------------------------
# A slot word is key << 2 | state. The acceptor writes QUEUED when it pushes a
# record; the API process moves QUEUED -> TAKEN when a worker pulls it and
# TAKEN -> FREE when the worker answers; the acceptor moves any state to GONE
# when the client leaves or a deadline passes. Both sides use CAS/exchange,
# so exactly one of "answer" and "give up" wins.
SLOT_FREE, SLOT_QUEUED, SLOT_TAKEN, SLOT_GONE = 0, 1, 2, 3


# -- identifiers ---------------------------------------------------------------
_ID_RE = re.compile(r"[0-9a-f]{32}")


def make_identifier(generation: int, acceptor: int, slot: int, key: int) -> str:
    """32 hex digits: u16 generation, u16 acceptor, u32 slot, u64 key."""
    return "%032x" % (generation << 112 | acceptor << 96 | slot << 64 | key)


def parse_identifier(ident: str) -> tuple[int, int, int, int] | None:
    """(generation, acceptor, slot, key), or None when malformed."""
    if type(ident) is not str or not _ID_RE.fullmatch(ident):
        return None
    n = int(ident, 16)
    return n >> 112, n >> 96 & 0xFFFF, n >> 64 & 0xFFFFFFFF, n & 0xFFFFFFFFFFFFFFFF


# -- Unix-socket frames --------------------------------------------------------
# Every frame: u32 length of the rest, then u8 type, then the type's payload.
FRAME_LEN = struct.Struct("<I")
F_HELLO = 1      # acceptor -> API: u16 acceptor index, u16 generation, u32 pid
F_WAKE = 2       # acceptor -> API: its ring has records and the API slept
F_RESPONSE = 3   # API -> acceptor: RESPONSE header, header block, body
# Streams (issue 7). F_START has the RESPONSE layout (empty body); the others
# are a STREAM header followed by their payload.
F_START = 4      # API -> acceptor: a streamed response's head (status 101: a WebSocket accept)
F_DATA = 5       # API -> acceptor: number = sequence; payload: a body chunk, or for a
                 #   WebSocket a message (flags = opcode)
F_END = 6        # API -> acceptor: the stream ends; flags SF_ABORT = the worker failed
                 #   mid-stream; payload: trailer block, or a WebSocket close's code + reason
F_ACK = 7        # acceptor -> API: number = sequence of the F_DATA now buffered with
                 #   room for more (the worker's post is answered then)
F_GONE = 8       # acceptor -> API: the client of a taken or streaming request has gone
F_INPUT = 9      # API -> acceptor: a worker took a RECF_INPUT_PENDING request: send
                 #   100 Continue and read its body
F_INPUT_DONE = 10  # acceptor -> API: number = body length; flags SF_SPOOLED = the body
                 #   is in the spool file, else it is the payload; SF_ABORT = it failed
F_WS_EVENT = 11  # acceptor -> API: flags = opcode; payload: a WebSocket message from the client
F_CREDIT = 12    # API -> acceptor: number = WebSocket bytes a worker has received

# type, slot, key, number, flags
STREAM = struct.Struct("<BIQQB")
SF_ABORT = 1
SF_SPOOLED = 2

HELLO = struct.Struct("<BHHI")
WAKE_FRAME = FRAME_LEN.pack(1) + bytes([F_WAKE])
# type, slot, key, status, flags, header block length, declared length
RESPONSE = struct.Struct("<BIQHBIQ")

# RESPONSE flags
RF_CLOSE = 1        # the worker asked for Connection: close
RF_HAS_DATE = 2     # the worker sent its own Date
RF_HAS_SERVER = 4   # the worker sent its own Server
RF_ERROR = 8        # Prack's own error page for `status` (e.g. 502)
RF_DECLARED = 16    # declared length holds the worker's Content-Length (HEAD)


def complete_frames(buf: bytearray):
    """Yield (start, end) of each complete length-prefixed frame in buf (the
    payload after the u32 length); the caller deletes buf[:end of the last]."""
    pos = 0
    end = len(buf)
    unpack = FRAME_LEN.unpack_from
    while end - pos >= 4:
        size = unpack(buf, pos)[0]
        if end - pos - 4 < size:
            return
        yield pos + 4, pos + 4 + size
        pos += 4 + size


NO_LENGTH = (1 << 64) - 1


def response_frame(slot: int, key: int, status: int, flags: int,
                   header_block: bytes, body: bytes, declared: int = NO_LENGTH,
                   kind: int = F_RESPONSE) -> list[bytes]:
    """The buffers of one RESPONSE frame, or of an F_START (no body), sent
    with sendmsg, no join."""
    head = RESPONSE.pack(kind, slot, key, status, flags, len(header_block), declared)
    size = len(head) + len(header_block) + len(body)
    return [FRAME_LEN.pack(size), head, header_block, body]


def stream_frame(kind: int, slot: int, key: int, number: int = 0, flags: int = 0,
                 payload: bytes = b"") -> list[bytes]:
    """The buffers of one STREAM-layout frame (F_DATA, F_END, F_ACK, ...)."""
    head = STREAM.pack(kind, slot, key, number, flags)
    if payload:
        return [FRAME_LEN.pack(len(head) + len(payload)), head, payload]
    return [FRAME_LEN.pack(len(head)), head]


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


# -- the request environment -----------------------------------------------------

_env_keys: dict[bytes, str | None] = {}
# Dropped from the environment: the body arrives de-chunked and complete,
# Content-Type/Length have their CGI names, and a "Proxy" header would become
# HTTP_PROXY, which CGI-style code takes for its outgoing proxy ("httpoxy").
_NOT_HTTP = {b"content-type": None, b"content-length": None, b"transfer-encoding": None,
             b"proxy": None}


def env_key(name: bytes) -> str | None:
    """HTTP_* name for a lower-case header name, or None for headers that are
    not passed. Names with '_' are dropped, as nginx does by default: they
    would alias the '-' spelling (X_Forwarded_For vs X-Forwarded-For)."""
    key = _env_keys.get(name, 0)
    if key == 0:
        if name in _NOT_HTTP or b"_" in name:
            key = None
        else:
            key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
        if len(_env_keys) < 4096 and len(name) <= 64:   # as http._names
            _env_keys[name] = key
    return key


def split_host(host: str, default_port: str) -> tuple[str, str]:
    if host.startswith("["):
        end = host.find("]")
        name = host[:end + 1]
        rest = host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name.lower(), port or default_port


_encode_msgpack = msgspec.msgpack.Encoder().encode


def msgpack_pairs(pairs: dict[str, str]) -> bytes:
    """The key/value pairs of a small dict (fewer than 16 keys) in msgpack,
    without the map's header: the fixed parts the C environment writer
    (`prk_write_env`, via `Request.environ_msgpack`) adds to its map."""
    return _encode_msgpack(pairs)[1:]


def environ(req, server_name: str, server_port: str, remote_addr: str,
            remote_port: str) -> dict:
    """The Rack/CGI environment for one request (all values strings).

    The readable reference of the environment the acceptor sends: its hot
    path has `prk_write_env` (C, head.c) write the same map as msgpack.
    tests/test_cbuild_env.py and fuzz/fuzz_python.py check that the two
    agree on many requests; change both together."""
    if req.host:
        server_name, server_port = split_host(req.host, "80")
    env = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": req.path,
        "QUERY_STRING": req.query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": req.protocol,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "rack.url_scheme": "http",
    }
    if req.content_type is not None:
        env["CONTENT_TYPE"] = req.content_type.decode("latin-1")
    if req.content_length is not None:
        # The body's size, also when it is not in req.body (spooled, or still
        # to come after 100 Continue).
        env["CONTENT_LENGTH"] = str(req.content_length)
    for name, value in req.headers:
        key = env_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        old = env.get(key)
        if old is None:
            env[key] = text
        else:
            # RFC 9110 5.3 joins repeats with ", "; cookies use "; " (RFC 6265 5.4).
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
    if req.host and env.get("HTTP_HOST") != req.host:
        # An absolute-form target's authority replaces the Host field, which
        # the server must ignore (RFC 9112 3.2.2): apps build URLs from it.
        env["HTTP_HOST"] = req.host
    return env
