"""How API v1 reads a posted response (issue 14): msgspec's strict reading
first; a body it refuses is read again as the original Prack read it."""
from __future__ import annotations

import base64

import msgspec
import pytest

from prack.protocol import messages

IDENT = "0" * 32
decode_strict = msgspec.json.Decoder(messages.PostedResponse).decode


def read(doc) -> messages.PostedResponse:
    """What the API process does: strict, then the second reading."""
    data = msgspec.json.encode(doc) if not isinstance(doc, bytes) else doc
    try:
        return decode_strict(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return messages.reread_posted_response(data, exc)


PAYLOAD = bytes(range(256)) * 3


@pytest.mark.parametrize("text", [
    base64.b64encode(PAYLOAD).decode(),                         # one line
    base64.encodebytes(PAYLOAD).decode(),                       # MIME: 76 a line, final newline
    base64.encodebytes(PAYLOAD).decode().replace("\n", "\r\n"),  # CRLF line breaks
    "\n".join(base64.b64encode(PAYLOAD).decode()[i:i + 60]      # Ruby encode64: 60 a line
              for i in range(0, 1024, 60)) + "\n",
    base64.b64encode(PAYLOAD).decode().rstrip("="),             # no padding
    base64.urlsafe_b64encode(PAYLOAD).decode(),                 # URL-safe alphabet
    base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("="),
    " \t" + base64.b64encode(PAYLOAD).decode() + " \n",         # whitespace around
])
def test_body_shapes_decode_to_the_same_bytes(text):
    assert read({"identifier": IDENT, "code": 200, "body": text}).body == PAYLOAD


@pytest.mark.parametrize("text", ["aGk$", "a", "aGk=aGk=", "aGVsbG8=\u00e9", "aG=k"])
def test_bad_base64_still_refused_naming_the_body(text):
    with pytest.raises(msgspec.ValidationError) as caught:
        read({"identifier": IDENT, "code": 200, "body": text})
    assert str(caught.value).endswith("- at `$.body`")
    assert "invalid base64" in str(caught.value)


def test_clean_body_never_takes_the_second_reading(monkeypatch):
    """The fast path: a single-line padded body is read by msgspec alone."""
    def boom(*args):
        raise AssertionError("second reading")
    monkeypatch.setattr(messages, "_decode_posted_text", boom)
    doc = msgspec.json.encode({"identifier": IDENT, "code": 200, "body": "aGk="})
    assert decode_strict(doc).body == b"hi"


def test_other_errors_are_not_read_again():
    doc = b'{"identifier": 5, "code": 200, "body": "aGk"}'
    with pytest.raises(msgspec.ValidationError) as caught:
        read(doc)
    assert "$.identifier" in str(caught.value)
    with pytest.raises(msgspec.DecodeError):
        read(b'{"identifier": "x", "body": "aG\n')


def test_an_error_after_a_lenient_body_is_reported():
    with pytest.raises(msgspec.ValidationError) as caught:
        read({"identifier": IDENT, "code": 200, "body": "aGk", "headers": {"X": {}}})
    assert "$.headers" in str(caught.value)


def test_header_values_of_every_json_type_decode():
    msg = read({"identifier": IDENT, "code": "200",
                "headers": {"A": "s", "B": 35, "C": 1.5, "D": True, "E": None,
                            "F": ["x", 2, False]}})
    assert msg.code == "200"
    assert msg.headers == {"A": "s", "B": 35, "C": 1.5, "D": True, "E": None,
                           "F": ["x", 2, False]}


@pytest.mark.parametrize("value", [{"n": 1}, [[1]], [None]])
def test_other_header_value_types_are_refused(value):
    with pytest.raises(msgspec.ValidationError, match=r"\$\.headers"):
        read({"identifier": IDENT, "code": 200, "headers": {"X": value}})


def test_v2_msgpack_items_keep_the_typed_form():
    typed = msgspec.msgpack.Decoder(messages.TypedResponseItem).decode
    with pytest.raises(msgspec.ValidationError):
        typed(msgspec.msgpack.encode({"id": IDENT, "status": 200, "headers": {"X": 1}}))
    with pytest.raises(msgspec.ValidationError):
        typed(msgspec.msgpack.encode({"id": IDENT, "status": "200"}))
    lenient = msgspec.json.Decoder(messages.ResponseItem).decode
    item = lenient(b'{"id": "x", "status": "201", "headers": [["X", 1], ["Y", null]]}')
    assert item.status == "201" and item.headers == [("X", 1), ("Y", None)]


@pytest.mark.parametrize("size", [100, 40000])          # both ways of stripping
def test_every_kind_of_whitespace_and_alphabet_at_any_size(size):
    payload = bytes(range(256)) * (size // 256) + b"\xfb\xff"
    text = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    mixed = "".join(ch + " \t\r\n\v\f"[i % 6] if i % 7 == 0 else ch for i, ch in enumerate(text))
    assert messages.decode_base64_lenient(mixed) == payload
    with pytest.raises(ValueError):
        messages.decode_base64_lenient(mixed + '"')
    with pytest.raises(ValueError):
        messages.decode_base64_lenient(mixed[:-2] + "\\u")
