"""Is the organisation key usable now? For readiness endpoints, and recovery when the token
comes back.

:func:`token_status` opens a session on the token and finds the private key: no signature, no
change. PKCS#11 modules do not reconnect by themselves: once the token went away (a network
HSM's server stopped, SoftHSM2's token store moved or unreadable, the TPM's resource manager
gone) the module keeps failing even after the token is back. So when the check fails for a
reason other than a wrong PIN or a missing key, :func:`token_status` ends
this process's logins on the module and initialises it again (C_Finalize, C_Initialize), at
most once per ``retry_seconds``; the check after that, and the signer's next signature (it
re-opens its session by itself), find the token again.

Each change of state is logged once (a warning with the reason; info when the key is usable
again), never once per check.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pkcs11.exceptions as p11e

from appliance.hsm.errors import HsmError, KeyNotFoundError, WrongPinError
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
_LAST: dict[tuple[str, str, str], str | None] = {}  # last reason logged (None: usable)
_LAST_REINIT: dict[str, float] = {}


def _check(settings: HsmSettings) -> None:
    with open_session(settings) as session:
        find_private_key(session, settings)


def token_status(
    settings: HsmSettings, *, recover: bool = True, retry_seconds: float = 1.0
) -> TokenStatus:
    """Whether the organisation key can be used now; re-initialises a module that lost it.

    ``recover=False`` only checks. Each call costs a session and an object search (and a
    login after a failure); readiness endpoints should not call it more than a few times a
    second.
    """
    reason: str | None = None
    try:
        _check(settings)
    except (WrongPinError, KeyNotFoundError) as exc:
        reason = str(exc)  # a setting or the key itself: re-initialising does not help
    except (HsmError, p11e.PKCS11Error) as exc:
        reason = str(exc) or type(exc).__name__
        logout(settings)
        if recover and _may_reinitialize(settings, retry_seconds):
            try:
                reinitialize_module(settings.module)
                _check(settings)
                reason = None
            except (HsmError, p11e.PKCS11Error) as again:
                reason = str(again) or type(again).__name__
    _log_change(settings, reason)
    return TokenStatus(reason is None, reason, settings.token_label, settings.key_label)


def _may_reinitialize(settings: HsmSettings, retry_seconds: float) -> bool:
    now = time.monotonic()
    with _STATE_LOCK:
        last = _LAST_REINIT.get(str(settings.module))
        if last is not None and now - last < retry_seconds:
            return False
        _LAST_REINIT[str(settings.module)] = now
        return True


def _log_change(settings: HsmSettings, reason: str | None) -> None:
    key = (str(settings.module), settings.token_label, settings.key_label)
    with _STATE_LOCK:
        before = _LAST.get(key)
        _LAST[key] = reason
    if reason == before:
        return
    if reason is None:
        log.info(
            "organisation key %r in token %r usable again", settings.key_label, settings.token_label
        )
    else:
        log.warning("organisation key %r not usable: %s", settings.key_label, reason)
