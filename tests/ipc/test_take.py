"""prk_take_v2 (take.c) through Ring.take_v2: a v2 msgpack pull's records
claimed and written in C must be exactly what the Python path
(prack.api.pulls.V2MsgpackCodec.item) writes, record for record."""
from __future__ import annotations

import msgspec
import pytest

from prack.ipc import ring as ringmod

from prack.protocol import messages

from prack.ipc import slots
from prack.ipc.ring import Segment

ENC = msgspec.msgpack.Encoder().encode
DEADLINE = 1_790_000_000.25


def _python_item(generation, acceptor, slot, key, env, body) -> bytes:
    return ENC(messages.RequestItem(slots.make_identifier(generation, acceptor, slot, key),
                                msgspec.Raw(env), body, DEADLINE))


@pytest.fixture
def seg():
    s = Segment.create(2, 64, 1 << 21)
    yield s
    s.close()


def _queue(ring, generation, acceptor, slot, key, env, body, flags=0, state=slots.SLOT_QUEUED):
    ring.slot_store(slot, (key << 2) | state)
    ring.push(slots.RECORD.pack(generation, acceptor, slot, key, 1.5, len(env), len(body), flags),
              env, body)


def test_items_match_the_python_encoding_for_every_body_size(seg):
    ring = seg.ring(1)
    env = ENC({"REQUEST_METHOD": "POST", "PATH_INFO": "/é", "HTTP_X": "y" * 40})
    cases = []
    for i, size in enumerate([0, 1, 255, 256, 65535, 65536, 200_000]):
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        key = (1 << 61) + i * 977
        cases.append((0xBEEF, 1, 60 - i, key, env, body))
        _queue(ring, 0xBEEF, 1, 60 - i, key, env, body)
    data, n = b"", 0
    while True:                       # the buffer (256 KiB) may need two calls
        got, k = ring.take_v2(100, 1 << 30, DEADLINE)
        if not k:
            break
        data += got
        n += k
    assert n == len(cases)
    assert data == b"".join(_python_item(*c) for c in cases)
    for c in cases:                   # each slot claimed
        assert ring.slot_load(c[2]) == (c[3] << 2) | slots.SLOT_TAKEN
    assert ring.take_v2(10, 1 << 30, DEADLINE) == (b"", 0)     # empty now
    batch = msgspec.msgpack.decode(messages.msgpack_request_batch([data], n), type=messages.RequestBatch)
    assert [item.body for item in batch.requests] == [c[5] for c in cases]


def test_withdrawn_records_are_dropped_and_limits_hold(seg):
    ring = seg.ring(0)
    env = ENC({"PATH_INFO": "/"})
    _queue(ring, 1, 0, 1, 11, env, b"a")
    _queue(ring, 1, 0, 2, 12, env, b"b", state=slots.SLOT_GONE)     # the client left
    _queue(ring, 1, 0, 3, 13, env, b"c")
    _queue(ring, 1, 0, 4, 14, env, b"d")
    data, n = ring.take_v2(2, 1 << 30, DEADLINE)                    # max_items
    assert n == 2
    assert data == _python_item(1, 0, 1, 11, env, b"a") + _python_item(1, 0, 3, 13, env, b"c")
    assert ring.slot_load(2) == (12 << 2) | slots.SLOT_GONE          # left alone
    data, n = ring.take_v2(10, 1, DEADLINE)                         # max_bytes: one item
    assert n == 1 and data == _python_item(1, 0, 4, 14, env, b"d")


def test_records_for_the_long_way_stop_the_run(seg, monkeypatch):
    ring = seg.ring(0)
    env = ENC({"PATH_INFO": "/"})
    _queue(ring, 1, 0, 1, 21, env, b"x")
    _queue(ring, 1, 0, 2, 22, env, b"", flags=slots.RECF_INPUT_PENDING)
    data, n = ring.take_v2(10, 1 << 30, DEADLINE)
    assert n == 1                                   # stops before the deferred body
    assert ring.take_v2(10, 1 << 30, DEADLINE) == (b"", 0)
    view = ring.peek()                              # still there for the caller
    assert slots.RECORD.unpack_from(view)[2] == 2
    assert ring.slot_load(2) == (22 << 2) | slots.SLOT_QUEUED    # not claimed
    view.release()
    ring.release()
    # A record larger than the output buffer is left to the caller too.
    monkeypatch.setattr(ringmod, "_TAKE_CAPACITY", 4096)
    monkeypatch.setattr(ringmod, "_take_out", [None, 4096, None])
    _queue(ring, 1, 0, 3, 23, env, b"y" * 5000)
    assert ring.take_v2(10, 1 << 30, DEADLINE) == (b"", 0)
    assert ring.slot_load(3) == (23 << 2) | slots.SLOT_QUEUED
