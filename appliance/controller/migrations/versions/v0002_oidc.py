"""Login with OpenID Connect: the provider's subject of an account, and pending logins.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- ``controller_users.oidc_subject``: ``<issuer> <sub>`` for an account made by an OIDC login
  (NULL for a local account, whose password it is); unique, so one person at the provider is
  one account here.
- ``controller_oidc_logins``: a login begun at the provider and not yet finished. Only the
  SHA-256 of the browser's flow cookie is stored; ``state``, ``nonce`` and the PKCE verifier
  are derived from the cookie's value (``appliance.controller.oidc``), so the table holds
  nothing that completes a login. A row is removed when the browser comes back (single use)
  or when it expires.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appliance.database import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("controller_users") as batch:
        batch.add_column(sa.Column("oidc_subject", sa.String(length=512), nullable=True))
        batch.create_unique_constraint(op.f("uq_controller_users_oidc_subject"), ["oidc_subject"])
    op.create_table(
        "controller_oidc_logins",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("next_path", sa.String(length=1024), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_controller_oidc_logins")),
    )
    op.create_index(
        op.f("ix_controller_oidc_logins_expires_at"), "controller_oidc_logins", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_controller_oidc_logins_expires_at"), "controller_oidc_logins")
    op.drop_table("controller_oidc_logins")
    with op.batch_alter_table("controller_users") as batch:
        batch.drop_constraint(op.f("uq_controller_users_oidc_subject"), type_="unique")
        batch.drop_column("oidc_subject")
