"""A worker's response head is bounded: the header block Prack builds from
its fields (one "Name: value\r\n" line per forwarded field) may have at most
limits.max_response_header_size bytes; over it the response is invalid and
the error names the setting."""
from __future__ import annotations

import socket

import pytest

from prack import config
from prack.api.checks import (HEAD_LIMIT_SETTING, BadResponse, cached_check,
                              check_response, check_response_cached)
from prack.api.process import ApiServer
from prack.api.websockets import WebSockets


def fields(total: int) -> dict:
    """Header fields whose block is exactly `total` bytes (total >= 6)."""
    return {"X-A": "v" * (total - len("X-A: \r\n"))}


def test_a_block_of_exactly_the_limit_passes():
    assert len(check_response(200, fields(1024), "code", 1024)[2]) == 1024


def test_one_byte_over_the_limit_is_refused_naming_the_setting():
    with pytest.raises(BadResponse) as err:
        check_response(200, fields(1025), "code", 1024)
    assert str(err.value) == ("headers: 1025 bytes of header fields, over "
                              "limits.max_response_header_size (1024 bytes)")
    assert HEAD_LIMIT_SETTING == "limits.max_response_header_size"


def test_many_small_fields_count_as_their_sum():
    many = [("X-%d" % i, "v") for i in range(300)]
    size = len(check_response(200, many)[2])
    check_response(200, many, "status", size)
    with pytest.raises(BadResponse, match="over limits.max_response_header_size"):
        check_response(200, many, "status", size - 1)


def test_what_prack_drops_does_not_count():
    """Framing, hop-by-hop, null and Connection-named fields are not in
    the block, so they do not count against the limit."""
    headers = {"X-A": "1", "Content-Length": "5" * 10, "Keep-Alive": "k" * 2000,
               "X-Gone": None, "X-Named": "n" * 2000, "Connection": "x-named"}
    assert check_response(200, headers, "code", 1024)[2] == b"X-A: 1\r\n"


def test_no_limit_when_none_is_given():
    assert len(check_response(200, fields(100_000))[2]) == 100_000


def test_a_remembered_head_is_within_its_cache_limit_and_a_refused_one_is_not_kept():
    """Each cache has its limit: a block kept under a larger one is refused
    by a cache with a smaller one, and one refused is never kept."""
    headers = fields(2000)
    assert len(cached_check(4096)(200, headers, "code")[2]) == 2000
    with pytest.raises(BadResponse, match="2000 bytes"):
        cached_check(1999)(200, headers, "code")
    cache = cached_check(4096)
    big = fields(5000)
    for _ in range(2):
        with pytest.raises(BadResponse, match="5000 bytes"):
            cache(200, big, "code")
    assert cache.checked == {}
    assert len(check_response_cached(200, big, "code")[2]) == 5000     # no limit


def test_list_values_not_cached_are_bounded_too():
    with pytest.raises(BadResponse, match="over limits.max_response_header_size"):
        cached_check(1024)(200, {"Set-Cookie": ["a" * 600, "b" * 600]}, "code")


def test_a_websocket_accept_is_bounded_as_any_head():
    assert len(WebSockets.check_accept(fields(1024), 1024)[2]) == 1024
    with pytest.raises(BadResponse, match="1025 bytes of header fields, over "
                       "limits.max_response_header_size"):
        WebSockets.check_accept(fields(1025), 1024)


def test_the_default_is_64k_within_nginx_range():
    setting = next(s for s in config.SETTINGS if s.name == HEAD_LIMIT_SETTING)
    assert setting.check(setting.default) == 65536


def test_posts_and_streamed_heads_use_the_setting():
    class _Segment:
        nrings = 1
        nslots = 8

        def ring(self, i):
            return None

    a, b = socket.socketpair()
    cfg = config.load(None, env={"PRACK_LIMITS_MAX_RESPONSE_HEADER_SIZE": "2k"})
    server = ApiServer(cfg, 1, a, b, _Segment(), -1)
    try:
        assert server.posts.check_response.max_size == 2048
        assert server.streams.max_head == 2048
    finally:
        server.sel.close()
        a.close()
        b.close()
