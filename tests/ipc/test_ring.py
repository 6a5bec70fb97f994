"""Tests for the shared-memory rings (src/prack/_native/ring.c, prack.ipc.ring)."""
from __future__ import annotations

import array
import collections
import glob
import os
import random
import select
import struct
import tempfile
import time
import traceback
import zlib

import pytest

from prack._native import ffi, lib
from prack.ipc.ring import RecordTooBig, Ring, RingError, RingFull, Segment


@pytest.fixture
def make_segment():
    made = []

    def make(nrings=1, nslots=8, capacity=1024):
        seg = Segment.create(nrings, nslots, capacity)
        made.append(seg)
        return seg

    yield make
    for seg in made:
        seg.close()


def need(n: int) -> int:
    """Ring bytes taken by a record of n payload bytes (header + padding)."""
    return 8 + (n + 7) // 8 * 8


def data_offset(ring: Ring) -> int:
    """Segment offset of the ring's data area (a reserve on an empty ring at
    position 0 lands 8 bytes past it); leaves the ring untouched."""
    return lib.prk_ring_reserve(ring._ptr, 0) - 8


def view_offset(seg: Segment, view: memoryview) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(view))) - int(ffi.cast("uintptr_t", seg._base))


def pop(ring: Ring) -> bytes:
    view = ring.peek()
    assert view is not None
    data = bytes(view)
    view.release()
    ring.release()
    return data


# --------------------------------------------------------------------------
# layout and geometry


def test_geometry_and_alignment(make_segment):
    seg = make_segment(nrings=3, nslots=5, capacity=1001)
    assert (seg.nrings, seg.nslots, seg.capacity) == (3, 5, 1008)
    # 128-byte segment header, then per ring: 256-byte header, slots and data
    # each padded to 64 bytes.
    stride = 256 + 64 + 1024
    assert seg.size == 128 + 3 * stride == lib.prk_segment_size(3, 5, 1001)
    assert len(seg.mm) == seg.size
    base = int(ffi.cast("uintptr_t", seg._base))
    assert base % 64 == 0
    for i in range(3):
        ring = seg.ring(i)
        assert ring is seg.ring(i)                      # cached
        off = int(ffi.cast("uintptr_t", ring._ptr)) - base
        assert off == 128 + i * stride
        assert data_offset(ring) == off + 256 + 64
        assert data_offset(ring) % 64 == 0
        assert ring.max_record == 1008 // 2 - 8
    with pytest.raises(IndexError):
        seg.ring(3)
    with pytest.raises(IndexError):
        seg.ring(-1)
    assert lib.prk_segment_ring(seg._base, 3) == ffi.NULL


def test_bad_geometry():
    for args in [(0, 1, 1024), (1, 1, 0), (1, 1, 63), (1, -1, 1024)]:
        with pytest.raises(ValueError):
            Segment.create(*args)
    assert lib.prk_segment_size(0, 1, 1024) == 0
    assert lib.prk_segment_size(1, 1, 8) == 0


def test_segment_check_rejects_garbage(make_segment):
    seg = make_segment()
    assert lib.prk_segment_check(seg._base, seg.size) == lib.PRK_RING_OK
    assert lib.prk_segment_check(seg._base, seg.size - 8) == lib.PRK_RING_BAD
    assert lib.prk_segment_check(ffi.NULL, seg.size) == lib.PRK_RING_BAD
    with tempfile.TemporaryFile() as f:
        f.write(b"\x00" * 4096)
        f.flush()
        with pytest.raises(RingError):
            Segment.from_fd(os.dup(f.fileno()))


def test_null_arguments_are_rejected():
    null = ffi.NULL
    assert lib.prk_ring_reserve(null, 1) == lib.PRK_RING_BAD
    assert lib.prk_ring_commit(null) == lib.PRK_RING_BAD
    assert lib.prk_ring_peek(null, ffi.new("uint32_t *")) == lib.PRK_RING_BAD
    assert lib.prk_ring_release(null) == lib.PRK_RING_BAD
    assert lib.prk_ring_sleep(null) == 0
    lib.prk_ring_wake(null)
    assert lib.prk_ring_used(null) == 0
    assert lib.prk_ring_max_record(null) == 0
    assert lib.prk_slot_load(null, 0) == 0
    lib.prk_slot_store(null, 0, 1)
    assert lib.prk_slot_cas(null, 0, 0, 1) == 0
    assert lib.prk_slot_exchange(null, 0, 1) == 0
    assert lib.prk_segment_ring(null, 0) == null
    assert lib.prk_segment_nrings(null) == 0


# --------------------------------------------------------------------------
# basic record traffic


def test_empty_ring(make_segment):
    ring = make_segment().ring(0)
    assert ring.peek() is None
    assert ring.used() == 0
    with pytest.raises(RingError):
        ring.release()                              # release without peek
    assert lib.prk_ring_commit(ring._ptr) == lib.PRK_RING_BAD  # commit without reserve


def test_push_peek_release_roundtrip(make_segment):
    ring = make_segment().ring(0)
    assert ring.push(b"hello") is False
    assert ring.used() == need(5)
    view = ring.peek()
    assert isinstance(view, memoryview) and bytes(view) == b"hello"
    assert bytes(ring.peek()) == b"hello"            # peek does not consume
    ring.release()
    assert ring.used() == 0
    assert ring.peek() is None
    with pytest.raises(RingError):
        ring.release()                              # only once per peek


def test_parts_of_any_buffer_type(make_segment):
    ring = make_segment().ring(0)
    ints = array.array("i", [1, 2, 3])
    ring.push(b"ab", bytearray(b"cd"), memoryview(b"xxef")[2:], ints, b"")
    assert pop(ring) == b"abcdef" + ints.tobytes()
    ring.push(ints)
    assert pop(ring) == ints.tobytes()


def test_zero_length_record(make_segment):
    ring = make_segment().ring(0)
    ring.push(b"")
    ring.push()
    assert ring.used() == 16
    for _ in range(2):
        view = ring.peek()
        assert view is not None and len(view) == 0
        ring.release()
    assert ring.peek() is None and ring.used() == 0


def test_peek_view_is_zero_copy(make_segment):
    seg = make_segment()
    ring = seg.ring(0)
    d = data_offset(ring)
    ring.push(b"abcdefgh")
    view = ring.peek()
    assert view.obj is seg.mm
    assert view_offset(seg, view) == d + 8
    assert bytes(seg.mm[d + 8:d + 16]) == b"abcdefgh"
    del view
    ring.release()


def test_fifo_order_and_many_rings_are_independent(make_segment):
    seg = make_segment(nrings=3)
    for i in range(3):
        for k in range(5):
            seg.ring(i).push(b"ring%d-rec%d" % (i, k))
    for i in (2, 0, 1):
        assert [pop(seg.ring(i)) for _ in range(5)] == [b"ring%d-rec%d" % (i, k) for k in range(5)]
        assert seg.ring(i).peek() is None


# --------------------------------------------------------------------------
# full, too big, wrap-around


def test_full_then_consume_one(make_segment):
    ring = make_segment(capacity=1024).ring(0)
    rec = b"r" * 100                                  # 112 ring bytes
    n = 0
    with pytest.raises(RingFull):
        while True:
            ring.push(rec + bytes([n]))
            n += 1
    assert n == 1024 // need(101)                     # 9 records, 1008 bytes
    assert ring.used() == n * need(101)
    with pytest.raises(RingFull):                     # still full, no side effects
        ring.push(b"x" * 50)
    assert pop(ring) == rec + bytes([0])
    # The 16 bytes left at the end are skipped with a wrap marker and the
    # record lands at the start, in the space just freed.
    assert ring.push(rec + b"N") is False
    assert ring.used() == 1024
    with pytest.raises(RingFull):
        ring.push(b"")
    assert [pop(ring) for _ in range(n)] == [rec + bytes([k]) for k in range(1, n)] + [rec + b"N"]
    assert ring.used() == 0


def test_record_too_big(make_segment):
    ring = make_segment(capacity=64 * 1024).ring(0)
    assert ring.max_record == 32 * 1024 - 8
    big = os.urandom(ring.max_record)
    ring.push(big)
    with pytest.raises(RecordTooBig):
        ring.push(big + b"x")
    with pytest.raises(RecordTooBig):
        ring.push(big[:10], big[10:], b"x")
    mib = memoryview(bytes(2**20))
    with pytest.raises(RecordTooBig):                 # beyond the uint32 length field
        ring.push(*[mib] * (4096 + 1))
    assert lib.prk_ring_reserve(ring._ptr, ring.max_record + 1) == lib.PRK_RING_TOO_BIG
    assert lib.prk_ring_reserve(ring._ptr, 0xFFFFFFFF) == lib.PRK_RING_TOO_BIG
    assert pop(ring) == big
    assert ring.peek() is None


@pytest.mark.parametrize("capacity", [64, 1000, 1024, 4096])
def test_max_record_fits_an_empty_ring_at_every_position(make_segment, capacity):
    ring = make_segment(capacity=capacity).ring(0)
    cap = capacity + (-capacity) % 8
    biggest = b"M" * ring.max_record
    for step in range(cap // 8 + 1):
        assert ring.used() == 0
        ring.push(biggest)                            # must never raise
        assert pop(ring) == biggest
        ring.push(b"")                                # move on by 8 bytes
        pop(ring)


def test_wrap_marker_and_flush_end_cases(make_segment):
    seg = make_segment(capacity=256)
    ring = seg.ring(0)
    d = data_offset(ring)
    assert ring.max_record == 120

    def advance_to(pos):                              # empty ring, position pos % 256
        while pos - (ring_pos[0] % 256) >= need(64):
            ring.push(b"f" * 56)
            pop(ring)
            ring_pos[0] += 64
        while ring_pos[0] % 256 != pos:
            ring.push(b"")
            pop(ring)
            ring_pos[0] += 8
        assert ring.used() == 0

    ring_pos = [0]

    # 64 bytes left, record needs 72: marker at 192, record at 0.
    advance_to(192)
    ring.push(b"A" * 64)
    assert ring.used() == 64 + 72
    assert bytes(seg.mm[d + 192:d + 200]) == struct.pack("<II", 0, 0x50415257)  # wrap marker
    view = ring.peek()
    assert view_offset(seg, view) == d + 8 and bytes(view) == b"A" * 64
    del view
    ring.release()
    ring_pos[0] += 64 + 72
    assert ring_pos[0] % 256 == 72

    # Exactly 8 bytes left: a marker that is only a header.
    advance_to(248)
    ring.push(b"B" * 8)
    assert ring.used() == 8 + 16
    assert bytes(seg.mm[d + 248:d + 256]) == struct.pack("<II", 0, 0x50415257)
    view = ring.peek()
    assert view_offset(seg, view) == d + 8 and bytes(view) == b"B" * 8
    del view
    ring.release()
    ring_pos[0] += 24

    # A record that ends exactly at the end of the data area: no marker, the
    # next one starts at offset 0.
    advance_to(192)
    ring.push(b"C" * 56)
    assert ring.used() == 64
    ring.push(b"D")
    assert ring.used() == 64 + 16
    view = ring.peek()
    assert view_offset(seg, view) == d + 200 and bytes(view) == b"C" * 56
    del view
    ring.release()
    view = ring.peek()
    assert view_offset(seg, view) == d + 8 and bytes(view) == b"D"
    del view
    ring.release()
    assert ring.used() == 0
    # Fewer than 8 bytes can never be left over: records and the capacity
    # are multiples of 8, so the position before a wrap is always >= 8 from
    # the end (the C consumer still skips such a tail if it ever saw one).


def test_wrap_around_randomised_against_a_model(make_segment):
    seg = make_segment(capacity=512)
    ring = seg.ring(0)
    d = data_offset(ring)
    rng = random.Random(1234)
    model = collections.deque()
    wraps = markers = 0
    last_off = -1
    seq = 0
    for _ in range(30000):
        if rng.random() < 0.55:
            n = rng.choice([0, 1, 7, 8, 9, rng.randrange(0, ring.max_record + 1), ring.max_record])
            rec = struct.pack("<I", seq)[: min(4, n)] + bytes([seq & 0xFF]) * max(0, n - 4)
            before = ring.used()
            try:
                ring.push(rec)
            except RingFull:
                continue                              # exactness: test_full_is_exact
            grown = ring.used() - before
            assert grown >= need(n) and grown % 8 == 0
            if grown > need(n):
                markers += 1
            model.append(rec)
            seq += 1
        else:
            view = ring.peek()
            if not model:
                assert view is None
                continue
            off = view_offset(seg, view) - d
            if off < last_off:
                wraps += 1
            last_off = off
            assert off % 8 == 0 and off + len(view) <= 512
            assert bytes(view) == model.popleft()
            del view
            ring.release()
        assert ring.used() % 8 == 0 and ring.used() <= 512
    while model:
        assert pop(ring) == model.popleft()
    assert ring.peek() is None and ring.used() == 0
    assert wraps > 500 and markers > 100


def test_full_is_exact(make_segment):
    """RingFull is raised only when the record really does not fit."""
    ring = make_segment(capacity=512).ring(0)
    rng = random.Random(99)
    model = collections.deque()
    pos = 0                                           # producer position modulo 512
    for _ in range(20000):
        if rng.random() < 0.6:
            n = rng.randrange(0, ring.max_record + 1)
            left = 512 - pos
            skip = left if left < need(n) else 0
            fits = ring.used() + skip + need(n) <= 512
            try:
                ring.push(b"z" * n)
            except RingFull:
                assert not fits
                continue
            assert fits
            model.append(n)
            pos = (pos + skip + need(n)) % 512
        elif model:
            assert len(pop(ring)) == model.popleft()


def test_second_reserve_replaces_first(make_segment):
    seg = make_segment()
    ring = seg.ring(0)
    off1 = lib.prk_ring_reserve(ring._ptr, 100)
    off2 = lib.prk_ring_reserve(ring._ptr, 5)
    assert off1 == off2
    seg.mm[off2:off2 + 5] = b"12345"
    assert lib.prk_ring_commit(ring._ptr) == 0
    assert lib.prk_ring_commit(ring._ptr) == lib.PRK_RING_BAD
    assert ring.used() == need(5)
    assert pop(ring) == b"12345"


# --------------------------------------------------------------------------
# sleeping-flag protocol


def test_sleep_and_wakeup_flag(make_segment):
    ring = make_segment().ring(0)
    assert ring.push(b"1") is False                  # consumer awake
    assert ring.sleep() is False                     # data pending: do not sleep
    assert ring.push(b"2") is False                  # flag was lowered again
    pop(ring)
    pop(ring)
    assert ring.sleep() is True                      # empty: safe to sleep
    assert ring.sleep() is True                      # idempotent
    assert ring.push(b"3") is True                   # consumer slept: wake it
    assert ring.push(b"4") is False                  # only the first commit reports it
    pop(ring)
    assert ring.sleep() is False                     # "4" still queued
    pop(ring)
    assert ring.sleep() is True
    ring.wake()                                      # woke up for another reason
    assert ring.push(b"5") is False
    pop(ring)
    # A record peeked but not yet released still counts as pending.
    ring.push(b"6")
    ring.peek()
    assert ring.sleep() is False
    ring.release()
    assert ring.sleep() is True


def test_sleep_flags_are_per_ring(make_segment):
    seg = make_segment(nrings=2)
    a, b = seg.ring(0), seg.ring(1)
    assert a.sleep() is True
    assert b.push(b"x") is False
    assert a.push(b"y") is True


# --------------------------------------------------------------------------
# slot table


def test_slot_operations(make_segment):
    seg = make_segment(nrings=2, nslots=8)
    r0, r1 = seg.ring(0), seg.ring(1)
    assert all(r0.slot_load(s) == 0 for s in range(8))
    r0.slot_store(3, 7)
    assert r0.slot_load(3) == 7 and r1.slot_load(3) == 0
    assert r0.slot_cas(3, 7, 9) is True
    assert r0.slot_load(3) == 9
    assert r0.slot_cas(3, 7, 11) is False
    assert r0.slot_load(3) == 9
    assert r0.slot_exchange(3, 2**64 - 1) == 9
    assert r0.slot_load(3) == 2**64 - 1
    r1.slot_store(7, 42)
    assert r1.slot_load(7) == 42 and r0.slot_load(7) == 0
    with pytest.raises(OverflowError):
        r0.slot_store(0, -1)


def test_slot_out_of_range_never_writes(make_segment):
    seg = make_segment(nrings=2, nslots=8)     # 8 slots = 64 bytes: data follows directly
    r0, r1 = seg.ring(0), seg.ring(1)
    r0.push(b"P" * 40)
    snapshot = bytes(seg.mm)
    for slot in (8, 9, 100, 2**32 - 1):
        r0.slot_store(slot, 0xDEADBEEF)
        assert r0.slot_load(slot) == 0
        assert r0.slot_cas(slot, 0, 1) is False
        assert r0.slot_exchange(slot, 5) == 0
    assert bytes(seg.mm) == snapshot
    assert pop(r0) == b"P" * 40
    assert r1.peek() is None


def test_zero_slots(make_segment):
    ring = make_segment(nslots=0).ring(0)
    ring.slot_store(0, 1)
    assert ring.slot_load(0) == 0
    ring.push(b"ok")
    assert pop(ring) == b"ok"


# --------------------------------------------------------------------------
# segment lifetime


def _prack_shm():
    return set(glob.glob("/dev/shm/prack-*"))


def test_nothing_left_in_dev_shm():
    before = _prack_shm()
    seg = Segment.create(2, 4, 4096)
    assert _prack_shm() == before                     # already unlinked
    assert os.get_inheritable(seg.fd) is False
    fd = seg.fd
    os.fstat(fd)                                      # still open
    seg.ring(1).push(b"data")
    seg.close()
    seg.close()                                       # idempotent
    with pytest.raises(OSError):
        os.fstat(fd)
    assert _prack_shm() == before
    # Failed creation leaves nothing behind either.
    with pytest.raises(ValueError):
        Segment.create(1, 1, 0)
    assert _prack_shm() == before


def test_out_of_shared_memory_is_reported(monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _prack_shm()
    fd_probe = os.dup(0)
    os.close(fd_probe)                                # lowest free descriptor number
    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(RingError, match="/dev/shm"):
        Segment.create(1, 4, 4096)
    assert _prack_shm() == before
    with pytest.raises(OSError):                      # the descriptor was closed
        os.fstat(fd_probe)


def test_use_after_close_fails_cleanly():
    seg = Segment.create(1, 4, 1024)
    ring = seg.ring(0)
    ring.push(b"x")
    seg.close()
    with pytest.raises(RingError):
        ring.push(b"y")
    with pytest.raises(RingError):
        ring.peek()
    with pytest.raises(RingError):
        seg.ring(0)
    assert ring.slot_load(0) == 0
    assert ring.used() == 0


def test_close_refuses_while_a_view_is_alive():
    seg = Segment.create(1, 4, 1024)
    ring = seg.ring(0)
    ring.push(b"x")
    view = ring.peek()
    with pytest.raises(RingError):
        seg.close()
    del view
    seg.close()


def test_from_fd_second_mapping(make_segment):
    seg = make_segment(nrings=2, nslots=4, capacity=2048)
    other = Segment.from_fd(os.dup(seg.fd))
    try:
        assert (other.nrings, other.nslots, other.capacity, other.size) == (2, 4, 2048, seg.size)
        assert other.mm is not seg.mm
        # Producer on one mapping, consumer on the other.
        seg.ring(1).push(b"across", b" mappings")
        assert other.ring(0).peek() is None
        assert pop(other.ring(1)) == b"across mappings"
        assert seg.ring(1).used() == 0
        other.ring(0).slot_store(2, 77)
        assert seg.ring(0).slot_cas(2, 77, 78) is True
        assert other.ring(0).slot_load(2) == 78
        assert other.ring(1).sleep() is True
        assert seg.ring(1).push(b"wake") is True
    finally:
        other.close()
    assert pop(seg.ring(1)) == b"wake"


# --------------------------------------------------------------------------
# two processes


def _fork_size(seq: int, max_payload: int) -> int:
    if seq % 10007 == 0:
        return max_payload                        # exactly max_record in total
    if seq % 997 == 0:
        return 20000 + seq % 5000
    return (seq * 7919) % 641


@pytest.mark.slow
def test_fork_producer_consumer_million_records():
    n_records = 1_000_000
    seg = Segment.create(1, 4, 64 * 1024)
    ring = seg.ring(0)
    hdr = struct.Struct("<QI")
    max_payload = ring.max_record - hdr.size
    blob = os.urandom(4096 + 32 * 1024)
    rfd, wfd = os.pipe()

    pid = os.fork()
    if pid == 0:                                      # producer
        code = 1
        try:
            os.close(rfd)
            src = memoryview(blob)
            push, pack, crc32, write = ring.push, hdr.pack, zlib.crc32, os.write
            fulls = wakes = 0
            for seq in range(n_records):
                start = (seq * 131) % 4096
                payload = src[start:start + _fork_size(seq, max_payload)]
                head = pack(seq, crc32(payload))
                while True:
                    try:
                        wake = push(head, payload)
                        break
                    except RingFull:
                        fulls += 1
                        os.sched_yield()
                if wake:
                    wakes += 1
                    write(wfd, b"!")
                if seq % 50000 == 49999:
                    time.sleep(0.002)                 # let the consumer run dry and sleep
            ring.slot_store(0, fulls)
            ring.slot_store(1, wakes)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    os.close(wfd)
    try:
        peek, release, crc32, unpack = ring.peek, ring.release, zlib.crc32, hdr.unpack_from
        expected = sleeps = sleep_calls = 0
        t0 = time.perf_counter()
        while expected < n_records:
            view = peek()
            if view is None:
                sleep_calls += 1
                if ring.sleep():
                    sleeps += 1
                    ready, _, _ = select.select([rfd], [], [], 10.0)
                    if not ready:
                        done, status = os.waitpid(pid, os.WNOHANG)
                        assert done == 0, f"producer died early (status {status})"
                        pytest.fail(f"lost wake-up: asleep 10 s with {ring.used()} bytes queued")
                    os.read(rfd, 4096)                # drain the wake-up bytes
                continue
            seq, crc = unpack(view)
            assert seq == expected
            payload = view[hdr.size:]
            assert len(payload) == _fork_size(seq, max_payload)
            assert crc32(payload) == crc
            del payload, view
            release()
            expected += 1
        elapsed = time.perf_counter() - t0
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        assert ring.peek() is None and ring.used() == 0
        fulls, wakes = ring.slot_load(0), ring.slot_load(1)
        print(f"\nfork test: {n_records / elapsed:,.0f} records/s ({elapsed:.2f} s), "
              f"consumer slept {sleeps} times ({sleep_calls} sleep() calls), producer sent {wakes} wake-ups, "
              f"hit a full ring {fulls} times")
        assert sleeps >= 1 and wakes >= 1
        # every wake-up answers one raise of the flag (one sleep() call)
        assert wakes <= sleep_calls
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(rfd)
        seg.close()


def test_slot_states_by_key_and_state():
    """Ring.mark/move/swap/holds speak of a request's key and state; a move
    or swap for another request's key leaves the slot alone or says so."""
    from prack.ipc import slots
    seg = Segment.create(1, 4, 1 << 16)
    try:
        ring = seg.ring(0)
        key = (1 << 61) + 12345
        ring.mark(2, key, slots.SLOT_QUEUED)
        assert ring.slot_load(2) == slots.word(key, slots.SLOT_QUEUED)
        assert ring.holds(2, key, slots.SLOT_QUEUED)
        assert not ring.holds(2, key + 1, slots.SLOT_QUEUED)
        assert not ring.move(2, key + 1, slots.SLOT_QUEUED, slots.SLOT_TAKEN)
        assert ring.move(2, key, slots.SLOT_QUEUED, slots.SLOT_TAKEN)
        assert not ring.move(2, key, slots.SLOT_QUEUED, slots.SLOT_TAKEN)
        assert ring.swap(2, key, slots.SLOT_GONE) == slots.SLOT_TAKEN
        assert ring.swap(2, key + 1, slots.SLOT_GONE) == -1
        assert ring.slot_load(2) == slots.word(key + 1, slots.SLOT_GONE)
    finally:
        seg.close()
