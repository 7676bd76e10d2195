"""The contract state's inputs as columns (storage/states.py), backfilled, with their indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

The backfill is written out here in SQL, not taken from ``states.refresh``: a migration stays
what it was when later revisions change the tables. It computes what ``states.refresh`` does
(a signature counts while its certificate is stored and its signer is a peer of the contract).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_BACKFILL_CONTRACTS = """UPDATE contracts SET
  decision = (SELECT CASE max(CASE s.signature_type WHEN 'revoke' THEN 2 ELSE 1 END)
                      WHEN 2 THEN 'revoked' WHEN 1 THEN 'rejected' END
              FROM signatures s
              JOIN certificates ce ON ce.thumbprint = s.certificate_thumbprint
              JOIN contract_peers cp
                ON cp.contract_hash = s.contract_hash AND cp.peer_id = s.peer_id
              WHERE s.contract_hash = contracts.content_hash
                AND s.signature_type IN ('revoke', 'reject')),
  accepted_until = CASE
    WHEN EXISTS (SELECT 1 FROM contract_peers cp
                 WHERE cp.contract_hash = contracts.content_hash AND NOT EXISTS (
                   SELECT 1 FROM signatures s
                   JOIN certificates ce ON ce.thumbprint = s.certificate_thumbprint
                   WHERE s.contract_hash = cp.contract_hash AND s.peer_id = cp.peer_id
                     AND s.signature_type = 'accept'))
    THEN NULL
    ELSE (SELECT min(ce.not_after) FROM signatures s
          JOIN certificates ce ON ce.thumbprint = s.certificate_thumbprint
          JOIN contract_peers cp ON cp.contract_hash = s.contract_hash AND cp.peer_id = s.peer_id
          WHERE s.contract_hash = contracts.content_hash AND s.signature_type = 'accept')
  END"""

_BACKFILL_PEERS = """UPDATE contract_peers SET
  created_at = (SELECT c.created_at FROM contracts c
                WHERE c.content_hash = contract_peers.contract_hash),
  not_after = (SELECT c.not_after FROM contracts c
               WHERE c.content_hash = contract_peers.contract_hash),
  decided = EXISTS (SELECT 1 FROM contracts c
                    WHERE c.content_hash = contract_peers.contract_hash
                      AND c.decision IS NOT NULL),
  signed = EXISTS (SELECT 1 FROM signatures s
                   WHERE s.contract_hash = contract_peers.contract_hash
                     AND s.peer_id = contract_peers.peer_id)"""


def upgrade() -> None:
    op.add_column("contracts", sa.Column("decision", sa.String(length=16), nullable=True))
    op.add_column(
        "contracts", sa.Column("accepted_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "contract_peers", sa.Column("created_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "contract_peers",
        sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "contract_peers",
        sa.Column("decided", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "contract_peers", sa.Column("not_after", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(_BACKFILL_CONTRACTS)
    op.execute(_BACKFILL_PEERS)
    with op.batch_alter_table("contract_peers") as batch:
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("not_after", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "ix_contracts_state",
        "contracts",
        ["decision", "created_at", "content_hash", "not_after", "not_before", "accepted_until"],
    )
    op.create_index(
        "ix_contract_peers_listing", "contract_peers", ["peer_id", "created_at", "contract_hash"]
    )
    op.create_index(
        "ix_contract_peers_unsigned",
        "contract_peers",
        ["peer_id", "signed", "decided", "created_at", "contract_hash", "not_after"],
    )
    op.create_index(
        op.f("ix_signatures_certificate_thumbprint"), "signatures", ["certificate_thumbprint"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signatures_certificate_thumbprint"), table_name="signatures")
    op.drop_index("ix_contract_peers_unsigned", table_name="contract_peers")
    op.drop_index("ix_contract_peers_listing", table_name="contract_peers")
    op.drop_index("ix_contracts_state", table_name="contracts")
    # Not batch_alter_table: on SQLite it copies the table and drops the old one, and dropping
    # contracts cascades to every table that refers to it. SQLite 3.35+ drops columns itself.
    op.drop_column("contract_peers", "not_after")
    op.drop_column("contract_peers", "decided")
    op.drop_column("contract_peers", "signed")
    op.drop_column("contract_peers", "created_at")
    op.drop_column("contracts", "accepted_until")
    op.drop_column("contracts", "decision")
