"""StaticFiles in process: the answers RFC 9110 (and nginx's precedent)
give to requests at the edge of the rules."""
from __future__ import annotations

import os
import time

import pytest

from prack.acceptor import static
from prack.protocol import http


@pytest.fixture
def files(tmp_path):
    (tmp_path / "index.html").write_bytes(b"<h1>home</h1>\n")
    (tmp_path / "big.bin").write_bytes(b"b" * (static.SMALL_FILE + 10))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (tmp_path / "link").symlink_to(tmp_path / "index.html")
    # A modification time well in the past, so "now" is after it.
    for name in ("index.html", "big.bin"):
        os.utime(tmp_path / name, (1_600_000_000, 1_600_000_000))
    return static.StaticFiles(str(tmp_path), "/static/")


def close(answer):
    if answer.__class__ is static.FileAnswer:
        os.close(answer.fd)
    return answer


@pytest.mark.parametrize("path", [
    "/static/index.html/", "/static/index.html/.", "/static/index.html%2F",
    "/static/index.html//", "/static/big.bin/", "/static/link/",
    "/static/docs/index.html/",
])
def test_a_file_named_with_a_trailing_slash_is_not_found(files, path):
    """A trailing slash names a directory: a file there is 404, as nginx
    answers, never the file under a second URI."""
    assert close(files.answer("GET", path, [])).status == 404


def test_the_trailing_slash_still_serves_a_directory_index(files):
    assert files.answer("GET", "/static/docs/", []).body == b"<h1>docs</h1>\n"
    assert files.answer("GET", "/static/", []).body == b"<h1>home</h1>\n"
    assert files.answer("GET", "/static/index.html", []).status == 200
    assert files.answer("GET", "/static/docs", []).status == 301


def test_the_file_without_the_slash_is_served_after_the_slashed_one_was_refused(files):
    """The path cache keys on the request path: the refusal of "x/" is not
    taken for "x", nor the reverse."""
    assert files.answer("GET", "/static/index.html/", []).status == 404
    assert files.answer("GET", "/static/index.html", []).status == 200
    assert files.answer("GET", "/static/index.html/", []).status == 404


@pytest.mark.parametrize("path", ["/static/index.html", "/static/big.bin"])
def test_two_range_fields_are_ignored_and_the_whole_file_sent(files, path):
    """RFC 9110 14.2: Range holds one ranges-specifier; two fields make an
    invalid one, which the server may ignore: 200 with the whole file."""
    one = close(files.answer("GET", path, [(b"range", b"bytes=0-4")]))
    assert one.status == 206
    two = close(files.answer("GET", path, [(b"range", b"bytes=0-4"),
                                           (b"range", b"bytes=5-9")]))
    assert two.status == 200
    assert b"Content-Range" not in two.header_block
    whole = os.path.getsize(files.root + path[len("/static"):].encode())
    length = two.length if two.__class__ is static.FileAnswer else len(two.body)
    assert length == whole


def test_two_range_fields_one_unsatisfiable_are_still_ignored(files):
    """Ignored as a whole: not 416 because one of them cannot be met."""
    ans = files.answer("GET", "/static/index.html", [(b"range", b"bytes=0-4"),
                                                     (b"range", b"bytes=9999-")])
    assert ans.status == 200


def test_an_if_modified_since_in_the_future_is_ignored(files):
    """RFC 9110 13.1.3: a date later than the server's clock is invalid; the
    full 200 goes out (a 304 would hide any change until that date)."""
    future = http.format_http_date(time.time() + 86400).encode()
    ans = files.answer("GET", "/static/index.html", [(b"if-modified-since", future)])
    assert ans.status == 200 and ans.body == b"<h1>home</h1>\n"
    ans = close(files.answer("GET", "/static/big.bin", [(b"if-modified-since", future)]))
    assert ans.status == 200
    # A past date after the modification still gives 304.
    past = http.format_http_date(time.time() - 60).encode()
    assert files.answer("GET", "/static/index.html",
                        [(b"if-modified-since", past)]).status == 304


def test_conditionals_carrying_an_impossible_date_are_ignored(files):
    """Feb 31 is no HTTP-date: If-Modified-Since and If-Unmodified-Since
    holding it are ignored (RFC 9110 13.1.3, 13.1.4), and so is the
    If-Range that would restrict a Range (13.1.5: it fails, so the whole
    file)."""
    bad = b"Sat, 31 Feb 2024 00:00:00 GMT"
    assert files.answer("GET", "/static/index.html",
                        [(b"if-modified-since", bad)]).status == 200
    assert files.answer("GET", "/static/index.html",
                        [(b"if-unmodified-since", b"Sat, 31 Feb 2001 00:00:00 GMT")]).status == 200
    ans = files.answer("GET", "/static/index.html",
                       [(b"range", b"bytes=0-3"), (b"if-range", bad)])
    assert ans.status == 200 and ans.body == b"<h1>home</h1>\n"


def test_date_conditionals_given_twice_are_ignored(files):
    """RFC 9110 13.1.3 and 13.1.4: If-Modified-Since or If-Unmodified-Since
    with more than one member (two fields) is ignored, whichever comes
    last: no 304, no 412."""
    late = http.format_http_date(time.time() - 60).encode()
    early = b"Mon, 01 Jan 2001 00:00:00 GMT"
    for order in ((late, early), (early, late)):
        ans = files.answer("GET", "/static/index.html",
                           [(b"if-modified-since", v) for v in order])
        assert ans.status == 200
        ans = files.answer("GET", "/static/index.html",
                           [(b"if-unmodified-since", v) for v in order])
        assert ans.status == 200
    assert files.answer("GET", "/static/index.html",
                        [(b"if-modified-since", late)]).status == 304
    assert files.answer("GET", "/static/index.html",
                        [(b"if-unmodified-since", early)]).status == 412


def test_two_if_range_fields_fail_the_condition(files):
    """RFC 9110 13.1.5: If-Range holds one validator; two match no
    representation, so the Range is not applied: the whole file."""
    etag = files.answer("GET", "/static/index.html", []).header_block \
        .split(b"ETag: ")[1].split(b"\r\n")[0]
    assert files.answer("GET", "/static/index.html",
                        [(b"range", b"bytes=0-3"), (b"if-range", etag)]).status == 206
    ans = files.answer("GET", "/static/index.html",
                       [(b"range", b"bytes=0-3"), (b"if-range", etag), (b"if-range", etag)])
    assert ans.status == 200 and ans.body == b"<h1>home</h1>\n"
