"""atheris harness: bytes from a client, through prack.http, down to the
environment a worker receives.

For each input the harness plays one client connection the way the acceptor
does (acceptor/process.py `_process_one` / `_dispatch`): it feeds the bytes to a
`prack.http.RequestReader`, takes every complete request and has C write
its environment as msgpack (`Request.environ_msgpack`), exactly the calls
the acceptor makes; the decoded map must equal `prack.environ.environ`, the
readable reference. The same bytes are fed twice: whole, and cut
into the pieces the fuzzer chooses (a connection's reads), and both must give
the same requests and environments, and end the same way (see same_end for
the two allowed differences). Other checks:

- only `ProtocolError` may escape the reader, with a status the docs list;
- every environment value is a str without CR, LF or NUL (a worker that
  writes them into a response must not be able to split it), the method is a
  token, PATH_INFO is an origin path ("/...") or "*" for OPTIONS, SERVER_PORT
  is digits, HTTP_* names are upper-case with '_';
- CONTENT_LENGTH, when present, is the body's length; no body is longer
  than max_body_size; the JSON decodes back to the same dict.

Run through fuzz/run.py (`make fuzz`), or by hand:
    PYTHONPATH=src python fuzz/fuzz_python.py build/fuzz/corpus/python -max_total_time=60
The first input byte picks the limits (the defaults, or small ones that
reach 413/414/431 quickly), the second where the stream is cut (0: not
cut); the remaining bytes are the client's stream.
"""
from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["prack"], enable_loader_override=False):
    import msgspec

    from prack.protocol import environ, http
LIMITS = [
    http.Limits(1 << 20, 32 << 10, 8 << 10, 100),     # config.py defaults
    http.Limits(64, 1024, 256, 8),                     # config.py minimums
    http.Limits(0, 1024, 256, 1),
]
STATUSES = {400, 413, 414, 417, 431, 501, 505}
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HTTP_KEY = re.compile(r"HTTP_[!#$%&'*+.^_`|~0-9A-Z]+")  # '-' became '_'
BAD_CHARS = re.compile("[\r\n\x00]")
ENCODE = msgspec.json.Encoder().encode
DECODE = msgspec.json.Decoder().decode
UNPACK = msgspec.msgpack.Decoder(dict[str, str]).decode
SERVER = environ.msgpack_pairs({"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"})
REMOTE = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000"}
REMOTE_PAIRS = environ.msgpack_pairs(REMOTE)
MAX_REQUESTS = 64


def check_env(env: dict, body: bytes, limits: http.Limits) -> None:
    for key, value in env.items():
        assert type(key) is str and type(value) is str, (key, value)
        assert not BAD_CHARS.search(value), (key, value)
        if key.startswith("HTTP_"):
            assert HTTP_KEY.fullmatch(key), key
    method = env["REQUEST_METHOD"]
    assert TOKEN.fullmatch(method), method
    path = env["PATH_INFO"]
    assert path.startswith("/") or (path == "*" and method == "OPTIONS"), path
    assert "#" not in path and "#" not in env["QUERY_STRING"]
    assert env["SERVER_PORT"].isdigit(), env["SERVER_PORT"]
    assert env["SERVER_PROTOCOL"] in ("HTTP/1.0", "HTTP/1.1")
    assert "HTTP_TRANSFER_ENCODING" not in env and "HTTP_CONTENT_LENGTH" not in env
    if "CONTENT_LENGTH" in env:
        assert env["CONTENT_LENGTH"] == str(len(body))
    assert len(body) <= limits.max_body_size
    assert DECODE(ENCODE(env)) == env


def run(pieces: list[bytes], limits: http.Limits) -> list:
    """What one connection yields: [(env, body) ..., final error status]."""
    reader = http.RequestReader(limits)
    out: list = []
    for piece in pieces:
        reader.feed(piece)
        while True:
            try:
                req = reader.maybe_read_request()
            except http.ProtocolError as exc:
                assert exc.status in STATUSES, exc.status
                out.append(exc.status)
                return out
            if req is None:
                break
            env = UNPACK(bytes(req.environ_msgpack(SERVER, 2, REMOTE_PAIRS, 2)))
            ref = environ.environ(req, "127.0.0.1", "8080", *REMOTE.values())
            assert env == ref, (env, ref)
            check_env(env, req.body, limits)
            out.append((env, req.body, req.keep_alive))
            if len(out) >= MAX_REQUESTS:
                return out
            reader.next()
    out.append("incomplete" if reader.buf or not reader.idle else "idle")
    return out


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    limits = LIMITS[data[0] % len(LIMITS)]
    stream = data[2:]
    whole = run([stream], limits)
    if stream and data[1]:
        # data[1] picks 1-4 cut points (a small LCG walks from it)
        x, pos = data[1], set()
        for _ in range(1 + (data[1] & 3)):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            pos.add(x % (len(stream) + 1))
        pos = sorted(pos)
        pieces = [stream[a:b] for a, b in zip([0] + pos, pos + [len(stream)])]
        split = run(pieces, limits)
        assert split[:-1] == whole[:-1], (pieces, split, whole)
        assert same_end(split[-1], whole[-1]), (pieces, split, whole)


def same_end(split, whole) -> bool:
    """How the two runs may end differently. RequestReader only calls the
    parser when a new LF arrived (it saves rescans for byte-at-a-time
    senders), so an error the whole input shows can still be pending
    ("incomplete") when it came in pieces: the connection then ends on the
    size limits or header_timeout instead. And a size limit (413, 414, 431)
    may be crossed before or after a grammar error depending on where the
    reads end."""
    if split == whole:
        return True
    if split == "incomplete" and type(whole) is int:
        return True
    return type(split) is int and type(whole) is int and bool({split, whole} & {413, 414, 431})


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
