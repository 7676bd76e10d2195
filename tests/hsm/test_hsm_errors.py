"""Operator mistakes end in an HsmError that names what is missing, and never shows the PIN."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.errors import SluisError
from appliance.hsm.errors import (
    KeyNotFoundError,
    Pkcs11ModuleError,
    TokenExistsError,
    TokenNotFoundError,
    WrongPinError,
)
from appliance.hsm.keys import list_objects, public_key
from appliance.hsm.pin import PinError, read_pin_file, write_pin_file
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer
from appliance.hsm.softhsm import init_softhsm_token
from appliance.hsm.token import open_session

MakeToken = Callable[..., HsmSettings]
WRONG_PIN = "wrong-pin-7319"


def _with_pin(settings: HsmSettings, tmp_path: Path, pin: str) -> HsmSettings:
    pin_file = tmp_path / "other.pin"
    write_pin_file(pin_file, pin)
    return replace(settings, pin_file=pin_file)


def test_wrong_pin_on_login(make_token: MakeToken, tmp_path: Path) -> None:
    settings = make_token("wrong-pin", generate=False)  # never logged in by this process
    wrong = _with_pin(settings, tmp_path, WRONG_PIN)
    with pytest.raises(WrongPinError) as caught, open_session(wrong):
        pass
    message = str(caught.value)
    assert WRONG_PIN not in message
    assert "wrong-pin" in message  # the token label
    assert str(wrong.pin_file) in message  # where the PIN came from
    assert read_pin_file(settings.pin_file or "") not in message
    # One failure does not lock the token: the right PIN still works.
    assert list_objects(settings) == []


def test_wrong_pin_while_logged_in(p256_token: HsmSettings, tmp_path: Path) -> None:
    public_key(p256_token)  # this process is logged in with the right PIN
    wrong = _with_pin(p256_token, tmp_path, WRONG_PIN)
    with pytest.raises(WrongPinError) as caught:
        public_key(wrong)
    assert WRONG_PIN not in str(caught.value)
    assert read_pin_file(p256_token.pin_file or "") not in str(caught.value)


def test_wrong_pin_from_environment(make_token: MakeToken, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_token("wrong-pin-env", generate=False)
    monkeypatch.setenv(settings.pin_env, WRONG_PIN)
    with pytest.raises(WrongPinError) as caught:
        list_objects(settings)
    assert WRONG_PIN not in str(caught.value)
    assert settings.pin_env in str(caught.value)


def test_missing_token_is_named(p256_token: HsmSettings) -> None:
    missing = replace(p256_token, token_label="no-such-token")
    with pytest.raises(TokenNotFoundError, match="no-such-token"):
        list_objects(missing)


def test_missing_key_is_named(p256_token: HsmSettings) -> None:
    missing = replace(p256_token, key_label="no-such-key")
    with pytest.raises(KeyNotFoundError, match="no-such-key"):
        Pkcs11Signer(missing)
    with pytest.raises(KeyNotFoundError, match="no-such-key"):
        public_key(missing)


def test_missing_module_is_named(p256_token: HsmSettings, tmp_path: Path) -> None:
    absent = replace(p256_token, module=tmp_path / "libvendor-pkcs11.so")
    with pytest.raises(Pkcs11ModuleError, match=r"libvendor-pkcs11\.so"):
        list_objects(absent)
    not_a_library = tmp_path / "libbroken.so"
    not_a_library.write_bytes(b"not an ELF file")
    with pytest.raises(Pkcs11ModuleError, match=r"libbroken\.so"):
        list_objects(replace(p256_token, module=not_a_library))


def test_pin_file_readable_by_others_is_refused(p256_token: HsmSettings, tmp_path: Path) -> None:
    pin_file = tmp_path / "loose.pin"
    pin_file.write_text(read_pin_file(p256_token.pin_file or "") + "\n", encoding="utf-8")
    os.chmod(pin_file, 0o644)
    with pytest.raises(PinError, match="0644"):
        list_objects(replace(p256_token, pin_file=pin_file))


def test_no_pin_source(p256_token: HsmSettings) -> None:
    with pytest.raises(PinError, match=p256_token.pin_env):
        list_objects(replace(p256_token, pin_file=None))


def test_init_refuses_existing_label(p256_token: HsmSettings) -> None:
    with pytest.raises(TokenExistsError, match=p256_token.token_label):
        init_softhsm_token(
            p256_token.token_label, "so-pin-1234", "user-pin-1234", login_lock=p256_token.login_lock
        )


def test_every_hsm_error_is_a_sluis_error() -> None:
    for cls in (KeyNotFoundError, Pkcs11ModuleError, TokenNotFoundError, WrongPinError):
        assert issubclass(cls, SluisError)
