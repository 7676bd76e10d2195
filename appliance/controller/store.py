"""The controller's store: users, sessions, API tokens and the append-only audit log.

SQLAlchemy Core on the Manager's engine recipe (SQLite in WAL mode with ``BEGIN IMMEDIATE``
for writers, or PostgreSQL). Secrets are never stored: passwords as scrypt hashes, session ids
and API tokens as SHA-256 hashes (both are 256-bit random values, so a fast hash is enough).

The audit log has an append method and a query method, nothing else; the database refuses
UPDATE and DELETE on it (see the first migration), and each entry is hash-chained to the one
before it (``appliance.controller.auditlog``), so a change the database owner makes anyway is
found by ``sluis controller audit verify``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from appliance.controller import schema as t
from appliance.controller.auditlog import AUDIT, STREAM
from appliance.controller.database import create_engine, migrate, reading
from appliance.controller.roles import Role
from appliance.errors import SluisError
from appliance.txlog import chain

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")
MAX_AUDIT_PAGE = 1000
# The password hash of an account made by an OIDC login: no password matches it.
OIDC_PASSWORD_HASH = "!oidc"  # noqa: S105 (a marker, not a secret)
_TEXT_LIMITS = {"actor": 80, "action": 64, "target": 1024, "peer_address": 64, "detail": 1000}


class StoreError(SluisError):
    """A change the store refuses (a duplicate user, an unknown token, ...)."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    password_hash: str
    failed_attempts: int
    locked_until: datetime | None
    disabled: bool
    created_at: datetime
    password_changed_at: datetime
    last_login_at: datetime | None
    oidc_subject: str | None = None  # "<issuer> <sub>" for an account made by an OIDC login
    must_change_password: bool = False  # made with a generated password, not yet changed

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def as_api(self, now: datetime) -> dict[str, Any]:
        return {
            "username": self.username,
            "role": self.role.value,
            "disabled": self.disabled,
            "locked": self.locked(now),
            "locked_until": _iso(self.locked_until) if self.locked(now) else None,
            "created_at": _iso(self.created_at),
            "last_login_at": _iso(self.last_login_at),
            "login": "oidc" if self.oidc_subject else "password",
        }


@dataclass(frozen=True)
class SessionRow:
    id_hash: str
    user: User
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    peer_address: str


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    role: Role
    prefix: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "prefix": self.prefix,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    role: str | None
    action: str
    target: str | None
    outcome: str
    peer_address: str
    detail: str | None

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "peer_address": self.peer_address,
            "detail": self.detail,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        password_hash=row.password_hash,
        failed_attempts=row.failed_attempts,
        locked_until=row.locked_until,
        disabled=bool(row.disabled),
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
        last_login_at=row.last_login_at,
        oidc_subject=row.oidc_subject,
        must_change_password=bool(row.must_change_password),
    )


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _clip(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    limit = _TEXT_LIMITS[name]
    # No control characters in the log (no forged lines in an export or a SIEM).
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class ControllerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reading(engine)
        # The audit chain's head this store wrote last (its hash need not be recomputed).
        self._audit_heads = chain.HeadCache()

    @classmethod
    def open(cls, url: str | URL, *, migrate_schema: bool = True) -> ControllerStore:
        engine = create_engine(url, hide_parameters=True)
        try:
            if migrate_schema:
                migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._reader.begin() as conn:
            yield conn

    # -- users ------------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        role: Role,
        password_hash: str,
        now: datetime,
        *,
        must_change_password: bool = False,
    ) -> User:
        if not USERNAME.fullmatch(username):
            raise StoreError(
                "a username is 1-64 characters: letters, digits and . _ @ - "
                "(starting with a letter or digit)"
            )
        with self._write() as conn:
            exists = conn.execute(
                sa.select(t.users.c.id).where(t.users.c.username == username)
            ).first()
            if exists is not None:
                raise StoreError(f"user {username!r} exists already")
            conn.execute(
                t.users.insert().values(
                    username=username,
                    role=role.value,
                    password_hash=password_hash,
                    failed_attempts=0,
                    disabled=False,
                    created_at=now,
                    password_changed_at=now,
                    must_change_password=must_change_password,
                )
            )
        user = self.get_user(username)
        assert user is not None
        return user

    def get_user(self, username: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(sa.select(t.users).where(t.users.c.username == username)).first()
        return _user(row) if row is not None else None

    def list_users(self) -> list[User]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.users).order_by(t.users.c.username)).all()
        return [_user(row) for row in rows]

    def record_failed_login(self, user_id: int, locked_until: datetime | None) -> None:
        """Count a failed login of the account; ``locked_until``: an address is now locked
        out of it until then (shown on the Users page; the lock itself is per address)."""
        c = t.users.c
        values: dict[str, Any] = {"failed_attempts": c.failed_attempts + 1}
        if locked_until is not None:  # every lock lasts as long: the newest ends last
            values["locked_until"] = locked_until
        with self._write() as conn:
            conn.execute(t.users.update().where(c.id == user_id).values(**values))

    # -- login attempts (the limits per account and address, and per address) ---------------

    def add_login_attempt(
        self, username: str, peer_address: str, now: datetime, *, forget_before: datetime
    ) -> int:
        """Note a login being checked; returns its id. Attempts before ``forget_before`` go."""
        c = t.login_attempts.c
        with self._write() as conn:
            conn.execute(t.login_attempts.delete().where(c.at < forget_before))
            result = conn.execute(
                t.login_attempts.insert()
                .values(
                    username=_clip("actor", username) or "-",
                    peer_address=_clip("peer_address", peer_address) or "-",
                    at=now,
                )
                .returning(c.id)
            )
            return int(result.scalar_one())

    def login_attempts(
        self, peer_address: str, since: datetime, limit: int, *, username: str | None = None
    ) -> list[datetime]:
        """When the newest ``limit`` attempts from ``peer_address`` (at ``username``) since
        ``since`` were made, newest first."""
        c = t.login_attempts.c
        query = sa.select(c.at).where(
            c.peer_address == (_clip("peer_address", peer_address) or "-"), c.at > since
        )
        if username is not None:
            query = query.where(c.username == (_clip("actor", username) or "-"))
        with self._read() as conn:
            rows = conn.execute(query.order_by(c.at.desc()).limit(limit)).all()
        return [row.at for row in rows]

    def forget_login_attempts(
        self,
        *,
        attempt_id: int | None = None,
        username: str | None = None,
        peer_address: str | None = None,
    ) -> None:
        """Remove one attempt, or those at ``username`` (from ``peer_address``)."""
        c = t.login_attempts.c
        query = t.login_attempts.delete()
        if attempt_id is not None:
            query = query.where(c.id == attempt_id)
        else:
            assert username is not None
            query = query.where(c.username == (_clip("actor", username) or "-"))
            if peer_address is not None:
                query = query.where(c.peer_address == (_clip("peer_address", peer_address) or "-"))
        with self._write() as conn:
            conn.execute(query)

    def record_login(self, user_id: int, now: datetime, *, new_hash: str | None = None) -> None:
        values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None, "last_login_at": now}
        if new_hash is not None:
            values["password_hash"] = new_hash
        with self._write() as conn:
            conn.execute(t.users.update().where(t.users.c.id == user_id).values(**values))

    def _change_user(self, username: str, values: dict[str, Any], *, end_sessions: bool) -> User:
        with self._write() as conn:
            row = conn.execute(
                sa.select(t.users.c.id).where(t.users.c.username == username)
            ).first()
            if row is None:
                raise StoreError(f"no user {username!r}")
            conn.execute(t.users.update().where(t.users.c.id == row.id).values(**values))
            if end_sessions:
                conn.execute(t.sessions.delete().where(t.sessions.c.user_id == row.id))
        user = self.get_user(username)
        assert user is not None
        return user

    def unlock_user(self, username: str) -> User:
        """Lift every address's lock on the account."""
        user = self._change_user(
            username, {"failed_attempts": 0, "locked_until": None}, end_sessions=False
        )
        self.forget_login_attempts(username=username)
        return user

    def set_password(
        self, username: str, password_hash: str, now: datetime, *, must_change: bool = False
    ) -> User:
        """A new password ends every session of the user."""
        return self._change_user(
            username,
            {
                "password_hash": password_hash,
                "password_changed_at": now,
                "must_change_password": must_change,
                "failed_attempts": 0,
                "locked_until": None,
            },
            end_sessions=True,
        )

    def set_role(self, username: str, role: Role) -> User:
        return self._change_user(username, {"role": role.value}, end_sessions=True)

    def set_disabled(self, username: str, disabled: bool) -> User:
        return self._change_user(username, {"disabled": disabled}, end_sessions=disabled)

    def oidc_login(self, subject: str, username: str, role: Role, now: datetime) -> User:
        """The account of the provider's ``subject`` after a login: made on the first one,
        given the role (and the username) the provider says now on later ones.

        A username that is a local account's, or another subject's, is refused: an OIDC login
        never takes over an account it did not make.
        """
        if not USERNAME.fullmatch(username):
            raise StoreError(
                f"the provider's username {username[:64]!r} is not a valid account name here "
                "(1-64 letters, digits and . _ @ -)"
            )
        c = t.users.c
        with self._write() as conn:
            mine = conn.execute(sa.select(t.users).where(c.oidc_subject == subject)).first()
            named = conn.execute(sa.select(t.users).where(c.username == username)).first()
            if named is not None and (mine is None or named.id != mine.id):
                kind = "a local account" if named.oidc_subject is None else "another person's"
                raise StoreError(f"the username {username!r} is {kind} here")
            values: dict[str, Any] = {"username": username, "role": role.value}
            if mine is None:
                conn.execute(
                    t.users.insert().values(
                        **values,
                        password_hash=OIDC_PASSWORD_HASH,
                        failed_attempts=0,
                        disabled=False,
                        created_at=now,
                        password_changed_at=now,
                        oidc_subject=subject,
                    )
                )
            elif not mine.disabled:
                conn.execute(t.users.update().where(c.id == mine.id).values(**values))
            row = conn.execute(sa.select(t.users).where(c.oidc_subject == subject)).one()
        return _user(row)

    def record_oidc_login(self, user_id: int, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(t.users.update().where(t.users.c.id == user_id).values(last_login_at=now))

    # -- OpenID Connect logins in progress --------------------------------------------------

    def add_oidc_login(
        self, id_hash: str, next_path: str, now: datetime, expires_at: datetime
    ) -> None:
        """Remember a login begun at the provider (and forget the ones that expired)."""
        c = t.oidc_logins.c
        with self._write() as conn:
            conn.execute(t.oidc_logins.delete().where(c.expires_at <= now))
            conn.execute(
                t.oidc_logins.insert().values(
                    id_hash=id_hash, next_path=next_path, created_at=now, expires_at=expires_at
                )
            )

    def take_oidc_login(self, id_hash: str, now: datetime) -> str | None:
        """The page to go to after the login begun with ``id_hash``, once: the login is
        removed. None when there is no such login (never begun, expired or used)."""
        c = t.oidc_logins.c
        with self._write() as conn:
            row = conn.execute(sa.select(t.oidc_logins).where(c.id_hash == id_hash)).first()
            if row is None:
                return None
            gone = conn.execute(t.oidc_logins.delete().where(c.id_hash == id_hash))
        if gone.rowcount != 1 or row.expires_at <= now:
            return None
        return str(row.next_path)

    # -- sessions ---------------------------------------------------------------------------

    def add_session(
        self, id_hash: str, user_id: int, now: datetime, expires_at: datetime, peer_address: str
    ) -> None:
        with self._write() as conn:
            conn.execute(
                t.sessions.insert().values(
                    id_hash=id_hash,
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                    peer_address=_clip("peer_address", peer_address),
                )
            )

    def get_session(self, id_hash: str) -> SessionRow | None:
        s = t.sessions.c
        query = (
            sa.select(
                t.users,
                s.id_hash,
                s.created_at.label("session_created_at"),
                s.last_seen_at,
                s.expires_at,
                s.peer_address,
            )
            .join(t.users, t.users.c.id == s.user_id)
            .where(s.id_hash == id_hash)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return SessionRow(
            id_hash=row.id_hash,
            user=_user(row),
            created_at=row.session_created_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
            peer_address=row.peer_address,
        )

    def touch_session(self, id_hash: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                t.sessions.update().where(t.sessions.c.id_hash == id_hash).values(last_seen_at=now)
            )

    def delete_session(self, id_hash: str) -> None:
        with self._write() as conn:
            conn.execute(t.sessions.delete().where(t.sessions.c.id_hash == id_hash))

    def delete_stale_sessions(self, now: datetime, idle: timedelta) -> int:
        s = t.sessions.c
        with self._write() as conn:
            result = conn.execute(
                t.sessions.delete().where(sa.or_(s.expires_at <= now, s.last_seen_at < now - idle))
            )
        return int(result.rowcount)

    # -- API tokens -------------------------------------------------------------------------

    def add_token(
        self,
        name: str,
        role: Role,
        token_hash: str,
        prefix: str,
        created_by: str,
        now: datetime,
        expires_at: datetime | None,
    ) -> ApiToken:
        if not TOKEN_NAME.fullmatch(name):
            raise StoreError("a token name is 1-64 characters: letters, digits, spaces and . _ @ -")
        with self._write() as conn:
            result = conn.execute(
                t.api_tokens.insert()
                .values(
                    name=name,
                    role=role.value,
                    token_hash=token_hash,
                    prefix=prefix,
                    created_by=_clip("actor", created_by),
                    created_at=now,
                    expires_at=expires_at,
                )
                .returning(t.api_tokens)
            )
            return _token(result.one())

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash)
            ).first()
        return _token(row) if row is not None else None

    def get_token(self, token_id: int) -> ApiToken | None:
        with self._read() as conn:
            row = conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.id == token_id)).first()
        return _token(row) if row is not None else None

    def list_tokens(self) -> list[ApiToken]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.api_tokens).order_by(t.api_tokens.c.id)).all()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: int, now: datetime) -> ApiToken:
        c = t.api_tokens.c
        with self._write() as conn:
            row = conn.execute(sa.select(t.api_tokens).where(c.id == token_id)).first()
            if row is None:
                raise StoreError(f"no API token {token_id}")
            if row.revoked_at is None:
                conn.execute(t.api_tokens.update().where(c.id == token_id).values(revoked_at=now))
        token = self.get_token(token_id)
        assert token is not None
        return token

    def touch_token(self, token_id: int, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                t.api_tokens.update().where(t.api_tokens.c.id == token_id).values(last_used_at=now)
            )

    # -- audit ------------------------------------------------------------------------------

    def append_audit(
        self,
        *,
        at: datetime,
        actor: str,
        role: str | None,
        action: str,
        outcome: str,
        peer_address: str,
        target: str | None = None,
        detail: str | None = None,
    ) -> int:
        if outcome not in t.OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        values: dict[str, Any] = {
            "at": at,
            "actor": _clip("actor", actor) or "-",
            "role": role,
            "action": _clip("action", action),
            "target": _clip("target", target),
            "outcome": outcome,
            "peer_address": _clip("peer_address", peer_address) or "-",
            "detail": _clip("detail", detail),
        }
        with self._write() as conn:
            # The head under the stream's lock (this transaction's BEGIN IMMEDIATE on SQLite):
            # one order even with several workers and controllers on one database.
            heads = chain.locked_heads(conn, (STREAM,), self._audit_heads, AUDIT)
            chain.chain_rows(heads, [values])
            result = conn.execute(t.audit.insert().values(**values).returning(t.audit.c.id))
            entry = int(result.scalar_one())
        self._audit_heads.committed(heads)  # only once committed
        return entry

    def query_audit(
        self,
        *,
        after: datetime | None = None,
        before: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first; ``cursor`` is the id of the last entry of the previous page."""
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"limit must be 1..{MAX_AUDIT_PAGE}")
        c = t.audit.c
        query = sa.select(t.audit)
        if after is not None:
            query = query.where(c.at > after)
        if before is not None:
            query = query.where(c.at < before)
        if actor:
            query = query.where(c.actor == actor)
        if action:
            # "contract" finds contract.accept, contract.reject, ...
            query = query.where(
                sa.or_(c.action == action, c.action.startswith(f"{action}.", autoescape=True))
            )
        if outcome:
            query = query.where(c.outcome == outcome)
        if cursor is not None:
            query = query.where(c.id < cursor)
        query = query.order_by(c.id.desc()).limit(limit + 1)
        with self._read() as conn:
            rows = conn.execute(query).all()
        entries = [
            AuditEntry(
                id=row.id,
                at=row.at,
                actor=row.actor,
                role=row.role,
                action=row.action,
                target=row.target,
                outcome=row.outcome,
                peer_address=row.peer_address,
                detail=row.detail,
            )
            for row in rows[:limit]
        ]
        return entries, (entries[-1].id if len(rows) > limit else None)

    def audit_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.audit)).scalar_one())
