"""WebSocket protocol core (RFC 6455), sans-IO.

Nothing here touches a socket. Three parts:

* the opening handshake: `handshake_key()` checks that a parsed request is a
  valid upgrade and returns its key; `accept_value()` computes the
  Sec-WebSocket-Accept answer; `handshake_head()` writes the 101 head;
* `FrameParser`: fed the client's bytes, yields events (`Message`, `Ping`,
  `Pong`, `Close`); it reassembles fragmented messages, unmasks, validates
  UTF-8 of text incrementally and of close reasons, and enforces the framing
  rules. A violation raises `WebSocketError` carrying the close code to send
  (1002 protocol error, 1007 invalid data, 1009 message too big);
* the frame builder for the server's own (unmasked) frames: `frame()`,
  `frame_header()`, `close_payload()`.

The acceptor's relay (`WsSession` in wsrelay.py) drives these.
"""
from __future__ import annotations

import base64
import codecs
import re
import struct

# -- opcodes (RFC 6455 5.2) ---------------------------------------------------
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

# -- close codes (RFC 6455 7.4.1, IANA registry) --------------------------------
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005          # never on the wire: "the close frame had no code"
CLOSE_ABNORMAL = 1006           # never on the wire: "the connection dropped"
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_GATEWAY = 1014

# Codes an endpoint may put in a close frame: the defined ones that are not
# reserved for local use (1004-1006, 1015), plus the registered (3000-3999)
# and private (4000-4999) ranges.
_WIRE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                               1011, 1012, 1013, 1014))


def valid_close_code(code: int) -> bool:
    """True when `code` may appear in a close frame."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2   # bytes of UTF-8 after the code

# -- handshake (RFC 6455 4.2) -------------------------------------------------
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = b"13"
# The key is 16 random bytes in base64: 22 characters and "==".
_KEY_RE = re.compile(rb"[A-Za-z0-9+/]{22}==")


class HandshakeError(Exception):
    """A request that asks for a WebSocket but is not a valid upgrade; Prack
    answers `status` itself (400, or 426 for an unsupported version)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def wants_websocket(headers) -> bool:
    """True when the request's Upgrade header names websocket."""
    for name, value in headers:
        if name == b"upgrade" and b"websocket" in _tokens(value):
            return True
    return False


def handshake_key(method: str, version_minor: int, headers) -> bytes | None:
    """The Sec-WebSocket-Key of a valid upgrade request, None when the request
    does not ask for a WebSocket (or is HTTP/1.0, where Upgrade means nothing).
    Raises HandshakeError when it asks for one
    but breaks RFC 6455 4.2.1. `headers` are (lower-case name, value) pairs."""
    upgrade = connection = False
    keys: list[bytes] = []
    versions: list[bytes] = []
    for name, value in headers:
        if name == b"upgrade":
            if b"websocket" in _tokens(value):
                upgrade = True
        elif name == b"connection":
            if b"upgrade" in _tokens(value):
                connection = True
        elif name == b"sec-websocket-key":
            keys.append(value.strip())
        elif name == b"sec-websocket-version":
            versions.extend(_tokens(value))
    if not upgrade or version_minor < 1:
        # RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored.
        return None
    if method != "GET":
        raise HandshakeError(400, "a WebSocket upgrade must be a GET")
    if not connection:
        raise HandshakeError(400, "a WebSocket upgrade needs Connection: upgrade")
    if versions != [VERSION]:
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version (13 is supported)")
    if len(keys) != 1 or not _KEY_RE.fullmatch(keys[0]):
        raise HandshakeError(400, "missing or invalid Sec-WebSocket-Key")
    return keys[0]


def accept_value(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a client's key."""
    # Imported at the first handshake: hashlib loads OpenSSL's libcrypto,
    # which every process forked from the master would carry otherwise.
    import hashlib

    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def offered_protocols(headers) -> list[bytes]:
    """The subprotocols a client offered (Sec-WebSocket-Protocol), in order."""
    out: list[bytes] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out.extend(t.strip() for t in value.split(b",") if t.strip())
    return out


# Headers of a worker's 101 that Prack writes itself or must not pass on:
# framing, the handshake's own fields, and extensions (none are supported).
_HANDSHAKE_OWN = frozenset((b"upgrade", b"connection", b"sec-websocket-accept",
                            b"sec-websocket-extensions", b"content-length",
                            b"transfer-encoding", b"keep-alive", b"date"))


def handshake_head(key: bytes, header_lines: list[tuple[bytes, bytes]],
                   offered: list[bytes]) -> bytes:
    """The server's 101 head. `header_lines` are the worker's headers; a
    Sec-WebSocket-Protocol it names must be one the client offered, else
    ValueError (the worker broke the handshake)."""
    parts = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Accept: ", accept_value(key), b"\r\n"]
    chosen = 0
    for name, value in header_lines:
        lower = name.lower()
        if lower in _HANDSHAKE_OWN:
            continue
        if lower == b"sec-websocket-protocol":
            chosen += 1
            if chosen > 1 or value.strip() not in offered:
                raise ValueError("Sec-WebSocket-Protocol %r was not offered by the client"
                                 % value.decode("latin-1"))
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


# -- frames (RFC 6455 5) --------------------------------------------------------
_FIN = 0x80
_RSV = 0x70
_MASK = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_CLOSE_CODE = _U16


class WebSocketError(Exception):
    """The peer broke the protocol; close the connection with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Message:
    """A complete text or binary message (payload as bytes; text is valid UTF-8)."""
    __slots__ = ("opcode", "data")

    def __init__(self, opcode: int, data: bytes):
        self.opcode = opcode
        self.data = data

    def __repr__(self) -> str:
        return "Message(%d, %r)" % (self.opcode, self.data[:40])


class Ping:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class Pong:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class Close:
    """The peer's close frame. `code` is CLOSE_NO_STATUS when it had none."""
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason


def unmask(data, mask: bytes) -> bytes:
    """XOR data with the 4-byte mask, as one big-integer operation (fast in
    CPython for any length, no per-byte loop)."""
    n = len(data)
    if not n:
        return b""
    key = mask * (n // 4 + 1)
    if len(key) != n:
        key = key[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_close(payload: bytes) -> Close:
    """Validate a close frame's payload (RFC 6455 5.5.1, 7.4)."""
    if not payload:
        return Close(CLOSE_NO_STATUS, "")
    if len(payload) == 1:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = _CLOSE_CODE.unpack_from(payload)[0]
    if not valid_close_code(code):
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "invalid close code %d" % code)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    return Close(code, reason)


# Parser states.
_HEADER, _PAYLOAD, _CLOSED = range(3)


class FrameParser:
    """Turns a client's bytes into events.

        parser.feed(data)
        for event in parser.events(): ...

    `events()` raises WebSocketError on the first violation; afterwards the
    parser refuses everything. After a Close event it ignores further input
    (RFC 6455 5.5.1: nothing follows a close frame). `max_message_size`
    bounds a whole reassembled message (0 = no limit); it is checked as each
    frame header arrives, so an oversized message is refused before its bytes
    are buffered. `require_mask` is True for a server reading a client.
    """

    __slots__ = ("max_message_size", "require_mask", "buf", "_state", "_fin",
                 "_opcode", "_length", "_mask", "_msg_opcode", "_parts", "_msg_size",
                 "_utf8", "_failed")

    def __init__(self, max_message_size: int = 0, require_mask: bool = True):
        self.max_message_size = max_message_size
        self.require_mask = require_mask
        self.buf = bytearray()
        self._state = _HEADER
        self._fin = True
        self._opcode = 0
        self._length = 0
        self._mask = b""
        self._msg_opcode = 0          # opcode of the fragmented message in progress, or 0
        self._parts = bytearray()     # the fragmented message so far (never a list:
                                      # empty fragments would each cost a slot)
        self._msg_size = 0
        self._utf8 = None             # incremental decoder of a fragmented text message
        self._failed: WebSocketError | None = None

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus fragments of a message in progress."""
        return len(self.buf) + self._msg_size

    def feed(self, data) -> None:
        if self._state != _CLOSED:
            self.buf += data

    def _error(self, code: int, reason: str) -> WebSocketError:
        err = self._failed = WebSocketError(code, reason)
        self._state = _CLOSED
        self.buf.clear()
        self._parts = bytearray()
        return err

    def events(self):
        """Yield every event the buffered bytes complete."""
        if self._failed is not None:
            raise self._failed
        buf = self.buf
        while self._state != _CLOSED:
            if self._state == _HEADER:
                if not self._read_header():
                    return
            n = self._length
            if len(buf) < n:
                return
            payload = buf[:n]           # a copy; unmasking makes the bytes
            del buf[:n]
            payload = unmask(payload, self._mask) if self._mask else bytes(payload)
            self._state = _HEADER
            event = self._complete(payload)
            if event is not None:
                yield event

    def _read_header(self) -> bool:
        buf = self.buf
        have = len(buf)
        if have < 2:
            return False
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            pos = 4
        elif length == 127:
            pos = 10
        masked = b1 & _MASK
        if masked:
            pos += 4
        if have < pos:
            return False
        if length == 126:
            length = _U16.unpack_from(buf, 2)[0]
            if length < 126:
                raise self._error(CLOSE_PROTOCOL_ERROR, "payload length not minimally encoded")
        elif length == 127:
            length = _U64.unpack_from(buf, 2)[0]
            if length >> 63:
                raise self._error(CLOSE_PROTOCOL_ERROR, "payload length has its top bit set")
            if length <= 0xFFFF:
                raise self._error(CLOSE_PROTOCOL_ERROR, "payload length not minimally encoded")
        if b0 & _RSV:
            raise self._error(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        fin = bool(b0 & _FIN)
        opcode = b0 & 0x0F
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise self._error(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise self._error(CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes")
        elif opcode in _DATA_OPCODES:
            if self._msg_opcode:
                raise self._error(CLOSE_PROTOCOL_ERROR,
                                  "new message before the previous one's last fragment")
        elif opcode == OP_CONTINUATION:
            if not self._msg_opcode:
                raise self._error(CLOSE_PROTOCOL_ERROR, "continuation frame with no message")
        else:
            raise self._error(CLOSE_PROTOCOL_ERROR, "reserved opcode %d" % opcode)
        if self.require_mask and not masked:
            raise self._error(CLOSE_PROTOCOL_ERROR, "client frame is not masked")
        if not self.require_mask and masked:
            raise self._error(CLOSE_PROTOCOL_ERROR, "server frame is masked")
        limit = self.max_message_size
        if limit and opcode not in _CONTROL_OPCODES and self._msg_size + length > limit:
            raise self._error(CLOSE_MESSAGE_TOO_BIG,
                              "message larger than %d bytes" % limit)
        self._mask = bytes(buf[pos - 4:pos]) if masked else b""
        del buf[:pos]
        self._fin = fin
        self._opcode = opcode
        self._length = length
        self._state = _PAYLOAD
        return True

    def _complete(self, payload: bytes):
        opcode = self._opcode
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            try:
                event = parse_close(payload)
            except WebSocketError as err:
                raise self._error(err.code, err.reason) from None
            self._state = _CLOSED
            self.buf.clear()
            return event
        fin = self._fin
        if opcode != OP_CONTINUATION:
            if fin:   # the common case: a whole message in one frame
                if opcode == OP_TEXT:
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self._error(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
                return Message(opcode, payload)
            self._msg_opcode = opcode
            if opcode == OP_TEXT:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
        if self._utf8 is not None:
            try:
                self._utf8.decode(payload, fin)
            except UnicodeDecodeError:
                raise self._error(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
        self._parts += payload
        self._msg_size += len(payload)
        if not fin:
            return None
        event = Message(self._msg_opcode, bytes(self._parts))
        self._parts = bytearray()
        self._msg_size = 0
        self._msg_opcode = 0
        self._utf8 = None
        return event


def frame_header(opcode: int, length: int, fin: bool = True, mask: bytes = b"") -> bytes:
    """The header of one frame (a server's frames are unmasked: mask=b"")."""
    b0 = (_FIN if fin else 0) | opcode
    m = _MASK if mask else 0
    if length < 126:
        head = bytes((b0, m | length))
    elif length <= 0xFFFF:
        head = bytes((b0, m | 126)) + _U16.pack(length)
    else:
        head = bytes((b0, m | 127)) + _U64.pack(length)
    return head + mask if mask else head


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One whole unmasked frame."""
    return frame_header(opcode, len(payload), fin) + payload


def close_payload(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    """A close frame's payload; the reason is cut to fit 125 bytes on a
    character boundary. CLOSE_NO_STATUS gives an empty payload."""
    if code == CLOSE_NO_STATUS:
        return b""
    if not valid_close_code(code):
        raise ValueError("close code %d may not be sent" % code)
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CLOSE_REASON:
        raw = raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return _CLOSE_CODE.pack(code) + raw


# -- one accepted connection, server side -------------------------------------------

# Bytes an event is counted for beyond its payload, in the client -> worker
# window (so a flood of empty messages is bounded too). The acceptor counts
# events with it and the API process credits them back with it.
EVENT_OVERHEAD = 32
CLOSE_TIMEOUT = 5.0     # how long we wait for the peer's close frame after ours

# Session states.
WS_OPEN, WS_CLOSING, WS_CLOSED = range(3)
# What tick() found.
TICK_IDLE, TICK_PING, TICK_DEAD, TICK_STALLED = range(4)


def close_event(code: int, reason: str = "") -> bytes:
    """A close event for the worker: code and UTF-8 reason. Unlike a close
    frame it may carry the local codes 1005 (no code) and 1006 (dropped)."""
    return _CLOSE_CODE.pack(code) + reason.encode("utf-8")


def parse_close_event(payload) -> tuple[int, str]:
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    return _CLOSE_CODE.unpack_from(payload)[0], bytes(payload[2:]).decode("utf-8", "replace")


class WsSession:
    """The server's side of one WebSocket the acceptor relays; no I/O.

    `receive()` takes the client's bytes. Afterwards `to_client` holds the
    buffers to write to the client (pongs, close frames), `to_worker` the
    events for the worker as (opcode, payload) - whole messages, and a close
    (OP_CLOSE, close_event payload) - and `finished` says the TCP connection
    should close once `to_client` has been written. Pings are answered here;
    the worker never sees them.

    Backpressure towards the worker: each event adds its size to
    `unacked` until the worker has received it (`credit()`); while
    `unacked` is at `window` or more, the session stops parsing (`paused`),
    and the caller stops reading the socket.
    """

    __slots__ = ("parser", "state", "window", "unacked", "to_client", "to_worker",
                 "finished", "last_heard", "pinged", "close_deadline", "ack", "sent",
                 "paused_at")

    def __init__(self, max_message_size: int, window: int, now: float):
        self.parser = FrameParser(max_message_size)
        self.state = WS_OPEN
        self.window = window
        self.unacked = 0
        self.to_client: list = []
        self.to_worker: list = []
        self.finished = False
        self.last_heard = now
        self.pinged = False
        self.close_deadline = 0.0
        self.ack = -1           # a worker message whose acknowledgement waits for the client
        self.sent = 0           # bytes queued for the client (for the access log)
        self.paused_at = 0.0    # when a tick first found us paused with no credit since

    @property
    def paused(self) -> bool:
        # Once closing, nothing more goes to the worker: the window no
        # longer holds back reading (the client's close frame must be read).
        return self.unacked >= self.window and self.state == WS_OPEN

    # -- from the client --------------------------------------------------------------

    def receive(self, data, now: float) -> None:
        self.last_heard = now
        self.pinged = False
        self.parser.feed(data)
        self.pump()

    def credit(self, n: int) -> None:
        """The worker received `n` bytes of events; parse on if that unpaused us."""
        was = self.paused
        self.unacked = max(0, self.unacked - n)
        self.paused_at = 0.0    # the worker is fetching
        if was and not self.paused:
            self.pump()

    def pump(self) -> None:
        """Turn buffered input into events while the window has room."""
        if self.finished or self.paused:
            return
        try:
            for event in self.parser.events():
                cls = event.__class__
                if cls is Message:
                    if self.state != WS_OPEN:
                        # We have closed: the worker is done (or was told);
                        # counting it would fill the window for good and
                        # stop us reading the client's close frame.
                        continue
                    self.to_worker.append((event.opcode, event.data))
                    self.unacked += len(event.data) + EVENT_OVERHEAD
                    if self.paused:
                        return
                elif cls is Ping:
                    if self.state == WS_OPEN:
                        self._queue(frame(OP_PONG, event.data))
                elif cls is Close:
                    self._on_close(event)
                    return
                # Pong: only proves the client is there (last_heard).
        except WebSocketError as err:
            # Fail the connection (RFC 6455 7.1.7): our close with the code,
            # the worker is told, and the TCP connection ends (no waiting
            # for a reply from a peer that broke the protocol).
            if self.state == WS_OPEN:
                self._queue(frame(OP_CLOSE, close_payload(err.code, err.reason)))
                self.to_worker.append((OP_CLOSE, close_event(err.code, err.reason)))
            self.state = WS_CLOSED
            self.finished = True

    def _on_close(self, event: Close) -> None:
        if self.state == WS_OPEN:
            # The client closes: echo its code, tell the worker.
            self._queue(frame(OP_CLOSE, b"" if event.code == CLOSE_NO_STATUS
                              else _CLOSE_CODE.pack(event.code)))
            self.to_worker.append((OP_CLOSE, close_event(event.code, event.reason)))
        # Else it is the answer to our close: the handshake is complete.
        self.state = WS_CLOSED
        self.finished = True

    # -- from the worker (or Prack itself) -----------------------------------------------

    def _queue(self, data: bytes) -> None:
        self.to_client.append(data)
        self.sent += len(data)

    def send(self, opcode: int, payload) -> bool:
        """Queue a worker's message; False (dropped) once closing."""
        if self.state != WS_OPEN:
            return False
        head = frame_header(opcode, len(payload))
        self.to_client += (head, payload)
        self.sent += len(head) + len(payload)
        return True

    def close(self, payload: bytes, now: float, event: bytes | None = None) -> None:
        """Start the closing handshake with a close frame carrying
        `payload` (see close_payload); `event`, when given, is also
        reported to the worker (a close Prack decided, not the worker)."""
        if self.state != WS_OPEN:
            return
        self._queue(frame(OP_CLOSE, payload))
        if event is not None:
            self.to_worker.append((OP_CLOSE, event))
        self.state = WS_CLOSING
        self.close_deadline = now + CLOSE_TIMEOUT
        self.pump()         # input the window held back may hold the answer

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float, ping_interval: float, stall_limit: float = 0.0) -> int:
        """Housekeeping: TICK_PING when a ping was queued, TICK_DEAD when the
        connection should be dropped (the client went silent, or never
        answered our close), TICK_STALLED when we have been paused with no
        credit for `stall_limit` (the worker stopped fetching events; as we
        do not read, we could not even see the client leave), else
        TICK_IDLE."""
        if self.state == WS_CLOSING:
            if now >= self.close_deadline:
                self.state = WS_CLOSED
                self.finished = True
                return TICK_DEAD
            return TICK_IDLE
        if self.paused:
            # While paused we do not read, so silence proves nothing.
            self.last_heard = now
            if not self.paused_at:
                self.paused_at = now
            elif stall_limit and now - self.paused_at >= stall_limit:
                return TICK_STALLED
            return TICK_IDLE
        self.paused_at = 0.0
        if not ping_interval or self.state != WS_OPEN:
            return TICK_IDLE
        quiet = now - self.last_heard
        if self.pinged:
            if quiet >= 2 * ping_interval:
                return TICK_DEAD
        elif quiet >= ping_interval:
            self.pinged = True
            self._queue(frame(OP_PING, b"prack"))
            return TICK_PING
        return TICK_IDLE
