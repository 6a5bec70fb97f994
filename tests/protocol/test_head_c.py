"""The request head's C pass (head.c) through cffi: prk_scan_head's RFC 9112
decisions and prk_write_env's msgpack environment.

Heads and saved scans are placed right before a PROT_NONE page
(parserlib.GuardedBuffer) and the environment is written so that its buffer
ends at another one: a read past the head or the scan, or a write past
`cap`, crashes the run instead of passing.
The differential half (C environment == environ.environ, the readable
reference) is in test_cbuild_env.py.
"""
from __future__ import annotations

import msgspec
import pytest

import parserlib
from prack.protocol import http
from prack.protocol import environ
from prack._native import ffi, lib

MAX_BODY = 1 << 20
IN = parserlib.GuardedBuffer(1 << 18)
SAVED = parserlib.GuardedBuffer(1 << 16)
OUT = parserlib.GuardedBuffer(1 << 20)
REQ = ffi.new("prk_request *")
HEAD = ffi.new("prk_head *")
HDRS = ffi.new("prk_header[]", 1000)
SERVER = environ.msgpack_pairs({"SERVER_NAME": "srv", "SERVER_PORT": "8080"})
REMOTE = environ.msgpack_pairs({"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5555"})
H_CODES = {getattr(lib, n): n for n in dir(lib) if n.startswith("PRK_H_")}


def scan(raw: bytes, max_body: int = MAX_BODY, max_headers: int = 100):
    """(result name, prk_head *) of a complete head."""
    n = lib.prk_parse_request(IN.place(raw), len(raw), REQ, HDRS, max_headers)
    assert n == len(raw), (n, raw)
    rc = lib.prk_scan_head(IN.place(raw), n, REQ, HDRS, max_body, HEAD)
    return ("OK" if rc == lib.PRK_HEAD_OK else H_CODES[rc]), HEAD


def flags(raw: bytes, max_body: int = MAX_BODY) -> set[str]:
    rc, h = scan(raw, max_body)
    assert rc == "OK", rc
    return {n[7:] for n in dir(lib) if n.startswith("PRK_HF_") and h.flags & getattr(lib, n)}


def saved(raw: bytes) -> bytes:
    rc, h = scan(raw)
    assert rc == "OK", rc
    return bytes(ffi.buffer(h)) + bytes(ffi.buffer(HDRS, 16 * h.num_headers))


def write_env(head: bytes, state: bytes, cap: int, length: int = -1,
              extra: bytes = REMOTE, extra_count: int = 2):
    """prk_write_env with the head, the saved scan and out[0:cap] each
    ending at a guard page: (rc, bytes)."""
    out = OUT.base + OUT.size - cap
    rc = lib.prk_write_env(out, cap, IN.place(head), len(head), SAVED.place(state), len(state),
                           length, SERVER, len(SERVER), 2, extra, len(extra), extra_count)
    return rc, (ffi.buffer(out, rc)[:] if rc >= 0 else b"")


def env_of(head: bytes, length: int = -1) -> dict:
    state = saved(head)
    cap = lib.prk_env_bound(len(head), len(state) // 16, len(SERVER), len(REMOTE))
    rc, data = write_env(head, state, cap, length)
    assert rc > 0, rc
    return msgspec.msgpack.decode(data)


def get(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


# -- prk_scan_head: every result ----------------------------------------------------

@pytest.mark.parametrize("raw, code", [
    (get(b"Host: a", line=b"GET / HTTP/2.0"), "PRK_H_VERSION"),
    (get(b"Host: a", line=b"CONNECT a:443 HTTP/1.1"), "PRK_H_CONNECT"),
    (get(b"Host: a", line=b"GET a:443 HTTP/1.1"), "PRK_H_AUTHORITY_FORM"),
    (get(b"Host: a", line=b"GET * HTTP/1.1"), "PRK_H_ASTERISK_FORM"),
    (get(b"Host: a", line=b"GET ftp://a/ HTTP/1.1"), "PRK_H_SCHEME"),
    (get(b"Host: a", line=b"GET http://u@a/ HTTP/1.1"), "PRK_H_USERINFO"),
    (get(b"Host: a", line=b"GET http:///x HTTP/1.1"), "PRK_H_AUTHORITY"),
    (get(b"Host: a", line=b"GET http://a^b/ HTTP/1.1"), "PRK_H_AUTHORITY"),
    (get(b"Host: a", line=b"GET /x#f HTTP/1.1"), "PRK_H_FRAGMENT"),
    (get(b"Host: a", line=b"GET http://a#f HTTP/1.1"), "PRK_H_FRAGMENT"),
    (get(b"Host: a", b"host: a"), "PRK_H_HOST_REPEATED"),
    (get(b"X: 1"), "PRK_H_HOST_MISSING"),
    (get(b"Host: a b"), "PRK_H_HOST_INVALID"),
    (get(b"Host: [::1"), "PRK_H_HOST_INVALID"),
    (get(b"Host: []"), "PRK_H_HOST_INVALID"),
    (get(b"Host: a:8x"), "PRK_H_HOST_INVALID"),
    (get(b"Host: \xe9"), "PRK_H_HOST_INVALID"),
    (get(b"Host: a", b"Expect: 100-continue, x"), "PRK_H_EXPECTATION"),
    (get(b"Host: a", b"Expect: 100-continue", b"Expect: 100-continue"), "PRK_H_EXPECTATION"),
    (get(b"Host: a", b"Expect:"), "PRK_H_EXPECTATION"),
    (get(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0"), "PRK_H_TE_HTTP10"),
    (get(b"Host: a", b"Content-Length: 1", b"Transfer-Encoding: chunked"), "PRK_H_TE_AND_LENGTH"),
    (get(b"Host: a", b"Transfer-Encoding: chunked, gzip"), "PRK_H_TE_NOT_FINAL"),
    (get(b"Host: a", b"Transfer-Encoding: chunked,"), "PRK_H_TE_NOT_FINAL"),
    (get(b"Host: a", b"Transfer-Encoding:"), "PRK_H_TE_NOT_FINAL"),
    (get(b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), "PRK_H_TE_TWICE"),
    (get(b"Host: a", b"Transfer-Encoding: gzip", b"transfer-encoding: CHUNKED"), "PRK_H_TE_UNSUPPORTED"),
    (get(b"Host: a", b"Transfer-Encoding: , chunked"), "PRK_H_TE_UNSUPPORTED"),
    (get(b"Host: a", b"Content-Length: +1"), "PRK_H_LENGTH_INVALID"),
    (get(b"Host: a", b"Content-Length: 1,"), "PRK_H_LENGTH_INVALID"),
    (get(b"Host: a", b"Content-Length:"), "PRK_H_LENGTH_INVALID"),
    (get(b"Host: a", b"Content-Length: \xd9\xa1"), "PRK_H_LENGTH_INVALID"),
    (get(b"Host: a", b"Content-Length: 1234567890123456789"), "PRK_H_LENGTH_TOO_LARGE"),
    (get(b"Host: a", b"Content-Length: 5, 05"), "PRK_H_LENGTH_CONFLICT"),
    (get(b"Host: a", b"Content-Length: 5", b"Content-Length: 6"), "PRK_H_LENGTH_CONFLICT"),
    (get(b"Host: a", b"Content-Length: %d" % (MAX_BODY + 1)), "PRK_H_BODY_TOO_LARGE"),
])
def test_scan_refuses(raw, code):
    assert scan(raw)[0] == code


def test_every_scan_code_is_reached_and_mapped():
    """Each PRK_H_* has its status and message in http.py (and a test above)."""
    assert set(http._HEAD_ERRORS) == set(H_CODES)
    statuses = {H_CODES[c]: s for c, (s, _) in http._HEAD_ERRORS.items()}
    assert statuses["PRK_H_VERSION"] == 505
    assert statuses["PRK_H_CONNECT"] == statuses["PRK_H_TE_UNSUPPORTED"] == 501
    assert statuses["PRK_H_EXPECTATION"] == 417
    assert statuses["PRK_H_BODY_TOO_LARGE"] == 413
    assert {s for s in statuses.values()} == {400, 413, 417, 501, 505}


def test_scan_refuses_outputs_that_do_not_fit_the_head():
    raw = get(b"Host: a", b"X: 1")
    assert scan(raw)[0] == "OK"
    p = IN.place(raw)
    for field, value in (("target_off", len(raw)), ("method_len", len(raw) + 1),
                         ("target_len", 0)):
        lib.prk_parse_request(p, len(raw), REQ, HDRS, 100)
        setattr(REQ, field, value)
        assert lib.prk_scan_head(p, len(raw), REQ, HDRS, MAX_BODY, HEAD) == lib.PRK_H_BAD_INPUT
    lib.prk_parse_request(p, len(raw), REQ, HDRS, 100)
    HDRS[1].value_off = len(raw) - 1
    HDRS[1].value_len = 2
    assert lib.prk_scan_head(p, len(raw), REQ, HDRS, MAX_BODY, HEAD) == lib.PRK_H_BAD_INPUT


def test_scan_limits_are_inclusive():
    assert scan(get(b"Host: a", b"Content-Length: %d" % MAX_BODY))[1].content_length == MAX_BODY
    rc, h = scan(get(b"Host: a", b"Content-Length: 999999999999999999"), max_body=(1 << 64) - 1)
    assert rc == "OK" and h.content_length == 999999999999999999
    assert scan(get(b"Host: a", b"Content-Length: 000000000000000001"))[1].content_length == 1
    assert scan(get(b"Host: a", b"Content-Length: 1"), max_body=0)[0] == "PRK_H_BODY_TOO_LARGE"


def test_scan_framing_flags():
    assert flags(get(b"Host: a")) == {"HTTP11", "KEEP_ALIVE"}
    assert flags(get(line=b"GET / HTTP/1.0")) == set()
    assert flags(get(b"Connection: Keep-Alive", line=b"GET / HTTP/1.0")) == {"KEEP_ALIVE"}
    assert flags(get(b"Host: a", b"Connection: foo, CLOSE")) == {"HTTP11"}
    assert flags(get(b"Host: a", b"Connection: keep-alive", b"Connection: close")) == {"HTTP11"}
    assert flags(get(b"Host: a", b"Connection: closed")) == {"HTTP11", "KEEP_ALIVE"}
    # a minor version above 1 counts as 1.1 (RFC 9112 2.3)
    assert "HTTP11" in flags(get(b"Host: a", line=b"GET / HTTP/1.7"))
    assert flags(get(b"Host: a", b"Transfer-Encoding: Chunked")) == {"HTTP11", "KEEP_ALIVE",
                                                                     "CHUNKED"}
    assert flags(get(b"Host: a", b"Content-Length: 5, 5", b"content-length: 5")) == {
        "HTTP11", "KEEP_ALIVE", "LENGTH"}
    assert scan(get(b"Host: a", b"Content-Length: 5 ,5"))[1].content_length == 5


def test_scan_expect():
    cont = {"HTTP11", "KEEP_ALIVE", "LENGTH", "CONTINUE"}
    assert flags(get(b"Host: a", b"Expect: 100-Continue", b"Content-Length: 3")) == cont
    assert "CONTINUE" in flags(get(b"Host: a", b"Expect: 100-continue",
                                   b"Transfer-Encoding: chunked"))
    # nothing to wait for: no body, an empty one, or an HTTP/1.0 client
    assert "CONTINUE" not in flags(get(b"Host: a", b"Expect: 100-continue"))
    assert "CONTINUE" not in flags(get(b"Host: a", b"Expect: 100-continue",
                                       b"Content-Length: 0"))
    assert "CONTINUE" not in flags(get(b"Expect: 100-continue", b"Content-Length: 3",
                                       line=b"POST / HTTP/1.0"))


def test_scan_host_and_target():
    def fields(raw):
        rc, h = scan(raw)
        assert rc == "OK", rc
        return (raw[h.host_off:h.host_off + h.host_len], raw[h.path_off:h.path_off + h.path_len],
                raw[h.query_off:h.query_off + h.query_len], h.host_index, h.ctype_index)
    assert fields(get(b"Host: [::1]:80", b"Content-Type: a", b"content-type: b")) == (
        b"[::1]:80", b"/", b"", 1, 3)
    assert fields(get(b"Host:", line=b"GET /a?b?c HTTP/1.1")) == (b"", b"/a", b"b?c", 1, 0)
    assert fields(get(b"Host: x", line=b"GET HTTPS://h:1?q HTTP/1.1")) == (b"h:1", b"", b"q", 1, 0)
    assert "PATH_SLASH" in flags(get(b"Host: x", line=b"GET http://h HTTP/1.1"))
    assert "PATH_SLASH" not in flags(get(b"Host: x", line=b"GET http://h/p HTTP/1.1"))
    assert "ABSOLUTE" in flags(get(line=b"GET http://h/p HTTP/1.0"))
    assert fields(get(b"Host: a", line=b"OPTIONS * HTTP/1.1"))[1] == b"*"
    assert "UPGRADE" in flags(get(b"Host: a", b"upgrade: websocket"))
    # reg-name characters, an empty port, IPv4
    for host in (b"a-b.c_d~!$&'()*+,;=%41", b"h:", b"1.2.3.4:65535", b"[fe80::1.2]:1"):
        assert scan(get(b"Host: " + host))[0] == "OK", host


# -- prk_write_env ---------------------------------------------------------------------

BROWSER = get(
    b"Host: www.Example.com:8443", b"Connection: keep-alive",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    b"Accept: text/html,*/*;q=0.8", b"Cookie: a=1", b"Accept-Language: en-GB,en;q=0.9",
    b"cookie: b=2", b"X-Latin: caf\xe9 \xff", b"X_Alias: 1", b"Proxy: evil",
    b"Content-Type: text/plain; charset=\xe9", b"Content-Length: 3",
    b"Transfer-Encoding-X: kept", b"x-repeat: 1", b"X-REPEAT: 2", b"X-Repeat:",
    line=b"POST /p%20q?a=1&b HTTP/1.1")


def test_env_values():
    env = env_of(BROWSER, 3)
    assert env == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/p%20q",
        "QUERY_STRING": "a=1&b", "SERVER_NAME": "www.example.com", "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1", "rack.url_scheme": "http",
        "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5555",
        "CONTENT_TYPE": "text/plain; charset=\xe9", "CONTENT_LENGTH": "3",
        "HTTP_HOST": "www.Example.com:8443", "HTTP_CONNECTION": "keep-alive",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "HTTP_ACCEPT": "text/html,*/*;q=0.8", "HTTP_COOKIE": "a=1; b=2",
        "HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9", "HTTP_X_LATIN": "caf\xe9 \xff",
        "HTTP_TRANSFER_ENCODING_X": "kept", "HTTP_X_REPEAT": "1, 2, ",
    }


def test_env_hosts():
    env = env_of(get(line=b"GET / HTTP/1.0"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("srv", "8080")
    assert "HTTP_HOST" not in env
    env = env_of(get(b"Host:"))          # empty Host: the listener's name, HTTP_HOST ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTP_HOST"]) == ("srv", "8080", "")
    env = env_of(get(b"Host: [::1]"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "80")
    env = env_of(get(b"Host: [::1]:"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "80")
    # RFC 9112 3.2.2: an absolute target's authority replaces Host
    env = env_of(get(b"Host: other", line=b"GET http://A.b:81?x HTTP/1.1"))
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("A.b:81", "a.b", "81")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/", "x")
    env = env_of(get(line=b"GET http://h/p HTTP/1.0"))
    assert (env["HTTP_HOST"], env["PATH_INFO"], env["SERVER_PROTOCOL"]) == ("h", "/p", "HTTP/1.0")
    env = env_of(get(b"Host: a", line=b"OPTIONS * HTTP/1.1"))
    assert env["PATH_INFO"] == "*"


def test_env_lengths_use_every_msgpack_form():
    """Strings of 31/32/255/256/65535+ bytes and maps of 15/16 keys."""
    for n in (0, 1, 31, 32, 255, 256, 300, 40000):
        head = get(b"Host: a", b"X-V: " + b"v" * n, b"X-L: " + b"\xe9" * n)
        env = env_of(head)
        assert env["HTTP_X_V"] == "v" * n and env["HTTP_X_L"] == "\xe9" * n
    for extra_fields in range(0, 4):
        head = get(b"Host: a", *(b"X-%d: %d" % (i, i) for i in range(extra_fields)))
        env = env_of(head)
        assert len(env) == 11 + extra_fields      # 15 and 16 keys among them
        state = saved(head)
        rc, data = write_env(head, state, 4096)
        assert (data[0] == 0xde) == (len(env) >= 16)
    many = get(b"Host: a", *(b"X-%d: %d" % (i, i) for i in range(999)))
    n = lib.prk_parse_request(IN.place(many), len(many), REQ, HDRS, 1000)
    assert n == len(many)
    rc = lib.prk_scan_head(IN.place(many), n, REQ, HDRS, MAX_BODY, HEAD)
    assert rc == 0
    state = bytes(ffi.buffer(HEAD)) + bytes(ffi.buffer(HDRS, 16 * 1000))
    rc, data = write_env(many, state, lib.prk_env_bound(n, 1000, len(SERVER), len(REMOTE)))
    env = msgspec.msgpack.decode(data)
    assert len(env) == 11 + 999 and env["HTTP_X_998"] == "998"


def test_env_content_length_is_given_by_the_caller():
    head = get(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1")
    assert "CONTENT_LENGTH" not in env_of(head)
    assert env_of(head, 12345678901)["CONTENT_LENGTH"] == "12345678901"
    assert env_of(head, 0)["CONTENT_LENGTH"] == "0"
    assert "HTTP_TRANSFER_ENCODING" not in env_of(head)


def test_env_every_write_is_bounded():
    """Every capacity below the size needed says NO_ROOM and writes nothing
    past cap (the buffer ends at a guard page); the bound always suffices."""
    state = saved(BROWSER)
    need, full = write_env(BROWSER, state, 1 << 16, 3)
    assert need > 0
    assert need <= lib.prk_env_bound(len(BROWSER), len(state) // 16, len(SERVER), len(REMOTE))
    for cap in range(need):
        assert write_env(BROWSER, state, cap, 3)[0] == lib.PRK_ENV_NO_ROOM, cap
    assert write_env(BROWSER, state, need, 3) == (need, full)


def test_env_bound_holds_for_worst_cases():
    worst = [
        get(b"Host: " + b"a" * 8000, line=b"GET http://" + b"b" * 8000 + b" HTTP/1.1"),
        get(b"Host: a", *(b"X: " + b"\xff" * 300 for _ in range(90))),
        get(b"Host: a", *(b"A" * 60 + b"%d: \xff" % i for i in range(99))),
        get(b"Host: a", b"Content-Type: " + b"\xff" * 20000),
    ]
    for head in worst:
        state = saved(head)
        bound = lib.prk_env_bound(len(head), len(state) // 16, len(SERVER), len(REMOTE))
        rc, data = write_env(head, state, bound, 1 << 40)
        assert 0 < rc <= bound
        msgspec.msgpack.decode(data)


def test_env_refuses_a_state_that_does_not_fit_the_head():
    state = saved(BROWSER)
    assert write_env(BROWSER, state[:10], 4096)[0] == lib.PRK_ENV_BAD_STATE
    assert write_env(BROWSER, state[:-1], 4096)[0] == lib.PRK_ENV_BAD_STATE
    assert write_env(BROWSER[:-10], state, 4096)[0] == lib.PRK_ENV_BAD_STATE
    bad = bytearray(state)
    at = ffi.offsetof("prk_head", "ctype_index")
    bad[at:at + 4] = (999).to_bytes(4, "little")
    assert write_env(BROWSER, bytes(bad), 4096)[0] == lib.PRK_ENV_BAD_STATE


def test_env_reads_an_unaligned_state():
    state = saved(BROWSER)
    block = ffi.new("char[]", len(state) + 1)
    ffi.memmove(block + 1, state, len(state))
    out = ffi.new("char[]", 4096)
    rc = lib.prk_write_env(out, 4096, BROWSER, len(BROWSER), block + 1, len(state), 3,
                           SERVER, len(SERVER), 2, REMOTE, len(REMOTE), 2)
    assert rc > 0 and msgspec.msgpack.decode(ffi.buffer(out, rc)) == env_of(BROWSER, 3)


def test_env_extra_pairs_are_appended():
    extra = REMOTE + environ.msgpack_pairs({"prack.input": "/api/v2/requests/x/input"})
    state = saved(BROWSER)
    rc, data = write_env(BROWSER, state, 8192, 3, extra, 3)
    env = msgspec.msgpack.decode(data)
    assert env["prack.input"] == "/api/v2/requests/x/input" and env["REMOTE_PORT"] == "5555"


# -- the reader keeps what the environment needs ---------------------------------------

def test_request_survives_later_parses():
    """The parse arrays are the process's: a request whose body is still
    coming keeps its own copy, so another connection's head in between does
    not change its environment or headers."""
    limits = http.Limits(MAX_BODY, 32 << 10, 8 << 10, 100)
    a = http.RequestReader(limits)
    a.feed(b"POST /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert a.maybe_read_request() is None
    b = http.RequestReader(limits)
    b.feed(get(b"Host: bbbbbbbb", b"X-B: 22222222222", b"X-C: 3", line=b"GET /bbbbbbbbbbb HTTP/1.1"))
    assert b.maybe_read_request() is not None
    a.feed(b"0\r\n\r\n")
    req = a.maybe_read_request()
    assert req.headers == [(b"host", b"a"), (b"x-a", b"1"), (b"transfer-encoding", b"chunked")]
    env = msgspec.msgpack.decode(bytes(req.environ_msgpack(SERVER, 2, REMOTE, 2)))
    assert env == environ.environ(req, "srv", "8080", "10.0.0.1", "5555")
    assert env["CONTENT_LENGTH"] == "3" and env["HTTP_X_A"] == "1"


def test_request_fields():
    limits = http.Limits(MAX_BODY, 32 << 10, 8 << 10, 100)
    r = http.RequestReader(limits)
    r.feed(BROWSER + b"abc")
    req = r.maybe_read_request()
    assert (req.method, req.path, req.query, req.host) == ("POST", "/p%20q", "a=1&b",
                                                          "www.Example.com:8443")
    assert req.content_type == b"text/plain; charset=\xe9"
    assert req.content_length == 3 and req.body == b"abc" and req.keep_alive
    assert not req.upgrade
    assert req.headers[0] == (b"host", b"www.Example.com:8443")
    assert req.headers is req.headers          # made once


def test_environ_msgpack_grows_its_buffer_for_a_large_head():
    limits = http.Limits(MAX_BODY, 256 << 10, 8 << 10, 100)
    r = http.RequestReader(limits)
    r.feed(get(b"Host: a", b"X-Big: " + b"\xe9" * 60000))
    req = r.maybe_read_request()
    view = req.environ_msgpack(SERVER, 2, REMOTE, 2)
    env = msgspec.msgpack.decode(bytes(view))
    assert env["HTTP_X_BIG"] == "\xe9" * 60000
    assert env == environ.environ(req, "srv", "8080", "10.0.0.1", "5555")
