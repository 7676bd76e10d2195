"""RFC 8785 canonicalisation: the RFC's examples, ECMAScript numbers, strictness, properties."""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess
from typing import Any

import pytest
from hosttools import require
from hypothesis import given
from hypothesis import strategies as st

from appliance.jcs import JcsError, canonicalize, loads

# RFC 8785 appendix B: IEEE 754 bit patterns and their canonical text.
NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "expected"), NUMBERS)
def test_rfc8785_numbers(bits: str, expected: str) -> None:
    assert canonicalize(_double(bits)) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_have_no_canonical_form(bits: str) -> None:
    with pytest.raises(JcsError):
        canonicalize(_double(bits))


def test_rfc8785_main_example() -> None:
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonicalize(json.loads(text)) == expected.encode("utf-8")


def test_rfc8785_sorting_example() -> None:
    text = (
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet '
        'With Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": '
        '"Control", "\\u00f6": "Latin Small Letter O With Diaeresis"}'
    )
    keys = list(json.loads(canonicalize(json.loads(text))))
    # UTF-16 code units: the emoji's surrogates (0xD83D) sort before U+FB33.
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert canonicalize(json.loads(text)).startswith(b'{"\\r":"Carriage Return","1":"One"')
    assert "\u0080".encode() in canonicalize(json.loads(text))  # not escaped


def test_string_escapes_are_minimal() -> None:
    assert canonicalize("\x00\x1f\x7f/\u2028") == '"\\u0000\\u001f\x7f/\u2028"'.encode()
    assert canonicalize('\b\f\n\r\t"\\') == b'"\\b\\f\\n\\r\\t\\"\\\\"'


def test_integers() -> None:
    assert (
        canonicalize([0, -1, 2**53 - 1, -(2**53 - 1)])
        == b"[0,-1,9007199254740991,-9007199254740991]"
    )
    assert canonicalize(10**21) == b"1e+21"  # exactly a double: written as one
    assert canonicalize(True) == b"true"  # bool is no integer in JSON
    # Past 2**53 a JSON number is the nearest double, as JavaScript reads the same text.
    assert canonicalize(2**53 + 1) == b"9007199254740992"
    assert canonicalize(65614269514739420) == b"65614269514739420"
    with pytest.raises(JcsError, match="too large"):
        canonicalize(10**400)


@pytest.mark.parametrize(
    "value",
    ["\ud800", {"\udc00": 1}, {1: "x"}, b"bytes", {1, 2}, object()],
)
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(JcsError):
        canonicalize(value)


def test_deep_nesting_is_refused() -> None:
    value: Any = []
    for _ in range(150):
        value = [value]
    with pytest.raises(JcsError, match="deeper"):
        canonicalize(value)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '{"a": NaN}',
        "[Infinity]",
        "[-Infinity]",
        "[1e400]",
        '["\\ud800"]',
        "[1" + "0" * 400 + "]",
        "{",
        "[" * 5000 + "]" * 5000,
    ],
)
def test_loads_refuses_what_is_not_i_json(text: str) -> None:
    with pytest.raises(JcsError):
        loads(text)


def test_loads_refuses_invalid_utf8() -> None:
    with pytest.raises(JcsError, match="UTF-8"):
        loads(b'["\xff"]')


def test_loads_accepts_i_json() -> None:
    assert loads(b'{"a": [1, 2.5, "\xe2\x82\xac", null, true], "b": {}}') == {
        "a": [1, 2.5, "€", None, True],
        "b": {},
    }


# -- properties ----------------------------------------------------------------------------

_SAFE_INTEGERS = st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | _SAFE_INTEGERS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _number(text: str) -> int | float:
    # JSON numbers are doubles; Python reads integral text as int, exact only below 2**53.
    value = int(text)
    return value if abs(value) < 2**53 else float(value)


@given(json_values)
def test_canonical_output_parses_to_an_equal_value(value: Any) -> None:
    assert json.loads(canonicalize(value), parse_int=_number) == value


@given(json_values)
def test_canonicalization_is_idempotent(value: Any) -> None:
    once = canonicalize(value)
    assert canonicalize(json.loads(once)) == once
    assert canonicalize(loads(once)) == once


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = [(key, _shuffled(member, rng)) for key, member in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_shuffled(element, rng) for element in value]
    return value


@given(json_values, st.randoms(use_true_random=False))
def test_member_order_never_matters(value: Any, rng: random.Random) -> None:
    assert canonicalize(_shuffled(value, rng)) == canonicalize(value)


def test_numbers_match_ecmascript() -> None:
    """Thousands of doubles against the reference itself, when Node.js is installed."""
    require("node")
    node = shutil.which("node")
    assert node is not None
    rng = random.Random(8785)
    values = [_double(bits) for bits, _ in NUMBERS[:2]]
    while len(values) < 5000:
        value = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        if math.isfinite(value):
            values.append(value)
    values += [float(n) for n in range(-1000, 1000)] + [n / 7 for n in range(1, 500)]
    script = "const v=JSON.parse(require('fs').readFileSync(0));"
    script += "process.stdout.write(JSON.stringify(v.map(String)))"
    result = subprocess.run(
        [node, "-e", script],
        input=json.dumps(values).encode(),  # repr() of a double reads back exactly
        capture_output=True,
        check=True,
        timeout=60,
    )
    expected = json.loads(result.stdout)
    mismatches = [
        (v, e, canonicalize(v).decode())
        for v, e in zip(values, expected, strict=True)
        if canonicalize(v).decode() != e
    ]
    assert not mismatches[:5]
