"""Wire shapes that are assembled by hand rather than by msgspec."""
import msgspec

from prack.protocol import messages

from prack.ipc import slots
def test_msgpack_request_batch_is_what_msgspec_encodes():
    """A v2 msgpack pull answer is built from items encoded one by one (the
    environment spliced from the ring): it must be byte for byte the batch
    msgspec would encode, for every array header size."""
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTP_HOST": "h"}
    encode = msgspec.msgpack.encode
    decode = msgspec.msgpack.Decoder(messages.RequestBatch).decode
    for n in (0, 1, 15, 16, 300, 0x10000):
        items = [messages.RequestItem("%032x" % i, env, b"b%d" % i, 1.5) for i in range(n)]
        parts = [encode(messages.RequestItem(it.id, msgspec.Raw(encode(env)), it.body, it.deadline))
                 for it in items]
        data = messages.msgpack_request_batch(parts)
        assert data == encode(messages.RequestBatch(items))
        assert decode(data).requests == items


def test_identifiers_round_trip():
    for parts in ((1, 0, 0, 1), (0xFFFF, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1), (7, 3, 1234, 5 << 40)):
        ident = slots.make_identifier(*parts)
        assert len(ident) == 32
        assert ident == "%04x%04x%08x%016x" % parts
        assert slots.parse_identifier(ident) == parts
    for bad in ("", "0" * 31, "0" * 33, "G" * 32, "0x" + "0" * 30, " " + "0" * 31,
                "A" * 32, "_".join(["0" * 16, "0" * 15]), None, 5):
        assert slots.parse_identifier(bad) is None, bad


def test_checked_responses_are_remembered_only_when_valid():
    """The API process remembers validated status + header sets; what it
    returns is what a fresh check returns, and bad ones still fail."""
    import pytest

    from prack.api import checks as apimsg

    for code, headers in ((200, [("Content-Type", "text/plain")]),
                          (200, {"Content-Type": "text/plain"}),
                          ("404", None), (204, []), (200, {"Set-Cookie": ["a=1", "b=2"]}),
                          (200, [("Connection", "close"), ("Date", "x"), ("Server", "y")])):
        fresh = apimsg.check_response(code, headers, "status")
        assert apimsg.check_response_cached(code, headers, "status") == fresh
        assert apimsg.check_response_cached(code, headers, "status") == fresh
    for code, headers in ((99, None), (200, [("Bad Name", "x")]), (200, {"X": "a\r\nb"})):
        for _ in range(2):
            with pytest.raises(apimsg.BadResponse):
                apimsg.check_response_cached(code, headers, "status")
