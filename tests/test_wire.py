"""Wire shapes that are assembled by hand rather than by msgspec."""
import msgspec

from prack import wire


def test_msgpack_request_batch_is_what_msgspec_encodes():
    """A v2 msgpack pull answer is built from items encoded one by one (the
    environment spliced from the ring): it must be byte for byte the batch
    msgspec would encode, for every array header size."""
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTP_HOST": "h"}
    encode = msgspec.msgpack.encode
    decode = msgspec.msgpack.Decoder(wire.RequestBatch).decode
    for n in (0, 1, 15, 16, 300, 0x10000):
        items = [wire.RequestItem("%032x" % i, env, b"b%d" % i, 1.5) for i in range(n)]
        parts = [encode(wire.RequestItem(it.id, msgspec.Raw(encode(env)), it.body, it.deadline))
                 for it in items]
        data = wire.msgpack_request_batch(parts)
        assert data == encode(wire.RequestBatch(items))
        assert decode(data).requests == items
