"""The transaction log's table, as SQLAlchemy Core metadata (SQLite and PostgreSQL alike).

One row per record, ``txlog_records``; every name starts with ``txlog_`` so the log can share a
database with the Manager (its own Alembic version table, ``txlog_alembic_version``). There is
no column for message content: the columns are the FSC fields and the three purpose fields.

- ``id``: insertion order; with ``created_at`` the sort and cursor key of ``/logs``.
- ``(transaction_id, direction)`` is unique: an Outway and an Inway of one appliance may log
  the same transaction, each once.
- ``(direction, chain_seq)`` is unique: one order per stream (the hash chain, ``chain.py``).
- One index ``(peer column, created_at, id)`` per peer column, for a page of "records naming
  peer X" in order (the ``/logs`` filter: a range of each), and one on
  ``data_subject_pseudonym`` for a privacy officer's search about one person.

``txlog_checkpoints`` holds the signed checkpoints (``checkpoint.py``): a stream's head at a
seq, signed in the HSM. ``stream``, ``seq`` and ``head`` repeat what the JWS says, for the
index; verification trusts only the signed payload and reports a row that differs from it.
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.database import NAMING_CONVENTION, UtcDateTime

TABLE_PREFIX = "txlog_"
PEER_ID_LENGTH = 255  # the column; records are checked against logging.yaml's 20
NAME_LENGTH = 255
HASH_LENGTH = 1024
TRANSACTION_ID_LENGTH = 36
DIRECTION_LENGTH = 32
PROCESSING_ACTIVITY_LENGTH = 200
TRACE_ID_LENGTH = 32
PSEUDONYM_LENGTH = 64
CHAIN_HASH_LENGTH = 64  # hexadecimal SHA-256

# The record's columns as the export and the hash chain name them.
FSC_FIELDS = (
    "transaction_id",
    "direction",
    "grant_hash",
    "service_name",
    "source_outway_peer_id",
    "source_delegator_peer_id",
    "destination_service_peer_id",
    "destination_delegator_peer_id",
)
PURPOSE_FIELDS = ("processing_activity_id", "trace_id", "data_subject_pseudonym")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
# Ids and sequence numbers: 64-bit on PostgreSQL; SQLite's INTEGER (64-bit already) is the
# one type it autoincrements.
_BIG_INTEGER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

records = sa.Table(
    "txlog_records",
    metadata,
    sa.Column(
        "id",
        _BIG_INTEGER,
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("transaction_id", sa.String(TRANSACTION_ID_LENGTH), nullable=False),
    sa.Column("direction", sa.String(DIRECTION_LENGTH), nullable=False),
    sa.Column("grant_hash", sa.String(HASH_LENGTH), nullable=False),
    sa.Column("service_name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("source_outway_peer_id", sa.String(PEER_ID_LENGTH), nullable=False),
    sa.Column("source_delegator_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("destination_service_peer_id", sa.String(PEER_ID_LENGTH), nullable=False),
    sa.Column("destination_delegator_peer_id", sa.String(PEER_ID_LENGTH), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # Sluis-local purpose binding (AVG); never part of the FSC API output.
    sa.Column("processing_activity_id", sa.String(PROCESSING_ACTIVITY_LENGTH), nullable=True),
    sa.Column("trace_id", sa.String(TRACE_ID_LENGTH), nullable=True),
    sa.Column("data_subject_pseudonym", sa.String(PSEUDONYM_LENGTH), nullable=True),
    # The hash chain (appliance.txlog.chain): the position in the direction's stream and the
    # hash of the record before it; null on records stored before the chain began.
    sa.Column("chain_seq", _BIG_INTEGER, nullable=True),
    sa.Column("chain_prev", sa.String(CHAIN_HASH_LENGTH), nullable=True),
    sa.UniqueConstraint("transaction_id", "direction"),
    sa.CheckConstraint(
        "direction IN ('DIRECTION_INCOMING', 'DIRECTION_OUTGOING')", name="direction"
    ),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "source_outway_peer_id", "created_at", "id"),
    sa.Index(None, "destination_service_peer_id", "created_at", "id"),
    sa.Index(None, "source_delegator_peer_id", "created_at", "id"),
    sa.Index(None, "destination_delegator_peer_id", "created_at", "id"),
    sa.Index(None, "data_subject_pseudonym"),
    sa.Index(None, "direction", "chain_seq", unique=True),
)

CHECKPOINT_REASON_LENGTH = 16

checkpoints = sa.Table(
    "txlog_checkpoints",
    metadata,
    sa.Column(
        "id",
        _BIG_INTEGER,
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("stream", sa.String(DIRECTION_LENGTH), nullable=False),
    sa.Column("seq", _BIG_INTEGER, nullable=False),
    sa.Column("head", sa.String(CHAIN_HASH_LENGTH), nullable=False),
    sa.Column("signed_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.String(CHECKPOINT_REASON_LENGTH), nullable=False),
    sa.Column("jws", sa.Text(), nullable=False),
    sa.CheckConstraint("stream IN ('DIRECTION_INCOMING', 'DIRECTION_OUTGOING')", name="stream"),
    sa.Index(None, "stream", "seq"),
)
