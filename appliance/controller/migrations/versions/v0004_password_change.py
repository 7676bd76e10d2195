"""An account whose password was generated must choose its own at the first login.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

``controller_users.must_change_password``: set for an account made with a generated password
(the Users page, ``POST /users`` or ``sluis controller create-user`` without one); cleared
when the person sets a password of their own. Existing accounts keep working as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("controller_users") as batch:
        batch.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("controller_users") as batch:
        batch.drop_column("must_change_password")
