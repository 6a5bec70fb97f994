"""Frames on the Unix socket between each acceptor and the API process: their
kinds, their fixed headers and the helpers that build and split them.
"""
from __future__ import annotations

import struct

# -- Unix-socket frames --------------------------------------------------------
# Every frame: u32 length of the rest, then u8 type, then the type's payload.
FRAME_LEN = struct.Struct("<I")
F_HELLO = 1      # acceptor -> API: u16 acceptor index, u16 generation, u32 pid
F_WAKE = 2       # acceptor -> API: its ring has records and the API slept
F_RESPONSE = 3   # API -> acceptor: RESPONSE header, header block, body
# Streams and WebSockets. F_START has the RESPONSE layout (empty body); the others
# are a STREAM header followed by their payload.
F_START = 4      # API -> acceptor: a streamed response's head (status 101: a WebSocket accept)
F_DATA = 5       # API -> acceptor: number = sequence; payload: a body chunk, or for a
                 #   WebSocket a message (flags = opcode)
F_END = 6        # API -> acceptor: the stream ends; flags SF_ABORT = the worker failed
                 #   mid-stream; payload: trailer block, or a WebSocket close's code + reason
F_ACK = 7        # acceptor -> API: number = sequence of the F_DATA now buffered with
                 #   room for more (the worker's post is answered then)
F_GONE = 8       # acceptor -> API: the client of a taken or streaming request has gone
F_INPUT = 9      # API -> acceptor: a worker took a RECF_INPUT_PENDING request: send
                 #   100 Continue and read its body
F_INPUT_DONE = 10  # acceptor -> API: number = body length; flags SF_SPOOLED = the body
                 #   is in the spool file, else it is the payload; SF_ABORT = it failed
F_WS_EVENT = 11  # acceptor -> API: flags = opcode; payload: a WebSocket message from the client
F_CREDIT = 12    # API -> acceptor: number = WebSocket bytes a worker has received

# type, slot, key, number, flags
STREAM = struct.Struct("<BIQQB")
SF_ABORT = 1
SF_SPOOLED = 2

HELLO = struct.Struct("<BHHI")
WAKE_FRAME = FRAME_LEN.pack(1) + bytes([F_WAKE])
# type, slot, key, status, flags, header block length, declared length
RESPONSE = struct.Struct("<BIQHBIQ")

# RESPONSE flags
RF_CLOSE = 1        # the worker asked for Connection: close
RF_HAS_DATE = 2     # the worker sent its own Date
RF_HAS_SERVER = 4   # the worker sent its own Server
RF_ERROR = 8        # Prack's own error page for `status` (e.g. 502)
RF_DECLARED = 16    # declared length holds the worker's Content-Length (HEAD)


def complete_frames(buf: bytearray):
    """Yield (start, end) of each complete length-prefixed frame in buf (the
    payload after the u32 length); the caller deletes buf[:end of the last]."""
    pos = 0
    end = len(buf)
    unpack = FRAME_LEN.unpack_from
    while end - pos >= 4:
        size = unpack(buf, pos)[0]
        if end - pos - 4 < size:
            return
        yield pos + 4, pos + 4 + size
        pos += 4 + size


NO_LENGTH = (1 << 64) - 1


def response_frame(slot: int, key: int, status: int, flags: int,
                   header_block: bytes, body: bytes, declared: int = NO_LENGTH,
                   kind: int = F_RESPONSE) -> list[bytes]:
    """The buffers of one RESPONSE frame, or of an F_START (no body), sent
    with sendmsg, no join."""
    head = RESPONSE.pack(kind, slot, key, status, flags, len(header_block), declared)
    size = len(head) + len(header_block) + len(body)
    return [FRAME_LEN.pack(size), head, header_block, body]


def stream_frame(kind: int, slot: int, key: int, number: int = 0, flags: int = 0,
                 payload: bytes = b"") -> list[bytes]:
    """The buffers of one STREAM-layout frame (F_DATA, F_END, F_ACK, ...)."""
    head = STREAM.pack(kind, slot, key, number, flags)
    if payload:
        return [FRAME_LEN.pack(len(head) + len(payload)), head, payload]
    return [FRAME_LEN.pack(len(head)), head]
