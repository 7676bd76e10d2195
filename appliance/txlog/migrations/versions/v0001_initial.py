"""The transaction log's first schema: txlog_records.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

PEER_ID = sa.String(length=255)


def upgrade() -> None:
    op.create_table(
        "txlog_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=32), nullable=False),
        sa.Column("grant_hash", sa.String(length=1024), nullable=False),
        sa.Column("service_name", sa.String(length=255), nullable=False),
        sa.Column("source_outway_peer_id", PEER_ID, nullable=False),
        sa.Column("source_delegator_peer_id", PEER_ID, nullable=True),
        sa.Column("destination_service_peer_id", PEER_ID, nullable=False),
        sa.Column("destination_delegator_peer_id", PEER_ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processing_activity_id", sa.String(length=200), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("data_subject_pseudonym", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "direction IN ('DIRECTION_INCOMING', 'DIRECTION_OUTGOING')",
            name=op.f("ck_txlog_records_direction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_txlog_records")),
        sa.UniqueConstraint(
            "transaction_id", "direction", name=op.f("uq_txlog_records_transaction_id_direction")
        ),
    )
    for columns in (
        ("created_at", "id"),
        ("source_outway_peer_id",),
        ("destination_service_peer_id",),
        ("source_delegator_peer_id",),
        ("destination_delegator_peer_id",),
        ("data_subject_pseudonym",),
    ):
        op.create_index(
            op.f(f"ix_txlog_records_{'_'.join(columns)}"), "txlog_records", list(columns)
        )


def downgrade() -> None:
    op.drop_table("txlog_records")
