"""``GET /v1/logs`` reads a page per peer column: one index ``(column, created_at, id)`` for
each of the four peer columns replaces the single-column one that led with the same column.

With them a page of records naming a peer is four short index ranges, each in the page's
order and starting at its cursor, instead of every record naming the peer read and sorted
(``TransactionLog.query``; docs/performance.md, "Cost growth"). Building them reads the
table once: on PostgreSQL writes to the log wait meanwhile (about a second per 100,000
records on the development machine).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

PEER_COLUMNS = (
    "source_outway_peer_id",
    "destination_service_peer_id",
    "source_delegator_peer_id",
    "destination_delegator_peer_id",
)


def upgrade() -> None:
    for column in PEER_COLUMNS:
        op.create_index(
            op.f(f"ix_txlog_records_{column}_created_at_id"),
            "txlog_records",
            [column, "created_at", "id"],
        )
        op.drop_index(op.f(f"ix_txlog_records_{column}"), table_name="txlog_records")


def downgrade() -> None:
    for column in PEER_COLUMNS:
        op.create_index(op.f(f"ix_txlog_records_{column}"), "txlog_records", [column])
        op.drop_index(op.f(f"ix_txlog_records_{column}_created_at_id"), table_name="txlog_records")
