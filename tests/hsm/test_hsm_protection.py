"""Protection attributes of the organisation key: listed, and a key lacking one is refused.

A key generated in the token is sensitive, not extractable, always sensitive, never
extractable and local. A key imported into the token (C_CreateObject with its value) is not
local, not always sensitive and not never extractable, even when it is sensitive now: its
value was outside the token once. SoftHSM2 sets these attributes as the standard says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from test_hsm_cli import run

from appliance.hsm.errors import UnprotectedKeyError
from appliance.hsm.keys import list_objects, require_protected_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer
from appliance.hsm.token import open_session

MakeToken = Callable[..., HsmSettings]
HISTORY = ["always-sensitive", "never-extractable", "local"]


def _private_row(settings: HsmSettings) -> Any:
    [info] = [i for i in list_objects(settings) if i.kind == "private-key"]
    return info


def test_a_generated_key_has_every_protection(
    p256_token: HsmSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _private_row(p256_token)
    assert info.protection == dict.fromkeys(
        ["sensitive", "non-extractable", "always-sensitive", "never-extractable", "local"], True
    )
    assert info.unprotected == []
    require_protected_key(p256_token)
    capsys.readouterr()
    args = ["--token", p256_token.token_label, "--pin-file", str(p256_token.pin_file)]
    assert run("list", *args, "--login-lock", str(p256_token.login_lock)) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "private-key" in line)
    assert row.split()[4:6] == [
        "sensitive,non-extractable,sign",
        "always-sensitive,never-extractable,local",
    ]


def test_an_imported_key_is_listed_as_such_and_refused(
    make_token: MakeToken, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_token("imported-key", generate=False)
    value = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    with open_session(settings, rw=True) as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.LABEL: settings.key_label,
                Attribute.ID: b"\x01" * 16,
                Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1"),
                Attribute.VALUE: value.to_bytes(32, "big"),
            }
        )
    info = _private_row(settings)
    assert info.sensitive is True
    assert info.extractable is False
    assert info.unprotected == HISTORY

    with pytest.raises(UnprotectedKeyError) as caught:
        Pkcs11Signer(settings)  # what the manager does at startup
    assert "it lacks: always-sensitive, never-extractable, local" in str(caught.value)
    assert repr(settings.key_label) in str(caught.value)
    with pytest.raises(UnprotectedKeyError):
        require_protected_key(settings)

    capsys.readouterr()
    common = ["--token", settings.token_label, "--pin-file", str(settings.pin_file)]
    assert run("list", *common, "--login-lock", str(settings.login_lock), "--json") == 0
    [private] = [o for o in json.loads(capsys.readouterr().out) if o["class"] == "private-key"]
    assert private["unprotected"] == HISTORY
    assert (private["always_sensitive"], private["never_extractable"], private["local"]) == (
        False,
        False,
        False,
    )
    assert run("list", *common, "--login-lock", str(settings.login_lock)) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "private-key" in line)
    assert row.split()[5] == "NOT-ALWAYS-SENSITIVE,NOT-NEVER-EXTRACTABLE,NOT-LOCAL"


def test_an_extractable_key_is_refused(make_token: MakeToken) -> None:
    settings = make_token("extractable-key", generate=False)
    with open_session(settings, rw=True) as session:
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label=settings.key_label,
            id=b"\x02" * 16,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    assert _private_row(settings).unprotected == [
        "sensitive",
        "non-extractable",
        "always-sensitive",
        "never-extractable",
    ]
    with pytest.raises(UnprotectedKeyError, match="it lacks: sensitive, non-extractable, "):
        Pkcs11Signer(settings)
