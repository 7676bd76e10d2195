"""Retiring the old organisation key after a re-key, and destroying it after the grace period.

Every test gets its own SoftHSM token holding an old key pair with a certificate (``org-old``)
and the new, live one (``org-new``, the key label of the settings), as after a re-key.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pkcs11.exceptions as p11e
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import SignMixin
from pkcs11.util.ec import encode_named_curve_parameters

from appliance.cli.main import main
from appliance.hsm.certs import store_in_token
from appliance.hsm.csr import make_csr
from appliance.hsm.errors import HsmError, KeyNotFoundError
from appliance.hsm.keys import generate_key, list_objects
from appliance.hsm.retire import (
    RetireRefusedError,
    destroy_retired,
    parse_retired_label,
    retire_key,
    sign_flags,
)
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer
from appliance.hsm.token import open_session
from appliance.pki.identity import OrganisationIdentity

MakeToken = Callable[..., HsmSettings]
IssueChain = Callable[..., bytes]

OLD, NEW = "org-old", "org-new"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
RETIRED = "org-old.retired-20250301T120000Z"


@dataclass(frozen=True)
class Rekeyed:
    live: HsmSettings  # key label org-new
    old: HsmSettings  # the same token, key label org-old

    def objects(self) -> set[tuple[str, str, str]]:
        return {(o.kind, o.label, o.id_hex) for o in list_objects(self.live)}

    def labelled(self, label: str) -> dict[str, str]:
        """kind -> CKA_ID hex of the objects labelled ``label``."""
        return {o.kind: o.id_hex for o in list_objects(self.live) if o.label == label}


@pytest.fixture
def rekeyed(
    make_token: MakeToken, issue_chain: IssueChain, identity: OrganisationIdentity
) -> Rekeyed:
    base = make_token(f"retire-{secrets.token_hex(4)}", generate=False)
    old, live = replace(base, key_label=OLD), replace(base, key_label=NEW)
    for settings in (old, live):
        generate_key(settings, "ec-p256")
        leaf = x509.load_pem_x509_certificate(issue_chain(make_csr(settings, identity)))
        store_in_token(settings, leaf)
    return Rekeyed(live=live, old=old)


def _signs(settings: HsmSettings) -> None:
    """Sign through the appliance's signer and verify with the public key."""
    with Pkcs11Signer(settings) as signer:
        raw = signer.sign(b"after the re-key")
        public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    half = len(raw) // 2
    der = encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))
    public.verify(der, b"after the re-key", ec.ECDSA(hashes.SHA256()))


def _copy_key(settings: HsmSettings, source: str, label: str, *, new_id: bool) -> None:
    """Copy the private and public key objects ``source`` under ``label`` (C_CopyObject)."""
    changes: dict[Attribute, Any] = {Attribute.LABEL: label}
    if new_id:
        changes[Attribute.ID] = secrets.token_bytes(16)
    with open_session(settings, rw=True) as session:
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            session.get_key(object_class, label=source).copy(changes)


# retire-key


def test_retire_refuses_the_live_label(rekeyed: Rekeyed) -> None:
    before = rekeyed.objects()
    with pytest.raises(RetireRefusedError, match="'org-new' is the live key label"):
        retire_key(rekeyed.live, NEW, T0)
    assert rekeyed.objects() == before
    _signs(rekeyed.live)


@pytest.mark.parametrize(
    ("new_id", "reason"), [(True, "holds the live key's public key"), (False, "shares CKA_ID")]
)
def test_retire_refuses_a_key_holding_the_live_public_key(
    rekeyed: Rekeyed, new_id: bool, reason: str
) -> None:
    _copy_key(rekeyed.live, NEW, "twin", new_id=new_id)
    before = rekeyed.objects()
    with pytest.raises(RetireRefusedError, match=reason):
        retire_key(rekeyed.live, "twin", T0)
    assert rekeyed.objects() == before
    assert sign_flags(rekeyed.live)[("twin", rekeyed.labelled("twin")["private-key"])] is True


def test_retired_key_cannot_sign_and_carries_the_new_label(rekeyed: Rekeyed) -> None:
    ids = rekeyed.labelled(OLD)
    assert set(ids) == {"private-key", "public-key", "certificate"}
    # A gateway still running with the old key, and a python-pkcs11 handle from before.
    running = Pkcs11Signer(rekeyed.old)
    running.sign(b"before")
    with open_session(rekeyed.live) as session:
        held = session.get_key(ObjectClass.PRIVATE_KEY, label=OLD)
        assert isinstance(held, SignMixin)
        held.sign(bytes(32), mechanism=Mechanism.ECDSA)

        result = retire_key(rekeyed.live, OLD, T0 + timedelta(microseconds=123))

        # The token refuses the key (CKR_KEY_FUNCTION_NOT_PERMITTED, 0x68) ...
        with pytest.raises(p11e.PKCS11Error, match="0x68"):
            held.sign(bytes(32), mechanism=Mechanism.ECDSA)
        # ... and python-pkcs11 no longer offers sign() on a fresh handle (CKA_SIGN false).
        assert not isinstance(session.get_key(ObjectClass.PRIVATE_KEY, label=RETIRED), SignMixin)
    with running, pytest.raises(HsmError, match="while signing"):
        running.sign(b"after")
    assert result.changed
    assert result.retired_label == RETIRED
    assert result.retired_at == T0
    assert result.relabelled == ("private-key", "public-key", "certificate")
    assert parse_retired_label(RETIRED) == (OLD, T0)
    # Same objects, same CKA_ID, new label; nothing left under the old one.
    assert rekeyed.labelled(RETIRED) == ids
    assert rekeyed.labelled(OLD) == {}
    assert sign_flags(rekeyed.live)[(RETIRED, ids["private-key"])] is False
    with pytest.raises(KeyNotFoundError):
        _signs(rekeyed.old)
    # A component configured with the retired key's label is told why it cannot start.
    with pytest.raises(HsmError, match="may not sign"):
        Pkcs11Signer(replace(rekeyed.old, key_label=RETIRED)).sign(b"after")
    _signs(rekeyed.live)


def test_retire_twice_is_a_no_op(rekeyed: Rekeyed) -> None:
    first = retire_key(rekeyed.live, OLD, T0)
    after_first = rekeyed.objects()
    again = retire_key(rekeyed.live, OLD, T0 + timedelta(days=3))
    assert not again.changed
    assert (again.retired_label, again.retired_at) == (first.retired_label, T0)
    assert rekeyed.objects() == after_first


def test_retire_unknown_label(rekeyed: Rekeyed) -> None:
    with pytest.raises(KeyNotFoundError, match="no key labelled 'nothing-here'"):
        retire_key(rekeyed.live, "nothing-here", T0)


def test_retire_refuses_without_the_live_key(rekeyed: Rekeyed) -> None:
    # Settings naming a key the token does not hold cannot tell the live key apart.
    with pytest.raises(RetireRefusedError, match="cannot read the live key 'typo'"):
        retire_key(replace(rekeyed.live, key_label="typo"), OLD, T0)
    assert set(rekeyed.labelled(OLD)) == {"private-key", "public-key", "certificate"}


def test_token_refusing_to_clear_cka_sign_leaves_the_label(rekeyed: Rekeyed) -> None:
    # SoftHSM refuses every C_SetAttributeValue on a key made with CKA_MODIFIABLE false.
    with open_session(rekeyed.live, rw=True) as session:
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label="fixed",
            id=secrets.token_bytes(16),
            public_template={
                Attribute.TOKEN: True,
                Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1"),
            },
            private_template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.SIGN: True,
                Attribute.MODIFIABLE: False,
            },
        )
    with pytest.raises(RetireRefusedError, match=r"refused to clear CKA_SIGN.*nothing was relabel"):
        retire_key(rekeyed.live, "fixed", T0)
    fixed = rekeyed.labelled("fixed")
    assert set(fixed) == {"private-key", "public-key"}
    assert sign_flags(rekeyed.live)[("fixed", fixed["private-key"])] is True


def test_interrupted_retirement_is_finished(rekeyed: Rekeyed) -> None:
    # As if a run stopped after clearing CKA_SIGN and relabelling the private key.
    with open_session(rekeyed.live, rw=True) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, label=OLD)
        private[Attribute.SIGN] = False
        private[Attribute.LABEL] = RETIRED
    result = retire_key(rekeyed.live, OLD, T0 + timedelta(days=1))
    assert result.changed
    assert (result.retired_label, result.retired_at) == (RETIRED, T0)
    assert result.relabelled == ("public-key", "certificate")
    assert set(rekeyed.labelled(RETIRED)) == {"private-key", "public-key", "certificate"}
    assert rekeyed.labelled(OLD) == {}


# destroy-retired


def test_destroy_keeps_keys_within_the_grace_period(rekeyed: Rekeyed) -> None:
    retire_key(rekeyed.live, OLD, T0)
    before = rekeyed.objects()
    (kept,) = destroy_retired(rekeyed.live, 30, T0 + timedelta(days=10))
    assert (kept.retired_label, kept.retired_at, kept.label) == (RETIRED, T0, OLD)
    assert not kept.due
    assert not kept.destroyed
    assert kept.days_left == 20
    assert kept.kept_because is None
    (almost,) = destroy_retired(rekeyed.live, 30, T0 + timedelta(days=30) - timedelta(seconds=1))
    assert (almost.destroyed, almost.days_left) == (False, 1)
    assert rekeyed.objects() == before


def test_destroy_dry_run_changes_nothing(rekeyed: Rekeyed) -> None:
    retire_key(rekeyed.live, OLD, T0)
    before = rekeyed.objects()
    (key,) = destroy_retired(rekeyed.live, 0, T0, dry_run=True)
    assert key.due
    assert not key.destroyed
    assert rekeyed.objects() == before


@pytest.mark.parametrize(("grace", "age"), [(0, timedelta(0)), (30, timedelta(days=30))])
def test_destroy_after_the_grace_period(rekeyed: Rekeyed, grace: int, age: timedelta) -> None:
    live_before = rekeyed.labelled(NEW)
    retire_key(rekeyed.live, OLD, T0)
    (key,) = destroy_retired(rekeyed.live, grace, T0 + age)
    assert key.destroyed
    assert key.days_left == 0
    assert key.objects == ("private-key", "public-key", "certificate")
    assert rekeyed.labelled(RETIRED) == {}
    assert {o[1] for o in rekeyed.objects()} == {NEW}
    assert rekeyed.labelled(NEW) == live_before
    _signs(rekeyed.live)
    # Nothing left to do.
    assert destroy_retired(rekeyed.live, 0, T0 + age) == []


def test_destroy_never_touches_what_is_tied_to_the_live_key(rekeyed: Rekeyed) -> None:
    # A retired-looking copy of the live key, one with the live key's label, and a key that
    # was renamed by hand but can still sign: all kept whatever their age.
    _copy_key(rekeyed.live, NEW, "copy.retired-20200101T000000Z", new_id=True)
    _copy_key(rekeyed.live, NEW, "same-id.retired-20200101T000000Z", new_id=False)
    generate_key(replace(rekeyed.live, key_label="by-hand.retired-20200101T000000Z"))
    odd_live = replace(rekeyed.live, key_label="by-hand.retired-20200101T000000Z")
    retire_key(rekeyed.live, OLD, T0)
    before = rekeyed.objects()

    results = {k.retired_label: k for k in destroy_retired(rekeyed.live, 0, T0)}
    assert results["copy.retired-20200101T000000Z"].kept_because == (
        "its public-key holds the live public key"
    )
    assert "shares CKA_ID" in str(results["same-id.retired-20200101T000000Z"].kept_because)
    assert "can still sign" in str(results["by-hand.retired-20200101T000000Z"].kept_because)
    assert results[RETIRED].destroyed
    assert not any(k.destroyed or k.due for n, k in results.items() if n != RETIRED)
    assert rekeyed.objects() == {o for o in before if o[1] != RETIRED}

    # With a live key label that looks retired, that key is the live one and stays.
    (live_key,) = [
        k
        for k in destroy_retired(odd_live, 0, T0 + timedelta(days=9999))
        if k.retired_label == odd_live.key_label
    ]
    assert live_key.kept_because == "it carries the live key label"
    _signs(odd_live)


def test_destroy_refuses_without_the_live_key(rekeyed: Rekeyed) -> None:
    retire_key(rekeyed.live, OLD, T0)
    with pytest.raises(RetireRefusedError, match="cannot read the live key"):
        destroy_retired(replace(rekeyed.live, key_label=OLD), 0, T0)
    assert set(rekeyed.labelled(RETIRED)) == {"private-key", "public-key", "certificate"}


# The command line (sluis hsm ...), through the real entry point for its exit codes.


def _cli(settings: HsmSettings, *argv: str) -> list[str]:
    return [
        "hsm",
        *argv,
        "--token",
        settings.token_label,
        "--pin-file",
        str(settings.pin_file),
        "--login-lock",
        str(settings.login_lock),
        "--key-label",
        settings.key_label,
    ]


def test_cli_retire_and_destroy(rekeyed: Rekeyed, capsys: pytest.CaptureFixture[str]) -> None:
    live = rekeyed.live
    assert main(_cli(live, "retire-key", "--retire-label", NEW)) == 2
    assert "'org-new' is the live key label" in capsys.readouterr().err
    assert main(_cli(live, "retire-key", "--retire-label", "missing")) == 2
    assert "no key labelled 'missing'" in capsys.readouterr().err

    assert main(_cli(live, "retire-key", "--retire-label", OLD)) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert "retired key 'org-old'" in line
    assert "signing disabled, private-key, public-key, certificate relabelled" in line
    (retired,) = {o[1] for o in rekeyed.objects()} - {NEW}
    _label, retired_at = parse_retired_label(retired) or ("", T0)
    assert abs(datetime.now(UTC) - retired_at) < timedelta(minutes=1)

    assert main(_cli(live, "retire-key", "--retire-label", OLD, "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {
        "label": OLD,
        "retired_label": retired,
        "retired_at": retired_at.isoformat(),
        "changed": False,
    }
    assert main(_cli(live, "retire-key", "--retire-label", OLD)) == 0
    assert "nothing changed" in capsys.readouterr().out

    # sluis hsm list shows the retired key and its cleared CKA_SIGN.
    assert main(_cli(live, "list")) == 0
    rows = capsys.readouterr().out.splitlines()
    retired_private = next(r for r in rows if r.startswith("private-key") and retired in r)
    live_private = next(r for r in rows if r.startswith("private-key") and f" {NEW} " in r)
    assert "sensitive,non-extractable,no-sign" in retired_private
    assert "sensitive,non-extractable,sign" in live_private
    assert sum(retired in r for r in rows) == 3

    assert main(_cli(live, "destroy-retired", "--grace-days", "1")) == 0
    assert capsys.readouterr().out == (
        f"kept {retired!r} (retired {retired_at:%Y-%m-%d %H:%M:%S} UTC): 1 day left\n"
    )
    assert main(_cli(live, "destroy-retired", "--grace-days", "0", "--dry-run", "--json")) == 0
    (dry,) = json.loads(capsys.readouterr().out)
    assert dry["retired_label"] == retired
    assert (dry["destroyed"], dry["due"], dry["days_left"]) == (False, True, 0)
    assert retired in {o[1] for o in rekeyed.objects()}

    assert main(_cli(live, "destroy-retired", "--grace-days", "0", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "retired_label": retired,
            "retired_at": retired_at.isoformat(),
            "destroyed": True,
            "days_left": 0,
            "label": OLD,
            "due": True,
            "kept_because": None,
        }
    ]
    assert {o[1] for o in rekeyed.objects()} == {NEW}
    assert main(_cli(live, "destroy-retired", "--grace-days", "0")) == 0
    assert "holds no retired keys" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(_cli(live, "destroy-retired", "--grace-days", "-1"))
    assert "cannot be negative" in capsys.readouterr().err


def test_cli_with_config_file(
    rekeyed: Rekeyed, write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    live = rekeyed.live
    config = write_config(
        token_label=live.token_label,
        key_label=NEW,
        pin_file=live.pin_file,
        login_lock=live.login_lock,
    )
    assert main(["hsm", "retire-key", "--config", str(config), "--retire-label", NEW]) == 2
    assert "live key label" in capsys.readouterr().err
    # --key-label overrides the file: now org-old is live and org-new may be retired.
    argv = ["hsm", "retire-key", "--config", str(config), "--key-label", OLD]
    assert main([*argv, "--retire-label", NEW, "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["changed"] is True
    assert output["retired_label"].startswith("org-new.retired-")
    _signs(rekeyed.old)
