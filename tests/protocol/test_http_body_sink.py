"""The reader's incremental body mode (bodies over inline_limit go to a sink
as they arrive, never held whole), with byte strings only: every input is
fed whole, one byte at a time and in odd-sized pieces, with a pipelined
request behind it."""
import pytest

from prack.protocol import http

LIMITS = http.Limits(max_body_size=4096, max_header_size=2048, max_request_line=512,
                     max_headers=20)
INLINE = 100
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def chunked(body: bytes, size: int = 37) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def run(data: bytes, step: int | None, limits=LIMITS):
    """Feed `data`; give the reader a sink whenever it asks. Returns
    (requests, sunk bytes per request, largest bytes held by the reader)."""
    reader = http.RequestReader(limits, INLINE)
    reqs, sunk = [], []
    current = bytearray()
    held = 0
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        reader.feed(piece)
        while True:
            req = reader.maybe_read_request()
            if req is None and reader.wants_sink:
                reader.set_sink(current.extend)
                continue
            held = max(held, len(reader.buf) + len(reader._body or b""))
            if req is None:
                break
            reqs.append(req)
            sunk.append(bytes(current))
            current.clear()
            reader.next()
    return reqs, sunk, held


STEPS = (None, 1, 7, 1000)


@pytest.mark.parametrize("step", STEPS)
def test_content_length_over_the_inline_limit_goes_to_the_sink(step):
    body = bytes(range(256)) * 10
    data = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    reqs, sunk, held = run(data + body + NEXT, step)
    assert [r.path for r in reqs] == ["/up", "/next"]
    assert reqs[0].body == b"" and reqs[0].content_length == len(body)
    assert sunk[0] == body and sunk[1] == b""
    if step is not None and step < len(body):
        assert held < len(body)       # never the whole body at once


@pytest.mark.parametrize("step", STEPS)
def test_chunked_over_the_inline_limit_switches_to_the_sink(step):
    body = bytes(range(256)) * 12
    data = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)
    reqs, sunk, held = run(data + NEXT, step)
    assert [r.path for r in reqs] == ["/up", "/next"]
    assert reqs[0].body == b"" and reqs[0].content_length == len(body)
    assert sunk[0] == body
    if step is not None and step < 100:
        assert held < INLINE + 2 * step + 64


@pytest.mark.parametrize("step", STEPS)
def test_bodies_within_the_inline_limit_stay_in_the_request(step):
    data = (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
            + b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(b"y" * 100) + NEXT)
    reqs, sunk, _ = run(data, step)
    assert [(r.path, r.body, r.content_length) for r in reqs] == [
        ("/a", b"x" * 100, 100), ("/b", b"y" * 100, 100), ("/next", b"", None)]
    assert sunk == [b"", b"", b""]


def test_without_a_sink_the_reader_waits():
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n" + b"z" * 200)
    assert reader.maybe_read_request() is None
    assert reader.wants_sink and reader.in_body
    assert reader.head_request.path == "/up"
    assert reader.maybe_read_request() is None      # still waiting, nothing lost
    got = bytearray()
    reader.set_sink(got.extend)
    req = reader.maybe_read_request()
    assert req.content_length == 200 and got == b"z" * 200 and not reader.wants_sink


def test_complete_chunked_body_waits_for_the_sink():
    body = b"q" * 300
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunked(body, 300) + NEXT)
    assert reader.maybe_read_request() is None and reader.wants_sink
    got = bytearray()
    reader.set_sink(got.extend)
    req = reader.maybe_read_request()
    assert (req.path, req.body, req.content_length, bytes(got)) == ("/up", b"", 300, body)
    reader.next()
    assert reader.maybe_read_request().path == "/next"


def test_expect_head_is_available_before_the_body():
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                b"Content-Length: 5\r\n\r\n")
    assert reader.maybe_read_request() is None
    assert reader.wants_continue and reader.head_request.content_length == 5
    reader.feed(b"hello")
    assert reader.maybe_read_request().body == b"hello"
    assert reader.head_request is None


@pytest.mark.parametrize("step", STEPS)
def test_max_body_size_still_holds_with_a_sink(step):
    # Content-Length: refused from the head, before any body byte
    big = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4097\r\n\r\n"
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(big)
    with pytest.raises(http.ProtocolError) as err:
        reader.maybe_read_request()
    assert err.value.status == 413
    # chunked: refused once what arrived (or a chunk's declared size) passes it
    data = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(b"w" * 5000, 1000))
    with pytest.raises(http.ProtocolError) as err:
        run(data, step)
    assert err.value.status == 413


def test_a_sink_that_fails_leaves_the_error_to_the_caller():
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n" + b"z" * 150)
    assert reader.maybe_read_request() is None

    def full(data):
        raise OSError(28, "No space left on device")
    reader.set_sink(full)
    with pytest.raises(OSError):
        reader.maybe_read_request()


def test_no_more_is_decoded_while_the_sink_is_missing():
    reader = http.RequestReader(LIMITS, INLINE)
    reader.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (150, b"a" * 150))
    assert reader.maybe_read_request() is None and reader.wants_sink
    rest = b"%x\r\n%s\r\n0\r\n\r\n" % (2000, b"b" * 2000)
    reader.feed(rest)
    assert reader.maybe_read_request() is None
    assert len(reader._body) == 150 and len(reader.buf) == len(rest)   # held, not decoded
    got = bytearray()
    reader.set_sink(got.extend)
    req = reader.maybe_read_request()
    assert req.content_length == 2150 and got == b"a" * 150 + b"b" * 2000
