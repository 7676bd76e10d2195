"""The controller's first schema: users, sessions, API tokens and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

The audit log refuses UPDATE and DELETE in the database itself: a trigger on SQLite
(``RAISE(ABORT, ...)``) and on PostgreSQL (a trigger function that raises). The application has
no path that changes or removes an audit row either; the trigger makes sure no other one does
by accident (a migration, a maintenance script). A database owner can still drop the trigger:
ship the audit log to the SIEM as well (docs/controller.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appliance.database import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ROLE_CHECK = "role IN ('administrator', 'security_officer', 'service_owner', 'auditor')"
APPEND_ONLY_MESSAGE = "controller_audit is append-only"


def upgrade() -> None:
    op.create_table(
        "controller_users",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("password_changed_at", UtcDateTime(), nullable=False),
        sa.Column("last_login_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint(ROLE_CHECK, name=op.f("ck_controller_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller_users")),
        sa.UniqueConstraint("username", name=op.f("uq_controller_users_username")),
    )
    op.create_table(
        "controller_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("peer_address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["controller_users.id"],
            name=op.f("fk_controller_sessions_user_id_controller_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_controller_sessions")),
    )
    op.create_index(op.f("ix_controller_sessions_user_id"), "controller_sessions", ["user_id"])
    op.create_table(
        "controller_api_tokens",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint(ROLE_CHECK, name=op.f("ck_controller_api_tokens_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_controller_api_tokens_token_hash")),
    )
    op.create_table(
        "controller_audit",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("peer_address", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('success', 'failure', 'denied')",
            name=op.f("ck_controller_audit_outcome"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller_audit")),
    )
    for columns in (("at", "id"), ("actor",), ("action",)):
        op.create_index(
            op.f(f"ix_controller_audit_{'_'.join(columns)}"), "controller_audit", list(columns)
        )
    _append_only_triggers()


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER controller_audit_no_{event.lower()} "
                f"BEFORE {event} ON controller_audit "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION controller_audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER controller_audit_append_only "
            "BEFORE UPDATE OR DELETE ON controller_audit "
            "FOR EACH ROW EXECUTE FUNCTION controller_audit_append_only()"
        )
        # TRUNCATE bypasses row triggers: refuse it with a statement trigger.
        op.execute(
            "CREATE TRIGGER controller_audit_no_truncate "
            "BEFORE TRUNCATE ON controller_audit "
            "FOR EACH STATEMENT EXECUTE FUNCTION controller_audit_append_only()"
        )
    else:  # pragma: no cover - migrations run only on the two supported databases
        raise RuntimeError(f"unsupported database {dialect!r}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE controller_audit")
        op.execute("DROP FUNCTION controller_audit_append_only()")
    else:
        op.drop_table("controller_audit")
    op.drop_table("controller_api_tokens")
    op.drop_index(op.f("ix_controller_sessions_user_id"), "controller_sessions")
    op.drop_table("controller_sessions")
    op.drop_table("controller_users")
