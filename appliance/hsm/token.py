"""Sessions on the organisation's token: load the module once, log in once, under the lock.

PKCS#11 login state belongs to the application (process), not to a session: after one
``C_Login`` every session of the process on that token sees the private objects, a second
``C_Login`` fails with CKR_USER_ALREADY_LOGGED_IN, and python-pkcs11's ``Session.close()`` of
the session that logged in calls ``C_Logout`` and so logs *every* session of the process out.
This module therefore keeps one "login session" per token per process, opened with the PIN
while holding :func:`appliance.hsm.lock.login_lock`, and hands out sessions opened without a
PIN that share its login. Closing those never logs anybody out.

The lock covers the token lookup as well as C_Login: with SoftHSM's file store, a
C_GetSlotList/C_GetTokenInfo racing another process's C_Login fails with CKR_GENERAL_ERROR (or
does not find the token) most of the time.

The python-pkcs11 ``lib`` object is cached per module path; the module is initialised once per
process (SoftHSM reads ``SOFTHSM2_CONF`` at that moment and does not notice tokens that other
processes create afterwards).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11e
from pkcs11 import Mechanism, Session, Token
from pkcs11._pkcs11 import lib as Pkcs11Lib

from appliance.hsm.errors import (
    HsmError,
    Pkcs11ModuleError,
    WrongPinError,
    pin_source,
    translate,
    translated,
)
from appliance.hsm.lock import login_lock
from appliance.hsm.observe import timed
from appliance.hsm.pin import read_pin
from appliance.hsm.settings import HsmSettings

__all__ = [
    "PKCS11_LOCK",
    "Pkcs11Lib",
    "change_pin",
    "find_token",
    "hold_login_lock",
    "load_module",
    "logout",
    "logout_all",
    "mechanism_name",
    "mechanisms",
    "open_persistent_session",
    "open_session",
    "reinitialize_module",
    "softhsm_conf_at_load",
    "token_mechanisms",
]

log = logging.getLogger(__name__)

# One lock around every PKCS#11 call of this process, and the module and login caches.
# python-pkcs11 initialises modules with C_Initialize(NULL), which tells the module that the
# application will not call it from several threads at once; SoftHSM then runs without its
# mutexes, and two threads signing in two sessions fail with CKR_GENERAL_ERROR. python-pkcs11
# releases the GIL during calls, so this process-wide lock is what serialises them.
PKCS11_LOCK = threading.RLock()
_LIBS: dict[str, Pkcs11Lib] = {}
_CONF_AT_LOAD: dict[str, str | None] = {}
_LOGINS: dict[tuple[str, str], _Login] = {}
# Modules inherited through fork(): PKCS#11 requires a new C_Initialize in the child.
_INHERITED: set[str] = set()
# Logins remember a keyed digest of the PIN they used, never the PIN.
_PIN_KEY = secrets.token_bytes(32)


@dataclass
class _Login:
    token: Token
    session: Session
    pin_digest: bytes


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


def _forget_after_fork() -> None:
    # The parent's sessions and logins mean nothing in a forked child (and closing them there
    # must not log the parent out); the child re-initialises each module on first use.
    _LOGINS.clear()
    _INHERITED.update(_LIBS)


os.register_at_fork(after_in_child=_forget_after_fork)


def load_module(module: Path) -> Pkcs11Lib:
    """Load and initialise the PKCS#11 module at ``module`` (once per process).

    Call it holding the login lock: SoftHSM's C_Initialize reads every token file.
    """
    key = str(module)
    with PKCS11_LOCK:
        cached = _LIBS.get(key)
        if cached is not None:
            if key in _INHERITED:
                _INHERITED.discard(key)
                try:
                    cached.reinitialize()
                except p11e.PKCS11Error as exc:
                    raise Pkcs11ModuleError(
                        f"PKCS#11 module {module} cannot be re-initialised after fork "
                        f"({type(exc).__name__})"
                    ) from exc
            return cached
        if not module.is_file():
            raise Pkcs11ModuleError(f"PKCS#11 module {module} does not exist")
        try:
            lib = pkcs11.lib(key)
        except p11e.PKCS11Error as exc:
            hint = ""
            if "softhsm" in key.lower():
                hint = (
                    f"; SoftHSM reads SOFTHSM2_CONF="
                    f"{os.environ.get('SOFTHSM2_CONF', '/etc/softhsm/softhsm2.conf')} and needs "
                    "its directories.tokendir to exist and be writable"
                )
            detail = f": {exc}" if str(exc) else f" ({type(exc).__name__})"
            raise Pkcs11ModuleError(
                f"PKCS#11 module {module} cannot be loaded or initialised{detail}{hint}"
            ) from exc
        _LIBS[key] = lib
        _CONF_AT_LOAD[key] = os.environ.get("SOFTHSM2_CONF")
        return lib


def softhsm_conf_at_load(module: Path) -> tuple[bool, str | None]:
    """Whether ``module`` is loaded in this process, and SOFTHSM2_CONF at that moment."""
    key = str(module)
    with PKCS11_LOCK:
        return key in _LIBS, _CONF_AT_LOAD.get(key)


@contextmanager
def hold_login_lock(settings: HsmSettings) -> Iterator[None]:
    """Hold the cross-process login lock, reporting an unusable lock file as :class:`HsmError`."""
    with ExitStack() as stack:
        try:
            stack.enter_context(login_lock(settings.login_lock))
        except OSError as exc:
            raise HsmError(
                f"cannot take the login lock {settings.login_lock}: {exc.strerror}"
            ) from exc
        yield


def _find_token(settings: HsmSettings) -> Token:
    lib = load_module(settings.module)
    with translated(settings, "looking for the token"):
        return lib.get_token(token_label=settings.token_label)


def find_token(settings: HsmSettings) -> Token:
    """The token labelled ``settings.token_label`` (no login).

    Use the token only while holding :data:`PKCS11_LOCK`.

    Looked up under the login lock: SoftHSM re-reads ``token.object`` for C_GetTokenInfo, and
    while another process logs in (rewriting that file) the lookup fails with
    CKR_GENERAL_ERROR or misses the token.
    """
    with PKCS11_LOCK, hold_login_lock(settings):
        return _find_token(settings)


def _ensure_login(settings: HsmSettings) -> Token:
    """Log in to the token once per process (under the login lock) and return the token."""
    key = (str(settings.module), settings.token_label)
    with PKCS11_LOCK:
        pin = read_pin(settings)
        digest = _pin_digest(pin)
        login = _LOGINS.get(key)
        if login is not None:
            if not hmac.compare_digest(login.pin_digest, digest):
                raise WrongPinError(
                    f"token {settings.token_label!r} is already logged in by this process with "
                    f"another PIN; the PIN from {pin_source(settings)} is not that PIN"
                )
            return login.token
        with hold_login_lock(settings), timed("login"):
            token = _find_token(settings)
            with translated(settings, "logging in"):
                try:
                    session = token.open(user_pin=pin)
                except p11e.UserAlreadyLoggedIn:
                    # Something else in this process (e.g. OpenSSL's pkcs11-provider on the
                    # same module) logged in already; the login is shared, so use it.
                    session = token.open()
        log.debug("logged in to token %r", settings.token_label)
        _LOGINS[key] = _Login(token=token, session=session, pin_digest=digest)
        return token


def open_persistent_session(settings: HsmSettings, *, rw: bool = False) -> Session:
    """Open a session that shares this process's login on the token; the caller closes it.

    Closing it does not log out (it never logged in itself). Every use of the session (and
    its objects) must hold :data:`PKCS11_LOCK`.
    """
    with PKCS11_LOCK:
        token = _ensure_login(settings)
        with translated(settings, "opening a session"):
            return token.open(rw=rw)


@contextmanager
def open_session(settings: HsmSettings, *, rw: bool = False) -> Iterator[Session]:
    """A session on the organisation's token, logged in as user (under the login lock).

    The block holds :data:`PKCS11_LOCK`: other threads' PKCS#11 calls wait until it ends, so
    keep it short and do not hand the session to another thread.
    """
    with PKCS11_LOCK:
        session = open_persistent_session(settings, rw=rw)
        try:
            yield session
        finally:
            with suppress(p11e.SessionClosed, p11e.SessionHandleInvalid):
                session.close()


# The shortest user PIN change_pin sets, whatever the token allows (the hsm role's minimum).
MIN_NEW_PIN_LENGTH = 4


def change_pin(settings: HsmSettings, new_pin: str) -> None:
    """C_SetPIN: replace the user PIN (the current one from the usual source) with ``new_pin``.

    Under the login lock: SoftHSM rewrites the token file. Running services keep their login;
    they need the new PIN at their next start (PIN file or credential), see docs/keys.md.
    """
    if len(new_pin) < MIN_NEW_PIN_LENGTH:
        # SoftHSM2 refuses such a PIN itself; tpm2-pkcs11 takes any length from 0 (docs/keys.md).
        raise HsmError(
            f"Sluis refused the new PIN: fewer than {MIN_NEW_PIN_LENGTH} characters; "
            "the PIN did not change"
        )
    old_pin = read_pin(settings)
    if hmac.compare_digest(old_pin.encode(), new_pin.encode()):
        raise HsmError(f"the new PIN is the PIN from {pin_source(settings)}; nothing changed")
    with PKCS11_LOCK, open_session(settings, rw=True) as session, hold_login_lock(settings):
        try:
            session.set_pin(old_pin, new_pin)
        except (p11e.PinLenRange, p11e.PinInvalid) as exc:
            raise HsmError(
                f"token {settings.token_label!r} refused the new PIN (its length or characters); "
                "the PIN did not change"
            ) from exc
        except p11e.PKCS11Error as exc:
            raise translate(exc, settings, "changing the user PIN") from exc
    # This process's login remembers the old PIN; the next use logs in with the new one.
    logout(settings)


def logout(settings: HsmSettings) -> None:
    """End this process's login on the token (every session of the process loses it)."""
    key = (str(settings.module), settings.token_label)
    with PKCS11_LOCK:
        login = _LOGINS.pop(key, None)
        if login is not None:
            _close_login(login)


def reinitialize_module(module: Path) -> None:
    """C_Finalize and C_Initialize ``module`` again, ending every login of this process on it.

    A module that lost its token (a network HSM's server gone, SoftHSM's token store moved)
    keeps failing after the token is back; only a new C_Initialize finds it again. Every
    session of the process on that module ends, pkcs11-provider's included.
    """
    key = str(module)
    with PKCS11_LOCK:
        for login_key in [k for k in _LOGINS if k[0] == key]:
            _close_login(_LOGINS.pop(login_key))
        lib = _LIBS.get(key)
        if lib is None:
            return
        # After a failed C_Initialize (the token store still missing) the module is finalized
        # already; the next attempt only initialises.
        with suppress(p11e.PKCS11Error):
            lib.finalize()
        try:
            lib.initialize()
        except p11e.PKCS11Error as exc:
            raise Pkcs11ModuleError(
                f"PKCS#11 module {module} cannot be re-initialised ({type(exc).__name__})"
            ) from exc


def logout_all() -> None:
    """End every login of this process (tests, shutdown)."""
    with PKCS11_LOCK:
        logins = list(_LOGINS.values())
        _LOGINS.clear()
        for login in logins:
            _close_login(login)


def _close_login(login: _Login) -> None:
    # The token may be gone or the session already dead; either way the login has ended.
    with suppress(p11e.PKCS11Error):
        login.session.close()


def token_mechanisms(token: Token) -> frozenset[int]:
    """The mechanism numbers (CKM_*) the token's slot offers."""
    return frozenset(int(m) for m in token.slot.get_mechanisms())


def mechanism_name(mechanism: int) -> str:
    """``CKM_ECDSA`` for 0x1041; vendor or unknown numbers as ``CKM_0x...``."""
    try:
        return "CKM_" + Mechanism(mechanism).name.lstrip("_")
    except ValueError:
        return f"CKM_{mechanism:#x}"


def mechanisms(settings: HsmSettings) -> frozenset[str]:
    """Names (``CKM_ECDSA``, ``CKM_SHA256_RSA_PKCS_PSS``, ...) of the token's mechanisms."""
    with PKCS11_LOCK:
        token = find_token(settings)
        with translated(settings, "listing mechanisms"):
            return frozenset(mechanism_name(m) for m in token_mechanisms(token))
