"""Errors about the HSM, the token and the organisation key, in words an operator can act on.

python-pkcs11 raises one exception class per PKCS#11 return code; :func:`translate` turns the
ones an operator can cause (wrong PIN, missing token or key, several objects with one label)
into the classes below. Messages name the module path, token label or key label that is
missing and never contain a PIN.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pkcs11.exceptions as p11e

from appliance.errors import SluisError
from appliance.hsm.pin import pin_credential_path

if TYPE_CHECKING:
    from appliance.hsm.settings import HsmSettings


class HsmError(SluisError):
    """Something about the HSM, token or key is wrong."""


class Pkcs11ModuleError(HsmError):
    """The PKCS#11 module (vendor library) is missing or cannot be loaded."""


class TokenNotFoundError(HsmError):
    """No token with the configured label is present."""


class TokenExistsError(HsmError):
    """A token with that label already exists (development token initialisation)."""


class WrongPinError(HsmError):
    """The token refused the PIN (or it is locked or expired)."""


class KeyNotFoundError(HsmError):
    """The token holds no key with the configured label."""


class KeyExistsError(HsmError):
    """The token already holds an object with the label a new key would get."""


class UnprotectedKeyError(HsmError):
    """The private key lacks a protection attribute (sensitive, never extractable, local...)."""


class CertificateMismatchError(HsmError):
    """A certificate (chain) does not belong to the token key or is not a chain."""


def pin_source(settings: HsmSettings) -> str:
    """Where the PIN came from, for messages (never the PIN itself)."""
    if os.environ.get(settings.pin_env):
        return f"environment variable {settings.pin_env}"
    credential = pin_credential_path(settings)
    if credential is not None:
        return f"systemd credential {credential}"
    if settings.pin_file is not None:
        return f"PIN file {settings.pin_file}"
    return "no PIN source"


def translate(exc: p11e.PKCS11Error, settings: HsmSettings, action: str) -> HsmError:
    """Map a python-pkcs11 exception raised while doing ``action`` to an :class:`HsmError`.

    python-pkcs11's own messages are return-code names or search templates; none carries a PIN,
    but the text is only appended for codes an operator cannot cause.
    """
    token = settings.token_label
    key = settings.key_label
    if isinstance(exc, p11e.PinIncorrect | p11e.PinInvalid | p11e.PinLenRange):
        return WrongPinError(
            f"token {token!r} refused the user PIN from {pin_source(settings)} while {action}; "
            "repeated failures lock the token"
        )
    if isinstance(exc, p11e.PinLocked):
        return WrongPinError(
            f"the user PIN of token {token!r} is locked after too many wrong PINs; the security "
            "officer must unlock or reset it (a TPM 2.0 locks all its keys for its lockout "
            "interval, or until its owner clears the lockout: docs/keys.md)"
        )
    if isinstance(exc, p11e.PinExpired):
        return WrongPinError(f"the user PIN of token {token!r} has expired; set a new PIN first")
    if isinstance(exc, p11e.UserPinNotInitialized):
        return WrongPinError(f"token {token!r} has no user PIN yet; the security officer sets it")
    if isinstance(exc, p11e.NoSuchToken | p11e.TokenNotPresent | p11e.TokenNotRecognised):
        return TokenNotFoundError(
            f"no token labelled {token!r} in PKCS#11 module {settings.module} while {action}"
        )
    if isinstance(exc, p11e.MultipleTokensReturned):
        return HsmError(
            f"more than one token is labelled {token!r} in PKCS#11 module {settings.module}; "
            "token labels must be unique"
        )
    if isinstance(exc, p11e.NoSuchKey):
        return KeyNotFoundError(f"token {token!r} holds no key labelled {key!r} ({action})")
    if isinstance(exc, p11e.MultipleObjectsReturned):
        return HsmError(
            f"token {token!r} holds more than one object of one kind labelled {key!r} ({action}); "
            "remove the duplicates"
        )
    if isinstance(exc, p11e.UserNotLoggedIn):
        return HsmError(f"not logged in to token {token!r} while {action}")
    if isinstance(exc, p11e.DeviceRemoved | p11e.DeviceError):
        return HsmError(f"the HSM holding token {token!r} failed or was removed while {action}")
    detail = f": {exc}" if str(exc) else ""
    return HsmError(f"PKCS#11 error {type(exc).__name__} on token {token!r} while {action}{detail}")


@contextmanager
def translated(settings: HsmSettings, action: str) -> Iterator[None]:
    """Re-raise python-pkcs11 exceptions inside the block as :class:`HsmError`."""
    try:
        yield
    except p11e.PKCS11Error as exc:
        raise translate(exc, settings, action) from exc
