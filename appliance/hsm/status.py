"""Is the organisation key usable now? For readiness endpoints, and recovery when the token
comes back.

:func:`token_status` opens a session on the token, finds the private key and draws random
bytes from the token (a round trip to the device): no signature, no change. PKCS#11 modules
do not reconnect by themselves: once the token went away (a network HSM's server stopped,
SoftHSM2's token store moved or unreadable, the TPM or its resource manager gone) the module
keeps failing even after the token is back. So when the check fails for a reason other than a
wrong PIN, :func:`token_status` ends this process's logins on the module and
initialises it again (C_Finalize, C_Initialize), at most once per ``retry_seconds``; the check
after that, and the signer's next signature (it re-opens its session by itself), find the
token again.

Logged once per kind of failure in an outage (a warning naming the kind, i.e. the PKCS#11 error,
and the reason) and once when the key is usable again, never once per check.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pkcs11.exceptions as p11e

from appliance.hsm.errors import HsmError, WrongPinError
from appliance.hsm.keys import find_private_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import logout, open_session, reinitialize_module

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenStatus:
    """``usable``: the key was found in a session just now; else ``reason`` says why not."""

    usable: bool
    reason: str | None
    token_label: str
    key_label: str


_STATE_LOCK = threading.Lock()
# The kinds of failure logged in the current outage of each key (absent: usable).
_OUTAGES: dict[tuple[str, str, str], set[str]] = {}
_LAST_REINIT: dict[str, float] = {}


def _check(settings: HsmSettings) -> None:
    with open_session(settings) as session:
        find_private_key(session, settings)
        # A round trip to the device: tpm2-pkcs11 finds objects in its store without the TPM.
        session.generate_random(64)


def token_status(
    settings: HsmSettings, *, recover: bool = True, retry_seconds: float = 1.0
) -> TokenStatus:
    """Whether the organisation key can be used now; re-initialises a module that lost it.

    ``recover=False`` only checks. Each call costs a session and an object search (and a
    login after a failure); readiness endpoints should not call it more than a few times a
    second.
    """
    reason: str | None = None
    kind = ""
    try:
        _check(settings)
    except WrongPinError as exc:
        # Logging in again would count failed logins towards the token's lock-out.
        reason, kind = str(exc), _kind(exc)
    except (HsmError, p11e.PKCS11Error) as exc:
        # A missing key too: SoftHSM2 whose store went away answers "no such key" from then
        # on, until the module is initialised again.
        reason, kind = str(exc) or type(exc).__name__, _kind(exc)
        logout(settings)
        if recover and _may_reinitialize(settings, retry_seconds):
            try:
                reinitialize_module(settings.module)
                _check(settings)
                reason = None
            except (HsmError, p11e.PKCS11Error) as again:
                reason, kind = str(again) or type(again).__name__, _kind(again)
    _log_change(settings, reason, kind)
    return TokenStatus(reason is None, reason, settings.token_label, settings.key_label)


def _kind(exc: BaseException) -> str:
    """``WrongPinError``, ``HsmError/GeneralError``: Sluis's error and the PKCS#11 one."""
    cause = exc.__cause__
    return type(exc).__name__ + (f"/{type(cause).__name__}" if cause is not None else "")


def _may_reinitialize(settings: HsmSettings, retry_seconds: float) -> bool:
    now = time.monotonic()
    with _STATE_LOCK:
        last = _LAST_REINIT.get(str(settings.module))
        if last is not None and now - last < retry_seconds:
            return False
        _LAST_REINIT[str(settings.module)] = now
        return True


def _log_change(settings: HsmSettings, reason: str | None, kind: str) -> None:
    key = (str(settings.module), settings.token_label, settings.key_label)
    with _STATE_LOCK:
        if reason is None:
            was_down = _OUTAGES.pop(key, None) is not None
            new_kind = False
        else:
            kinds = _OUTAGES.setdefault(key, set())
            new_kind = kind not in kinds
            kinds.add(kind)
            was_down = False
    if was_down:
        log.info(
            "organisation key %r in token %r usable again", settings.key_label, settings.token_label
        )
    elif new_kind:
        log.warning("organisation key %r not usable (%s): %s", settings.key_label, kind, reason)
