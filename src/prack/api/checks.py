"""Checks and encodings shared by the API process's calls: a worker's
status and headers turned into a validated header block, the two encodings
of API v2 calls (JSON and msgpack), and errors made readable for the worker
and the log."""
from __future__ import annotations

import math
import urllib.parse

import msgspec

from prack.ipc import frames
from prack.protocol import messages
from prack.protocol.http import parse_http_date

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Characters a header value may not carry: CTLs except HTAB (RFC 9110 5.5).
_BAD_VALUE = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}
# Framing and hop-by-hop fields are Prack's business (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "proxy-connection", "te", "trailer", "upgrade"})

# The per-request calls: /api/v2/requests/{id}/<verb>.
V2_PREFIX = "/api/v2/requests/"
# Whether the request an identifier names waits for an answer (lookup), and
# what became of one posted response (v2 names it per item).
OK, GONE, UNKNOWN, INVALID = "ok", "gone", "unknown", "invalid"

JSON_TYPE = b"Content-Type: application/json\r\n"
MSGPACK_TYPE = b"Content-Type: application/msgpack\r\n"


class _IdOnly(msgspec.Struct):
    id: str


class Codec:
    """Encoding of v2 calls: JSON (bodies base64) or msgpack (raw bytes)."""

    def __init__(self, module):
        self.name = "msgpack" if module is msgspec.msgpack else "JSON"
        self.msgpack = module is msgspec.msgpack
        self.encode = encode = module.Encoder().encode
        self.decode_batch = module.Decoder(messages.ResponseBatch).decode
        # JSON items read header values and statuses as leniently as v1;
        # msgpack ones keep the typed form.
        self.decode_item = module.Decoder(messages.TypedResponseItem if self.msgpack
                                          else messages.ResponseItem).decode
        self.decode_id = module.Decoder(_IdOnly).decode
        self.decode_error = module.Decoder(messages.Error).decode
        self.decode_results = module.Decoder(messages.ResultBatch).decode
        self.ctype = MSGPACK_TYPE if self.msgpack else JSON_TYPE
        self.empty_batch = encode(messages.RequestBatch([]))


def wants_msgpack(headers) -> bool:
    """msgpack when the worker accepts it or, without Accept, sends it."""
    ctype = None
    for name, value in headers:
        if name == b"accept":
            return b"application/msgpack" in value.lower()
        if name == b"content-type":
            ctype = value
    return ctype is not None and ctype.split(b";")[0].strip().lower() == b"application/msgpack"


def sends_msgpack(headers) -> bool:
    """Whether a v2 call's body is msgpack (its Content-Type says so)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/msgpack"
    return False


def identifier_of(body, decode) -> str | None:
    """The identifier of a posted response that did not decode whole."""
    try:
        msg = decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return getattr(msg, "identifier", None) or getattr(msg, "id", None)


class BadParameter(ValueError):
    """A query parameter of an API call is invalid; the message names it."""


def query_params(query: str, wait: float, wait_cap: float, most: int = 0,
                 most_cap: int = 0) -> tuple[float, int]:
    """(wait, max) of a long-polling call's query string. `wait` is seconds
    >= 0, capped by `wait_cap` (api.poll_timeout); `max` a whole number from
    1, capped by `most_cap`, and allowed only when `most_cap` is set. The
    arguments `wait` and `most` are the defaults. Unknown or repeated names
    raise BadParameter."""
    allowed = "wait and max" if most_cap else "wait"
    seen = set()
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise BadParameter("%s: given more than once" % name[:40])
        seen.add(name)
        if name == "wait":
            try:
                wait = float(value)
            except ValueError:
                wait = math.nan
            if not (math.isfinite(wait) and wait >= 0):
                raise BadParameter("wait: expected seconds (a number >= 0), got %r"
                                   % value[:40])
        elif name == "max" and most_cap:
            if not (value.isdigit() and value.isascii()) or not value.strip("0"):
                raise BadParameter("max: expected a whole number from 1, got %r" % value[:40])
            # Larger than the server's maximum is capped, however long.
            most = most_cap if len(value) > 9 else min(int(value), most_cap)
        else:
            raise BadParameter("%s: unknown parameter (use %s)" % (name[:40], allowed))
    return min(wait, wait_cap), most


class BadResponse(Exception):
    """A worker's posted response is invalid; the message names the field."""


class _HeadersOnly(msgspec.Struct):
    headers: dict[str, msgspec.Raw] | list[msgspec.Raw] | None = None


def _faulty_header(data, module) -> str | None:
    """The name of the first header whose value is of no accepted type."""
    try:
        headers = module.decode(data, type=_HeadersOnly).headers
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    accepted = str | list[str] if module is msgspec.msgpack else messages.HeaderValue
    if type(headers) is dict:
        for name, raw in headers.items():
            try:
                module.decode(raw, type=accepted)
            except (msgspec.ValidationError, msgspec.DecodeError):
                return name
    return None


def describe(exc: Exception, codec=None, data=None) -> str:
    """msgspec's message, with its `$.field` path turned into the field name
    (with the posted `data`, a header value's path names its header)."""
    text = str(exc)
    if " - at `$." in text:
        reason, _, where = text.partition(" - at `$.")
        where = where.rstrip("`")
        if where.startswith("headers[...]") and data is not None:
            name = _faulty_header(data, msgspec.msgpack if codec and codec.msgpack
                                  else msgspec.json)
            if name is not None:
                where = "headers.%s%s" % (name, where[len("headers[...]"):])
        return "%s: %s" % (where, reason)
    if isinstance(exc, msgspec.DecodeError):
        return "malformed %s: %s" % (codec.name if codec else "JSON", text)
    return text


def printable(text: str, limit: int = 500) -> str:
    """A worker's message for one log line: bounded, control characters escaped."""
    cut = text[:limit]
    out = cut.encode("unicode_escape").decode("ascii")
    return out + ("... (%d characters)" % len(text) if len(text) > limit else "")


# The setting that bounds a response head from a worker; its name is in the
# worker's error, so that the operator knows what to raise.
HEAD_LIMIT_SETTING = "limits.max_response_header_size"


def cached_check(max_size: int | None = None):
    """check_response, remembered, under one limit on the header block
    (`max_size`, None: none): a worker posts the same few statuses and
    header sets again and again. Only valid ones are kept, at most 256, and
    only those whose values are all strings (or null): as keys, 1, 1.0 and
    true are equal, but their header texts differ. Each function made here
    has its own limit and memory, so a remembered block needs no measuring
    again; a closure, as this runs once per posted response."""
    checked: dict = {}

    def check(code, headers, field: str) -> tuple[int, int, bytes, int]:
        try:
            key = (code, tuple(headers.items()) if type(headers) is dict else
                   tuple(headers) if headers else ())
            hit = checked.get(key)
        except TypeError:       # list values (several of one header): not kept
            return check_response(code, headers, field, max_size)
        if hit is None:
            hit = check_response(code, headers, field, max_size)
            if not _all_text(key[1]):
                return hit
            if len(checked) >= 256:
                checked.clear()
            checked[key] = hit
        return hit

    # What it was made with, readable (tests look).
    check.max_size = max_size
    check.checked = checked
    return check


# Without a limit (the API process makes its own with one).
check_response_cached = cached_check()


def head_too_large(size: int, max_size: int) -> BadResponse:
    """The error for a header block over the limit, naming the setting."""
    return BadResponse("headers: %d bytes of header fields, over %s (%d bytes)"
                       % (size, HEAD_LIMIT_SETTING, max_size))


def _all_text(pairs) -> bool:
    for pair in pairs:
        value = pair[1]
        if type(value) is not str and value is not None:
            return False
    return True


def header_text(value) -> str:
    """A JSON number or boolean header value as its JSON text (35, 1.5,
    true), as the original Prack wrote it."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float:
        return repr(value)      # the shortest text that reads back the same (1e3: 1000.0)
    if type(value) is int:
        return str(value)
    raise BadResponse("expected a string, number or boolean, got %s" % type(value).__name__)


# The last Date a worker sent that was an HTTP-date: workers that send one
# send the same for a whole second, and reading one costs microseconds.
_last_date: list = [None]


def check_response(code, headers, field: str = "code",
                   max_size: int | None = None) -> tuple[int, int, bytes, int]:
    """Validate a posted response's status (`field` names it in errors) and
    headers (a dict, or v2's list of pairs): (status, flags, header block,
    declared length).

    What reaches the client is not every field the worker gave: framing and
    hop-by-hop fields are Prack's; so are the fields the worker's own
    `Connection` names (RFC 9110 7.6.1); a `Date` that is not an HTTP-date
    (RFC 9110 5.6.7), or a second one (Date is a singleton field), is left
    out, so that the acceptor writes its own. The header block, as built
    (one "Name: value\\r\\n" line per field kept), may have at most `max_size`
    bytes (None: no limit)."""
    if type(code) is str:
        given = code
        code = code.strip()
        if not (code.isdigit() and code.isascii() and len(code) == 3):
            raise BadResponse("%s: expected a 3-digit status code, got %r" % (field, given))
        code = int(code)
    if not 200 <= code <= 999:
        raise BadResponse("%s: expected a final status code from 200 to 999, got %r"
                          % (field, code))
    flags = 0
    declared = frames.NO_LENGTH
    lines = []
    named = None                # fields the worker's Connection names
    if not headers:
        pairs = ()
    elif type(headers) is dict:
        pairs = headers.items()
    else:
        pairs = headers
    for name, value in pairs:
        if not name or not _TCHAR.issuperset(name):
            raise BadResponse("headers: %r is not a valid header name" % name)
        if type(value) is str:
            values = value.split("\n")
        elif type(value) is list:
            values = [item if type(item) is str else header_text(item) for item in value]
        elif value is None:
            continue            # null leaves this one field out
        else:
            values = (header_text(value),)
        lower = name.lower()
        for item in values:
            if _BAD_VALUE.intersection(item):
                raise BadResponse("headers.%s: value contains CR, LF, NUL or another control "
                                  "character" % name)
            if lower in _HOP_BY_HOP:
                if lower == "connection":
                    for token in item.split(","):
                        token = token.strip(" \t").lower()
                        if token == "close":
                            flags |= frames.RF_CLOSE
                        elif (token and token not in _HOP_BY_HOP
                              and _TCHAR.issuperset(token)):
                            # (a hop-by-hop name is dropped anyway: no pass)
                            if named is None:
                                named = set()
                            named.add(token.encode("ascii"))
                elif lower == "content-length":
                    item = item.strip()
                    if item.isdigit() and item.isascii() and len(item) < 19:
                        declared = int(item)
                        flags |= frames.RF_DECLARED
                continue
            try:
                encoded = item.strip(" \t").encode("latin-1")
            except UnicodeEncodeError:
                encoded = item.strip(" \t").encode("utf-8")
            if lower == "date":
                if flags & frames.RF_HAS_DATE:
                    continue
                if encoded != _last_date[0]:
                    if parse_http_date(encoded) is None:
                        continue
                    _last_date[0] = encoded
                flags |= frames.RF_HAS_DATE
            elif lower == "server":
                flags |= frames.RF_HAS_SERVER
            lines.append(name.encode("ascii") + b": " + encoded + b"\r\n")
    if named is not None:
        flags = _drop_named(lines, named, flags)
    block = b"".join(lines)
    if max_size is not None and len(block) > max_size:
        raise head_too_large(len(block), max_size)
    return code, flags, block, declared


def _drop_named(lines: list, named: set, flags: int) -> int:
    """Remove from `lines` the fields that `Connection` names (they are
    hop-by-hop: RFC 9110 7.6.1, whichever comes first); the flags, without
    RF_HAS_DATE / RF_HAS_SERVER when those fields went."""
    lines[:] = [line for line in lines if line[:line.index(b":")].lower() not in named]
    if b"date" in named:
        flags &= ~frames.RF_HAS_DATE
    if b"server" in named:
        flags &= ~frames.RF_HAS_SERVER
    return flags
