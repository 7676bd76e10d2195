"""appliance.jcs.Members (the hash chain's fixed member names laid out once) gives the very
bytes of the general RFC 8785 path, for every kind of value and for objects it was not made
for."""

from __future__ import annotations

import random

import pytest

from appliance import jcs

CHARS = [chr(c) for c in range(0x80)] + ["\u2028", "\u00e9", "\U0001f600", "\ufffe", "\x7f", "%"]
NAMES = ("v", "seq", "prev", "a%s", "created_at", "Z", "_x", "purpose")


def general(value: object) -> bytes:
    out: list[str] = []
    jcs._serialise(value, out, 0)
    return "".join(out).encode("utf-8")


def test_every_value_gives_the_general_paths_bytes() -> None:
    form = jcs.Members(NAMES)
    rng = random.Random(8785)
    for _ in range(5000):
        document = {
            name: rng.choice(
                [
                    None,
                    True,
                    False,
                    rng.randint(-(2**53) + 1, 2**53 - 1),
                    rng.choice([2**53, -(2**53), 2**60]),  # beyond a double's integers
                    rng.uniform(-1e30, 1e30),
                    "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8))),
                    ["x", {"b": 1, "a": None}],
                ]
            )
            for name in NAMES
        }
        assert form.canonicalize(document) == general(document)


@pytest.mark.parametrize(
    "document",
    [{"v": 1}, {**dict.fromkeys(NAMES[1:], 1), "other": 2}, {**dict.fromkeys(NAMES, 1), "w": 3}],
)
def test_other_names_take_the_general_path(document: dict[str, object]) -> None:
    assert jcs.Members(NAMES).canonicalize(document) == general(document)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(jcs.JcsError, match="lone surrogate"):
        jcs.Members(("a",)).canonicalize({"a": "\ud800"})


@pytest.mark.parametrize("names", [(), ("a", "a"), ("\u00e9",)])
def test_names_must_be_distinct_ascii(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="distinct"):
        jcs.Members(names)
