"""The sans-IO request reader: framing rules of RFC 9112 section 6, limits,
persistence and pipelining, with byte strings only (no sockets, no clocks)."""
import pytest

from prack.protocol import http

from prack.protocol import environ

from prack.ipc import slots
LIMITS = http.Limits(max_body_size=1024, max_header_size=2048, max_request_line=512,
                     max_headers=20)


def read_all(data: bytes, limits=LIMITS, step: int | None = None):
    """Feed data whole or `step` bytes at a time; return the requests read
    and the error (or None)."""
    reader = http.RequestReader(limits)
    out = []
    chunks = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while True:
                req = reader.maybe_read_request()
                if req is None:
                    break
                out.append(req)
                reader.next()
    except http.ProtocolError as exc:
        return out, exc
    return out, None


def one(data: bytes, **kw):
    for step in (None, 1, 7):
        reqs, err = read_all(data, step=step, **kw)
        assert err is None, err
        assert len(reqs) == 1
    return reqs[0]


def status_of(data: bytes, limits=LIMITS) -> int:
    statuses = set()
    for step in (None, 1, 5):
        reqs, err = read_all(data, limits, step)
        assert err is not None, "accepted: %r" % (reqs,)
        statuses.add(err.status)
    assert len(statuses) == 1, statuses
    return statuses.pop()


def test_simple_get():
    req = one(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n")
    assert (req.method, req.path, req.query, req.version_minor) == ("GET", "/a/b", "x=1&y=2", 1)
    assert req.host == "example.com:8080"
    assert req.keep_alive and req.body == b"" and req.content_length is None


def test_content_length_body_and_pipelining():
    data = (b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
    for step in (None, 1, 3, 11):
        reqs, err = read_all(data, step=step)
        assert err is None
        assert [r.path for r in reqs] == ["/one", "/two", "/three"]
        assert [r.body for r in reqs] == [b"hello", b"", b"abcde"]
        assert reqs[2].content_length == 5


def test_reader_holds_pipelined_bytes_until_next():
    reader = http.RequestReader(LIMITS)
    reader.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.maybe_read_request().path == "/1"
    assert reader.maybe_read_request() is None      # not before next()
    reader.next()
    assert reader.maybe_read_request().path == "/2"


def test_http10_persistence():
    assert not one(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive
    assert not one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive


def test_higher_minor_version_is_answered_as_1_1():
    assert one(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n").version_minor == 1


def test_absolute_form_authority_replaces_host():
    req = one(b"GET http://Example.org:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert (req.host, req.path, req.query) == ("Example.org:81", "/p", "q")
    req = one(b"GET http://example.org HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert req.path == "/"


def test_asterisk_form_only_for_options():
    assert one(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path == "*"
    assert status_of(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize("data,status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                    # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),              # two Hosts
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),                       # bad Host
    (b"GET / HTTP/1.1\r\nHost: h:8x\r\n\r\n", 400),                      # port not digits
    (b"GET / HTTP/1.1\r\nHost: h:1:2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET http://h:8x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
    (b"GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),                     # authority-form
    (b"GET /#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n", 400),             # empty host
    (b"GET ftp://h/p HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
])
def test_malformed(data, status):
    assert status_of(data) == status


@pytest.mark.parametrize("headers,status", [
    (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", 400),
    (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Transfer-Encoding: gzip\r\n", 400),               # chunked not last
    (b"Transfer-Encoding: chunked, gzip\r\n", 400),
    (b"Transfer-Encoding: gzip, chunked\r\n", 501),      # unknown coding
    (b"Transfer-Encoding: chunked, chunked\r\n", 400),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Content-Length: 3\r\nContent-Length: 4\r\n", 400),
    (b"Content-Length: 3, 4\r\n", 400),
    (b"Content-Length: +3\r\n", 400),
    (b"Content-Length: -3\r\n", 400),
    (b"Content-Length: 3 3\r\n", 400),
    (b"Content-Length: 0x3\r\n", 400),
    (b"Content-Length: \r\n", 400),
    (b"Content-Length: 99999999999999999999999\r\n", 400),
    (b"Content-Length: 2000\r\n", 413),                  # over max_body_size, before the body
])
def test_framing_conflicts(headers, status):
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n") == status


def test_identical_repeated_content_length_is_accepted():
    req = one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
    assert req.body == b"abc"
    req = one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc")
    assert req.body == b"abc"


def test_transfer_encoding_in_http10_is_rejected():
    data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert status_of(data) == 400


def test_chunked_body_over_limit():
    big = b"400\r\n" + b"x" * 1024 + b"\r\n" + b"1\r\ny\r\n0\r\n\r\n"
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + big) == 413


@pytest.mark.parametrize("chunked", [b"zz\r\n", b"3\r\nabcX\r\n", b"1ffffffffffffffff\r\n"])
def test_chunked_errors(chunked):
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    assert status_of(data) == 400


def test_limits_414_431():
    assert status_of(b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414
    # Request line never ends: 414 as soon as it is known to be too long.
    assert status_of(b"GET /" + b"a" * 600) == 414
    many = b"".join(b"X-%d: y\r\n" % i for i in range(21))
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n") == 431
    huge = b"X: " + b"v" * 2100 + b"\r\n"
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + huge + b"\r\n") == 431


def test_after_an_error_nothing_more_is_read():
    reader = http.RequestReader(LIMITS)
    reader.feed(b"GET / HTTP/1.1\r\nHost : h\r\n\r\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(http.ProtocolError):
        reader.maybe_read_request()
    with pytest.raises(http.ProtocolError):
        reader.maybe_read_request()


def test_expect_continue_flag():
    reader = http.RequestReader(LIMITS)
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert reader.maybe_read_request() is None
    assert reader.wants_continue
    reader.feed(b"abc")
    assert reader.maybe_read_request().body == b"abc"
    assert not reader.wants_continue
    # HTTP/1.0 clients do not understand 100 (RFC 9110 10.1.1).
    reader = http.RequestReader(LIMITS)
    reader.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert reader.maybe_read_request() is None
    assert not reader.wants_continue


def test_environ():
    req = one(b"POST /p%20q?a=1 HTTP/1.1\r\nHost: Example.com:8080\r\nContent-Type: text/x\r\n"
              b"Content-Length: 2\r\nX-A: 1\r\nx-a: 2\r\nCookie: a=1\r\nCookie: b=2\r\n"
              b"X_Smuggled: 1\r\nAccept: \xe9\r\n\r\nhi")
    env = environ.environ(req, "127.0.0.1", "8080", "10.0.0.1", "5555")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/p%20q"
    assert env["QUERY_STRING"] == "a=1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.1", "5555")
    assert env["CONTENT_TYPE"] == "text/x" and env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_A"] == "1, 2"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SMUGGLED" not in env
    assert env["HTTP_ACCEPT"] == "\xe9"
    assert env["rack.url_scheme"] == "http"
    assert all(type(v) is str for v in env.values())


def test_proxy_header_is_not_passed():
    """httpoxy (CVE-2016-5385): a client's "Proxy:" header must not reach the
    worker as HTTP_PROXY, the name of the outgoing proxy setting."""
    req = one(b"GET / HTTP/1.1\r\nHost: x\r\nProxy: http://evil:1\r\nX-B: 1\r\n\r\n")
    env = environ.environ(req, "h", "80", "", "")
    assert "HTTP_PROXY" not in env and env["HTTP_X_B"] == "1"


def test_valid_hosts():
    for host in [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:9000", b"[::1]",
                 b"", b"xn--bcher-kva.example", b"h:"]:
        one(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")


def test_environ_ipv6_host_and_default_port():
    req = one(b"GET / HTTP/1.1\r\nHost: [::1]:9000\r\n\r\n")
    env = environ.environ(req, "x", "1", "::1", "2")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9000")
    req = one(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert environ.environ(req, "x", "1", "a", "2")["SERVER_PORT"] == "80"


def test_identifiers_round_trip_and_reject_garbage():
    ident = slots.make_identifier(1, 3, 70000, (1 << 62) - 5)
    assert len(ident) == 32
    assert slots.parse_identifier(ident) == (1, 3, 70000, (1 << 62) - 5)
    for bad in ["", "0x" + ident[2:], ident.upper(), ident[:-1], ident + "0", " " + ident[1:],
                "_" * 32, 12, None]:
        assert slots.parse_identifier(bad) is None


def test_response_head():
    head = http.response_head(200, b"X-A: 1\r\n", 5, True, b"Prack")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
    assert b"\r\nServer: Prack\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n" in head
    head = http.response_head(299, b"", None, False, b"", add_date=False)
    assert head == b"HTTP/1.1 299 \r\nConnection: close\r\n\r\n"


def test_errors_know_a_head_request():
    """A HEAD that fails after its request line is answered without a body."""
    reader = http.RequestReader(LIMITS)
    reader.feed(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    with pytest.raises(http.ProtocolError) as info:
        reader.maybe_read_request()
    assert info.value.head and info.value.status == 400
    reader = http.RequestReader(LIMITS)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    with pytest.raises(http.ProtocolError) as info:
        reader.maybe_read_request()
    assert not info.value.head


def test_name_caches_stay_small_under_unique_long_names():
    """The caches of lower-cased header names (http) and HTTP_* keys (wire)
    live as long as the acceptor. A client sending a new long name per
    request (up to max_header_size each) must not make them hold megabytes."""
    limits = http.Limits(max_body_size=1024, max_header_size=40_000, max_request_line=512,
                         max_headers=20)
    reader = http.RequestReader(limits)
    for i in range(5000):
        name = b"X%05d" % i + b"a" * 8000
        reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + name + b": 1\r\n\r\n")
        req = reader.maybe_read_request()
        environ.environ(req, "h", "80", "", "")
        reader.next()

    def size(cache):
        return sum(len(k) + len(v or "") for k, v in cache.items())
    assert size(http._names) < 1 << 20
    assert size(environ._env_keys) < 1 << 20


def test_http_dates_all_three_formats():
    """RFC 9110 5.6.7: IMF-fixdate is written; all three formats are read."""
    import email.utils
    for t in (0, 784111777, 951782400, 1709210096, 4102444799):
        text = http.format_http_date(t)
        assert text == email.utils.formatdate(t, usegmt=True)
        assert http.parse_http_date(text.encode()) == t
    assert http.parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert http.parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert http.parse_http_date(b"Sun Nov  6 08:49:37 1994") == 784111777
    assert http.parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT") == 951782400
    for bad in (b"", b"not a date", b"Sun, 06 Nov 1994 24:49:37 GMT",
                b"Sun, 06 Foo 1994 08:49:37 GMT", b"Sun, 06 Nov 1994 08:49:37 UTC",
                b"Sun, 32 Nov 1994 08:49:37 GMT", b"1994-11-06T08:49:37Z"):
        assert http.parse_http_date(bad) is None, bad


@pytest.mark.parametrize("value", [
    b"Sat, 31 Feb 2024 00:00:00 GMT",           # no Feb 31
    b"Thu, 30 Feb 2024 00:00:00 GMT",
    b"Tue, 29 Feb 2023 00:00:00 GMT",           # 2023 is a common year
    b"Thu, 29 Feb 1900 00:00:00 GMT",           # a century, not a leap year
    b"Sat, 31 Apr 2023 00:00:00 GMT",
    b"Sat, 31 Jun 2023 00:00:00 GMT",
    b"Sat, 31 Sep 2023 00:00:00 GMT",
    b"Sat, 31 Nov 2023 00:00:00 GMT",
    b"Sat, 00 Nov 2023 00:00:00 GMT",
    b"Saturday, 31-Feb-24 00:00:00 GMT",        # rfc850-date
    b"Sat Feb 31 00:00:00 2024",                # asctime-date
    b"Tue Feb 29 00:00:00 2023",
])
def test_an_impossible_day_of_month_is_no_http_date(value):
    """RFC 9110 5.6.7 takes IMF-fixdate from RFC 5322, whose 3.3 requires
    the day-of-month to exist in that month of that year."""
    assert http.parse_http_date(value) is None


@pytest.mark.parametrize("value,expected", [
    (b"Thu, 29 Feb 2024 00:00:00 GMT", 1709164800),   # leap year
    (b"Tue, 29 Feb 2000 00:00:00 GMT", 951782400),    # a leap century
    (b"Wed, 31 Jan 2024 23:59:59 GMT", 1706745599),
    (b"Sun, 30 Apr 2023 00:00:00 GMT", 1682812800),
    (b"Sun, 31 Dec 2023 00:00:00 GMT", 1703980800),
    (b"Thursday, 29-Feb-24 00:00:00 GMT", 1709164800),
    (b"Thu Feb 29 00:00:00 2024", 1709164800),
])
def test_the_last_day_of_each_month_is_an_http_date(value, expected):
    assert http.parse_http_date(value) == expected
