"""The PIN from a systemd credential ($CREDENTIALS_DIRECTORY), beside the variable and file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.hsm.errors import WrongPinError, pin_source
from appliance.hsm.keys import list_objects
from appliance.hsm.pin import PinError, read_pin, read_pin_file, write_pin_file
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import open_session

MakeToken = Callable[..., HsmSettings]


def _credential(directory: Path, pin: str, name: str = "sluis-hsm-pin") -> Path:
    # As systemd leaves it: 0400, or 0440 when an ACL grants the service user read access.
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(pin + "\n")
    path.chmod(0o440)
    return path


def test_the_credential_comes_before_the_file_and_after_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_file = tmp_path / "hsm.pin"
    write_pin_file(pin_file, "from-file")
    settings = HsmSettings(token_label="t", pin_file=pin_file)
    monkeypatch.delenv(settings.pin_env, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_pin(settings) == "from-file"

    credential = _credential(tmp_path / "credentials", "from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credential.parent))
    assert read_pin(settings) == "from-credential"
    assert pin_source(settings) == f"systemd credential {credential}"

    monkeypatch.setenv(settings.pin_env, "from-variable")
    assert read_pin(settings) == "from-variable"


def test_a_service_without_that_credential_uses_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_file = tmp_path / "hsm.pin"
    write_pin_file(pin_file, "from-file")
    _credential(tmp_path / "credentials", "someone-elses", name="other-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    settings = HsmSettings(token_label="t", pin_file=pin_file)
    monkeypatch.delenv(settings.pin_env, raising=False)
    assert read_pin(settings) == "from-file"
    assert read_pin(replace(settings, pin_credential="other-credential")) == "someone-elses"
    with pytest.raises(PinError, match="systemd credential 'sluis-hsm-pin'"):
        read_pin(replace(settings, pin_file=None))


def test_a_pin_file_with_group_bits_is_still_refused(tmp_path: Path) -> None:
    # The credential's exemption from the mode check does not leak to PIN files.
    path = _credential(tmp_path, "pin")
    with pytest.raises(PinError, match="readable or writable by group"):
        read_pin_file(path)


def test_login_with_the_pin_from_the_credential(
    make_token: MakeToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_token("pin-credential", generate=False)
    right_pin = read_pin_file(settings.pin_file or "")
    # The file now holds a wrong PIN: only the credential can log in.
    wrong_file = tmp_path / "wrong.pin"
    write_pin_file(wrong_file, "wrong-pin-1111")
    monkeypatch.delenv(settings.pin_env, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    credential = _credential(tmp_path / "credentials", "wrong-pin-2222")
    wrong = replace(settings, pin_file=wrong_file)
    with pytest.raises(WrongPinError) as caught, open_session(wrong):
        pass
    assert f"systemd credential {credential}" in str(caught.value)
    assert "wrong-pin-2222" not in str(caught.value)

    credential.chmod(0o600)
    credential.write_text(right_pin)
    assert list_objects(wrong) == []
