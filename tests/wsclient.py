"""A small blocking WebSocket client for the tests (RFC 6455, client side).

It masks its frames, can split a message into fragments, and can send raw
bytes so tests can break the protocol on purpose. Frames from the server are
read with prack.websocket.FrameParser(require_mask=False).
"""
from __future__ import annotations

import base64
import os
import socket
import struct

from prack.protocol import websocket as ws


def masked_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None,
                 rsv: int = 0) -> bytes:
    """One client frame, masked with `mask` (random when None)."""
    mask = os.urandom(4) if mask is None else mask
    head = bytearray(ws.frame_header(opcode, len(payload), fin, mask))
    head[0] |= rsv << 4
    return bytes(head) + ws.unmask(payload, mask)


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: bytes, body: bytes):
        super().__init__("server answered %d" % status)
        self.status = status
        self.head = head
        self.body = body


class WsClient:
    def __init__(self, port: int, path: str = "/ws", protocols=(), timeout: float = 10.0,
                 headers=(), host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.parser = ws.FrameParser(require_mask=False)
        self._events: list = []
        key = base64.b64encode(os.urandom(16))
        lines = [b"GET %s HTTP/1.1" % path.encode(), b"Host: localhost",
                 b"Upgrade: websocket", b"Connection: Upgrade",
                 b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append(b"Sec-WebSocket-Protocol: " + ", ".join(protocols).encode())
        for name, value in headers:
            lines.append(("%s: %s" % (name, value)).encode())
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake: %r" % buf)
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        self.head = head
        self.fields = fields
        if status != 101:
            length = int(fields.get(b"content-length", b"0"))
            while len(rest) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            self.sock.close()
            raise HandshakeRefused(status, head, rest)
        if fields.get(b"sec-websocket-accept") != ws.accept_value(key):
            raise ConnectionError("bad Sec-WebSocket-Accept in %r" % head)
        self.protocol = fields.get(b"sec-websocket-protocol", b"").decode() or None
        self.parser.feed(rest)

    # -- sending -------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, data, fragments: int = 1) -> None:
        """A text (str) or binary (bytes) message, split into `fragments` frames."""
        if isinstance(data, str):
            opcode, payload = ws.OP_TEXT, data.encode()
        else:
            opcode, payload = ws.OP_BINARY, bytes(data)
        if fragments <= 1:
            self.sock.sendall(masked_frame(opcode, payload))
            return
        step = max(1, -(-len(payload) // fragments))
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        out = []
        for i, piece in enumerate(pieces):
            out.append(masked_frame(opcode if i == 0 else ws.OP_CONTINUATION, piece,
                                    fin=i == len(pieces) - 1))
        self.sock.sendall(b"".join(out))

    def ping(self, data: bytes = b"") -> None:
        self.sock.sendall(masked_frame(ws.OP_PING, data))

    def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        self.sock.sendall(masked_frame(ws.OP_CLOSE, ws.close_payload(code, reason)))

    # -- receiving -----------------------------------------------------------

    def recv_event(self):
        """The next event from the server: ws.Message / Ping / Pong / Close,
        or None when the connection ended without a close frame."""
        while True:
            if not self._events:
                self._events.extend(self.parser.events())
            if self._events:
                return self._events.pop(0)
            if self.parser.closed:
                return None
            chunk = self.sock.recv(262144)
            if not chunk:
                return None
            self.parser.feed(chunk)

    def recv(self):
        """The next data message as str (text) or bytes (binary); pongs and
        pings are skipped; a Close event is returned as is."""
        while True:
            event = self.recv_event()
            if isinstance(event, ws.Message):
                return event.data.decode() if event.opcode == ws.OP_TEXT else event.data
            if event is None or isinstance(event, ws.Close):
                return event

    def wait_eof(self) -> bytes:
        """Read until the server closes the TCP connection; the bytes left."""
        rest = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return rest
            if not chunk:
                return rest
            rest += chunk

    def abort(self) -> None:
        """Vanish: close the socket without a close frame (RST if possible)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def shutdown(self) -> None:
        self.sock.close()
