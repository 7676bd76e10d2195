"""Login attempts, for the limits per (account, address) and per address.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

``controller_login_attempts``: one row per password login that is being checked or failed,
with the account name tried (known or not, in a safe form) and the client address. Shared by
every worker (it is in the database), so the limits hold across workers. A success removes
the rows of its (account, address); rows older than the longest window are pruned.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appliance.database import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE = "controller_login_attempts"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("peer_address", sa.String(length=64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
    )
    op.create_index(op.f(f"ix_{TABLE}_peer_address_at"), TABLE, ["peer_address", "at"])
    op.create_index(op.f(f"ix_{TABLE}_username_peer_address"), TABLE, ["username", "peer_address"])
    op.create_index(op.f(f"ix_{TABLE}_at"), TABLE, ["at"])


def downgrade() -> None:
    op.drop_table(TABLE)
