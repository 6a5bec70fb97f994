"""End to end: what a worker's response head may carry. Header fields over
limits.max_response_header_size give the client a 502 and the worker a 400
naming the setting (v1, v2 in JSON and msgpack, streamed heads); fields the
worker's Connection names do not reach the client; a Date that is not an
HTTP-date is replaced by Prack's own. Clients on raw sockets check their
answer byte for byte (only the value of Prack's Date varies)."""
from __future__ import annotations

import base64
import json
import re
import time

import msgspec
import pytest

from prack.protocol.http import parse_http_date

REQ = b"GET /heads HTTP/1.1\r\nHost: x\r\n\r\n"
LIMIT = 65536                   # the default of limits.max_response_header_size
NAMED = "over limits.max_response_header_size (65536 bytes)"
BAD_GATEWAY = (b"HTTP/1.1 502 Bad Gateway\r\nDate: %s\r\nServer: Prack\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\n"
               b"Bad Gateway\n")


def call(server, method, path, body=None, msgpack=False):
    """One API call by a worker: (status, decoded body)."""
    c = server.api_client()
    headers = {}
    if msgpack:
        headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        body = msgspec.msgpack.encode(body)
    elif body is not None:
        headers = {"Content-Type": "application/json"}
        body = json.dumps(body)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (msgspec.msgpack.decode(data) if msgpack else json.loads(data))


def read_raw(client) -> tuple[bytes, bytes]:
    """The next whole response as sent, and the value of its one Date,
    which must be a current IMF-fixdate (Prack's own)."""
    while b"\r\n\r\n" not in client.buf:
        assert client._fill(), client.buf
    head, _, rest = client.buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head + b"\r\n")[1])
    while len(rest) < length:
        assert client._fill(), client.buf
        head, _, rest = client.buf.partition(b"\r\n\r\n")
    raw = head + b"\r\n\r\n" + rest[:length]
    client.buf = rest[length:]
    dates = re.findall(rb"\r\nDate: ([^\r]*)\r\n", raw)
    assert len(dates) == 1, raw
    return raw, dates[0]


def prack_date(value: bytes) -> bytes:
    """`value`, checked to be Prack's IMF-fixdate for about now."""
    assert re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", value)
    assert abs(parse_http_date(value) - time.time()) < 5, value
    return value


def fields(total: int) -> dict:
    """Header fields whose lines take exactly `total` bytes."""
    return {"X-Big": "v" * (total - len("X-Big: \r\n"))}


def v1(server, client, headers, body=b"ok"):
    """The next request answered through v1: (status, answer to the worker)."""
    status, job = call(server, "GET", "/api/v1/request")
    assert status == 200, job
    return call(server, "POST", "/api/v1/response", {
        "identifier": job["identifier"], "code": 200, "headers": headers,
        "body": base64.b64encode(body).decode()})


def pull_v2(server) -> str:
    status, batch = call(server, "GET", "/api/v2/requests?max=1&wait=5")
    assert status == 200 and len(batch["requests"]) == 1, batch
    return batch["requests"][0]["id"]


def assert_bad_gateway_then_usable(server, client):
    raw, date = read_raw(client)
    assert raw == BAD_GATEWAY % prack_date(date)
    # The connection stays usable: the next request is answered.
    client.send(REQ)
    assert v1(server, client, {"X-A": "1"}, b"next")[0] == 200
    raw, date = read_raw(client)
    assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-A: 1\r\n"
                   b"Content-Length: 4\r\n\r\nnext" % prack_date(date))


# -- the limit ------------------------------------------------------------------------

def test_v1_a_head_of_exactly_the_limit_reaches_the_client(srv):
    with srv.raw() as client:
        client.send(REQ)
        assert v1(srv, client, fields(LIMIT)) == (200, {"message": "thank you"})
        raw, date = read_raw(client)
        assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\n"
                       % prack_date(date) + b"X-Big: " + b"v" * (LIMIT - 9) +
                       b"\r\nContent-Length: 2\r\n\r\nok")


def test_v1_a_head_over_the_limit_is_a_502_and_the_worker_is_told_the_setting(srv):
    with srv.raw() as client:
        client.send(REQ)
        assert v1(srv, client, fields(LIMIT + 1)) == (400, {
            "error": "headers: 65537 bytes of header fields, " + NAMED})
        assert_bad_gateway_then_usable(srv, client)


def test_v1_twenty_thousand_small_fields_are_refused(srv):
    with srv.raw() as client:
        client.send(REQ)
        status, body = v1(srv, client, {"X-%d" % i: "v" for i in range(20000)})
        assert status == 400 and body["error"].endswith(NAMED), body
        assert_bad_gateway_then_usable(srv, client)


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_v2_an_item_over_the_limit_is_invalid_and_its_client_gets_502(srv, msgpack):
    with srv.raw() as big, srv.raw() as small:
        big.send(REQ)
        small.send(REQ)
        first, second = pull_v2(srv), pull_v2(srv)
        body = b"ok" if msgpack else "b2s="
        status, res = call(srv, "POST", "/api/v2/responses", {"responses": [
            {"id": first, "status": 200, "headers": [["X-Big", "v" * LIMIT]], "body": body},
            {"id": second, "status": 200, "headers": [["X-A", "1"]], "body": body},
        ]}, msgpack=msgpack)
        assert (status, res) == (200, {"results": [
            {"id": first, "status": "invalid",
             "error": "headers: %d bytes of header fields, %s" % (LIMIT + 9, NAMED)},
            {"id": second, "status": "ok"}]})
        raw, date = read_raw(big)
        assert raw == BAD_GATEWAY % prack_date(date)
        raw, date = read_raw(small)
        assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-A: 1\r\n"
                       b"Content-Length: 2\r\n\r\nok" % prack_date(date))


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_a_streamed_head_over_the_limit_is_a_502(srv, msgpack):
    with srv.raw() as client:
        client.send(REQ)
        ident = pull_v2(srv)
        status, res = call(srv, "POST", "/api/v2/requests/%s/head" % ident,
                           {"status": 200, "headers": fields(LIMIT + 100)}, msgpack=msgpack)
        assert (status, res) == (400, {
            "error": "headers: %d bytes of header fields, %s" % (LIMIT + 100, NAMED)})
        assert_bad_gateway_then_usable(srv, client)


def test_a_streamed_head_within_the_limit_goes_out(srv):
    with srv.raw() as client:
        client.send(REQ)
        ident = pull_v2(srv)
        assert call(srv, "POST", "/api/v2/requests/%s/head" % ident,
                    {"status": 200, "headers": {"X-A": "1"}})[0] == 200
        assert call(srv, "POST", "/api/v2/requests/%s/end" % ident, {})[0] == 200
        while not client.buf.endswith(b"0\r\n\r\n"):
            assert client._fill(), client.buf
        date = re.search(rb"\r\nDate: ([^\r]*)\r\n", client.buf)[1]
        assert client.buf == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-A: 1\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                              % prack_date(date))
        client.buf = b""


# -- Connection-named fields and Date -------------------------------------------------

def test_fields_named_in_connection_do_not_reach_the_client(srv):
    with srv.raw() as client:
        client.send(REQ)
        assert v1(srv, client, {"X-Foo": "secret", "Connection": "close, X-Foo",
                                "X-Bar": "kept"})[0] == 200
        raw, date = read_raw(client)
        assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-Bar: kept\r\n"
                       b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
                       % prack_date(date))
        assert client.closed_by_peer()      # close kept its meaning


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_v2_fields_named_in_connection_do_not_reach_the_client(srv, msgpack):
    with srv.raw() as client:
        client.send(REQ)
        ident = pull_v2(srv)
        status, res = call(srv, "POST", "/api/v2/responses", {"responses": [
            {"id": ident, "status": 200, "body": b"ok" if msgpack else "b2s=",
             "headers": [["X-Foo", "1"], ["X-Bar", "2"], ["Connection", "X-Foo"]]}]},
            msgpack=msgpack)
        assert (status, res) == (200, {"results": [{"id": ident, "status": "ok"}]})
        raw, date = read_raw(client)
        assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-Bar: 2\r\n"
                       b"Content-Length: 2\r\n\r\nok" % prack_date(date))


@pytest.mark.parametrize("value", ["yesterday", "Sun, 06 Nov 1994 08:49:37 UTC"])
def test_an_invalid_date_is_replaced_by_pracks_own(srv, value):
    with srv.raw() as client:
        client.send(REQ)
        assert v1(srv, client, {"Date": value, "X-A": "1"})[0] == 200
        raw, date = read_raw(client)
        assert raw == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\nX-A: 1\r\n"
                       b"Content-Length: 2\r\n\r\nok" % prack_date(date))


def test_a_valid_date_from_the_worker_is_kept(srv):
    with srv.raw() as client:
        client.send(REQ)
        assert v1(srv, client, {"Date": "Sun, 06 Nov 1994 08:49:37 GMT"})[0] == 200
        raw, _ = read_raw(client)
        assert raw == (b"HTTP/1.1 200 OK\r\nServer: Prack\r\n"
                       b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                       b"Content-Length: 2\r\n\r\nok")


def test_a_streamed_head_with_an_invalid_date_gets_pracks_own(srv):
    with srv.raw() as client:
        client.send(REQ)
        ident = pull_v2(srv)
        assert call(srv, "POST", "/api/v2/requests/%s/head" % ident,
                    {"status": 200, "headers": {"Date": "soon"}})[0] == 200
        assert call(srv, "POST", "/api/v2/requests/%s/end" % ident, {})[0] == 200
        while not client.buf.endswith(b"0\r\n\r\n"):
            assert client._fill(), client.buf
        date = re.search(rb"\r\nDate: ([^\r]*)\r\n", client.buf)[1]
        assert client.buf == (b"HTTP/1.1 200 OK\r\nDate: %s\r\nServer: Prack\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                              % prack_date(date))
        client.buf = b""
