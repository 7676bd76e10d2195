"""Retention: delete the records older than a date, keeping the rest verifiable.

Per stream the cut is the last record created before the date, but never the stream's last
record (the head stays, so that the stream and its newest checkpoint still meet). The record
at the cut is signed as a checkpoint (reason ``purge``) before anything is deleted: the first
record kept links to it, and ``sluis txlog verify`` starts the stream there. A stream whose
first records are missing without a checkpoint at the cut is reported as deleted.

Records from before the chain began (no ``chain_seq``) are deleted by date alone. The
deletion needs ``DELETE`` on ``txlog_records``, which the gateways' runtime role does not have:
run the purge as the database's owner (on SQLite: root, who owns the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from appliance.txlog import schema
from appliance.txlog.checkpoint import Checkpoint, Checkpointer
from appliance.txlog.database import reading


@dataclass
class PurgeResult:
    deleted: int = 0  # records
    cuts: dict[str, int] = field(default_factory=dict)  # stream -> the last seq deleted
    checkpoints: list[Checkpoint] = field(default_factory=list)  # signed for the cuts


def cuts(engine: Engine, before: datetime) -> dict[str, int]:
    """Per stream the last ``chain_seq`` created before ``before``, below the stream's head."""
    c = schema.records.c
    older = (
        sa.select(c.direction, sa.func.max(c.chain_seq))
        .where(c.chain_seq.is_not(None), c.created_at < before)
        .group_by(c.direction)
    )
    heads = sa.select(c.direction, sa.func.max(c.chain_seq)).group_by(c.direction)
    with reading(engine).connect() as connection:
        last_old = {str(stream): int(seq) for stream, seq in connection.execute(older) if seq}
        last = {str(stream): int(seq) for stream, seq in connection.execute(heads) if seq}
    found = {stream: min(seq, last[stream] - 1) for stream, seq in last_old.items()}
    return {stream: seq for stream, seq in found.items() if seq >= 1}


def purge(engine: Engine, checkpointer: Checkpointer, before: datetime) -> PurgeResult:
    """Sign a checkpoint at each stream's cut, then delete the records up to it (one
    transaction). Nothing is deleted in a stream whose checkpoint could not be signed
    (:class:`~appliance.txlog.checkpoint.CheckpointError` is raised first)."""
    if before.tzinfo is None:
        raise ValueError("give the date with its time zone")
    before = before.astimezone(UTC)
    result = PurgeResult(cuts=cuts(engine, before))
    for stream, seq in sorted(result.cuts.items()):
        signed = checkpointer.sign_at(stream, seq, "purge")
        if signed is not None:
            result.checkpoints.append(signed)
    c = schema.records.c
    with engine.begin() as connection:
        for stream, seq in sorted(result.cuts.items()):
            result.deleted += connection.execute(
                sa.delete(schema.records).where(c.direction == stream, c.chain_seq <= seq)
            ).rowcount
        result.deleted += connection.execute(
            sa.delete(schema.records).where(c.chain_seq.is_(None), c.created_at < before)
        ).rowcount
    return result
