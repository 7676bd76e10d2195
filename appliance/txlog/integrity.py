"""The log's integrity now, cheaply enough for a status page and a monitoring check.

A full ``sluis txlog verify`` reads every record; this reads per stream only the last signed
checkpoint, the record at its seq and the records after it (at most ``check_limit``):

- the last checkpoint's signature, against the organisation's certificates;
- the record at its seq still hashes to its head (else it, or one before it, was changed and
  the chain recomputed), and the stream is not shorter than it (else the tail was cut);
- the records after it link on from it (the same check the checkpointer makes before it signs);
- they are not older than ``max_unsigned_age`` (else the checkpoint service is not running, or
  refuses to sign a broken chain: its log says which).

Every record up to the last checkpoint was verified when that checkpoint was signed (the
checkpointer verifies from the checkpoint before); a change to those afterwards shows only to a
full ``verify``, which an auditor runs.

For any chained log (``log``: the transaction log by default, or the controller's audit log).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from appliance.txlog import chain
from appliance.txlog.chain import TXLOG, Log
from appliance.txlog.checkpoint import Certificates, Checkpoint, CheckpointError, verify_checkpoint
from appliance.txlog.database import reading

DEFAULT_MAX_UNSIGNED_AGE = timedelta(minutes=15)
DEFAULT_CHECK_LIMIT = 100_000


@dataclass(frozen=True)
class StreamIntegrity:
    """One stream: its head, its last signed checkpoint and what is wrong (None: nothing)."""

    stream: str
    head_seq: int
    checkpoint: Checkpoint | None  # the last one, verified unless ``problem`` says otherwise
    unsigned: int  # records after it (the first ``check_limit`` of them checked)
    unsigned_since: datetime | None  # the creation time of the first of them
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        checkpoint = self.checkpoint
        return {
            "stream": self.stream,
            "head_seq": self.head_seq,
            "checkpoint": checkpoint.to_json() if checkpoint is not None else None,
            "unsigned": self.unsigned,
            "unsigned_since": chain.timestamp(self.unsigned_since)
            if self.unsigned_since is not None
            else None,
            "problem": self.problem,
        }


def _in_stream(log: Log, stream: str) -> sa.ColumnElement[bool]:
    c = log.records.c
    return c[log.stream_column] == stream if log.stream_column else sa.true()


def _rows(engine: Engine, log: Log, stream: str, after: int, limit: int) -> list[dict[str, Any]]:
    c = log.records.c
    with reading(engine).connect() as connection:
        rows = connection.execute(
            sa.select(log.records)
            .where(_in_stream(log, stream), c.chain_seq > after)
            .order_by(c.chain_seq)
            .limit(limit)
        )
        return [dict(row._mapping) for row in rows]


def _last_checkpoint(engine: Engine, log: Log, stream: str) -> Checkpoint | None:
    c = log.checkpoints.c
    with reading(engine).connect() as connection:
        row = connection.execute(
            sa.select(log.checkpoints)
            .where(c.stream == stream)
            .order_by(c.seq.desc(), c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return Checkpoint(
        row.stream, int(row.seq), row.head, row.signed_at, row.reason, row.jws, int(row.id)
    )


def _head_seq(engine: Engine, log: Log, stream: str) -> int:
    c = log.records.c
    with reading(engine).connect() as connection:
        seq = connection.execute(
            sa.select(sa.func.max(c.chain_seq)).where(_in_stream(log, stream))
        ).scalar()
    return int(seq) if seq is not None else 0


def _created(log: Log, row: dict[str, Any]) -> datetime:
    moment: datetime = row[log.moment]
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def stream_integrity(
    engine: Engine,
    stream: str,
    certificates: Certificates,
    *,
    now: datetime | None = None,
    max_unsigned_age: timedelta = DEFAULT_MAX_UNSIGNED_AGE,
    check_limit: int = DEFAULT_CHECK_LIMIT,
    log: Log = TXLOG,
) -> StreamIntegrity:
    now = now or datetime.now(UTC)
    checkpoint = _last_checkpoint(engine, log, stream)
    base = checkpoint.seq - 1 if checkpoint is not None else 0
    rows = _rows(engine, log, stream, base, check_limit + 1)

    head = _head_seq(engine, log, stream)

    def result(problem: str | None, unsigned: list[dict[str, Any]]) -> StreamIntegrity:
        since = _created(log, unsigned[0]) if unsigned else None
        after = head - checkpoint.seq if checkpoint is not None else head
        if problem is None and since is not None and now - since > max_unsigned_age:
            problem = (
                f"{after} record(s) since {chain.timestamp(since)} not signed: is the "
                "checkpoint service running (its log says whether it refuses a broken chain)?"
            )
        return StreamIntegrity(stream, head, checkpoint, max(after, 0), since, problem)

    if checkpoint is None:
        if len(rows) > check_limit:
            return result(f"no signed checkpoint, and more than {check_limit} records", rows)
        verified = chain.verify(rows, log=log).streams[stream].broken
        return result(verified.describe() if verified is not None else None, rows)
    try:
        verify_checkpoint(checkpoint, certificates, log)
    except CheckpointError as exc:
        return result(f"the last {checkpoint.describe()} does not verify: {exc}", [])
    if not rows:
        return result(
            f"the tail was cut: {checkpoint.describe()} is seq {checkpoint.seq}, the stream "
            "ends before it",
            [],
        )
    if int(rows[0]["chain_seq"]) != checkpoint.seq:
        return result(
            f"the record at seq {checkpoint.seq}, which {checkpoint.describe()} signed, is "
            "missing (deleted)",
            [],
        )
    signed = rows[0]
    if log.hash(signed, checkpoint.seq, signed["chain_prev"]) != checkpoint.head:
        return result(
            f"the record at seq {checkpoint.seq} (log_id {signed['id']}) is not the one "
            f"{checkpoint.describe()} signed: it, or a record before it, was changed",
            [],
        )
    unsigned = rows[1 : check_limit + 1]
    broken = (
        chain.verify(unsigned, starts={stream: (checkpoint.seq, checkpoint.head)}, log=log)
        .streams[stream]
        .broken
    )
    if broken is not None:
        return result(broken.describe(), unsigned)
    return result(None, unsigned)


def integrity(
    engine: Engine,
    certificates: Certificates,
    *,
    now: datetime | None = None,
    max_unsigned_age: timedelta = DEFAULT_MAX_UNSIGNED_AGE,
    check_limit: int = DEFAULT_CHECK_LIMIT,
    log: Log = TXLOG,
) -> list[StreamIntegrity]:
    """Every stream of ``log`` (see the module text); read only."""
    return [
        stream_integrity(
            engine,
            stream,
            certificates,
            now=now,
            max_unsigned_age=max_unsigned_age,
            check_limit=check_limit,
            log=log,
        )
        for stream in log.streams
    ]
