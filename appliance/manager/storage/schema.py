"""The Manager's tables, as SQLAlchemy Core metadata (one schema for SQLite and PostgreSQL).

What FSC Core requires a Manager to persist, and how it is kept here:

- Contracts, with the content exactly as received (``contracts.content_json``), so the order
  of items in arrays, and with it every content hash and grant hash, is kept byte for byte.
  The columns next to it are copies for queries; the JSON is the truth.
- Grants, one row per grant in contract order (``position``), with the peers and the service
  they name as columns; ``contract_peers`` lists every peer a contract names, so "contracts
  for peer X" is one indexed lookup.
- Accept, reject and revoke signatures (the JWS as received), one per peer and type.
- The Peer ID, name and Manager address of every peer this Manager negotiated with or that
  announced itself, and the certificates (chain without the root) peers signed with.
- An outbox: contracts and signatures to send to other Managers, written in the same
  transaction as the change itself and retried until delivered.
- Services published in this Manager when it is a Group's directory.

Every time is a ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and an ISO text on SQLite, always in
UTC; :class:`UtcDateTime` refuses naive datetimes and returns aware ones.
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.database import NAMING_CONVENTION, UtcDateTime

HASH_LENGTH = 1024  # manager.yaml: grant hashes up to 1024 characters
PEER_ID_LENGTH = 255  # manager.yaml peerID
NAME_LENGTH = 255  # manager.yaml peerName, serviceName
ADDRESS_LENGTH = 255  # manager.yaml peer.manager_address
THUMBPRINT_LENGTH = 128  # x5t#S256 (43 characters) or a hex SHA-256 (64)
ENUM_LENGTH = 64  # GRANT_TYPE_..., HASH_ALGORITHM_..., PROTOCOL_...

SIGNATURE_TYPES = ("accept", "reject", "revoke")
OUTBOX_KINDS = ("contract", "signature")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit on both

# One row (id 1, made by the migration): the number of the last change of any contract's
# state columns (storage/states.py). Its lock orders the changes on PostgreSQL, so a reader
# that saw number N saw every change up to N.
state_changes = sa.Table(
    "state_changes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", _SEQ, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)

contracts = sa.Table(
    "contracts",
    metadata,
    sa.Column("content_hash", sa.String(HASH_LENGTH), primary_key=True),
    sa.Column("group_id", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("iv", sa.String(36), nullable=False),
    sa.Column("hash_algorithm", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("not_before", UtcDateTime(), nullable=False),
    sa.Column("not_after", UtcDateTime(), nullable=False),
    # The canonical JSON of contract.content exactly as received: never re-serialised.
    sa.Column("content_json", sa.Text(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    # The state's inputs that do not depend on the clock (storage/states.py keeps them).
    sa.Column("decision", sa.String(16), nullable=True),  # revoked, rejected or NULL
    sa.Column("accepted_until", UtcDateTime(), nullable=True),
    # The number of the last change of those columns (state_changes): a reader asks for the
    # contracts changed after the number it last saw (the outway's grant refresh).
    sa.Column("state_seq", _SEQ, nullable=False, server_default=sa.text("0")),
    sa.UniqueConstraint("group_id", "iv"),
    sa.Index(None, "state_seq"),
    sa.Index(None, "created_at", "content_hash"),  # the listing order and its cursor
    # A state's contracts in listing order; it holds every column the state needs, so a
    # filter or a count per state reads the index only.
    sa.Index(
        "ix_contracts_state",
        "decision",
        "created_at",
        "content_hash",
        "not_after",
        "not_before",
        "accepted_until",
    ),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column(
        "contract_hash",
        sa.String(HASH_LENGTH),
        sa.ForeignKey("contracts.content_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
    # Not unique on purpose: the specification does not promise it across contracts.
    sa.Column("grant_hash", sa.String(HASH_LENGTH), nullable=False, index=True),
    sa.Column("grant_type", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("data_json", sa.Text(), nullable=False),
    sa.Column("service_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("service_name", sa.String(NAME_LENGTH), nullable=True),
    sa.Column("outway_peer_id", sa.String(PEER_ID_LENGTH), nullable=True, index=True),
    sa.Column("outway_public_key_thumbprint", sa.String(THUMBPRINT_LENGTH), nullable=True),
    sa.Column("directory_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("delegator_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("service_delegator_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Index(None, "service_peer_id", "service_name"),
)

contract_peers = sa.Table(
    "contract_peers",
    metadata,
    sa.Column(
        "contract_hash",
        sa.String(HASH_LENGTH),
        sa.ForeignKey("contracts.content_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("peer_id", sa.String(PEER_ID_LENGTH), primary_key=True),
    # Copies for the listings (storage/states.py): the contract's creation time, whether
    # this peer signed it (accept, reject or revoke), whether the contract is decided (revoked
    # or rejected) and its end, so that "waiting for our approval" is read from
    # ix_contract_peers_unsigned alone. A boolean, not a copy of the decision: PostgreSQL
    # keeps the index order after a boolean equality but not after IS NULL.
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("decided", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("not_after", UtcDateTime(), nullable=False),
    sa.Index(None, "peer_id", "contract_hash"),
    sa.Index("ix_contract_peers_listing", "peer_id", "created_at", "contract_hash"),
    sa.Index(
        "ix_contract_peers_unsigned",
        "peer_id",
        "signed",
        "decided",
        "created_at",
        "contract_hash",
        "not_after",
    ),
)

signatures = sa.Table(
    "signatures",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "contract_hash",
        sa.String(HASH_LENGTH),
        sa.ForeignKey("contracts.content_hash", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("peer_id", sa.String(PEER_ID_LENGTH), nullable=False),
    sa.Column("signature_type", sa.String(16), nullable=False),
    sa.Column("jws", sa.Text(), nullable=False),
    sa.Column("signed_at", UtcDateTime(), nullable=False),
    # Indexed: a certificate stored after its signatures makes them count (states.refresh).
    sa.Column("certificate_thumbprint", sa.String(THUMBPRINT_LENGTH), nullable=False, index=True),
    sa.UniqueConstraint("contract_hash", "peer_id", "signature_type"),
    sa.CheckConstraint(sa.column("signature_type").in_(SIGNATURE_TYPES), name="signature_type"),
)

peers = sa.Table(
    "peers",
    metadata,
    sa.Column("peer_id", sa.String(PEER_ID_LENGTH), primary_key=True),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=True),
    sa.Column("manager_address", sa.String(ADDRESS_LENGTH), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("thumbprint", sa.String(THUMBPRINT_LENGTH), primary_key=True),  # x5t#S256
    sa.Column("peer_id", sa.String(PEER_ID_LENGTH), nullable=False, index=True),
    sa.Column("chain_pem", sa.Text(), nullable=False),
    sa.Column("not_after", UtcDateTime(), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("target_peer_id", sa.String(PEER_ID_LENGTH), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column(
        "contract_hash",
        sa.String(HASH_LENGTH),
        sa.ForeignKey("contracts.content_hash", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("payload_json", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("delivered_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint(sa.column("kind").in_(OUTBOX_KINDS), name="kind"),
    sa.Index(None, "delivered_at", "next_attempt_at"),  # due deliveries
)

services = sa.Table(
    "services",
    metadata,
    sa.Column("peer_id", sa.String(PEER_ID_LENGTH), primary_key=True),
    sa.Column("service_name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column(
        "contract_hash",
        sa.String(HASH_LENGTH),
        sa.ForeignKey("contracts.content_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("protocol", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("inway_address", sa.String(ADDRESS_LENGTH), nullable=True),
    sa.Column("delegator_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index(None, "contract_hash"),
)
