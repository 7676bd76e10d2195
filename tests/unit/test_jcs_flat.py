"""appliance.jcs's shortcut for flat objects (the transaction log's hash chain) gives the very
bytes of the general RFC 8785 path, for every kind of string a record could hold."""

from __future__ import annotations

import random

import pytest

from appliance import jcs

CHARS = [chr(c) for c in range(0x80)] + ["\u2028", "\u00e9", "\U0001f600", "\ufffe", "\x7f"]


def general(value: object) -> bytes:
    out: list[str] = []
    jcs._serialise(value, out, 0)
    return "".join(out).encode("utf-8")


def test_flat_objects_take_the_shortcut_and_match_the_general_path() -> None:
    rng = random.Random(8785)
    for _ in range(5000):
        value = {
            "".join(rng.choice("abcXYZ_09") for _ in range(rng.randint(1, 4))): rng.choice(
                [
                    None,
                    True,
                    False,
                    rng.randint(-(2**53) + 1, 2**53 - 1),
                    "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8))),
                ]
            )
            for _ in range(rng.randint(0, 6))
        }
        assert jcs._flat(value)
        assert jcs.canonicalize(value) == general(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5},  # a double: ECMAScript's layout, not repr's
        {"a": 2**53},  # beyond a double's integers
        {"\u00e9": "x"},  # a non-ASCII name: UTF-16 order
        {"a": ["x"]},  # nested
        {1: "x"},
    ],
)
def test_anything_else_takes_the_general_path(value: object) -> None:
    assert not jcs._flat(value)


def test_a_lone_surrogate_is_refused_on_the_shortcut_too() -> None:
    with pytest.raises(jcs.JcsError, match="lone surrogate"):
        jcs.canonicalize({"a": "\ud800"})
