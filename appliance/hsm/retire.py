"""Retiring an old organisation key after a re-key, and destroying it after a grace period.

Re-keying generates a new key pair beside the old one (``sluis hsm generate-key --key-label
NEW``). Once the components use the new key, :func:`retire_key` retires the old one: it clears
``CKA_SIGN`` on the old private key, then relabels its private key, public key and certificate
objects ``OLD.retired-YYYYmmddTHHMMSSZ`` (UTC; ``CKA_ID`` unchanged). Signing is disabled
first, so an interrupted retirement never leaves a key that can sign under a retired name; a
second run finishes it. Later, :func:`destroy_retired` destroys the objects of every key
retired at least the grace period ago.

Neither touches the live key: the label the settings name (``[hsm] key_label``), or any object
holding the live public key or sharing the live ``CKA_ID``. Both refuse to work when the live
key cannot be read, since they could then not tell it apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pkcs11.exceptions as p11e
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, Object, ObjectClass, Session

from appliance.hsm.errors import HsmError, KeyNotFoundError, translated
from appliance.hsm.keys import _public_key_from_object, read_public_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import hold_login_lock, open_session

RETIRED_INFIX = ".retired-"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_RETIRED = re.compile(r"(?P<label>.+)\.retired-(?P<stamp>\d{8}T\d{6}Z)")
_KINDS: dict[int, str] = {
    ObjectClass.PRIVATE_KEY: "private-key",
    ObjectClass.PUBLIC_KEY: "public-key",
    ObjectClass.CERTIFICATE: "certificate",
}
# Private key first: what is left of an interrupted destroy can still be compared with the
# live public key on the next run.
_ORDER = {"private-key": 0, "public-key": 1, "certificate": 2}
# Return codes python-pkcs11 0.10 does not map to a class but tokens answer C_SetAttributeValue.
_UNMAPPED = {"0x1b": "CKR_ACTION_PROHIBITED: the object is not modifiable (CKA_MODIFIABLE false)"}


class RetireRefusedError(HsmError):
    """Retiring or destroying would touch the live key, or the token refused a step."""


def retired_label(label: str, at: datetime) -> str:
    """``label.retired-YYYYmmddTHHMMSSZ`` for a key retired at ``at``."""
    return f"{label}{RETIRED_INFIX}{at.astimezone(UTC):{STAMP_FORMAT}}"


def parse_retired_label(label: str) -> tuple[str, datetime] | None:
    """``(original label, retirement time)`` of a retired label, or None for any other label."""
    match = _RETIRED.fullmatch(label)
    if match is None:
        return None
    try:
        at = datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return match["label"], at


@dataclass(frozen=True)
class RetireResult:
    """What :func:`retire_key` did (``changed`` False: the key had been retired before)."""

    label: str
    retired_label: str
    retired_at: datetime
    changed: bool
    id_hex: str
    relabelled: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetiredKey:
    """One retired key as :func:`destroy_retired` found (and perhaps destroyed) it."""

    label: str
    retired_label: str
    retired_at: datetime
    objects: tuple[str, ...]
    due: bool  # the grace period is over and nothing ties it to the live key
    destroyed: bool
    days_left: int
    kept_because: str | None = None


@dataclass(frozen=True)
class _KeyObject:
    obj: Object
    kind: str
    label: str
    key_id: bytes


def _attr(obj: Object, attribute: Attribute, default: Any = None) -> Any:
    try:
        return obj[attribute]
    except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive, NotImplementedError):
        return default


def _key_objects(session: Session) -> list[_KeyObject]:
    """Every private key, public key and certificate the user sees in the token."""
    found = []
    # Read everything before changing anything: no C_SetAttributeValue inside C_FindObjects.
    for obj in list(session.get_objects()):
        kind = _KINDS.get(obj[Attribute.CLASS])
        if kind is not None:
            label = _attr(obj, Attribute.LABEL, "") or ""
            key_id = bytes(_attr(obj, Attribute.ID, b"") or b"")
            found.append(_KeyObject(obj, kind, label, key_id))
    return found


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return der


def _object_spki(item: _KeyObject) -> bytes | None:
    """The SubjectPublicKeyInfo a public key or certificate object holds (None: private key)."""
    try:
        if item.kind == "public-key":
            return _spki(_public_key_from_object(item.obj))
        if item.kind == "certificate":
            return _spki(x509.load_der_x509_certificate(item.obj[Attribute.VALUE]).public_key())
    except (p11e.PKCS11Error, ValueError, TypeError, HsmError) as exc:
        raise HsmError(f"cannot read the public key of {item.kind} {item.label!r}") from exc
    return None


@dataclass(frozen=True)
class _LiveKey:
    label: str
    spki: bytes
    ids: frozenset[bytes]


def _live_key(session: Session, settings: HsmSettings, objects: list[_KeyObject]) -> _LiveKey:
    try:
        public = read_public_key(session, settings)
    except KeyNotFoundError as exc:
        raise RetireRefusedError(
            f"cannot read the live key {settings.key_label!r} ({exc}); without it no key can be "
            "told apart from the live one. Give the live key's label as [hsm] key_label or "
            "--key-label"
        ) from exc
    ids = frozenset(o.key_id for o in objects if o.label == settings.key_label and o.key_id)
    return _LiveKey(settings.key_label, _spki(public), ids)


def _refusal(exc: p11e.PKCS11Error) -> str:
    text = str(exc)
    for code, meaning in _UNMAPPED.items():
        if text.endswith(code):
            return meaning
    if isinstance(exc, p11e.AttributeReadOnly):
        return "CKR_ATTRIBUTE_READ_ONLY: the token does not let CKA_SIGN change"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _disable_signing(private: _KeyObject, settings: HsmSettings) -> None:
    label = private.label
    try:
        if _attr(private.obj, Attribute.SIGN, True) is not False:
            private.obj[Attribute.SIGN] = False
        still = _attr(private.obj, Attribute.SIGN, True)
    except p11e.PKCS11Error as exc:
        raise RetireRefusedError(
            f"token {settings.token_label!r} refused to clear CKA_SIGN on private key {label!r} "
            f"({_refusal(exc)}); nothing was relabelled and the key can still sign. Destroy it "
            "with the HSM vendor's tools once the grace period is over"
        ) from exc
    # Trust, but verify: a token that accepted the call must also have cleared the flag.
    if still is not False:
        raise RetireRefusedError(
            f"token {settings.token_label!r} accepted clearing CKA_SIGN on private key "
            f"{label!r} but still reports it; nothing was relabelled"
        )


def retire_key(settings: HsmSettings, label: str, now: datetime) -> RetireResult:
    """Retire key ``label``: signing disabled, objects relabelled ``label.retired-<now>``.

    Idempotent: when nothing is labelled ``label`` any more but a retired key of that name
    exists, nothing changes (``changed`` False). Raises :class:`RetireRefusedError` for the live
    key (label, public key or ``CKA_ID``) and :class:`KeyNotFoundError` when there is no such
    key at all.
    """
    live_label = settings.key_label
    if not label:
        raise RetireRefusedError("give the label of the key to retire")
    if label == live_label:
        raise RetireRefusedError(
            f"{label!r} is the live key label (the key the settings name: [hsm] key_label or "
            "--key-label); point the settings and the components at the new key first"
        )
    if parse_retired_label(label) is not None:
        raise RetireRefusedError(f"{label!r} is already a retired key's label")
    now = now.astimezone(UTC).replace(microsecond=0)
    token = settings.token_label
    with (
        open_session(settings, rw=True) as session,
        translated(settings, f"retiring key {label!r}"),
    ):
        objects = _key_objects(session)
        live = _live_key(session, settings, objects)
        current = sorted(
            (o for o in objects if o.label == label), key=lambda o: _ORDER.get(o.kind, 9)
        )
        earlier: list[tuple[datetime, _KeyObject]] = []
        for item in objects:
            parsed = parse_retired_label(item.label)
            if parsed is not None and parsed[0] == label:
                earlier.append((parsed[1], item))
        earlier.sort(key=lambda pair: pair[0])
        earlier_privates = [(at, o) for at, o in earlier if o.kind == "private-key"]
        if not current:
            if not earlier:
                raise KeyNotFoundError(
                    f"token {token!r} holds no key labelled {label!r} and no retired key of "
                    "that name"
                )
            at, last = (earlier_privates or earlier)[-1]
            return RetireResult(label, last.label, at, changed=False, id_hex=last.key_id.hex())

        privates = [o for o in current if o.kind == "private-key"]
        publics = [o for o in current if o.kind == "public-key"]
        if len(privates) > 1 or len(publics) > 1:
            raise RetireRefusedError(
                f"token {token!r} holds {len(privates)} private and {len(publics)} public keys "
                f"labelled {label!r}; remove the duplicates first"
            )
        comparable = [o for o in current if o.kind != "private-key"]
        if not comparable:
            raise RetireRefusedError(
                f"token {token!r} holds no public key or certificate labelled {label!r}, so it "
                "cannot be compared with the live key; refusing to retire it"
            )
        for item in current:
            if item.key_id and item.key_id in live.ids:
                raise RetireRefusedError(
                    f"{item.kind} {label!r} shares CKA_ID {item.key_id.hex()} with the live key "
                    f"{live_label!r}; refusing to retire it"
                )
            if _object_spki(item) == live.spki:
                raise RetireRefusedError(
                    f"{item.kind} {label!r} holds the live key's public key (key "
                    f"{live_label!r}); refusing to retire the key the components use"
                )

        if privates:
            target, at = retired_label(label, now), now
            taken = [o for o in objects if o.label == target]
            if taken:
                raise RetireRefusedError(
                    f"token {token!r} already holds objects labelled {target!r}; try again"
                )
        else:
            # An earlier run disabled signing and relabelled the private key, then stopped:
            # finish it under that run's name.
            ids = {o.key_id for o in current}
            resumed = [(t, o) for t, o in earlier_privates if o.key_id in ids]
            if not resumed:
                raise KeyNotFoundError(
                    f"token {token!r} holds {', '.join(o.kind for o in current)} labelled "
                    f"{label!r} but no private key; nothing to retire"
                )
            at, private_done = resumed[-1]
            target = private_done.label

        # The login lock keeps other processes' logins and token look-ups (which re-read the
        # token's files with SoftHSM) out while objects change; signing does not take it.
        with hold_login_lock(settings):
            if privates:
                _disable_signing(privates[0], settings)
            for item in current:
                try:
                    item.obj[Attribute.LABEL] = target
                except p11e.PKCS11Error as exc:
                    raise HsmError(
                        f"private key {label!r} can no longer sign, but relabelling its "
                        f"{item.kind} to {target!r} failed ({_refusal(exc)}); run "
                        "retire-key again to finish"
                    ) from exc
    key_id = (privates[0] if privates else current[0]).key_id
    return RetireResult(
        label,
        target,
        at,
        changed=True,
        id_hex=key_id.hex(),
        relabelled=tuple(o.kind for o in current),
    )


def _kept_because(members: list[_KeyObject], live: _LiveKey) -> str | None:
    """Why a retired key must stay whatever its age (None: nothing ties it to the live key)."""
    if members[0].label == live.label:
        return "it carries the live key label"
    for item in members:
        if item.key_id and item.key_id in live.ids:
            return f"its {item.kind} shares CKA_ID {item.key_id.hex()} with the live key"
        try:
            spki = _object_spki(item)
        except HsmError as exc:
            return str(exc)
        if spki == live.spki:
            return f"its {item.kind} holds the live public key"
    for item in members:
        # retire-key clears CKA_SIGN before it relabels: this name was given by hand.
        if item.kind == "private-key" and _attr(item.obj, Attribute.SIGN, True) is not False:
            return "its private key can still sign (CKA_SIGN true): retire-key did not retire it"
    return None


def destroy_retired(
    settings: HsmSettings, grace_days: int, now: datetime, dry_run: bool = False
) -> list[RetiredKey]:
    """Destroy every key retired at least ``grace_days`` before ``now``; report all of them.

    A retired key is every private key, public key and certificate labelled
    ``<label>.retired-<timestamp>``. Keys tied to the live key are kept whatever their age
    (``kept_because``). ``dry_run`` changes nothing and reports what would be destroyed.
    """
    if grace_days < 0:
        raise RetireRefusedError(f"the grace period must be 0 days or more, not {grace_days}")
    now = now.astimezone(UTC)
    grace = timedelta(days=grace_days)
    results: list[RetiredKey] = []
    with (
        open_session(settings, rw=not dry_run) as session,
        translated(settings, "destroying retired keys"),
    ):
        objects = _key_objects(session)
        live = _live_key(session, settings, objects)
        groups: dict[str, list[_KeyObject]] = {}
        names: dict[str, tuple[str, datetime]] = {}
        for item in objects:
            parsed = parse_retired_label(item.label)
            if parsed is not None:
                groups.setdefault(item.label, []).append(item)
                names[item.label] = parsed
        doomed: list[list[_KeyObject]] = []
        for name in sorted(groups, key=lambda n: (names[n][1], n)):
            label, at = names[name]
            members = sorted(groups[name], key=lambda o: _ORDER.get(o.kind, 9))
            left = at + grace - now
            days_left = max(0, math.ceil(left / timedelta(days=1)))
            reason = _kept_because(members, live)
            due = reason is None and left <= timedelta(0)
            if due and not dry_run:
                doomed.append(members)
            results.append(
                RetiredKey(
                    label=label,
                    retired_label=name,
                    retired_at=at,
                    objects=tuple(o.kind for o in members),
                    due=due,
                    destroyed=due and not dry_run,
                    days_left=days_left,
                    kept_because=reason,
                )
            )
        if doomed:
            with hold_login_lock(settings):
                for members in doomed:
                    for item in members:
                        item.obj.destroy()
    return results


def sign_flags(settings: HsmSettings) -> dict[tuple[str, str], bool | None]:
    """CKA_SIGN of every private key, by (label, CKA_ID hex): for ``sluis hsm list``."""
    with open_session(settings) as session, translated(settings, "reading CKA_SIGN"):
        return {
            (o.label, o.key_id.hex()): _attr(o.obj, Attribute.SIGN)
            for o in _key_objects(session)
            if o.kind == "private-key"
        }
