"""The Manager's first schema: contracts, grants, signatures, peers, certificates, outbox, services.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

HASH = sa.String(length=1024)
PEER_ID = sa.String(length=255)
NAME = sa.String(length=255)
ADDRESS = sa.String(length=255)
THUMBPRINT = sa.String(length=128)
ENUM = sa.String(length=64)


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _contract_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["contract_hash"],
        ["contracts.content_hash"],
        name=op.f(f"fk_{table}_contract_hash_contracts"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("content_hash", HASH, nullable=False),
        sa.Column("group_id", NAME, nullable=False),
        sa.Column("iv", sa.String(length=36), nullable=False),
        sa.Column("hash_algorithm", ENUM, nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("not_before", _time(), nullable=False),
        sa.Column("not_after", _time(), nullable=False),
        sa.Column("content_json", sa.Text(), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_contracts")),
        sa.UniqueConstraint("group_id", "iv", name=op.f("uq_contracts_group_id_iv")),
    )
    op.create_index(
        op.f("ix_contracts_created_at_content_hash"), "contracts", ["created_at", "content_hash"]
    )

    op.create_table(
        "grants",
        sa.Column("contract_hash", HASH, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("grant_hash", HASH, nullable=False),
        sa.Column("grant_type", ENUM, nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("service_peer_id", PEER_ID, nullable=True),
        sa.Column("service_name", NAME, nullable=True),
        sa.Column("outway_peer_id", PEER_ID, nullable=True),
        sa.Column("outway_public_key_thumbprint", THUMBPRINT, nullable=True),
        sa.Column("directory_peer_id", PEER_ID, nullable=True),
        sa.Column("delegator_peer_id", PEER_ID, nullable=True),
        sa.Column("service_delegator_peer_id", PEER_ID, nullable=True),
        _contract_fk("grants"),
        sa.PrimaryKeyConstraint("contract_hash", "position", name=op.f("pk_grants")),
    )
    op.create_index(op.f("ix_grants_grant_hash"), "grants", ["grant_hash"])
    op.create_index(op.f("ix_grants_outway_peer_id"), "grants", ["outway_peer_id"])
    op.create_index(
        op.f("ix_grants_service_peer_id_service_name"),
        "grants",
        ["service_peer_id", "service_name"],
    )

    op.create_table(
        "contract_peers",
        sa.Column("contract_hash", HASH, nullable=False),
        sa.Column("peer_id", PEER_ID, nullable=False),
        _contract_fk("contract_peers"),
        sa.PrimaryKeyConstraint("contract_hash", "peer_id", name=op.f("pk_contract_peers")),
    )
    op.create_index(
        op.f("ix_contract_peers_peer_id_contract_hash"),
        "contract_peers",
        ["peer_id", "contract_hash"],
    )

    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contract_hash", HASH, nullable=False),
        sa.Column("peer_id", PEER_ID, nullable=False),
        sa.Column("signature_type", sa.String(length=16), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.Column("signed_at", _time(), nullable=False),
        sa.Column("certificate_thumbprint", THUMBPRINT, nullable=False),
        sa.CheckConstraint(
            "signature_type IN ('accept', 'reject', 'revoke')",
            name=op.f("ck_signatures_signature_type"),
        ),
        _contract_fk("signatures"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signatures")),
        sa.UniqueConstraint(
            "contract_hash",
            "peer_id",
            "signature_type",
            name=op.f("uq_signatures_contract_hash_peer_id_signature_type"),
        ),
    )

    op.create_table(
        "peers",
        sa.Column("peer_id", PEER_ID, nullable=False),
        sa.Column("name", NAME, nullable=True),
        sa.Column("manager_address", ADDRESS, nullable=True),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("peer_id", name=op.f("pk_peers")),
    )

    op.create_table(
        "certificates",
        sa.Column("thumbprint", THUMBPRINT, nullable=False),
        sa.Column("peer_id", PEER_ID, nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("not_after", _time(), nullable=False),
        sa.PrimaryKeyConstraint("thumbprint", name=op.f("pk_certificates")),
    )
    op.create_index(op.f("ix_certificates_peer_id"), "certificates", ["peer_id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_peer_id", PEER_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("contract_hash", HASH, nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _time(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("delivered_at", _time(), nullable=True),
        sa.CheckConstraint("kind IN ('contract', 'signature')", name=op.f("ck_outbox_kind")),
        _contract_fk("outbox"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_contract_hash"), "outbox", ["contract_hash"])
    op.create_index(
        op.f("ix_outbox_delivered_at_next_attempt_at"),
        "outbox",
        ["delivered_at", "next_attempt_at"],
    )

    op.create_table(
        "services",
        sa.Column("peer_id", PEER_ID, nullable=False),
        sa.Column("service_name", NAME, nullable=False),
        sa.Column("contract_hash", HASH, nullable=False),
        sa.Column("protocol", ENUM, nullable=False),
        sa.Column("inway_address", ADDRESS, nullable=True),
        sa.Column("delegator_peer_id", PEER_ID, nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        _contract_fk("services"),
        sa.PrimaryKeyConstraint(
            "peer_id", "service_name", "contract_hash", name=op.f("pk_services")
        ),
    )
    op.create_index(op.f("ix_services_contract_hash"), "services", ["contract_hash"])


def downgrade() -> None:
    for table in (
        "services",
        "outbox",
        "certificates",
        "peers",
        "signatures",
        "contract_peers",
        "grants",
        "contracts",
    ):
        op.drop_table(table)
