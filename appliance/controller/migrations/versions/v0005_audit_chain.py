"""The audit log's hash chain and its signed checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``controller_audit.chain_seq`` and ``chain_prev``: each entry's place in the audit stream and
the hash of the entry before it (``appliance.controller.auditlog``); unique on ``chain_seq``.
Entries written before this migration keep both null: the chain starts at the first entry
written after it (seq 1, after the genesis hash of 64 zeros), and ``sluis controller audit
verify`` counts the older entries as "from before the chain began" (not vouched for); an entry
without a seq stored after a chained one is reported as inserted. Adding nullable columns
changes no row, so the append-only triggers stay as they are (no table copy on SQLite).

``controller_audit_checkpoints``: the stream's head at a seq, signed in the HSM
(``sluis controller audit checkpoint``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appliance.database import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("controller_audit", sa.Column("chain_seq", ID, nullable=True))
    op.add_column("controller_audit", sa.Column("chain_prev", sa.String(length=64), nullable=True))
    op.create_index(
        op.f("ix_controller_audit_chain_seq"), "controller_audit", ["chain_seq"], unique=True
    )
    op.create_table(
        "controller_audit_checkpoints",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("seq", ID, nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("signed_at", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller_audit_checkpoints")),
    )
    op.create_index(
        op.f("ix_controller_audit_checkpoints_stream_seq"),
        "controller_audit_checkpoints",
        ["stream", "seq"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_controller_audit_checkpoints_stream_seq"),
        table_name="controller_audit_checkpoints",
    )
    op.drop_table("controller_audit_checkpoints")
    op.drop_index(op.f("ix_controller_audit_chain_seq"), table_name="controller_audit")
    op.drop_column("controller_audit", "chain_prev")
    op.drop_column("controller_audit", "chain_seq")
