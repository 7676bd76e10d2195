"""The hash chain: each record's place in its stream and its predecessor's hash.

Records stored before this revision keep no chain position (``chain_seq`` null): the chain of
each stream starts at the first record stored after it, at seq 1 after the genesis hash (64
zeros). They are not backfilled: nothing vouches for what was stored before, and a hash
computed now would only vouch for what the database holds now.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("txlog_records", sa.Column("chain_seq", SEQ, nullable=True))
    op.add_column("txlog_records", sa.Column("chain_prev", sa.String(length=64), nullable=True))
    op.create_index(
        op.f("ix_txlog_records_direction_chain_seq"),
        "txlog_records",
        ["direction", "chain_seq"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_txlog_records_direction_chain_seq"), table_name="txlog_records")
    with op.batch_alter_table("txlog_records") as batch:
        batch.drop_column("chain_prev")
        batch.drop_column("chain_seq")
