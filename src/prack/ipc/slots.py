"""What a ring carries, declared once: the record header, the slot word of a
connection (its request's key and state), and the identifiers handed to
workers. The numbers come from the C core's layout.h through cffi, so the
C taker (take.c) and Python cannot disagree.

Identifiers encode everything routing needs: generation, acceptor index,
connection slot and the request's random 62-bit key. The key is what makes a
stale or forged identifier useless: the acceptor's slot table (in the
segment) only accepts the key of the request it is waiting on.
"""
from __future__ import annotations

import re
import struct

from prack._native import lib

# -- ring records ------------------------------------------------------------
# generation, acceptor, slot, key, queued_at (unix seconds), env_len, body_len, flags;
# then the environment (a msgpack map of strings) and the body
RECORD = struct.Struct("<HHIQdIII")
RECF_INPUT_PENDING = lib.PRK_RECF_INPUT_PENDING   # Expect: 100-continue: the body
                                                  # is read only once a worker takes it

# -- slot words ----------------------------------------------------------------
# A slot word is key << 2 | state. The acceptor writes QUEUED when it pushes a
# record; the API process moves QUEUED -> TAKEN when a worker pulls it and
# TAKEN -> FREE when the worker answers; the acceptor moves any state to GONE
# when the client leaves or a deadline passes. Both sides use CAS/exchange,
# so exactly one of "answer" and "give up" wins.
SLOT_FREE = lib.PRK_SLOT_FREE
SLOT_QUEUED = lib.PRK_SLOT_QUEUED
SLOT_TAKEN = lib.PRK_SLOT_TAKEN
SLOT_GONE = lib.PRK_SLOT_GONE
_BITS = lib.PRK_SLOT_STATE_BITS


def word(key: int, state: int) -> int:
    """The slot word of request `key` in `state`."""
    return key << _BITS | state


def _check_layout() -> None:
    """RECORD must match the header C reads (layout.h): a change to one
    without the other fails at import, not in a worker's environment."""
    offsets = [struct.calcsize("<" + RECORD.format[1:i]) for i in range(1, len(RECORD.format))]
    declared = [lib.PRK_REC_GENERATION, lib.PRK_REC_ACCEPTOR, lib.PRK_REC_SLOT, lib.PRK_REC_KEY,
                lib.PRK_REC_QUEUED_AT, lib.PRK_REC_ENV_LEN, lib.PRK_REC_BODY_LEN, lib.PRK_REC_FLAGS]
    if RECORD.size != lib.PRK_REC_SIZE or offsets != declared:
        raise ImportError("ipc.slots.RECORD does not match _native/layout.h")


_check_layout()


# -- identifiers ---------------------------------------------------------------
_ID_RE = re.compile(r"[0-9a-f]{32}")


def make_identifier(generation: int, acceptor: int, slot: int, key: int) -> str:
    """32 hex digits: u16 generation, u16 acceptor, u32 slot, u64 key."""
    return "%032x" % (generation << 112 | acceptor << 96 | slot << 64 | key)


def parse_identifier(ident: str) -> tuple[int, int, int, int] | None:
    """(generation, acceptor, slot, key), or None when malformed."""
    if type(ident) is not str or not _ID_RE.fullmatch(ident):
        return None
    n = int(ident, 16)
    return n >> 112, n >> 96 & 0xFFFF, n >> 64 & 0xFFFFFFFF, n & 0xFFFFFFFFFFFFFFFF
