"""A Date from a worker that is not an HTTP-date (RFC 9110 5.6.7) is left
out, without RF_HAS_DATE, so the acceptor writes Prack's own; a valid one
passes as sent, and of two only the first valid one does (Date is a
singleton field)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from prack.api.checks import check_response, check_response_cached
from prack.ipc import frames

IMF = "Sun, 06 Nov 1994 08:49:37 GMT"


def test_an_imf_fixdate_passes_and_prack_adds_none():
    _, flags, block, _ = check_response(200, {"Date": IMF})
    assert block == b"Date: " + IMF.encode() + b"\r\n"
    assert flags & frames.RF_HAS_DATE


@pytest.mark.parametrize("value", ["Sunday, 06-Nov-94 08:49:37 GMT",
                                   "Sun Nov  6 08:49:37 1994"])
def test_the_obsolete_formats_a_recipient_must_read_pass(value):
    assert check_response(200, {"Date": value})[1] & frames.RF_HAS_DATE


@pytest.mark.parametrize("value", ["yesterday", "", "1994-11-06T08:49:37Z",
                                   "Sun, 06 Nov 1994 08:49:37 UTC",
                                   "Sun, 06 Foo 1994 08:49:37 GMT",
                                   "Sun, 06 Nov 1994 25:49:37 GMT", "784111777"])
def test_an_invalid_date_is_dropped_and_not_flagged(value):
    _, flags, block, _ = check_response(200, {"Date": value, "X-A": "1"})
    assert block == b"X-A: 1\r\n"
    assert not flags & frames.RF_HAS_DATE


def test_whatever_its_case_or_number_type():
    _, flags, block, _ = check_response(200, [("date", 12345), ("X-A", "1")])
    assert block == b"X-A: 1\r\n" and not flags & frames.RF_HAS_DATE


def test_of_two_dates_the_first_valid_one_stays():
    _, flags, block, _ = check_response(200, [("Date", "soon"), ("Date", IMF),
                                              ("Date", "Mon, 07 Nov 1994 08:49:37 GMT")])
    assert block == b"Date: " + IMF.encode() + b"\r\n"
    assert flags & frames.RF_HAS_DATE


def test_the_cached_check_drops_it_as_well():
    for _ in range(2):
        _, flags, block, _ = check_response_cached(200, {"Date": "soon"}, "code")
        assert block == b"" and not flags & frames.RF_HAS_DATE


def test_the_memory_of_the_last_good_date_never_admits_another_value():
    """The last valid Date is remembered to skip reading it again; an empty
    value before any (in a fresh process), or a different one after, is
    still read."""
    fresh = subprocess.run(
        [sys.executable, "-c", "from prack.api.checks import check_response as c; "
         "print(c(200, {'Date': ''})[2])"], capture_output=True, text=True, check=True)
    assert fresh.stdout == "b''\n"
    assert check_response(200, {"Date": IMF})[2] != b""
    assert check_response(200, {"Date": IMF + "x"})[2] == b""
    assert check_response(200, {"Date": ""})[2] == b""
