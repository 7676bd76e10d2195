"""Who is asking: local logins with lockout, sessions, CSRF tokens and API tokens.

- Logins: scrypt password hashes (:mod:`~appliance.controller.passwords`); after
  ``lockout_attempts`` failures in a row the account is locked for ``lockout_minutes``, also
  for the right password. An unknown username costs the same hash as a known one, and every
  failure gets the same answer, so neither timing nor wording tells which accounts exist.
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
password, locked, disabled), which the caller never sees.

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
from appliance.controller.store import ApiToken, ControllerStore, StoreError, User

SESSION_COOKIE = "__Host-sluis-session"
LOGIN_COOKIE = "__Host-sluis-login"  # double-submit token of the login form (no session yet)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
TOKEN_PREFIX = "sluis_ctl_"  # noqa: S105 (a prefix, not a secret)
_CSRF_CONTEXT = b"sluis controller csrf v1"
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


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

    @property
    def csrf_token(self) -> str | None:
        return csrf_token_for(self.session_id) if self.session_id else None

    def csrf_ok(self, token: str | None) -> bool:
        if self.kind == "token":
            return True
        return self.session_id is not None and csrf_matches(self.session_id, token)


class LoginFailed(Exception):
    """A login was refused; ``reason`` goes to the audit log, never to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NewSession:
    session_id: str
    principal: Principal
    expires_at: datetime


class Authenticator:
    def __init__(
        self,
        store: ControllerStore,
        settings: ControllerSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
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

    def check_password(self, username: str, password: str) -> User:
        """The user whose password this is, or :class:`LoginFailed` (lockout counted)."""
        now = self.clock()
        user = self.store.get_user(username)
        if user is None:
            verify_password(password, dummy_hash())
            raise LoginFailed("unknown user")
        if user.locked(now):
            verify_password(password, dummy_hash())
            raise LoginFailed("account locked")
        if user.oidc_subject is not None:
            verify_password(password, dummy_hash())
            raise LoginFailed("account logs in with OpenID Connect, not a password")
        if not verify_password(password, user.password_hash):
            after = self.store.record_failed_login(
                user.id,
                now,
                max_attempts=self.settings.lockout_attempts,
                lock_for=timedelta(minutes=self.settings.lockout_minutes),
            )
            if after.locked(now):
                raise LoginFailed(
                    f"wrong password; account locked for {self.settings.lockout_minutes} minutes"
                )
            raise LoginFailed("wrong password")
        if user.disabled:
            raise LoginFailed("account disabled")
        new_hash = hash_password(password) if needs_rehash(user.password_hash) else None
        self.store.record_login(user.id, now, new_hash=new_hash)
        return user

    async def login(self, username: str, password: str, peer_address: str) -> NewSession:
        """Check the password (in a thread: scrypt takes a while) and open a session."""
        try:
            user = await asyncio.to_thread(self.check_password, username, password)
        except LoginFailed as exc:
            self.audit(username or "-", None, "login", "failure", peer_address, detail=exc.reason)
            raise
        session = self.open_session(user, peer_address)
        self.audit(user.username, user.role, "login", "success", peer_address)
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
            raise LoginFailed(str(exc)) from None
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

    def create_user(self, username: str, role: Role, password: str) -> User:
        check_password_policy(password)
        return self.store.add_user(username, role, hash_password(password), self.clock())

    def set_password(self, username: str, password: str) -> User:
        check_password_policy(password)
        user = self.store.get_user(username)
        if user is not None and user.oidc_subject is not None:
            raise StoreError(f"{username!r} logs in with OpenID Connect and has no password")
        return self.store.set_password(username, hash_password(password), self.clock())
