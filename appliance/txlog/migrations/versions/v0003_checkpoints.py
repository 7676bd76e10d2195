"""Signed checkpoints: a stream's head at a seq, signed in the HSM (``appliance.txlog.checkpoint``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "txlog_checkpoints",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("seq", ID, nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "stream IN ('DIRECTION_INCOMING', 'DIRECTION_OUTGOING')",
            name=op.f("ck_txlog_checkpoints_stream"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_txlog_checkpoints")),
    )
    op.create_index(op.f("ix_txlog_checkpoints_stream_seq"), "txlog_checkpoints", ["stream", "seq"])


def downgrade() -> None:
    op.drop_index(op.f("ix_txlog_checkpoints_stream_seq"), table_name="txlog_checkpoints")
    op.drop_table("txlog_checkpoints")
