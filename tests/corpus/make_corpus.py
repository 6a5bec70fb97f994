"""Writes the parser corpus (tests/corpus/{valid,invalid,chunked}/).

The expectations below are written by hand from RFC 9112 / RFC 9110 and the
contract in src/prack/_native/parser.h; they are never produced by running
the parser. Run ``python tests/corpus/make_corpus.py`` after editing a case;
the files are committed byte for byte (see .gitattributes).

File formats (all JSON strings are the raw bytes decoded as latin-1):

valid/NNN-name.http      raw bytes: a request head, possibly followed by
                         bytes of the next message
valid/NNN-name.json      {"method", "target", "form" (ORIGIN / ABSOLUTE /
                         AUTHORITY / ASTERISK), "version": [major, minor],
                         "headers": [[name, value], ...], "head_len",
                         optional "max_headers" (default 100)}
invalid/NNN-name.http    raw bytes
invalid/NNN-name.json    {"error": "PRK_E_...", "detect_len": N, optional
                         "max_headers"}; detect_len is the length of the
                         shortest prefix that proves the error: every
                         shorter prefix is PRK_INCOMPLETE, every longer one
                         is the error.
chunked/NNN-name.body    raw bytes fed to prk_decode_chunked
chunked/NNN-name.json    {"decoded": str, "consumed": N} for a complete
                         body, {"incomplete": true, "decoded": str} when the
                         input ends inside the body, or {"error": "PRK_E_..."}
"""
from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CRLF = b"\r\n"
L1 = "latin-1"


def head(line: bytes, *fields: bytes) -> bytes:
    """A request head: the request line, field lines, the empty line."""
    return line + CRLF + b"".join(f + CRLF for f in fields) + CRLF


# --------------------------------------------------------------------------
# valid: (name, data, expectation without head_len, head_len or None = all)
# --------------------------------------------------------------------------
VALID: list[tuple[str, bytes, dict, int | None]] = []


def valid(name, data, method, target, form="ORIGIN", version=(1, 1),
          headers=(), head_len=None, **extra):
    exp = {
        "method": method.decode(L1),
        "target": target.decode(L1),
        "form": form,
        "version": list(version),
        "headers": [[n.decode(L1), v.decode(L1)] for n, v in headers],
    }
    exp.update(extra)
    VALID.append((name, data, exp, head_len))


valid("simple-get", head(b"GET / HTTP/1.1", b"Host: example.com"),
      b"GET", b"/", headers=[(b"Host", b"example.com")])
valid("post-with-length",
      head(b"POST /submit HTTP/1.1", b"Host: a", b"Content-Type: text/plain",
           b"Content-Length: 0"),
      b"POST", b"/submit",
      headers=[(b"Host", b"a"), (b"Content-Type", b"text/plain"),
               (b"Content-Length", b"0")])
valid("origin-query", head(b"GET /path/to/x?a=1&b=%20c HTTP/1.1", b"Host: h"),
      b"GET", b"/path/to/x?a=1&b=%20c", headers=[(b"Host", b"h")])
valid("origin-fragment", head(b"GET /a#frag HTTP/1.1"), b"GET", b"/a#frag")
valid("origin-all-vchar",
      head(b"GET /!\"$%&'()*+,-./:;<=>?@[\\]^_`{|}~09AZaz HTTP/1.1"),
      b"GET", b"/!\"$%&'()*+,-./:;<=>?@[\\]^_`{|}~09AZaz")
valid("origin-percent-nul", head(b"GET /%00 HTTP/1.1"), b"GET", b"/%00")
valid("absolute-form", head(b"GET http://example.com/a?b HTTP/1.1",
                            b"Host: example.com"),
      b"GET", b"http://example.com/a?b", form="ABSOLUTE",
      headers=[(b"Host", b"example.com")])
valid("absolute-form-https-port", head(b"GET https://example.com:8443/ HTTP/1.1"),
      b"GET", b"https://example.com:8443/", form="ABSOLUTE")
valid("absolute-form-ipv6", head(b"GET http://[::1]:80/ HTTP/1.1"),
      b"GET", b"http://[::1]:80/", form="ABSOLUTE")
valid("absolute-form-scheme-chars", head(b"GET coap+tcp.v-1://h/ HTTP/1.1"),
      b"GET", b"coap+tcp.v-1://h/", form="ABSOLUTE")
valid("absolute-form-empty-authority", head(b"GET http:// HTTP/1.1"),
      b"GET", b"http://", form="ABSOLUTE")
valid("authority-connect", head(b"CONNECT example.com:443 HTTP/1.1",
                                b"Host: example.com:443"),
      b"CONNECT", b"example.com:443", form="AUTHORITY",
      headers=[(b"Host", b"example.com:443")])
valid("authority-ipv6", head(b"CONNECT [::1]:443 HTTP/1.1"),
      b"CONNECT", b"[::1]:443", form="AUTHORITY")
valid("authority-ipv4", head(b"CONNECT 127.0.0.1:8080 HTTP/1.1"),
      b"CONNECT", b"127.0.0.1:8080", form="AUTHORITY")
valid("authority-scheme-like", head(b"CONNECT http:80 HTTP/1.1"),
      b"CONNECT", b"http:80", form="AUTHORITY")
valid("asterisk", head(b"OPTIONS * HTTP/1.1", b"Host: h"),
      b"OPTIONS", b"*", form="ASTERISK", headers=[(b"Host", b"h")])
valid("asterisk-prefix-is-authority", head(b"GET *x HTTP/1.1"),
      b"GET", b"*x", form="AUTHORITY")
valid("leading-crlf", CRLF + head(b"GET / HTTP/1.1", b"Host: h"),
      b"GET", b"/", headers=[(b"Host", b"h")])
valid("leading-crlf-many", CRLF * 5 + head(b"GET /x HTTP/1.1"), b"GET", b"/x")
valid("no-headers", head(b"GET / HTTP/1.1"), b"GET", b"/")
valid("http10", head(b"GET / HTTP/1.0"), b"GET", b"/", version=(1, 0))
valid("http20-major-2", head(b"GET / HTTP/2.0"), b"GET", b"/", version=(2, 0))
valid("http09-version", head(b"GET / HTTP/0.9"), b"GET", b"/", version=(0, 9))
valid("http12-minor", head(b"GET / HTTP/1.2"), b"GET", b"/", version=(1, 2))
valid("http39-major-3", head(b"GET / HTTP/3.9"), b"GET", b"/", version=(3, 9))
valid("extension-method", head(b"FROBNICATE /x HTTP/1.1"), b"FROBNICATE", b"/x")
valid("lowercase-method", head(b"get / HTTP/1.1"), b"get", b"/")
valid("method-all-tchar", head(b"X!#$%&'*+-.^_`|~09 / HTTP/1.1"),
      b"X!#$%&'*+-.^_`|~09", b"/")
valid("method-m-search", head(b"M-SEARCH * HTTP/1.1"), b"M-SEARCH", b"*",
      form="ASTERISK")
valid("empty-value", head(b"GET / HTTP/1.1", b"X-Empty:", b"Host: h"),
      b"GET", b"/", headers=[(b"X-Empty", b""), (b"Host", b"h")])
valid("empty-value-ows-only", head(b"GET / HTTP/1.1", b"X-Empty: \t \t"),
      b"GET", b"/", headers=[(b"X-Empty", b"")])
valid("ows-stripped", head(b"GET / HTTP/1.1", b"A:  \t value \t "),
      b"GET", b"/", headers=[(b"A", b"value")])
valid("inner-whitespace-kept", head(b"GET / HTTP/1.1", b"A: a  b\tc"),
      b"GET", b"/", headers=[(b"A", b"a  b\tc")])
valid("no-space-after-colon", head(b"GET / HTTP/1.1", b"A:b"),
      b"GET", b"/", headers=[(b"A", b"b")])
valid("tabs-in-value", head(b"GET / HTTP/1.1", b"A:\tx\ty\t"),
      b"GET", b"/", headers=[(b"A", b"x\ty")])
valid("obs-text-value", head(b"GET / HTTP/1.1", b"A: caf\xe9 \xff\x80"),
      b"GET", b"/", headers=[(b"A", b"caf\xe9 \xff\x80")])
valid("obs-text-only-value", head(b"GET / HTTP/1.1", b"A:\x80"),
      b"GET", b"/", headers=[(b"A", b"\x80")])
valid("utf8-value", head(b"GET / HTTP/1.1", "X-Name: Zoë 日本".encode()),
      b"GET", b"/", headers=[(b"X-Name", "Zoë 日本".encode())])
valid("name-all-tchar", head(b"GET / HTTP/1.1", b"!#$%&'*+-.^_`|~09azAZ: v"),
      b"GET", b"/", headers=[(b"!#$%&'*+-.^_`|~09azAZ", b"v")])
valid("duplicate-headers", head(b"GET / HTTP/1.1", b"Accept: a", b"accept: b",
                                b"ACCEPT: c"),
      b"GET", b"/", headers=[(b"Accept", b"a"), (b"accept", b"b"),
                             (b"ACCEPT", b"c")])
valid("colons-in-value", head(b"GET / HTTP/1.1", b"A: b:c: d:"),
      b"GET", b"/", headers=[(b"A", b"b:c: d:")])
valid("quotes-commas-value",
      head(b"GET / HTTP/1.1",
           b'Accept: text/html, application/json;q=0.9, */*;q="0.1"'),
      b"GET", b"/",
      headers=[(b"Accept", b'text/html, application/json;q=0.9, */*;q="0.1"')])
valid("transfer-encoding", head(b"POST /up HTTP/1.1", b"Transfer-Encoding: chunked"),
      b"POST", b"/up", headers=[(b"Transfer-Encoding", b"chunked")])
_many = [(b"X-H%d" % i, b"v%d" % i) for i in range(100)]
valid("many-headers-at-limit",
      head(b"GET / HTTP/1.1", *[n + b": " + v for n, v in _many]),
      b"GET", b"/", headers=_many)
valid("max-headers-custom", head(b"GET / HTTP/1.1", b"A: 1", b"B: 2", b"C: 3"),
      b"GET", b"/", headers=[(b"A", b"1"), (b"B", b"2"), (b"C", b"3")],
      max_headers=3)
_long = bytes(0x21 + (i % 94) for i in range(8000))
valid("long-value", head(b"GET / HTTP/1.1", b"X-Long: " + _long),
      b"GET", b"/", headers=[(b"X-Long", _long)])
_path = b"/" + b"abcdefghij" * 400
valid("long-target", head(b"GET " + _path + b" HTTP/1.1"), b"GET", _path)
_name = b"X-" + b"n" * 254
valid("long-name", head(b"GET / HTTP/1.1", _name + b": v"),
      b"GET", b"/", headers=[(_name, b"v")])
valid("long-method", head(b"M" * 300 + b" / HTTP/1.1"), b"M" * 300, b"/")
_first = head(b"GET /1 HTTP/1.1", b"Host: h")
valid("pipelined", _first + head(b"GET /2 HTTP/1.1", b"Host: h"),
      b"GET", b"/1", headers=[(b"Host", b"h")], head_len=len(_first))
_post = head(b"POST /p HTTP/1.1", b"Content-Length: 5")
valid("body-follows", _post + b"hello", b"POST", b"/p",
      headers=[(b"Content-Length", b"5")], head_len=len(_post))
_crlf_body = head(b"POST /p HTTP/1.1", b"Content-Length: 4")
valid("body-is-crlfs", _crlf_body + CRLF + CRLF, b"POST", b"/p",
      headers=[(b"Content-Length", b"4")], head_len=len(_crlf_body))
valid("browser-like",
      head(b"GET /index.html?lang=en HTTP/1.1",
           b"Host: www.example.org",
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           b"Accept-Language: en-US,en;q=0.5",
           b"Accept-Encoding: gzip, deflate, br",
           b"Connection: keep-alive",
           b"Cookie: a=1; b=2",
           b"Upgrade-Insecure-Requests: 1",
           b"Sec-Fetch-Dest: document",
           b"If-None-Match: \"abc\"",
           b"Cache-Control: max-age=0"),
      b"GET", b"/index.html?lang=en",
      headers=[(b"Host", b"www.example.org"),
               (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
               (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
               (b"Accept-Language", b"en-US,en;q=0.5"),
               (b"Accept-Encoding", b"gzip, deflate, br"),
               (b"Connection", b"keep-alive"),
               (b"Cookie", b"a=1; b=2"),
               (b"Upgrade-Insecure-Requests", b"1"),
               (b"Sec-Fetch-Dest", b"document"),
               (b"If-None-Match", b"\"abc\""),
               (b"Cache-Control", b"max-age=0")])

# --------------------------------------------------------------------------
# invalid: (name, proof, rest, error, extra). The error is proven by the
# last byte of `proof`; `rest` is what a client would have sent after it.
# --------------------------------------------------------------------------
INVALID: list[tuple[str, bytes, bytes, str, dict]] = []


def invalid(name, proof, rest, error, **extra):
    INVALID.append((name, proof, rest, "PRK_E_" + error, extra))


R = b"\r\n\r\n"          # end of a head with no more fields
H = b"GET / HTTP/1.1\r\n"  # a valid request line
# request line structure
invalid("empty-method", b" ", b"/ HTTP/1.1" + R, "BAD_REQUEST_LINE")
invalid("double-sp-after-method", b"GET  ", b"/ HTTP/1.1" + R, "BAD_REQUEST_LINE")
invalid("double-sp-before-version", b"GET /  ", b"HTTP/1.1" + R, "BAD_REQUEST_LINE")
invalid("sp-after-version", b"GET / HTTP/1.1 ", R, "BAD_REQUEST_LINE")
invalid("http09-request-line", b"GET /\r", b"\n\r\n", "BAD_REQUEST_LINE")
invalid("method-only", b"GET\r", b"\n\r\n", "BAD_REQUEST_LINE")
invalid("method-bare-lf", b"GET\n", b"\n", "BAD_REQUEST_LINE")
invalid("target-then-lf", b"GET /a\n", b"\n", "BAD_REQUEST_LINE")
invalid("cr-in-target", b"GET /a\r", b"b HTTP/1.1" + R, "BAD_REQUEST_LINE")
invalid("missing-target", b"GET \r", b"\n\r\n", "BAD_REQUEST_LINE")
# method
invalid("method-paren", b"G(", b"T / HTTP/1.1" + R, "BAD_METHOD")
invalid("method-nul", b"G\x00", b"T / HTTP/1.1" + R, "BAD_METHOD")
invalid("method-del", b"GE\x7f", b"T / HTTP/1.1" + R, "BAD_METHOD")
invalid("method-htab-delimiter", b"GET\t", b"/ HTTP/1.1" + R, "BAD_METHOD")
invalid("method-leading-htab", b"\t", b"GET / HTTP/1.1" + R, "BAD_METHOD")
invalid("method-utf8", b"G\xc3", b"\x89T / HTTP/1.1" + R, "BAD_METHOD")
invalid("method-slash", b"GET/", b" / HTTP/1.1" + R, "BAD_METHOD")
# target
invalid("target-del", b"GET /\x7f", b" HTTP/1.1" + R, "BAD_TARGET")
invalid("target-obs-text", b"GET /caf\xe9", b" HTTP/1.1" + R, "BAD_TARGET")
invalid("target-htab", b"GET /a\t", b"b HTTP/1.1" + R, "BAD_TARGET")
invalid("target-nul", b"GET /a\x00", b"b HTTP/1.1" + R, "BAD_TARGET")
invalid("target-ctl", b"GET /\x01", b" HTTP/1.1" + R, "BAD_TARGET")
invalid("target-htab-delimiter", b"GET /\t", b"HTTP/1.1" + R, "BAD_TARGET")
# version
invalid("version-lowercase", b"GET / h", b"ttp/1.1" + R, "BAD_VERSION")
invalid("version-two-digit-minor", b"GET / HTTP/1.10", R, "BAD_VERSION")
invalid("version-no-dot", b"GET / HTTP/11", b"" + R, "BAD_VERSION")
invalid("version-comma", b"GET / HTTP/1,", b"1" + R, "BAD_VERSION")
invalid("version-missing-minor", b"GET / HTTP/1.\r", b"\n\r\n", "BAD_VERSION")
invalid("version-alpha-major", b"GET / HTTP/a", b".1" + R, "BAD_VERSION")
invalid("version-https", b"GET / HTTPS", b"/1.1" + R, "BAD_VERSION")
invalid("version-missing", b"GET / \r", b"\n\r\n", "BAD_VERSION")
invalid("version-trailing-nul", b"GET / HTTP/1.1\x00", R, "BAD_VERSION")
invalid("version-trailing-htab", b"GET / HTTP/1.1\t", R, "BAD_VERSION")
invalid("version-rtsp", b"GET / R", b"TSP/1.0" + R, "BAD_VERSION")
# field names
invalid("header-empty-name", H + b":", b" v" + R, "BAD_HEADER_NAME")
invalid("header-space-inside-name", H + b"A b", b": v" + R, "BAD_HEADER_NAME")
invalid("header-name-paren", H + b"A(", b"b: v" + R, "BAD_HEADER_NAME")
invalid("header-name-nul", H + b"\x00", b": v" + R, "BAD_HEADER_NAME")
invalid("header-name-del", H + b"\x7f", b": v" + R, "BAD_HEADER_NAME")
invalid("header-name-obs-text", H + b"X-\xe9", b": v" + R, "BAD_HEADER_NAME")
invalid("header-name-ctl", H + b"A\x01", b": v" + R, "BAD_HEADER_NAME")
invalid("header-name-slash", H + b"A/", b"b: v" + R, "BAD_HEADER_NAME")
invalid("header-no-colon", H + b"Host\r", b"\n\r\n", "BAD_HEADER_NAME")
invalid("header-no-colon-trailing-sp", H + b"Host \r", b"\n\r\n", "BAD_HEADER_NAME")
invalid("header-name-bracket-after-valid", H + b"A: b\r\nB]", b": c" + R,
        "BAD_HEADER_NAME")
# whitespace between name and colon (RFC 9112 5.1)
invalid("ws-before-colon-sp", H + b"Host :", b" h" + R, "WS_BEFORE_COLON")
invalid("ws-before-colon-htab", H + b"Host\t:", b" h" + R, "WS_BEFORE_COLON")
invalid("ws-before-colon-mixed", H + b"Host \t  :", b"h" + R, "WS_BEFORE_COLON")
invalid("ws-before-colon-transfer-encoding",
        H + b"Content-Length: 5\r\nTransfer-Encoding :", b" chunked" + R,
        "WS_BEFORE_COLON")
# field values
invalid("value-nul", H + b"A: b\x00", b"c" + R, "BAD_HEADER_VALUE")
invalid("value-del", H + b"A: b\x7f", b"c" + R, "BAD_HEADER_VALUE")
invalid("value-ctl-soh", H + b"A: \x01", R, "BAD_HEADER_VALUE")
invalid("value-vt", H + b"A: v\x0b", R, "BAD_HEADER_VALUE")
invalid("value-ff", H + b"A: v\x0c", R, "BAD_HEADER_VALUE")
invalid("value-esc", H + b"A: \x1b", b"[0m" + R, "BAD_HEADER_VALUE")
invalid("value-nul-truncated", H + b"A: v\x00", b"", "BAD_HEADER_VALUE")
invalid("value-nul-after-ows", H + b"A: \t\x00", R, "BAD_HEADER_VALUE")
# obs-fold and whitespace lines
invalid("obs-fold-sp", H + b"A: b\r\n ", b"c" + R, "OBS_FOLD")
invalid("obs-fold-htab", H + b"A: b\r\n\t", b"c" + R, "OBS_FOLD")
invalid("ws-before-first-header", H + b" ", b"A: v" + R, "OBS_FOLD")
invalid("ws-only-line", H + b"A: b\r\n ", b"\r\n\r\n", "OBS_FOLD")
# bare CR
invalid("bare-cr-in-value", H + b"A: b\rc", R, "BARE_CR")
invalid("bare-cr-after-version", b"GET / HTTP/1.1\rX", R, "BARE_CR")
invalid("bare-cr-end-of-head", H + b"A: b\r\n\rX", b"", "BARE_CR")
invalid("bare-cr-leading", b"\rG", b"ET / HTTP/1.1" + R, "BARE_CR")
invalid("bare-cr-double", H + b"A: b\r\r", b"\n\r\n", "BARE_CR")
invalid("bare-cr-leading-after-crlf", b"\r\n\rG", b"ET / HTTP/1.1" + R, "BARE_CR")
# bare LF
invalid("bare-lf-after-version", b"GET / HTTP/1.1\n", b"Host: h\n\n", "BARE_LF")
invalid("bare-lf-after-value", H + b"A: b\n", b"\r\n", "BARE_LF")
invalid("bare-lf-end-of-head", H + b"A: b\r\n\n", b"", "BARE_LF")
invalid("bare-lf-leading", b"\n", b"GET / HTTP/1.1" + R, "BARE_LF")
invalid("bare-lf-empty-value", H + b"A:\n", b"\r\n", "BARE_LF")
invalid("bare-lf-smuggle",
        H + b"Host: a\r\nX: y\n", b"Transfer-Encoding: chunked\r\n\r\n", "BARE_LF")
# limits
_fields = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
invalid("too-many-headers-default", H + _fields + b"X", b"-H100: v" + R,
        "TOO_MANY_HEADERS")
invalid("too-many-headers-zero", H + b"H", b"ost: h" + R, "TOO_MANY_HEADERS",
        max_headers=0)
invalid("too-many-headers-custom", H + b"A: 1\r\nB: 2\r\nC: 3\r\nD", b": 4" + R,
        "TOO_MANY_HEADERS", max_headers=3)

# --------------------------------------------------------------------------
# chunked: (name, data, expectation)
# --------------------------------------------------------------------------
CHUNKED: list[tuple[str, bytes, dict]] = []


def chunk_ok(name, data, decoded, trailing=b""):
    CHUNKED.append((name, data + trailing,
                    {"decoded": decoded.decode(L1), "consumed": len(data)}))


def chunk_incomplete(name, data, decoded):
    CHUNKED.append((name, data, {"incomplete": True, "decoded": decoded.decode(L1)}))


def chunk_err(name, data, error):
    CHUNKED.append((name, data, {"error": "PRK_E_" + error}))


END = b"0\r\n\r\n"
chunk_ok("single", b"5\r\nhello\r\n" + END, b"hello")
chunk_ok("empty-body", END, b"")
chunk_ok("several", b"3\r\nabc\r\n1\r\nd\r\n6\r\nefghij\r\n" + END, b"abcdefghij")
chunk_ok("hex-case", b"A\r\n0123456789\r\na\r\nABCDEFGHIJ\r\n1f\r\n" + b"x" * 31
         + b"\r\n1F\r\n" + b"y" * 31 + b"\r\n" + END,
         b"0123456789ABCDEFGHIJ" + b"x" * 31 + b"y" * 31)
chunk_ok("leading-zeros", b"0005\r\nhello\r\n" + END, b"hello")
chunk_ok("sixteen-digits", b"0000000000000005\r\nhello\r\n" + END, b"hello")
chunk_ok("last-chunk-zeros", b"2\r\nok\r\n000\r\n\r\n", b"ok")
chunk_ok("data-with-crlf-and-binary", b"8\r\n\r\n\x00\xff0\r\n\n\r\n" + END,
         b"\r\n\x00\xff0\r\n\n")
chunk_ok("big-chunk", b"2000\r\n" + bytes(range(256)) * 32 + b"\r\n" + END,
         bytes(range(256)) * 32)
chunk_ok("one-byte-chunks", b"".join(b"1\r\n%c\r\n" % c for c in b"abcdefgh") + END,
         b"abcdefgh")
chunk_ok("ext-name-value", b"5;name=value\r\nhello\r\n" + END, b"hello")
chunk_ok("ext-several", b"5;a;b=c;d\r\nhello\r\n" + END, b"hello")
chunk_ok("ext-bws-before-semicolon", b"5;a ;b=c\t;d\r\nhello\r\n" + END, b"hello")
chunk_ok("ext-quoted", b'5;a="q \\"s\\" ;x"\r\nhello\r\n' + END, b"hello")
chunk_ok("ext-bws", b"5 ;\ta = b ; c\t=\t\"d\"\r\nhello\r\n" + END, b"hello")
chunk_ok("ext-loose-value", b"5;a=b/c:d=e\r\nhello\r\n" + END, b"hello")
chunk_ok("ext-obs-text", b'5;a=\xe9;b="\xff"\r\nhello\r\n' + END, b"hello")
chunk_ok("ext-last-chunk", b"5\r\nhello\r\n0;done=1\r\n\r\n", b"hello")
chunk_ok("ext-at-limit", b"5;" + b"x" * 4095 + b"\r\nhello\r\n" + END, b"hello")
chunk_ok("trailer", b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nY:\r\nZ: a\tb \r\n\r\n",
         b"hello")
chunk_ok("trailer-obs-text", b"0\r\nX: caf\xe9\r\n\r\n", b"")
chunk_ok("trailer-at-limit", b"0\r\nX: " + b"t" * 8185 + b"\r\n\r\n", b"")
chunk_ok("next-message-follows", b"5\r\nhello\r\n" + END, b"hello",
         trailing=b"GET / HTTP/1.1\r\n\r\n")
chunk_ok("crlf-follows", b"2\r\nhi\r\n" + END, b"hi", trailing=b"\r\n")
chunk_incomplete("max-size-incomplete", b"7fffffffffffffff\r\nabc", b"abc")
chunk_incomplete("partial-size-line", b"5\r\nhello\r\n1", b"hello")
chunk_incomplete("partial-trailer", b"0\r\nX: y\r\n", b"")
chunk_incomplete("partial-data-crlf", b"5\r\nhello\r", b"hello")

chunk_err("size-17-digits", b"00000000000000005\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-2-pow-63", b"8000000000000000\r\n", "CHUNK_SIZE")
chunk_err("size-2-pow-64-minus-1", b"ffffffffffffffff\r\n", "CHUNK_SIZE")
chunk_err("size-huge", b"123456789abcdef01\r\n", "CHUNK_SIZE")
chunk_err("size-empty", b"\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-empty-with-ext", b";a=b\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-non-hex", b"g\r\n", "CHUNK_SIZE")
chunk_err("size-trailing-junk", b"5x\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-0x-prefix", b"0x5\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-negative", b"-5\r\n", "CHUNK_SIZE")
chunk_err("size-plus", b"+5\r\n", "CHUNK_SIZE")
chunk_err("size-leading-space", b" 5\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-bare-lf", b"5\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-bare-cr", b"5\rhello\r\n" + END, "CHUNK_SIZE")
chunk_err("size-second-chunk-bad", b"5\r\nhello\r\nz\r\n", "CHUNK_SIZE")
chunk_err("size-nul", b"5\x00\r\nhello\r\n" + END, "CHUNK_SIZE")
chunk_err("data-too-long", b"3\r\nhello\r\n" + END, "CHUNK_DATA_END")
chunk_err("data-bare-lf", b"5\r\nhello\n" + END, "CHUNK_DATA_END")
chunk_err("data-bare-cr", b"5\r\nhello\r" + END, "CHUNK_DATA_END")
chunk_err("data-no-crlf", b"5\r\nhello0\r\n\r\n", "CHUNK_DATA_END")
chunk_err("data-lf-cr", b"5\r\nhello\n\r" + END, "CHUNK_DATA_END")
chunk_err("ext-empty-name", b"5;\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-no-name", b"5;=v\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-empty-value", b"5;a=\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-unterminated-quote", b'5;a="x\r\nhello\r\n' + END, "CHUNK_EXT")
chunk_err("ext-ctl-in-value", b"5;a=b\x01\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-nul-in-name", b"5;a\x00\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-del-in-quoted", b'5;a="x\x7f"\r\nhello\r\n' + END, "CHUNK_EXT")
chunk_err("ext-trailing-bws", b"5 \r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-trailing-bws-after-name", b"5;a \r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-trailing-bws-after-value", b"5;a=b\t\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-bare-lf", b"5;a=b\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-bare-cr", b"5;a\rhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-two-words", b"5;a b\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-junk-after-quote", b'5;a="b"c\r\nhello\r\n' + END, "CHUNK_EXT")
chunk_err("ext-too-long", b"5;" + b"x" * 4096 + b"\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("ext-name-non-token", b"5;a/b\r\nhello\r\n" + END, "CHUNK_EXT")
chunk_err("trailer-ws-before-colon", b"0\r\nX : v\r\n\r\n", "TRAILER")
chunk_err("trailer-nul-in-value", b"0\r\nX: v\x00\r\n\r\n", "TRAILER")
chunk_err("trailer-obs-fold", b"0\r\nX: v\r\n w\r\n\r\n", "TRAILER")
chunk_err("trailer-bare-lf-line", b"0\r\nX: v\n\r\n", "TRAILER")
chunk_err("trailer-bare-lf-end", b"0\r\n\n", "TRAILER")
chunk_err("trailer-bare-cr-end", b"0\r\n\rX", "TRAILER")
chunk_err("trailer-no-colon", b"0\r\nX\r\n\r\n", "TRAILER")
chunk_err("trailer-empty-name", b"0\r\n: v\r\n\r\n", "TRAILER")
chunk_err("trailer-too-long", b"0\r\nX: " + b"t" * 8186 + b"\r\n\r\n", "TRAILER")
chunk_err("trailer-missing-final-crlf", b"0\r\nGET / HTTP/1.1\r\n\r\n", "TRAILER")


def write() -> None:
    for sub in ("valid", "invalid", "chunked"):
        d = HERE / sub
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            if f.suffix in (".http", ".json", ".body"):
                f.unlink()

    def dump(path: pathlib.Path, obj: dict) -> None:
        path.write_text(json.dumps(obj, indent=1, ensure_ascii=True) + "\n",
                        encoding="ascii")

    for i, (name, data, exp, head_len) in enumerate(VALID, 1):
        exp = dict(exp, head_len=len(data) if head_len is None else head_len)
        base = HERE / "valid" / f"{i:03d}-{name}"
        base.with_suffix(".http").write_bytes(data)
        dump(base.with_suffix(".json"), exp)
    for i, (name, proof, rest, error, extra) in enumerate(INVALID, 1):
        base = HERE / "invalid" / f"{i:03d}-{name}"
        base.with_suffix(".http").write_bytes(proof + rest)
        dump(base.with_suffix(".json"),
             dict({"error": error, "detect_len": len(proof)}, **extra))
    for i, (name, data, exp) in enumerate(CHUNKED, 1):
        base = HERE / "chunked" / f"{i:03d}-{name}"
        base.with_suffix(".body").write_bytes(data)
        dump(base.with_suffix(".json"), exp)


if __name__ == "__main__":
    write()
    print(f"{len(VALID)} valid, {len(INVALID)} invalid, {len(CHUNKED)} chunked")
