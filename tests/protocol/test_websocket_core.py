"""Unit tests of the sans-IO WebSocket core (prack.protocol.websocket)."""
from __future__ import annotations

import base64
import os
import struct

import pytest

from prack.protocol import websocket as ws
from wsclient import masked_frame

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def headers(**extra):
    base = {b"host": b"x", b"upgrade": b"websocket", b"connection": b"Upgrade",
            b"sec-websocket-key": KEY, b"sec-websocket-version": b"13"}
    for name, value in extra.items():
        name = name.replace("_", "-").encode()
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return list(base.items())


# -- handshake -----------------------------------------------------------------

def test_accept_value_rfc_example():
    # RFC 6455 section 1.3's worked example.
    assert ws.accept_value(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_key_valid():
    assert ws.handshake_key("GET", 1, headers()) == KEY


def test_handshake_tokens_are_case_insensitive_lists():
    h = headers(upgrade=b"foo, WebSocket", connection=b"keep-alive, UPGRADE")
    assert ws.handshake_key("GET", 1, h) == KEY


def test_not_an_upgrade_is_none():
    assert ws.handshake_key("GET", 1, headers(upgrade=None)) is None
    assert ws.handshake_key("POST", 1, headers(upgrade=b"h2c")) is None
    # RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored.
    assert ws.handshake_key("GET", 0, headers()) is None
    assert not ws.wants_websocket(headers(upgrade=b"h2c"))
    assert ws.wants_websocket(headers())


@pytest.mark.parametrize("method,minor,h,status", [
    ("POST", 1, headers(), 400),
    ("GET", 1, headers(connection=b"keep-alive"), 400),
    ("GET", 1, headers(connection=None), 400),
    ("GET", 1, headers(sec_websocket_version=b"8"), 426),
    ("GET", 1, headers(sec_websocket_version=None), 426),
    ("GET", 1, headers(sec_websocket_key=None), 400),
    ("GET", 1, headers(sec_websocket_key=b"short=="), 400),
    ("GET", 1, headers(sec_websocket_key=base64.b64encode(os.urandom(15))), 400),
])
def test_invalid_handshakes(method, minor, h, status):
    with pytest.raises(ws.HandshakeError) as err:
        ws.handshake_key(method, minor, h)
    assert err.value.status == status


def test_two_keys_refused():
    h = headers() + [(b"sec-websocket-key", base64.b64encode(os.urandom(16)))]
    with pytest.raises(ws.HandshakeError):
        ws.handshake_key("GET", 1, h)


def test_handshake_head():
    h = headers(sec_websocket_protocol=b"chat, superchat")
    offered = ws.offered_protocols(h)
    assert offered == [b"chat", b"superchat"]
    head = ws.handshake_head(KEY, [(b"Sec-WebSocket-Protocol", b"chat"), (b"Set-Cookie", b"a=1"),
                                   (b"Connection", b"close"), (b"Content-Length", b"3")], offered)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert b"Sec-WebSocket-Protocol: chat\r\n" in head
    assert b"Set-Cookie: a=1\r\n" in head
    assert b"Content-Length" not in head and b"close" not in head
    with pytest.raises(ValueError):
        ws.handshake_head(KEY, [(b"Sec-WebSocket-Protocol", b"other")], offered)


# -- frame building ------------------------------------------------------------

@pytest.mark.parametrize("n,header_len", [(0, 2), (125, 2), (126, 4), (65535, 4),
                                          (65536, 10), (1 << 20, 10)])
def test_frame_lengths(n, header_len):
    data = os.urandom(n)
    f = ws.frame(ws.OP_BINARY, data)
    assert len(f) == header_len + n
    assert f[0] == 0x82 and not f[1] & 0x80
    p = ws.FrameParser(require_mask=False)
    p.feed(f)
    [m] = list(p.events())
    assert m.opcode == ws.OP_BINARY and m.data == data


def test_close_payload():
    assert ws.close_payload(1000, "bye") == b"\x03\xe8bye"
    assert ws.close_payload(ws.CLOSE_NO_STATUS) == b""
    long = ws.close_payload(1000, "\u00e9" * 100)     # 200 bytes of UTF-8
    assert len(long) <= 125
    long[2:].decode("utf-8")                          # cut on a character boundary
    with pytest.raises(ValueError):
        ws.close_payload(1006)


def test_unmask_roundtrip():
    for n in (0, 1, 3, 4, 5, 1000, 65537):
        data = os.urandom(n)
        mask = os.urandom(4)
        assert ws.unmask(ws.unmask(data, mask), mask) == data
    assert ws.unmask(b"\x00\x00\x00\x00\x00", b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04\x01"


# -- parsing -------------------------------------------------------------------

def parse(data: bytes, max_size: int = 0, step: int = 0):
    """All events of `data`, fed whole or `step` bytes at a time."""
    p = ws.FrameParser(max_size)
    out = []
    if not step:
        p.feed(data)
        out.extend(p.events())
    else:
        for i in range(0, len(data), step):
            p.feed(data[i:i + step])
            out.extend(p.events())
    return out


def error_code(data: bytes, max_size: int = 0) -> int:
    for step in (0, 1):
        with pytest.raises(ws.WebSocketError) as err:
            parse(data, max_size, step)
        code = err.value.code
    return code


def stream():
    return (masked_frame(ws.OP_TEXT, "héllo".encode())
            + masked_frame(ws.OP_PING, b"p1")
            + masked_frame(ws.OP_BINARY, b"\x00\x01", fin=False)
            + masked_frame(ws.OP_PONG, b"")
            + masked_frame(ws.OP_CONTINUATION, b"\x02", fin=False)
            + masked_frame(ws.OP_CONTINUATION, b"\x03" * 70000, fin=True)
            + masked_frame(ws.OP_TEXT, "€".encode()[:1], fin=False)
            + masked_frame(ws.OP_CONTINUATION, "€".encode()[1:], fin=True)
            + masked_frame(ws.OP_CLOSE, ws.close_payload(4001, "done")))


@pytest.mark.parametrize("step", [0, 1, 7, 4096])
def test_parse_stream_any_split(step):
    events = parse(stream(), step=step)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Message", "Ping", "Pong", "Message", "Message", "Close"]
    assert events[0].opcode == ws.OP_TEXT and events[0].data == "héllo".encode()
    assert events[1].data == b"p1"
    assert events[3].opcode == ws.OP_BINARY
    assert events[3].data == b"\x00\x01\x02" + b"\x03" * 70000
    assert events[4].data == "€".encode()
    assert (events[5].code, events[5].reason) == (4001, "done")


def test_input_after_close_is_ignored():
    p = ws.FrameParser()
    p.feed(masked_frame(ws.OP_CLOSE, b"") + masked_frame(ws.OP_TEXT, b"late"))
    events = list(p.events())
    assert len(events) == 1 and events[0].code == ws.CLOSE_NO_STATUS
    assert p.closed
    p.feed(masked_frame(ws.OP_TEXT, b"later"))
    assert list(p.events()) == []


def test_empty_messages():
    events = parse(masked_frame(ws.OP_TEXT, b"") + masked_frame(ws.OP_BINARY, b""))
    assert [(e.opcode, e.data) for e in events] == [(ws.OP_TEXT, b""), (ws.OP_BINARY, b"")]


def test_unmasked_client_frame_is_1002():
    assert error_code(ws.frame(ws.OP_TEXT, b"hi")) == ws.CLOSE_PROTOCOL_ERROR


def test_masked_server_frame_is_refused_by_a_client_parser():
    p = ws.FrameParser(require_mask=False)
    p.feed(masked_frame(ws.OP_TEXT, b"hi"))
    with pytest.raises(ws.WebSocketError):
        list(p.events())


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_rsv_bits_are_1002(rsv):
    assert error_code(masked_frame(ws.OP_TEXT, b"x", rsv=rsv)) == ws.CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_1002(opcode):
    assert error_code(masked_frame(opcode, b"")) == ws.CLOSE_PROTOCOL_ERROR


def test_control_frame_rules():
    assert error_code(masked_frame(ws.OP_PING, b"x" * 126)) == ws.CLOSE_PROTOCOL_ERROR
    assert error_code(masked_frame(ws.OP_PING, b"x", fin=False)) == ws.CLOSE_PROTOCOL_ERROR
    assert error_code(masked_frame(ws.OP_CLOSE, b"\x03\xe8" + b"x" * 124)) == ws.CLOSE_PROTOCOL_ERROR
    # 125 bytes is the limit, and allowed.
    [ping] = parse(masked_frame(ws.OP_PING, b"x" * 125))
    assert ping.data == b"x" * 125


def test_fragmentation_rules():
    # A continuation with no message in progress.
    assert error_code(masked_frame(ws.OP_CONTINUATION, b"x")) == ws.CLOSE_PROTOCOL_ERROR
    # A new data frame while a fragmented message is open.
    data = masked_frame(ws.OP_TEXT, b"a", fin=False) + masked_frame(ws.OP_TEXT, b"b")
    assert error_code(data) == ws.CLOSE_PROTOCOL_ERROR
    # Control frames may come between fragments.
    data = (masked_frame(ws.OP_TEXT, b"a", fin=False) + masked_frame(ws.OP_PING, b"")
            + masked_frame(ws.OP_CONTINUATION, b"b"))
    events = parse(data)
    assert isinstance(events[0], ws.Ping) and events[1].data == b"ab"


def test_non_minimal_lengths_are_1002():
    mask = b"\x00\x00\x00\x00"
    short16 = bytes((0x82, 0x80 | 126)) + struct.pack("!H", 5) + mask + b"x" * 5
    assert error_code(short16) == ws.CLOSE_PROTOCOL_ERROR
    short64 = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 200) + mask + b"x" * 200
    assert error_code(short64) == ws.CLOSE_PROTOCOL_ERROR
    top = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 63) + mask
    assert error_code(top) == ws.CLOSE_PROTOCOL_ERROR


def test_invalid_utf8_text_is_1007():
    assert error_code(masked_frame(ws.OP_TEXT, b"\xff")) == ws.CLOSE_INVALID_DATA
    # A surrogate encoded in UTF-8 is not valid UTF-8 (RFC 3629).
    assert error_code(masked_frame(ws.OP_TEXT, b"\xed\xa0\x80")) == ws.CLOSE_INVALID_DATA
    # Overlong encoding.
    assert error_code(masked_frame(ws.OP_TEXT, b"\xc0\xaf")) == ws.CLOSE_INVALID_DATA


def test_invalid_utf8_is_found_before_the_last_fragment():
    p = ws.FrameParser()
    p.feed(masked_frame(ws.OP_TEXT, b"ok", fin=False))
    assert list(p.events()) == []
    p.feed(masked_frame(ws.OP_CONTINUATION, b"\xff", fin=False))
    with pytest.raises(ws.WebSocketError) as err:
        list(p.events())
    assert err.value.code == ws.CLOSE_INVALID_DATA
    # The parser refuses everything after an error.
    with pytest.raises(ws.WebSocketError):
        list(p.events())


def test_truncated_utf8_at_message_end_is_1007():
    data = masked_frame(ws.OP_TEXT, b"\xe2\x82", fin=False) + masked_frame(ws.OP_CONTINUATION, b"")
    assert error_code(data) == ws.CLOSE_INVALID_DATA


def test_binary_is_not_utf8_checked():
    [m] = parse(masked_frame(ws.OP_BINARY, b"\xff\xfe"))
    assert m.data == b"\xff\xfe"


@pytest.mark.parametrize("payload,code", [
    (b"\x03", ws.CLOSE_PROTOCOL_ERROR),                    # 1-byte payload
    (struct.pack("!H", 999), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1004), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1005), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1006), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1015), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1016), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 2999), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 5000), ws.CLOSE_PROTOCOL_ERROR),
    (struct.pack("!H", 1000) + b"\xff", ws.CLOSE_INVALID_DATA),
])
def test_invalid_close_frames(payload, code):
    assert error_code(masked_frame(ws.OP_CLOSE, payload)) == code


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code):
    [c] = parse(masked_frame(ws.OP_CLOSE, struct.pack("!H", code) + "ok ✓".encode()))
    assert (c.code, c.reason) == (code, "ok ✓")


def test_max_message_size_is_1009():
    assert len(parse(masked_frame(ws.OP_BINARY, b"x" * 100), max_size=100)) == 1
    assert error_code(masked_frame(ws.OP_BINARY, b"x" * 101), 100) == ws.CLOSE_MESSAGE_TOO_BIG
    # Across fragments: each frame is small, the message is not.
    data = b"".join(masked_frame(ws.OP_BINARY if i == 0 else ws.OP_CONTINUATION, b"x" * 40,
                                 fin=i == 2) for i in range(3))
    assert error_code(data, 100) == ws.CLOSE_MESSAGE_TOO_BIG
    # Control frames do not count.
    data = masked_frame(ws.OP_TEXT, b"x" * 100, fin=False) + masked_frame(ws.OP_PING, b"y" * 50) \
        + masked_frame(ws.OP_CONTINUATION, b"")
    assert [type(e) for e in parse(data, 100)] == [ws.Ping, ws.Message]


def test_oversized_frame_is_refused_from_its_header():
    # Only the header of a 1 GiB frame arrives: refused before any payload.
    head = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 30) + b"\x00" * 4
    p = ws.FrameParser(max_message_size=1 << 20)
    p.feed(head)
    with pytest.raises(ws.WebSocketError) as err:
        list(p.events())
    assert err.value.code == ws.CLOSE_MESSAGE_TOO_BIG


def test_incomplete_input_waits():
    data = masked_frame(ws.OP_BINARY, b"x" * 300)
    p = ws.FrameParser()
    p.feed(data[:-1])
    assert list(p.events()) == []
    assert p.buffered > 0
    p.feed(data[-1:])
    [m] = list(p.events())
    assert m.data == b"x" * 300
    assert p.buffered == 0


# -- the session (acceptor side) ----------------------------------------------------

def client_events(buffers) -> list:
    p = ws.FrameParser(require_mask=False)
    p.feed(b"".join(bytes(b) for b in buffers))
    return list(p.events())


def test_session_relays_messages_and_answers_pings():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    s.receive(masked_frame(ws.OP_TEXT, b"hi") + masked_frame(ws.OP_PING, b"x")
              + masked_frame(ws.OP_PONG, b"") + masked_frame(ws.OP_BINARY, b"\x00"), now=1.0)
    assert s.to_worker == [(ws.OP_TEXT, b"hi"), (ws.OP_BINARY, b"\x00")]
    [pong] = client_events(s.to_client)
    assert isinstance(pong, ws.Pong) and pong.data == b"x"
    assert s.unacked == 3 + 2 * ws.EVENT_OVERHEAD
    assert not s.finished


def test_session_window_pauses_and_credit_resumes():
    s = ws.WsSession(1 << 20, 100, now=0.0)
    data = b"".join(masked_frame(ws.OP_BINARY, b"x" * 60) for _ in range(5))
    s.receive(data, now=0.0)
    assert len(s.to_worker) == 2 and s.paused          # 2 * (60 + 32) >= 100
    s.to_worker.clear()
    s.credit(92)
    assert len(s.to_worker) == 1 and s.paused
    s.credit(1000)
    assert len(s.to_worker) == 3 and s.parser.buffered == 0
    s.credit(1000)
    assert not s.paused


def test_session_client_close_is_echoed_and_reported():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    s.receive(masked_frame(ws.OP_CLOSE, ws.close_payload(4000, "bye")), now=0.0)
    [close] = client_events(s.to_client)
    assert close.code == 4000
    assert s.to_worker == [(ws.OP_CLOSE, ws.close_event(4000, "bye"))]
    assert ws.parse_close_event(s.to_worker[0][1]) == (4000, "bye")
    assert s.finished and not s.send(ws.OP_TEXT, b"late")


def test_session_drops_messages_once_it_has_closed():
    # After our close, messages go nowhere and take no room in the window,
    # so the client's close frame behind them is still read.
    s = ws.WsSession(1 << 20, 100, now=0.0)
    s.close(ws.close_payload(4000), now=0.0)
    s.receive(b"".join(masked_frame(ws.OP_BINARY, b"x" * 60) for _ in range(5))
              + masked_frame(ws.OP_CLOSE, ws.close_payload(4000)), now=0.0)
    assert s.to_worker == [] and s.unacked == 0 and not s.paused
    assert s.finished


def test_session_closing_reads_past_a_full_window():
    # Paused by a full window, then we close: the client's close frame,
    # already buffered behind the messages, completes the handshake.
    s = ws.WsSession(1 << 20, 100, now=0.0)
    s.receive(b"".join(masked_frame(ws.OP_BINARY, b"x" * 60) for _ in range(5))
              + masked_frame(ws.OP_CLOSE, ws.close_payload(4000)), now=0.0)
    assert s.paused and not s.finished
    s.close(ws.close_payload(4000), now=0.0)
    assert not s.paused and s.finished


def test_session_close_without_code_is_1005():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    s.receive(masked_frame(ws.OP_CLOSE, b""), now=0.0)
    assert client_events(s.to_client)[0].code == ws.CLOSE_NO_STATUS   # empty echo
    assert ws.parse_close_event(s.to_worker[0][1])[0] == ws.CLOSE_NO_STATUS


@pytest.mark.parametrize("data,code", [
    (ws.frame(ws.OP_TEXT, b"unmasked"), ws.CLOSE_PROTOCOL_ERROR),
    (masked_frame(ws.OP_TEXT, b"\xff"), ws.CLOSE_INVALID_DATA),
    (masked_frame(ws.OP_BINARY, b"x" * 200), ws.CLOSE_MESSAGE_TOO_BIG),
])
def test_session_protocol_errors_fail_the_connection(data, code):
    s = ws.WsSession(150, 1 << 16, now=0.0)
    s.receive(data, now=0.0)
    [close] = client_events(s.to_client)
    assert close.code == code
    assert ws.parse_close_event(s.to_worker[-1][1])[0] == code
    assert s.finished


def test_session_worker_close_waits_for_the_reply():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    assert s.send(ws.OP_TEXT, b"last")
    s.close(ws.close_payload(1000, "done"), now=0.0)
    events = client_events(s.to_client)
    assert events[0].data == b"last" and events[1].code == 1000
    assert not s.send(ws.OP_TEXT, b"after close")
    assert not s.finished
    # The client's messages still in flight are not relayed; its close ends it.
    s.to_worker.clear()
    s.receive(masked_frame(ws.OP_CLOSE, ws.close_payload(1000)), now=1.0)
    assert s.finished and s.to_worker == []


def test_session_close_timeout():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    s.close(ws.close_payload(1001), now=0.0, event=ws.close_event(1001, "going away"))
    assert s.to_worker == [(ws.OP_CLOSE, ws.close_event(1001, "going away"))]
    assert s.tick(1.0, 30.0) == ws.TICK_IDLE
    assert s.tick(ws.CLOSE_TIMEOUT + 0.1, 30.0) == ws.TICK_DEAD and s.finished


def test_session_paused_without_credit_stalls():
    s = ws.WsSession(1 << 20, 100, now=0.0)
    s.receive(b"".join(masked_frame(ws.OP_BINARY, b"x" * 60) for _ in range(3)), now=0.0)
    assert s.paused
    assert s.tick(1.0, 30.0, 10.0) == ws.TICK_IDLE      # paused from here
    assert s.tick(10.0, 30.0, 10.0) == ws.TICK_IDLE
    s.credit(10)                                        # the worker fetches: a new start
    assert s.paused
    assert s.tick(11.0, 30.0, 10.0) == ws.TICK_IDLE
    assert s.tick(20.0, 30.0, 10.0) == ws.TICK_IDLE
    assert s.tick(21.0, 30.0, 10.0) == ws.TICK_STALLED
    assert s.tick(21.0, 30.0, 0.0) == ws.TICK_IDLE      # no limit


def test_session_idle_ping_then_dead():
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    assert s.tick(5.0, 10.0) == ws.TICK_IDLE
    assert s.tick(10.0, 10.0) == ws.TICK_PING
    [ping] = client_events(s.to_client)
    assert isinstance(ping, ws.Ping)
    assert s.tick(15.0, 10.0) == ws.TICK_IDLE          # one ping per silence
    assert s.tick(20.0, 10.0) == ws.TICK_DEAD
    # An answer in time keeps it alive.
    s = ws.WsSession(1 << 20, 1 << 16, now=0.0)
    s.tick(10.0, 10.0)
    s.receive(masked_frame(ws.OP_PONG, b"prack"), now=12.0)
    assert s.tick(20.0, 10.0) == ws.TICK_IDLE
    assert s.tick(0.0, 0.0) == ws.TICK_IDLE            # pings off


def _outcome(data: bytes, cuts) -> tuple:
    """Events (as tuples) and the error code, feeding `data` cut at `cuts`."""
    p = ws.FrameParser(max_message_size=5000)
    out = []
    prev = 0
    try:
        for cut in list(cuts) + [len(data)]:
            p.feed(data[prev:cut])
            prev = cut
            for e in p.events():
                out.append((type(e).__name__, getattr(e, "opcode", None), getattr(e, "data", None),
                            getattr(e, "code", None), getattr(e, "reason", None)))
    except ws.WebSocketError as err:
        return out, err.code
    return out, None


def test_mutated_streams_fail_cleanly_and_alike_at_any_split():
    """Random corruptions of a valid stream: only WebSocketError escapes,
    with a close code a server may send, and the outcome does not depend on
    how the bytes were cut."""
    import random
    rng = random.Random(6455)
    base = stream()[:2000] + masked_frame(ws.OP_CLOSE, ws.close_payload(1000))
    allowed = {None, ws.CLOSE_PROTOCOL_ERROR, ws.CLOSE_INVALID_DATA, ws.CLOSE_MESSAGE_TOO_BIG}
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
        whole = _outcome(data, [])
        assert whole[1] in allowed
        cuts = sorted(rng.sample(range(1, len(data)), 20))
        assert _outcome(data, cuts) == whole
