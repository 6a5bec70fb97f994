"""Differential check against llhttp (httptools) and h11 (tests/differential.py).

A few thousand seeded near-valid requests go through Prack's RequestReader,
llhttp and h11; every difference must fall in a category of the allow-list
(differential.ALLOWED, each naming the RFC 9112 / 9110 section behind
Prack's choice, and each described in docs/security.md). A framing
difference (a body, or where the next request starts) is never allowed.
Bigger runs: python tests/differential.py --cases 200000.
"""
from __future__ import annotations

import pathlib
import re

import pytest

import differential as d
from prack.protocol import http

CASES = 10000
SEED = 1
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture(scope="module")
def summary():
    return d.run(SEED, CASES)


def test_no_difference_outside_the_allow_list(summary):
    lines = []
    for (peer, raw), n in sorted(summary.findings.items()):
        lines.append(f"{n} x {peer}: {raw}; e.g. {summary.examples[(peer, raw)][0]!r}")
    assert not lines, "differences no category allows:\n" + "\n".join(lines)


def test_the_generator_reaches_the_interesting_parts(summary):
    """The check can only fail if the mutations produce differences: the
    run must hit the main categories of both peers (a generator that
    degenerated to valid requests would pass the test above vacuously)."""
    seen = {c for _, c in summary.by_category}
    for cat in ("bare-lf", "obs-fold", "te-and-cl", "te-unknown-coding", "host",
                "chunk-ext", "chunk-ext-lenient", "extension-method", "content-length"):
        assert cat in seen, (cat, sorted(seen))
    assert {p for p, _ in summary.by_category} == set(d.PEERS)
    assert summary.differing > CASES // 10


def test_generator_is_deterministic():
    a = [data for _, _, data in d.generate(5, 300)]
    assert a == [data for _, _, data in d.generate(5, 300)]
    assert a != [data for _, _, data in d.generate(6, 300)]


def _outcome(body: bytes, end: str = "ok") -> d.Outcome:
    return d.Outcome([(b"POST", b"/", ((b"host", b"h"),), body)], end,
                     meta=[(1, {b""})])


@pytest.mark.parametrize("prack,peer", [
    (_outcome(b"abc"), _outcome(b"ab")),                       # bodies differ
    (_outcome(b"abc"), d.Outcome([], "incomplete")),           # Prack took one more
    (d.Outcome([], "incomplete"), _outcome(b"")),              # peer took one Prack waits on
])
def test_framing_differences_are_never_allowed(prack, peer):
    raw = d.classify(b"", prack, "llhttp", peer)
    assert d.category(raw, b"") is None, raw


def test_allow_list_entries_name_an_rfc_section():
    for name, why in d.ALLOWED.items():
        assert re.match(r"RFC (9112|9110) \d", why), name


def test_every_category_is_in_security_md():
    text = DOC.read_text("utf-8")
    missing = [name for name in d.ALLOWED if f"`{name}`" not in text]
    assert not missing, f"docs/security.md does not describe: {missing}"


# Smuggling probes with the answer Prack must give: each is a request that
# some front-end or back-end has once framed differently. They are also in
# the generator's space; here they are pinned.
H = b"POST / HTTP/1.1\r\nHost: h\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("data,status", [
    (H + b"Content-Length: 5\r\nContent-Length: 05\r\n\r\nhello" + NEXT, 400),  # found here
    (H + b"Content-Length: 5, 05\r\n\r\nhello" + NEXT, 400),
    (H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    (H + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
])
def test_smuggling_probes_are_refused(data, status):
    reader = http.RequestReader(d.LIMITS)
    reader.feed(data)
    with pytest.raises(http.ProtocolError) as exc:
        while reader.maybe_read_request() is not None:
            reader.next()
    assert exc.value.status == status


def test_identical_content_length_list_still_frames_one_body():
    reader = http.RequestReader(d.LIMITS)
    reader.feed(H + b"Content-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello" + NEXT)
    first = reader.maybe_read_request()
    assert first.body == b"hello"
    reader.next()
    assert reader.maybe_read_request().target == "/next"
