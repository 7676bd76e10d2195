"""A change number for the contract state columns, so that a reader (each outway worker's
grant refresh) reads only the contracts whose state columns changed since it last looked.

``state_changes`` holds one row (id 1): the number of the last change. Every transaction that
recomputes state columns (``states.refresh``) adds one to it and writes the new number into
the changed contracts' ``state_seq``. The row's lock orders those transactions on PostgreSQL,
so the numbers become visible in order: a reader that has seen number N has seen every change
up to N. Existing contracts start at 0, the counter at 0.

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

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    changes = op.create_table(
        "state_changes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_state_changes_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_changes")),
    )
    op.bulk_insert(changes, [{"id": 1, "seq": 0}])
    op.add_column(
        "contracts", sa.Column("state_seq", SEQ, nullable=False, server_default=sa.text("0"))
    )
    op.create_index(op.f("ix_contracts_state_seq"), "contracts", ["state_seq"])


def downgrade() -> None:
    op.drop_index(op.f("ix_contracts_state_seq"), table_name="contracts")
    # Not batch_alter_table (see 0002): SQLite 3.35+ drops a column itself.
    op.drop_column("contracts", "state_seq")
    op.drop_table("state_changes")
