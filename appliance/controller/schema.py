"""The controller's tables (SQLAlchemy Core; SQLite and PostgreSQL alike).

Every name starts with ``controller_``, so the controller can share a database with the Manager
and the transaction log (its own Alembic version table, ``controller_alembic_version``).

- ``controller_users``: accounts; for a local one the password only as a scrypt hash, for one
  made by an OpenID Connect login the provider's subject (``oidc_subject``) and no usable
  password.
- ``controller_sessions``: browser and API sessions; the session id only as a SHA-256 hash.
- ``controller_api_tokens``: tokens for automation; the token only as a SHA-256 hash.
- ``controller_oidc_logins``: OpenID Connect logins begun and not yet finished (only the
  SHA-256 of the browser's flow cookie; migration 0002).
- ``controller_login_attempts``: password logins being checked or failed, per account name
  and client address, for the login limits (migration 0003).
- ``controller_audit``: who did what, when, from where, with what outcome. Append-only:
  the code has no path that updates or deletes a row, and a trigger in the database refuses
  UPDATE and DELETE (migration 0001). Hash-chained since migration 0005: ``chain_seq`` and
  ``chain_prev`` (``appliance.controller.auditlog``; null on entries from before).
- ``controller_audit_checkpoints``: the audit stream's head, signed in the HSM (0005).
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.database import NAMING_CONVENTION, UtcDateTime

TABLE_PREFIX = "controller_"
ROLES = ("administrator", "security_officer", "service_owner", "auditor")
OUTCOMES = ("success", "failure", "denied")
_ROLE_CHECK = "role IN ('administrator', 'security_officer', 'service_owner', 'auditor')"

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "controller_users",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("locked_until", UtcDateTime(), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("password_changed_at", UtcDateTime(), nullable=False),
    sa.Column("last_login_at", UtcDateTime(), nullable=True),
    sa.Column("oidc_subject", sa.String(512), nullable=True, unique=True),
    # A generated password: the person chooses their own at the first login (0004).
    sa.Column("must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.CheckConstraint(_ROLE_CHECK, name="role"),
)

sessions = sa.Table(
    "controller_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        _ID,
        sa.ForeignKey("controller_users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("peer_address", sa.String(64), nullable=False),
    sa.Index(None, "user_id"),
)

api_tokens = sa.Table(
    "controller_api_tokens",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint(_ROLE_CHECK, name="role"),
)

oidc_logins = sa.Table(
    "controller_oidc_logins",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("next_path", sa.String(1024), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

login_attempts = sa.Table(
    "controller_login_attempts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(80), nullable=False),
    sa.Column("peer_address", sa.String(64), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Index(None, "peer_address", "at"),
    sa.Index(None, "username", "peer_address"),
    sa.Index(None, "at"),
)

audit = sa.Table(
    "controller_audit",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", sa.String(80), nullable=False),
    sa.Column("role", sa.String(32), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(1024), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("peer_address", sa.String(64), nullable=False),
    sa.Column("detail", sa.String(1000), nullable=True),
    sa.Column("chain_seq", _ID, nullable=True),
    sa.Column("chain_prev", sa.String(64), nullable=True),
    sa.CheckConstraint("outcome IN ('success', 'failure', 'denied')", name="outcome"),
    sa.Index(None, "at", "id"),
    sa.Index(None, "actor"),
    sa.Index(None, "action"),
    sa.Index(None, "chain_seq", unique=True),
)

audit_checkpoints = sa.Table(
    "controller_audit_checkpoints",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(32), nullable=False),
    sa.Column("seq", _ID, nullable=False),
    sa.Column("head", sa.String(64), nullable=False),
    sa.Column("signed_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("jws", sa.Text(), nullable=False),
    sa.Index(None, "stream", "seq"),
)
