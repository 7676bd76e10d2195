"""docs/security.md maps every threat to the test that refuses it: each named test must exist,
so that a renamed or deleted test cannot leave the threat model pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# `tests/x.py::test_a`, and `::test_b` meaning the same file as the reference before it.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)`")


def references() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    current = ""
    for path, name in REFERENCE.findall(DOC.read_text(encoding="utf-8")):
        current = path or current
        assert current, f"::{name} names no file before it"
        found.append((current, name))
    return found


def test_every_named_test_exists() -> None:
    found = references()
    assert len(found) > 50  # the parser reads the document, not nothing
    missing = [
        f"{path}::{name}"
        for path, name in found
        if not (ROOT / path).exists()
        or not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert not missing, missing


def test_every_named_file_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    for path in re.findall(r"`(tests/[\w/]+\.py)`", text):
        assert (ROOT / path).exists(), path
