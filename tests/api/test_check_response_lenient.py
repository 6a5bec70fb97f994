"""check_response turns the lenient header values of issue 14 into header
lines: numbers and booleans as their JSON text, null leaves the field out,
arrays repeat it; what is unsafe is still refused, naming the field."""
from __future__ import annotations

import msgspec
import pytest

from prack.api.checks import BadResponse, check_response, check_response_cached
from prack.ipc import frames


def block(headers, code=200):
    return check_response(code, headers)[2]


def test_numbers_and_booleans_are_their_json_text():
    assert block({"X-Int": 35, "X-Float": 1.5, "X-True": True, "X-False": False}) == (
        b"X-Int: 35\r\nX-Float: 1.5\r\nX-True: true\r\nX-False: false\r\n")


def test_null_drops_only_that_field():
    assert block({"X-A": "1", "X-Gone": None, "X-B": "2"}) == b"X-A: 1\r\nX-B: 2\r\n"


def test_arrays_of_mixed_scalars_repeat_the_field():
    assert block({"X-R": ["a", 2, True]}) == b"X-R: a\r\nX-R: 2\r\nX-R: true\r\n"


def test_names_keep_their_case():
    assert block({"x-LoWeR": 1}) == b"x-LoWeR: 1\r\n"


def test_integer_content_length_is_read_and_not_copied():
    status, flags, lines, declared = check_response(200, {"Content-length": 35})
    assert lines == b"" and declared == 35 and flags & frames.RF_DECLARED


def test_code_as_digit_string():
    assert check_response("201", {})[0] == 201
    assert check_response(" 204 ", {})[0] == 204


@pytest.mark.parametrize("code", ["20", "abc", 199, 1000, "1000"])
def test_bad_codes_refused(code):
    with pytest.raises(BadResponse, match="^code: "):
        check_response(code, {})


@pytest.mark.parametrize("value", ["a\rb", "a\x00b", ["ok", "a\r\nb"]])
def test_control_characters_refused_naming_the_field(value):
    with pytest.raises(BadResponse, match="^headers.X-A: value contains CR, LF, NUL"):
        check_response(200, {"X-A": value})


def test_invalid_name_refused_even_with_a_null_value():
    with pytest.raises(BadResponse, match="not a valid header name"):
        check_response(200, {"Bad Name": None})


def test_v2_pairs_take_the_same_values():
    assert block([("X-A", 1), ("X-B", None), ("X-A", False)]) == b"X-A: 1\r\nX-A: false\r\n"


def test_cache_never_mixes_equal_keys_of_different_types():
    """As dict keys 1 == 1.0 == True: a remembered answer for one would be
    given for the others."""
    assert check_response_cached(200, {"X": 1}, "code")[2] == b"X: 1\r\n"
    assert check_response_cached(200, {"X": True}, "code")[2] == b"X: true\r\n"
    assert check_response_cached(200, {"X": 1.0}, "code")[2] == b"X: 1.0\r\n"
    assert check_response_cached(200, {"X": 1}, "code")[2] == b"X: 1\r\n"


@pytest.mark.parametrize("module", [msgspec.json, msgspec.msgpack])
def test_a_refused_header_value_is_named(module):
    from prack.api.checks import Codec, describe
    from prack.protocol import messages
    fine = "1" if module is msgspec.msgpack else 1
    data = module.encode({"id": "0" * 32, "status": 200,
                          "headers": {"X-Fine": fine, "X-Bad": {"n": 1}}})
    item = messages.TypedResponseItem if module is msgspec.msgpack else messages.ResponseItem
    try:
        module.decode(data, type=item)
    except msgspec.ValidationError as exc:
        text = describe(exc, Codec(module), data)
    assert text.startswith("headers.X-Bad: Expected"), text


def test_numbers_with_fractions_or_exponents_in_their_shortest_form():
    import msgspec as ms
    from prack.protocol import messages
    values = ms.json.decode(b'{"A": 2.50, "B": 1e3, "C": 1e20, "D": 123456789012345678901234567890}',
                            type=dict[str, messages.HeaderValue])
    assert block(values) == (b"A: 2.5\r\nB: 1000.0\r\nC: 1e+20\r\n"
                             b"D: 123456789012345678901234567890\r\n")


def test_a_number_in_msgpack_is_named_as_refused():
    from prack.api.checks import Codec, describe
    from prack.protocol import messages
    data = msgspec.msgpack.encode({"id": "0" * 32, "status": 200, "headers": {"X-N": 1}})
    try:
        msgspec.msgpack.decode(data, type=messages.TypedResponseItem)
    except msgspec.ValidationError as exc:
        text = describe(exc, Codec(msgspec.msgpack), data)
    assert text.startswith("headers.X-N: Expected"), text
