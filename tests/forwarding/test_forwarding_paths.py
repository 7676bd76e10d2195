"""The shared path check against double encodings, overlong UTF-8 and lenient decoders."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.forwarding.paths import PathRefused, checked_path

REFUSED = [
    "/a/%25%32%65%25%32%65/b",  # %2e%2e once decoded
    "/a/%25%32%45",
    "/%25%32%66etc",
    "/a/%252e%252e/b",
    "/a/%252E%252e",
    "/a/%25252e%25252e",  # three times
    "/a/%25u002e%25u002e",  # IIS %u, encoded
    "/a/%u002e%u002e",
    "/a/%U002E",
    "/a/%c0%ae%c0%ae/b",  # overlong '.'
    "/a/%C0%AE%C0%AE",
    "/a/%c0%af",  # overlong '/'
    "/a/%c1%9c",  # overlong '\'
    "/a/%e0%80%ae%e0%80%ae",  # three-byte overlong '.'
    "/a/%f0%80%80%ae",  # four-byte overlong '.'
    "/a/%80",  # a lone continuation byte
    "/a/%ed%a0%80",  # a surrogate
    "/a/%ef%bc%8e%ef%bc%8e/b",  # fullwidth '..' (NFKC)
    "/a/%e2%80%a5",  # two dot leader (NFKC '..')
    "/a/%ef%bc%8f",  # fullwidth '/'
    "/a/%ef%bc%bc",  # fullwidth '\'
    "/a/%2e%2e",
    "/a/%2E%2e",
    "/a/.%2E",
    "/a/%5c",
    "/a/%5C..",
    "/a\\b",
    "/a/%c2%85",  # NEL, a C1 control
]
SAFE = ["/a/%25/b", "/caf%C3%A9", "/a/%e2%82%ac", "/a/%2e%2e%2e", "/a/%41%42", "/%25zz"]


@pytest.mark.parametrize("path", REFUSED)
def test_encoding_tricks_are_refused(path: str) -> None:
    with pytest.raises(PathRefused):
        checked_path(path.encode())


@pytest.mark.parametrize("path", SAFE)
def test_safe_encodings_pass_unchanged(path: str) -> None:
    assert checked_path(path.encode()) == path


# -- a lenient backend, for the property ------------------------------------------------------

_PERCENT_U = re.compile(r"%[uU]([0-9A-Fa-f]{4})")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _lenient_utf8(data: bytes) -> str:
    """UTF-8 decoded the way a careless decoder does it: overlong forms accepted."""
    out, i = [], 0
    while i < len(data):
        byte = data[i]
        size = (
            2
            if byte >> 5 == 0b110
            else 3
            if byte >> 4 == 0b1110
            else 4
            if byte >> 3 == 0b11110
            else 1
        )
        tail = data[i + 1 : i + size]
        if size > 1 and len(tail) == size - 1 and all(b >> 6 == 0b10 for b in tail):
            code = byte & (0x3F >> (size - 1))
            for b in tail:
                code = code << 6 | b & 0x3F
            out.append(chr(code) if code < 0x110000 else "?")
            i += size
        else:
            out.append(chr(byte))
            i += 1
    return "".join(out)


def _lenient_decode(segment: str) -> str:
    segment = _PERCENT_U.sub(lambda m: chr(int(m.group(1), 16)), segment)
    data = _PERCENT.sub(
        lambda m: bytes([int(m.group(1), 16)]), segment.encode("latin-1", "replace")
    )
    return unicodedata.normalize("NFKC", _lenient_utf8(data))


PIECES = [
    "a",
    "b",
    ".",
    "..",
    ";",
    ";x",
    "/",
    "%",
    "\\",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%25",
    "%32",
    "%65",
    "%45",
    "%66",
    "%u002e",
    "u002e",
    "%c0",
    "%ae",
    "%af",
    "%c1",
    "%9c",
    "%e0",
    "%80",
    "%ef",
    "%bc",
    "%8e",
    "%e2",
    "%a5",
    "%00",
    "%41",
    "2e",
    "2f",
    "5c",
    "c0%ae",
    "%c3%a9",
]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10))
@example(["%25", "%32", "%65", "%25", "%32", "%65"])
@example(["%c0", "%ae", "%c0", "%ae"])
@example(["%25", "2e", "%25", "2e"])
def test_an_accepted_path_never_climbs_out_however_often_it_is_decoded(pieces: list[str]) -> None:
    path = "/" + "".join(pieces)
    try:
        forwarded = checked_path(path.encode("latin-1"))
    except PathRefused:
        return
    assert forwarded == path  # never repaired
    for raw in path.split("/")[1:]:
        segment = raw
        for _ in range(3):
            segment = _lenient_decode(segment)
            assert segment.split(";", 1)[0] not in (".", ".."), (path, segment)
            assert "/" not in segment, (path, segment)
            assert "\\" not in segment, (path, segment)
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in segment), path
