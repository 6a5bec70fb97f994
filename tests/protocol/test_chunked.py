"""prk_decode_chunked(): corpus, arbitrary splits, byte classes, state
semantics, and a cross-check against the Python reference decoder.

Corpus: tests/corpus/chunked/ (format in corpus/make_corpus.py).
"""
from __future__ import annotations

import collections
import pathlib
import random

import pytest

from parserlib import (
    CHUNK_ERRORS, FIELD_VCHAR, GUARD, HEXDIG, QDTEXT, TCHAR, VCHAR,
    OBS_TEXT, L1, decode_pieces, load, name_of, ref_decode_chunked, split,
)
from prack._native import ffi, lib

CASES = load("chunked")
INCOMPLETE = lib.PRK_INCOMPLETE
END = b"0\r\n\r\n"


def check(case, result) -> None:
    exp = case.exp
    if "error" in exp:
        assert name_of(result.rc) == exp["error"]
        return
    assert result.decoded == exp["decoded"].encode(L1)
    if exp.get("incomplete"):
        assert result.rc == INCOMPLETE
        assert result.consumed == len(case.data)
    else:
        assert result.rc >= 0, name_of(result.rc)
        assert result.consumed == exp["consumed"]
        assert result.leftover == case.data[exp["consumed"]:]


def test_corpus_size_and_coverage():
    assert len(CASES) >= 40
    assert {c.exp["error"] for c in CASES if "error" in c.exp} == set(CHUNK_ERRORS)
    assert any(c.exp.get("incomplete") for c in CASES)
    assert any("consumed" in c.exp and c.exp["consumed"] < len(c.data)
               for c in CASES), "a case with bytes after the body"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_whole(case):
    check(case, decode_pieces([case.data]))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_byte_by_byte(case):
    check(case, decode_pieces([case.data[i:i + 1] for i in range(len(case.data))]))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_two_piece_split(case):
    step = max(1, len(case.data) // 600)  # big bodies: every few bytes
    for k in range(0, len(case.data) + 1, step):
        check(case, decode_pieces(split(case.data, [k])))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_random_splits(case):
    rnd = random.Random(case.name)
    for _ in range(40):
        cuts = [rnd.randrange(len(case.data) + 1)
                for _ in range(rnd.randint(1, 12))]
        check(case, decode_pieces(split(case.data, cuts)))  # may hold b"" pieces


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_agrees(case):
    rc, decoded = ref_decode_chunked(case.data)
    got = decode_pieces([case.data])
    assert name_of(got.rc) == rc
    if isinstance(rc, int) or rc == "PRK_INCOMPLETE":
        assert got.decoded == decoded


def test_reference_agrees_on_mutations():
    rnd = random.Random(7112)
    seeds = [c.data for c in CASES if len(c.data) < 600]
    special = b"\r\n \t;=\"\\0aF:\x00\x7f\x80g"
    outcomes = collections.Counter()
    for _ in range(3000):
        d = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(d) + 1)
            op = rnd.randrange(4)
            if op == 0 and d:
                d[min(i, len(d) - 1)] = rnd.choice(special)
            elif op == 1:
                d[i:i] = bytes([rnd.choice(special)])
            elif op == 2:
                del d[i:i + rnd.randint(1, 2)]
            else:
                d[i:i] = rnd.choice([b"\r\n", b";a", b"=b", b" ", b"0", b"f"])
        data = bytes(d)
        rc, decoded = ref_decode_chunked(data)
        cuts = [rnd.randrange(len(data) + 1) for _ in range(rnd.randint(0, 4))]
        got = decode_pieces(split(data, cuts))
        if isinstance(rc, int):  # complete: rc is the total consumed
            assert got.rc >= 0, (data, name_of(got.rc))
            assert got.consumed == rc and got.leftover == data[rc:]
        else:
            assert name_of(got.rc) == rc, data
        if isinstance(rc, int) or rc == "PRK_INCOMPLETE":
            assert got.decoded == decoded, data
        outcomes[rc if isinstance(rc, str) else "complete"] += 1
    # the mutations reach every outcome, so the comparison means something
    assert set(outcomes) == {"complete", "PRK_INCOMPLETE", *CHUNK_ERRORS}


# --------------------------------------------------------------------------
# state and buffer semantics
# --------------------------------------------------------------------------
def _call(dec, data: bytes):
    buf = GUARD.place(data)
    out_len = ffi.new("size_t *", 12345)
    rc = lib.prk_decode_chunked(dec, buf, len(data), out_len)
    return rc, GUARD.bytes_at(buf, out_len[0])


def test_decoded_bytes_go_to_the_front_in_place():
    data = b"3\r\nabc\r\n2;x=y\r\nde\r\n" + END + b"NEXT"
    buf = GUARD.place(data)
    dec = ffi.new("prk_chunked *")
    out_len = ffi.new("size_t *")
    rc = lib.prk_decode_chunked(dec, buf, len(data), out_len)
    assert rc == len(data) - 4 and out_len[0] == 5
    assert GUARD.bytes_at(buf, 5) == b"abcde"
    assert GUARD.bytes_at(buf + rc, 4) == b"NEXT"


def test_remaining_is_public_progress():
    dec = ffi.new("prk_chunked *")
    assert _call(dec, b"1a\r\nhel") == (INCOMPLETE, b"hel")
    assert dec.remaining == 0x1a - 3
    assert _call(dec, b"") == (INCOMPLETE, b"")
    assert _call(dec, b"x" * 23) == (INCOMPLETE, b"x" * 23)
    assert dec.remaining == 0
    assert _call(dec, b"\r") == (INCOMPLETE, b"")
    assert _call(dec, b"\n" + END) == (6, b"")


def test_pending_counts_only_a_complete_size_line():
    dec = ffi.new("prk_chunked *")
    assert _call(dec, b"7fffffff") == (INCOMPLETE, b"")
    assert dec.remaining == 0x7fffffff        # the digits so far...
    assert lib.prk_chunked_pending(dec) == 0    # ...are not a declared size yet
    assert _call(dec, b"\r\nab") == (INCOMPLETE, b"ab")
    assert lib.prk_chunked_pending(dec) == 0x7fffffff - 2
    dec = ffi.new("prk_chunked *")
    assert _call(dec, b"3;x=y\r\nabc\r\n") == (INCOMPLETE, b"abc")
    assert lib.prk_chunked_pending(dec) == 0


def test_empty_call_with_null_buffer():
    dec = ffi.new("prk_chunked *")
    out_len = ffi.new("size_t *", 7)
    assert lib.prk_decode_chunked(dec, ffi.NULL, 0, out_len) == INCOMPLETE
    assert out_len[0] == 0
    assert _call(dec, b"1\r\nx\r\n" + END) == (11, b"x")


def test_complete_decoder_stays_complete():
    dec = ffi.new("prk_chunked *")
    assert _call(dec, END + b"x") == (5, b"")
    assert _call(dec, b"5\r\nhello\r\n") == (0, b"")


@pytest.mark.parametrize("bad,code", [
    (b"zz", lib.PRK_E_CHUNK_SIZE), (b"1\r\nab", lib.PRK_E_CHUNK_DATA_END),
    (b"1;\x01", lib.PRK_E_CHUNK_EXT), (b"0\r\nA B", lib.PRK_E_TRAILER),
])
def test_errors_are_sticky(bad, code):
    dec = ffi.new("prk_chunked *")
    assert _call(dec, bad) == (code, b"")
    assert _call(dec, b"0\r\n\r\n") == (code, b"")


def test_max_chunk_size_accepted():
    for size in (b"7fffffffffffffff", b"7FFFFFFFFFFFFFFF", b"0" * 15 + b"1"):
        dec = ffi.new("prk_chunked *")
        assert _call(dec, size + b"\r\n") == (INCOMPLETE, b"")
        assert dec.remaining == int(size, 16)


def test_big_body_in_many_calls():
    rnd = random.Random(1)
    payload = bytes(rnd.randrange(256) for _ in range(200_000))
    body, pos = bytearray(), 0
    while pos < len(payload):
        n = rnd.randint(1, 20_000)
        body += b"%x\r\n" % len(payload[pos:pos + n]) + payload[pos:pos + n] + b"\r\n"
        pos += n
    body += END
    pieces, pos = [], 0
    while pos < len(body):
        n = rnd.randint(1, 30_000)
        pieces.append(bytes(body[pos:pos + n]))
        pos += n
    got = decode_pieces(pieces)
    assert got.rc >= 0 and got.decoded == payload and got.consumed == len(body)


# --------------------------------------------------------------------------
# byte classes at each position of the framing
# --------------------------------------------------------------------------
ALL = range(256)


@pytest.mark.parametrize("b", ALL)
def test_byte_as_size(b):
    got = decode_pieces([bytes([b]) + b"\r\n" + b"x" * 15 + b"\r\n" + END])
    if b in HEXDIG:
        size = int(chr(b), 16)
        if size == 0:
            assert got.rc == lib.PRK_E_TRAILER  # "xxx..." is no field line
        elif size == 15:
            assert got.rc >= 0 and got.decoded == b"x" * 15
        else:
            assert got.rc == lib.PRK_E_CHUNK_DATA_END
    else:
        assert got.rc == lib.PRK_E_CHUNK_SIZE


@pytest.mark.parametrize("b", ALL)
def test_byte_after_size(b):
    got = decode_pieces([b"1" + bytes([b]) + b"\r\nx\r\n" + END])
    if b in HEXDIG:  # size 0x10-0x1f: waits for more data than there is
        assert got.rc == INCOMPLETE and got.decoded == b"x\r\n" + END
    elif b in b" \t;":  # "1 CRLF" / "1; CRLF": BWS or ";" without a name
        assert got.rc == lib.PRK_E_CHUNK_EXT
    else:
        assert got.rc == lib.PRK_E_CHUNK_SIZE


@pytest.mark.parametrize("b", ALL)
def test_byte_in_ext_name_and_value(b):
    name = decode_pieces([b"1;a" + bytes([b]) + b"b=c\r\nx\r\n" + END])
    value = decode_pieces([b"1;a=b" + bytes([b]) + b"c\r\nx\r\n" + END])
    quoted = decode_pieces([b'1;a="b' + bytes([b]) + b'c"\r\nx\r\n' + END])
    escaped = decode_pieces([b'1;a="b\\' + bytes([b]) + b'c"\r\nx\r\n' + END])
    ok = lambda r: r.rc >= 0 and r.decoded == b"x"  # noqa: E731
    assert ok(name) == (b in TCHAR or b in b";=")
    assert ok(value) == (b in (VCHAR | OBS_TEXT) - {ord('"')})
    assert ok(quoted) == (b in QDTEXT or b == ord("\\"))
    assert ok(escaped) == (b in FIELD_VCHAR)
    for r in (name, value, quoted, escaped):
        assert r.rc >= 0 or r.rc == lib.PRK_E_CHUNK_EXT, name_of(r.rc)


@pytest.mark.parametrize("b", ALL)
def test_byte_in_trailer(b):
    name = decode_pieces([b"0\r\nA" + bytes([b]) + b"B: v\r\n\r\n"])
    value = decode_pieces([b"0\r\nA: x" + bytes([b]) + b"y\r\n\r\n"])
    assert (name.rc >= 0) == (b in TCHAR or b == ord(":"))
    assert (value.rc >= 0) == (b in FIELD_VCHAR)
    for r in (name, value):
        assert r.rc >= 0 or r.rc == lib.PRK_E_TRAILER, name_of(r.rc)


def test_limits_match_parser_h():
    import re

    import parserlib
    from prack import _native

    text = (pathlib.Path(_native.__file__).parent / "parser.h").read_text()
    for name in ("PRK_CHUNK_MAX_EXT", "PRK_CHUNK_MAX_TRAILER"):
        m = re.search(r"#define\s+%s\s+(\d+)" % name, text)
        assert m and int(m.group(1)) == getattr(parserlib, name)
