"""Shared-memory rings between the acceptors and the API process.

One :class:`Segment` (a POSIX shared-memory object, unlinked as soon as it
exists) holds one :class:`Ring` per acceptor. A ring carries variable-length
records from exactly one producer (its acceptor) to exactly one consumer (the
API process), plus a table of 64-bit words, one per connection slot, that both
sides update atomically. All cffi details stay in this module; the layout and
the memory-ordering rules are in docs/ring.md.

Producer::

    wake = ring.push(header_bytes, body_bytes)   # RingFull / RecordTooBig
    if wake:
        send_wakeup()                            # e.g. one byte on a socket

Consumer::

    view = ring.peek()           # memoryview into the segment, or None
    if view is not None:
        handle(view)             # the view is only valid until release()
        ring.release()
    elif ring.sleep():           # True: the producer will wake us
        wait_for_wakeup()        # then drain the wake-up channel
"""
from __future__ import annotations

import errno
import mmap
import os

import posix_ipc

from prack._native import ffi, lib
from prack.errors import PrackError

__all__ = ["RingFull", "RecordTooBig", "RingError", "Segment", "Ring"]

_FULL = lib.PRK_RING_FULL
_TOO_BIG = lib.PRK_RING_TOO_BIG
_EMPTY = lib.PRK_RING_EMPTY
_JOIN_MAX = 16 * 1024   # push(): records up to this size are joined, then copied once


_STATE_BITS = lib.PRK_SLOT_STATE_BITS
_STATE_MASK = (1 << _STATE_BITS) - 1


class RingFull(Exception):
    """Not enough free space in the ring right now; retry after the consumer
    has caught up."""


class RecordTooBig(Exception):
    """The record is larger than the ring's ``max_record`` and can never fit."""


class RingError(PrackError):
    """Misuse (release without peek, use after close) or a corrupt ring."""


def _allocate(fd: int, size: int) -> None:
    # Reserve the memory now, so that a too small /dev/shm (64 MiB by default
    # in a container) fails here with ENOSPC instead of killing a process with
    # SIGBUS the first time it touches a page. Not every system can do this
    # on a shared-memory object; there we go without.
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    try:
        fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise RingError(f"cannot allocate {size} bytes of shared memory ({e.strerror}); "
                            "is /dev/shm too small?") from e
        # EINVAL / EOPNOTSUPP / ENODEV: not supported for this object


class Segment:
    """The shared-memory segment holding every ring.

    Create it in the master before forking (:meth:`create`), or attach to an
    inherited descriptor (:meth:`from_fd`). The segment has no name in
    /dev/shm: it lives as long as a descriptor or a mapping refers to it.
    """

    def __init__(self, fd: int, mm: mmap.mmap, size: int, base) -> None:
        # Private: use create() or from_fd(). `base` is ffi.from_buffer(mm)
        # of an initialised, checked segment; the Segment owns all three.
        self.fd = fd
        self.mm = mm
        self.size = size
        self._base = base
        self._view = memoryview(mm)
        self.nrings = lib.prk_segment_nrings(base)
        self.nslots = lib.prk_segment_nslots(base)
        self.capacity = lib.prk_segment_capacity(base)
        self._rings: list[Ring | None] = [None] * self.nrings
        self._closed = False

    @classmethod
    def create(cls, nrings: int, nslots: int, capacity: int) -> "Segment":
        """A fresh segment of ``nrings`` rings with ``nslots`` slots and
        ``capacity`` data bytes each (rounded up to a multiple of 8)."""
        if not (0 < nrings < 2**32 and 0 <= nslots < 2**32 and capacity > 0):
            raise ValueError(f"bad ring geometry: nrings={nrings} nslots={nslots} capacity={capacity}")
        size = lib.prk_segment_size(nrings, nslots, capacity)
        if size == 0:
            raise ValueError(f"bad ring geometry: nrings={nrings} nslots={nslots} capacity={capacity}")
        name = "/prack-" + os.urandom(8).hex()
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
        fd = shm.fd
        # Unlink at once, before anything else can fail or the process can be
        # killed: from here on nothing can be left behind in /dev/shm.
        try:
            shm.unlink()
        except BaseException:
            os.close(fd)
            raise
        mm = base = None
        try:
            os.set_inheritable(fd, False)
            os.ftruncate(fd, size)
            _allocate(fd, size)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
            base = ffi.from_buffer(mm)
            rc = lib.prk_segment_init(base, size, nrings, nslots, capacity)
            if rc != lib.PRK_RING_OK:
                raise RingError(f"prk_segment_init failed ({rc})")
            return cls(fd, mm, size, base)
        except BaseException:
            if base is not None:
                ffi.release(base)
            if mm is not None:
                mm.close()
            os.close(fd)
            raise

    @classmethod
    def from_fd(cls, fd: int) -> "Segment":
        """Attach to an existing segment through its descriptor. The Segment
        takes ownership of ``fd`` (close() closes it)."""
        size = os.fstat(fd).st_size
        if size <= 0:
            raise RingError(f"fd {fd} is not a prack segment (size {size})")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
        base = ffi.from_buffer(mm)
        try:
            if lib.prk_segment_check(base, size) != lib.PRK_RING_OK:
                raise RingError(f"fd {fd} is not a valid prack segment")
            return cls(fd, mm, size, base)
        except BaseException:
            ffi.release(base)
            mm.close()
            raise

    def ring(self, i: int) -> "Ring":
        """Ring number ``i`` (the same object on every call)."""
        if self._closed:
            raise RingError("segment is closed")
        r = self._rings[i] if 0 <= i < self.nrings else None
        if r is None:
            if not 0 <= i < self.nrings:
                raise IndexError(f"ring index {i} out of range (0..{self.nrings - 1})")
            r = self._rings[i] = Ring(self, i)
        return r

    def close(self) -> None:
        """Unmap and close the descriptor. Idempotent. Every memoryview handed
        out by Ring.peek() must have been dropped first."""
        if self._closed:
            return
        for r in self._rings:
            if r is not None:
                r._detach()
        if self._base is not None:
            ffi.release(self._base)
            self._base = None
        if self._view is not None:
            self._view.release()
            self._view = None
        try:
            self.mm.close()
        except BufferError as e:
            raise RingError("cannot unmap the segment: a peeked memoryview is still alive") from e
        self._closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self.fd}"
        return (f"<Segment {state} nrings={self.nrings} nslots={self.nslots} "
                f"capacity={self.capacity} size={self.size}>")


# prk_take_v2's output: [char[], capacity, its memoryview]. A record too
# big for it is taken the long way (Ring.peek).
_TAKE_CAPACITY = 256 << 10
_take_out: list = [None, _TAKE_CAPACITY, None]


def _take_buffer() -> None:
    _take_out[0] = ffi.new("char[]", _TAKE_CAPACITY)
    _take_out[2] = memoryview(ffi.buffer(_take_out[0]))


class Ring:
    """One single-producer / single-consumer ring of a Segment.

    push() must only be called by the ring's one producer and
    peek()/release()/sleep()/wake() by its one consumer (they keep private
    state in the shared header); the slot operations and used() are safe from
    anywhere.
    """

    __slots__ = ("segment", "index", "max_record", "_ptr", "_mm", "_view", "_lenp",
                 "_reserve", "_commit", "_peek", "_release", "_taken")

    def __init__(self, segment: Segment, index: int) -> None:
        ptr = lib.prk_segment_ring(segment._base, index)
        if ptr == ffi.NULL:
            raise RingError(f"no ring {index} in segment")
        self.segment = segment
        self.index = index
        self._ptr = ptr
        self._mm = segment.mm
        self._view = segment._view
        self._lenp = ffi.new("uint32_t *")
        self.max_record = lib.prk_ring_max_record(ptr)
        self._reserve = lib.prk_ring_reserve
        self._commit = lib.prk_ring_commit
        self._peek = lib.prk_ring_peek
        self._release = lib.prk_ring_release
        self._taken = ffi.new("uint32_t[1]"), ffi.new("int[1]")

    def _detach(self) -> None:
        # Called by Segment.close(): later calls fail cleanly (the C side
        # rejects NULL) instead of touching an unmapped segment.
        self._ptr = ffi.NULL
        self._mm = None
        self._view = None

    # -- producer ---------------------------------------------------------

    def push(self, *parts) -> bool:
        """Append one record made of the concatenated bytes-like ``parts``.

        Returns True when the consumer was asleep: the caller must then send
        it a wake-up. Raises RingFull (retry later) or RecordTooBig.
        """
        if len(parts) == 1:
            part = parts[0]
            n = len(part) if type(part) is bytes or type(part) is bytearray else memoryview(part).nbytes
            if n > self.max_record:
                raise RecordTooBig(f"record of {n} bytes exceeds max_record {self.max_record}")
            off = self._reserve(self._ptr, n)
            if off < 0:
                self._raise(off, n)
            self._mm[off:off + n] = part
        else:
            sizes = [len(p) if type(p) is bytes or type(p) is bytearray else memoryview(p).nbytes
                     for p in parts]
            n = sum(sizes)
            if n > self.max_record:
                raise RecordTooBig(f"record of {n} bytes exceeds max_record {self.max_record}")
            off = self._reserve(self._ptr, n)
            if off < 0:
                self._raise(off, n)
            if n <= _JOIN_MAX:
                # One copy into the ring costs less than one per part for
                # what most records are (header, environment, small body).
                self._mm[off:off + n] = b"".join(parts)
            else:
                mm = self._mm
                for p, k in zip(parts, sizes):
                    mm[off:off + k] = p
                    off += k
        return self._commit(self._ptr) == 1

    def _raise(self, rc: int, n: int) -> None:
        if rc == _FULL:
            raise RingFull(f"ring {self.index}: no room for {n} bytes")
        if rc == _TOO_BIG:
            raise RecordTooBig(f"record of {n} bytes exceeds max_record {self.max_record}")
        raise RingError(f"ring {self.index}: reserve failed ({rc})")

    # -- consumer ---------------------------------------------------------

    def peek(self) -> memoryview | None:
        """The oldest record's payload as a zero-copy view, or None when the
        ring is empty. The bytes may be overwritten once release() is called:
        copy what must outlive it."""
        lenp = self._lenp
        off = self._peek(self._ptr, lenp)
        if off < 0:
            if off == _EMPTY:
                return None
            raise RingError(f"ring {self.index}: peek failed ({off})")
        return self._view[off:off + lenp[0]]

    def release(self) -> None:
        """Consume the record returned by the last peek()."""
        if self._release(self._ptr) != 0:
            raise RingError(f"ring {self.index}: release without a peeked record")

    def take_v2(self, max_items: int, max_bytes: int, deadline: float):
        """Consumer: take up to `max_items` queued requests (until `max_bytes`
        are written) as msgpack RequestItems back to back, in one C call
        (prk_take_v2, take.h): (bytes, count), with count 0 when the ring
        is empty or its next record is for the caller to take the long way
        (`peek`): a deferred body, or one too big for the buffer."""
        out = _take_out
        if out[0] is None:          # made on first use: only the API process takes
            _take_buffer()
        taken, stop = self._taken
        n = lib.prk_take_v2(self._ptr, max_items, max_bytes, deadline, out[0], out[1],
                            taken, stop)
        if n < 0:
            raise RingError(f"ring {self.index}: take failed ({n})")
        return (out[2][:n].tobytes() if n else b""), taken[0]

    def sleep(self) -> bool:
        """Declare the consumer asleep. True: the ring is still empty and the
        producer's next push() will return True (so it sends a wake-up);
        False: a record arrived meanwhile, do not sleep."""
        return lib.prk_ring_sleep(self._ptr) == 1

    def wake(self) -> None:
        """Lower the sleeping flag (the consumer is awake for another reason)."""
        lib.prk_ring_wake(self._ptr)

    def used(self) -> int:
        """Bytes in use (headers, padding and skipped tail bytes included)."""
        return lib.prk_ring_used(self._ptr)

    # -- slot table -------------------------------------------------------
    # Out-of-range slots read as 0 and are never written.

    def slot_load(self, slot: int) -> int:
        return lib.prk_slot_load(self._ptr, slot)

    def slot_store(self, slot: int, value: int) -> None:
        lib.prk_slot_store(self._ptr, slot, value)

    def slot_cas(self, slot: int, expected: int, desired: int) -> bool:
        return lib.prk_slot_cas(self._ptr, slot, expected, desired) == 1

    def slot_exchange(self, slot: int, value: int) -> int:
        return lib.prk_slot_exchange(self._ptr, slot, value)

    # The same operations in the terms of prack.ipc.slots: a request's key
    # and a state, so no caller writes out a slot word.

    def mark(self, slot: int, key: int, state: int) -> None:
        """Store request `key` in `state` (the slot's owner only)."""
        lib.prk_slot_store(self._ptr, slot, key << _STATE_BITS | state)

    def move(self, slot: int, key: int, old: int, new: int) -> bool:
        """Request `key` from `old` to `new` if the slot still holds it in
        `old` (compare-and-swap): False when the other side moved first."""
        return lib.prk_slot_cas(self._ptr, slot, key << _STATE_BITS | old,
                                key << _STATE_BITS | new) == 1

    def swap(self, slot: int, key: int, state: int) -> int:
        """Store request `key` in `state`, whatever was there; the state the
        slot held for this key before, or -1 when it held another request."""
        old = lib.prk_slot_exchange(self._ptr, slot, key << _STATE_BITS | state)
        return old & _STATE_MASK if old >> _STATE_BITS == key else -1

    def holds(self, slot: int, key: int, state: int) -> bool:
        """Whether the slot holds request `key` in `state` now."""
        return lib.prk_slot_load(self._ptr, slot) == key << _STATE_BITS | state

    def __repr__(self) -> str:
        return f"<Ring {self.index} max_record={self.max_record}>"
