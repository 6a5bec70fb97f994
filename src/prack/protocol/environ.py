"""The Rack/CGI environment of a request (what a worker gets as `env`): the
readable reference, with the helpers the acceptor's fast path shares (its
own environment is written by C, prk_write_env in head.c)."""
from __future__ import annotations

import msgspec

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
    tests/protocol/test_environ_c.py and fuzz/fuzz_python.py check that the two
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
