"""Who is asking: local logins with lockout, sessions, CSRF tokens and API tokens.

- Logins: scrypt password hashes (:mod:`~appliance.controller.passwords`). Two limits, kept
  in the database so that every worker counts the same attempts (OWASP's advice against
  lockouts that are a denial of service; docs/controller.md):

  - per (account, client address): after ``lockout_attempts`` failed logins from one address
    within ``lockout_minutes`` that address is locked out of that account, also for the right
    password, until the oldest of them is ``lockout_minutes`` old. The owner logging in from
    another address is not hindered: a stranger cannot lock anyone out but themselves.
  - per client address: after :data:`SOURCE_ATTEMPTS` failed logins within
    :data:`SOURCE_MINUTES` (over any accounts, known or not) every login from the address is
    refused likewise; this is what slows a password spray. Audited as ``login.throttle``.

  A refused attempt is not counted (it does not lengthen the lock it ran into); a success
  forgets the failures of its (account, address). An unknown username costs the same hash as
  a known one, counts the same, and every failure gets the same answer, so neither timing nor
  wording tells which accounts exist.
- Sessions: a 256-bit random id in a ``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict,
  Path=/); the store keeps only its SHA-256. A session ends after ``session_idle_minutes``
  without a request and ``session_absolute_minutes`` after login, whichever comes first; a
  login always starts a new session (no fixation).
- CSRF: the synchronizer token of a session is an HMAC of the session id, so it is bound to
  the session, never stored, and cannot be computed without the cookie's value. Every state
  change made with a session cookie must carry it (form field ``csrf_token`` or header
  ``X-CSRF-Token``).
- API tokens: ``sluis_ctl_`` + 256 random bits, scoped to one role, shown once, stored as
  SHA-256, revocable; sent as ``Authorization: Bearer ...``. Requests with a token need no
  CSRF token (a browser never adds that header by itself).

Every failed login is written to the audit log here, with the reason (unknown user, wrong
password, locked, blocked, disabled), which the caller never sees, and the name tried in a safe
form (:func:`shown_username`). Logins, failures by kind and the locks they trip are also
counted, without names, for the controller's ``/metrics`` (:mod:`appliance.metrics.controller`).

Logins with OpenID Connect (:mod:`~appliance.controller.oidc`) end in :meth:`login_oidc`: the
account the provider's subject has here (made at its first login), with the role the
provider's groups give it now, and a session exactly like a password login's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import falcon.asgi

from appliance.config import ControllerSettings
from appliance.controller.oidc import Identity
from appliance.controller.passwords import (
    check_password_policy,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from appliance.controller.roles import Role
from appliance.controller.store import USERNAME, ApiToken, ControllerStore, StoreError, User
from appliance.metrics import controller as metrics

SESSION_COOKIE = "__Host-sluis-session"
LOGIN_COOKIE = "__Host-sluis-login"  # double-submit token of the login form (no session yet)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
TOKEN_PREFIX = "sluis_ctl_"  # noqa: S105 (a prefix, not a secret)
_CSRF_CONTEXT = b"sluis controller csrf v1"
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often
# Failed logins from one client address, over all accounts, before its logins are refused:
# a password spray from one address gets 20 guesses per 15 minutes.
# The life of a new API token unless another is asked for (0: never), the same from the pages,
# the API and `sluis controller create-token`: a forgotten token ends by itself.
TOKEN_DAYS = 90
SOURCE_ATTEMPTS = 20
SOURCE_MINUTES = 15


def clear_cookie(resp: falcon.asgi.Response, name: str, same_site: str = "Strict") -> None:
    """Remove a ``__Host-`` cookie. Falcon's ``unset_cookie`` leaves out ``Secure``, and a
    browser ignores a ``__Host-`` cookie without it, so the old value would stay."""
    resp.set_cookie(
        name,
        "",
        expires=datetime(1970, 1, 1, tzinfo=UTC),
        max_age="0",  # type: ignore[arg-type]  # Falcon leaves out an int 0 (falsy)
        secure=True,
        http_only=True,
        same_site=same_site,
        path="/",
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def csrf_token_for(session_id: str) -> str:
    digest = hmac.new(session_id.encode("utf-8"), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_matches(session_id: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(csrf_token_for(session_id).encode(), token.encode("utf-8"))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user with a session, or an API token."""

    actor: str  # the username, or "token:<name>"
    role: Role
    kind: Literal["session", "token"]
    session_id: str | None = None  # the cookie's value; only to check CSRF, never logged
    user_id: int | None = None
    token_id: int | None = None
    must_change_password: bool = False  # a generated password: only /password until changed

    @property
    def csrf_token(self) -> str | None:
        return csrf_token_for(self.session_id) if self.session_id else None

    def csrf_ok(self, token: str | None) -> bool:
        if self.kind == "token":
            return True
        return self.session_id is not None and csrf_matches(self.session_id, token)


class LoginFailed(Exception):
    """A login was refused; ``reason`` goes to the audit log, never to the caller; ``code``
    is its kind for the metrics (``appliance.metrics.controller.FAILURE_REASONS``)."""

    def __init__(self, reason: str, code: str = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class NewSession:
    session_id: str
    principal: Principal
    expires_at: datetime


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins are allowed, per (account, address) and per address."""

    attempts: int  # from one address at one account ...
    lockout_minutes: int  # ... within this long (and the lock lasts at most this long)
    source_attempts: int = SOURCE_ATTEMPTS  # from one address at any accounts ...
    source_minutes: int = SOURCE_MINUTES  # ... within this long

    @classmethod
    def of(cls, settings: ControllerSettings) -> LoginLimits:
        return cls(settings.lockout_attempts, settings.lockout_minutes)

    @property
    def lockout(self) -> timedelta:
        return timedelta(minutes=self.lockout_minutes)

    @property
    def source_window(self) -> timedelta:
        return timedelta(minutes=self.source_minutes)

    @property
    def longest(self) -> timedelta:
        return max(self.lockout, self.source_window)


def shown_username(username: str) -> str:
    """A name as tried at a login, safe for the audit log: every character that is not
    printable (a control character, a lone surrogate) as its escape, at most 64 characters."""
    safe = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in username[:64])
    return safe[:64] or "-"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class Authenticator:
    def __init__(
        self,
        store: ControllerStore,
        settings: ControllerSettings,
        clock: Callable[[], datetime] = utcnow,
        limits: LoginLimits | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.limits = limits or LoginLimits.of(settings)
        self.idle = timedelta(minutes=settings.session_idle_minutes)
        self.absolute = timedelta(minutes=settings.session_absolute_minutes)

    # -- audit --------------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        role: Role | str | None,
        action: str,
        outcome: Literal["success", "failure", "denied"],
        peer_address: str,
        *,
        target: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.store.append_audit(
            at=self.clock(),
            actor=actor,
            role=str(role) if role is not None else None,
            action=action,
            outcome=outcome,
            peer_address=peer_address,
            target=target,
            detail=detail,
        )

    # -- logins -------------------------------------------------------------------------------

    def check_password(self, username: str, password: str, source: str) -> User:
        """The user whose password this is, or :class:`LoginFailed`; ``source`` is the client
        address the limits count per (see the module text)."""
        now = self.clock()
        # No account has a name outside USERNAME; such a name is not even looked up (a lone
        # surrogate cannot be sent to the database).
        user = self.store.get_user(username) if USERNAME.fullmatch(username) else None
        account = user.username if user is not None else shown_username(username)
        limits = self.limits
        attempt = self.store.add_login_attempt(
            account, source, now, forget_before=now - limits.longest
        )
        refusal = self._over_a_limit(account, source, now)
        if refusal is not None:
            # Not counted: a refused attempt does not lengthen the lock it ran into.
            self.store.forget_login_attempts(attempt_id=attempt)
            verify_password(password, dummy_hash())
            raise LoginFailed(*refusal)
        try:
            if user is None:
                verify_password(password, dummy_hash())
                raise LoginFailed("unknown user", "unknown_user")
            if user.oidc_subject is not None:
                verify_password(password, dummy_hash())
                raise LoginFailed(
                    "account logs in with OpenID Connect, not a password", "no_password"
                )
            if not verify_password(password, user.password_hash):
                raise LoginFailed("wrong password", "wrong_password")
        except LoginFailed as failed:
            reason = self._failed(user, account, source, now, failed.reason)
            raise LoginFailed(reason, failed.code) from None
        if user.disabled:
            raise LoginFailed("account disabled", "disabled")
        self.store.forget_login_attempts(username=account, peer_address=source)
        new_hash = hash_password(password) if needs_rehash(user.password_hash) else None
        self.store.record_login(user.id, now, new_hash=new_hash)
        return user

    def _over_a_limit(self, account: str, source: str, now: datetime) -> tuple[str, str] | None:
        """Why a login from ``source`` at ``account`` is refused now (and the metrics' code:
        ``blocked`` or ``locked``), or None. The attempt being checked is among those counted,
        hence the ``+ 1``."""
        limits = self.limits
        recent = self.store.login_attempts(
            source, now - limits.source_window, limits.source_attempts + 1
        )
        if len(recent) > limits.source_attempts:
            until = _iso(recent[-1] + limits.source_window)
            return (
                f"address blocked: {limits.source_attempts} failed logins from it within "
                f"{limits.source_minutes} minutes (until {until})",
                "blocked",
            )
        at_account = self.store.login_attempts(
            source, now - limits.lockout, limits.attempts + 1, username=account
        )
        if len(at_account) > limits.attempts:
            return (
                f"account locked for this address: {limits.attempts} failed logins from it "
                f"within {limits.lockout_minutes} minutes (until "
                f"{_iso(at_account[-1] + limits.lockout)})",
                "locked",
            )
        return None

    def _failed(
        self, user: User | None, account: str, source: str, now: datetime, reason: str
    ) -> str:
        """Count a failed login (its attempt stays); the reason, with a lock it trips."""
        limits = self.limits
        at_account = self.store.login_attempts(
            source, now - limits.lockout, limits.attempts, username=account
        )
        locked_until = None
        if len(at_account) >= limits.attempts:
            locked_until = at_account[-1] + limits.lockout
            reason += f"; account locked for this address for {limits.lockout_minutes} minutes"
            metrics.locked_out("account")
        if user is not None:
            self.store.record_failed_login(user.id, locked_until)
        recent = self.store.login_attempts(
            source, now - limits.source_window, limits.source_attempts + 1
        )
        if len(recent) == limits.source_attempts:  # this failure trips the address's limit
            self.audit(
                "-",
                None,
                "login.throttle",
                "denied",
                source,
                detail=(
                    f"{limits.source_attempts} failed logins from this address within "
                    f"{limits.source_minutes} minutes (the last at {account}): its logins are "
                    f"refused until {_iso(recent[-1] + limits.source_window)}"
                ),
            )
            reason += "; address blocked"
            metrics.locked_out("address")
        return reason

    async def login(self, username: str, password: str, peer_address: str) -> NewSession:
        """Check the password (in a thread: scrypt takes a while) and open a session."""
        try:
            user = await asyncio.to_thread(self.check_password, username, password, peer_address)
        except LoginFailed as exc:
            self.audit(
                shown_username(username), None, "login", "failure", peer_address, detail=exc.reason
            )
            metrics.login_failed(exc.code)
            raise
        session = self.open_session(user, peer_address)
        self.audit(user.username, user.role, "login", "success", peer_address)
        metrics.login("password")
        return session

    async def login_oidc(self, identity: Identity, peer_address: str) -> NewSession:
        """The session of a person the OpenID Connect provider vouched for (the ID token was
        verified and the role mapped by the caller); :class:`LoginFailed` when the account
        name is taken here or the account is disabled (audited)."""
        now = self.clock()
        try:
            user = self.store.oidc_login(identity.subject, identity.username, identity.role, now)
            if user.disabled:
                raise LoginFailed("account disabled")
        except (StoreError, LoginFailed) as exc:
            self.audit(
                identity.username[:64],
                identity.role,
                "login",
                "failure",
                peer_address,
                detail=f"oidc: {exc}",
            )
            metrics.login_failed("oidc")
            raise LoginFailed(str(exc), "oidc") from None
        self.store.record_oidc_login(user.id, now)
        session = self.open_session(user, peer_address)
        self.audit(
            user.username,
            user.role,
            "login",
            "success",
            peer_address,
            detail=f"oidc: subject {identity.subject[:400]}, group {identity.group[:100]}",
        )
        metrics.login("oidc")
        return session

    def open_session(self, user: User, peer_address: str) -> NewSession:
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        expires_at = now + self.absolute
        self.store.add_session(_sha256(session_id), user.id, now, expires_at, peer_address)
        principal = Principal(
            user.username, user.role, "session", session_id=session_id, user_id=user.id
        )
        return NewSession(session_id, principal, expires_at)

    def session(self, session_id: str | None) -> Principal | None:
        """The principal of a live session, or None (an expired session is removed)."""
        if not session_id or len(session_id) > 128:
            return None
        id_hash = _sha256(session_id)
        row = self.store.get_session(id_hash)
        if row is None:
            return None
        now = self.clock()
        if now >= row.expires_at or now - row.last_seen_at >= self.idle or row.user.disabled:
            self.store.delete_session(id_hash)
            return None
        if now - row.last_seen_at >= _TOUCH_EVERY:
            self.store.touch_session(id_hash, now)
        return Principal(
            row.user.username,
            row.user.role,
            "session",
            session_id=session_id,
            user_id=row.user.id,
            must_change_password=row.user.must_change_password,
        )

    def end_session(self, session_id: str) -> None:
        self.store.delete_session(_sha256(session_id))

    # -- API tokens ---------------------------------------------------------------------------

    def create_token(
        self, name: str, role: Role, created_by: str, *, days: int | None = None
    ) -> tuple[str, ApiToken]:
        """A new token (returned once, never stored) and its stored record."""
        if days is not None and not 1 <= days <= 3650:
            raise StoreError("a token lives 1 to 3650 days")
        now = self.clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = self.store.add_token(
            name,
            role,
            _sha256(secret),
            secret[: len(TOKEN_PREFIX) + 4],
            created_by,
            now,
            now + timedelta(days=days) if days is not None else None,
        )
        return secret, record

    def bearer(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        record = self.store.token_by_hash(_sha256(token))
        now = self.clock()
        if record is None or not record.usable(now):
            return None
        if record.last_used_at is None or now - record.last_used_at >= _TOUCH_EVERY:
            self.store.touch_token(record.id, now)
        return Principal(f"token:{record.name}", record.role, "token", token_id=record.id)

    # -- accounts -----------------------------------------------------------------------------

    def create_user(
        self, username: str, role: Role, password: str, *, generated: bool = False
    ) -> User:
        """``generated``: the password was made here and shown to whoever made the account;
        its owner must choose their own at the first login."""
        check_password_policy(password)
        return self.store.add_user(
            username, role, hash_password(password), self.clock(), must_change_password=generated
        )

    def set_password(self, username: str, password: str) -> User:
        check_password_policy(password)
        user = self.store.get_user(username)
        if user is not None and user.oidc_subject is not None:
            raise StoreError(f"{username!r} logs in with OpenID Connect and has no password")
        return self.store.set_password(username, hash_password(password), self.clock())
