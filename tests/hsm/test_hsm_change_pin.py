"""``sluis hsm change-pin``: C_SetPIN on a real SoftHSM2 token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from test_hsm_cli import run

from appliance.errors import ConfigurationError
from appliance.hsm.errors import HsmError, WrongPinError
from appliance.hsm.keys import list_objects
from appliance.hsm.pin import write_pin_file
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import change_pin

MakeToken = Callable[..., HsmSettings]


def _pin_file(tmp_path: Path, name: str, pin: str) -> Path:
    path = tmp_path / name
    write_pin_file(path, pin)
    return path


def test_change_pin_then_only_the_new_pin_logs_in(
    make_token: MakeToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_token("change-pin")
    new_file = _pin_file(tmp_path, "new.pin", "new-user-pin-8642")
    token = ["--token", settings.token_label, "--login-lock", str(settings.login_lock)]
    files = ["--pin-file", str(settings.pin_file), "--new-pin-file", str(new_file)]
    assert run("change-pin", *token, *files) == 0
    assert "changed the user PIN of token 'change-pin'" in capsys.readouterr().out

    with pytest.raises(WrongPinError, match="refused the user PIN"):
        list_objects(settings)  # the old PIN
    with_new = replace(settings, pin_file=new_file)
    assert [o.kind for o in list_objects(with_new)] == ["private-key", "public-key"]

    # Wrong current PIN: refused, and the PIN stays what it was.
    with pytest.raises(WrongPinError):
        change_pin(settings, "another-pin-1357")
    # The token's length rule names the new PIN, not the current one.
    with pytest.raises(HsmError, match="refused the new PIN"):
        change_pin(with_new, "12")
    with pytest.raises(HsmError, match="nothing changed"):
        change_pin(with_new, "new-user-pin-8642")
    assert len(list_objects(with_new)) == 2


def test_the_new_pin_never_comes_from_the_command_line(
    make_token: MakeToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_token("change-pin-env")
    token = ["--token", settings.token_label, "--login-lock", str(settings.login_lock)]
    common = [*token, "--pin-file", str(settings.pin_file)]
    with pytest.raises(ConfigurationError, match="SLUIS_HSM_NEW_PIN or give --new-pin-file"):
        run("change-pin", *common)
    with pytest.raises(SystemExit):
        run("change-pin", *common, "--new-pin", "x")
    monkeypatch.setenv("SLUIS_HSM_NEW_PIN", "from-environment-9753")
    assert run("change-pin", *common) == 0
    monkeypatch.setenv("SLUIS_HSM_PIN", "from-environment-9753")
    assert len(list_objects(settings)) == 2
