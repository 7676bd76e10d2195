"""Data subjects as keyed pseudonyms: deterministic per appliance, never the identifier itself,
and a key that only a root-only file may hold."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

import pytest

from appliance.txlog import Pseudonymiser, PseudonymKeyError, PurposeBinding
from appliance.txlog.pseudonym import read_key_file, write_key_file

BSN = "999993653"


def test_the_same_subject_gets_the_same_pseudonym(pseudonymiser: Pseudonymiser) -> None:
    first = pseudonymiser.pseudonymise(BSN)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert pseudonymiser.pseudonymise(BSN) == first
    assert pseudonymiser.pseudonymise(f"  {BSN}\n") == first  # surrounding white space
    assert Pseudonymiser(b"k" * 32).pseudonymise(BSN) == first  # same key, other instance
    assert BSN not in first
    # A valid purpose field (the record accepts a pseudonym, never the identifier).
    assert PurposeBinding(data_subject_pseudonym=first).data_subject_pseudonym == first


def test_other_subjects_keys_and_registers_give_other_pseudonyms(
    pseudonymiser: Pseudonymiser,
) -> None:
    base = pseudonymiser.pseudonymise(BSN)
    assert pseudonymiser.pseudonymise("999993654") != base
    assert Pseudonymiser(b"j" * 32).pseudonymise(BSN) != base
    assert pseudonymiser.pseudonymise(BSN, kind="bsn") != pseudonymiser.pseudonymise(
        BSN, kind="kvk"
    )


def test_it_is_not_a_plain_hash(pseudonymiser: Pseudonymiser) -> None:
    """Without the key nobody can recompute it: not SHA-256 of the identifier, not an HMAC
    without the domain separation."""
    value = pseudonymiser.pseudonymise(BSN)
    assert value != hashlib.sha256(BSN.encode()).hexdigest()
    assert value != hmac.new(b"k" * 32, BSN.encode(), hashlib.sha256).hexdigest()


def test_bad_input_is_refused(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(ValueError, match="empty"):
        pseudonymiser.pseudonymise("   ")
    with pytest.raises(TypeError):
        pseudonymiser.pseudonymise(999993653)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        pseudonymiser.pseudonymise(BSN, kind="a\x00b")


def test_the_key_is_never_shown() -> None:
    key = bytes(range(32))
    assert key.hex() not in repr(Pseudonymiser(key))
    assert "hidden" in repr(Pseudonymiser(key))
    with pytest.raises(PseudonymKeyError, match="32 bytes"):
        Pseudonymiser(b"short")


def test_a_new_key_file_is_root_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "txlog-pseudonym.key"
    write_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o400
    key = read_key_file(path)
    assert len(key) == 32
    with pytest.raises(FileExistsError):
        write_key_file(path)
    assert read_key_file(path) == key
    assert Pseudonymiser.from_key_file(path).pseudonymise(BSN) == Pseudonymiser(key).pseudonymise(
        BSN
    )


def _key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="ascii")
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_a_key_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path / "key", "ab" * 32, mode)
    with pytest.raises(PseudonymKeyError, match="group or others"):
        read_key_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ab" * 31, "31 bytes"),
        ("not hex at all, this is a password", "hexadecimal"),
        ("", "0 bytes"),
        ("ab" * 5000, "too large"),
    ],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PseudonymKeyError, match=message):
        read_key_file(_key_file(tmp_path / "key", text))


def test_missing_files_symlinks_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PseudonymKeyError, match="does not exist"):
        read_key_file(tmp_path / "absent")
    target = _key_file(tmp_path / "real", "ab" * 32)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PseudonymKeyError, match="cannot be opened"):
        read_key_file(link)
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(PseudonymKeyError):
        read_key_file(directory)
    assert read_key_file(_key_file(tmp_path / "ok", "AB" * 32 + "\n")) == b"\xab" * 32
