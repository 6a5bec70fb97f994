"""Fields a worker names in its Connection header are hop-by-hop (RFC 9110
7.6.1) and do not reach the client, wherever they stand; the `close` token
keeps its meaning (RF_CLOSE)."""
from __future__ import annotations

from prack.api.checks import check_response, check_response_cached
from prack.ipc import frames


def test_a_named_field_after_connection_is_dropped_and_close_kept():
    _, flags, block, _ = check_response(200, [("Connection", "close, X-Foo"),
                                              ("X-Foo", "1"), ("X-Bar", "2")])
    assert block == b"X-Bar: 2\r\n"
    assert flags & frames.RF_CLOSE


def test_a_named_field_before_connection_is_dropped_too():
    _, flags, block, _ = check_response(200, {"X-Foo": "1", "X-Bar": "2",
                                              "Connection": "X-Foo"})
    assert block == b"X-Bar: 2\r\n"
    assert not flags & frames.RF_CLOSE


def test_names_match_whatever_their_case_and_every_line_of_the_field_goes():
    block = check_response(200, [("x-FOO", "1"), ("X-Keep", "k"), ("X-Foo", "2"),
                                 ("Connection", " x-foo ,\tX-Other")])[2]
    assert block == b"X-Keep: k\r\n"


def test_several_connection_fields_add_up():
    block = check_response(200, [("Connection", "X-A"), ("Connection", "X-B"),
                                 ("X-A", "1"), ("X-B", "2"), ("X-C", "3")])[2]
    assert block == b"X-C: 3\r\n"


def test_empty_and_non_token_items_name_nothing():
    block = check_response(200, {"Connection": ", ,x y, \"q\"", "X-A": "1"})[2]
    assert block == b"X-A: 1\r\n"


def test_a_named_date_or_server_is_replaced_by_pracks_own():
    _, flags, block, _ = check_response(
        200, {"Date": "Sun, 06 Nov 1994 08:49:37 GMT", "Server": "w",
              "Connection": "date, server"})
    assert block == b""
    assert not flags & (frames.RF_HAS_DATE | frames.RF_HAS_SERVER)


def test_naming_a_hop_by_hop_field_changes_nothing_more():
    _, flags, block, _ = check_response(200, {"Connection": "keep-alive, Upgrade",
                                              "Keep-Alive": "timeout=5", "X-A": "1"})
    assert block == b"X-A: 1\r\n" and not flags & frames.RF_CLOSE


def test_without_connection_nothing_changes():
    assert check_response(200, {"X-Foo": "1"})[2] == b"X-Foo: 1\r\n"


def test_the_cached_check_drops_them_as_well():
    headers = {"Connection": "close, X-Foo", "X-Foo": "1", "X-Bar": "2"}
    for _ in range(2):
        _, flags, block, _ = check_response_cached(200, headers, "code")
        assert block == b"X-Bar: 2\r\n" and flags & frames.RF_CLOSE
