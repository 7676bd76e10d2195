"""The transaction log, read for operators and auditors: filters, pages and a CSV export.

Reads ``txlog_records`` (the table both gateways write, ``appliance.txlog.schema``) with
read-only transactions. Unlike ``GET /v1/logs`` for other peers, the controller shows every
record of this appliance, in both directions, and can filter by direction and peer. Only the
FSC fields and two purpose fields are shown (processing activity, trace id); the data-subject
pseudonym is not, and no message content exists to show.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from appliance.database import beyond
from appliance.txlog import schema
from appliance.txlog.database import create_engine, migrate, reading

MAX_LIMIT = 1000
EXPORT_MAX_ROWS = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
DIRECTIONS = ("DIRECTION_INCOMING", "DIRECTION_OUTGOING")
CSV_COLUMNS = (
    "created_at",
    "transaction_id",
    "direction",
    "service_name",
    "source_outway_peer_id",
    "source_delegator_peer_id",
    "destination_service_peer_id",
    "destination_delegator_peer_id",
    "grant_hash",
    "processing_activity_id",
    "trace_id",
)


class CursorError(ValueError):
    """A cursor that this reader did not hand out."""


UUID_LENGTH = 36


@dataclass(frozen=True)
class TransactionFilter:
    after: datetime | None = None  # inclusive
    before: datetime | None = None  # exclusive
    peer_id: str | None = None  # either end, or a delegator
    service_name: str | None = None
    direction: str | None = None
    transaction_id: str | None = None  # the whole id, or its start
    grant_hash: str | None = None

    def __post_init__(self) -> None:
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
        for moment in (self.after, self.before):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("times must carry a time zone")


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _record(row: Any) -> dict[str, Any]:
    return {
        "transaction_id": row.transaction_id,
        "direction": row.direction,
        "created_at": _iso(row.created_at),
        "grant_hash": row.grant_hash,
        "service_name": row.service_name,
        "source_outway_peer_id": row.source_outway_peer_id,
        "source_delegator_peer_id": row.source_delegator_peer_id,
        "destination_service_peer_id": row.destination_service_peer_id,
        "destination_delegator_peer_id": row.destination_delegator_peer_id,
        "processing_activity_id": row.processing_activity_id,
        "trace_id": row.trace_id,
    }


PEER_FIELDS = (
    "source_outway_peer_id",
    "source_delegator_peer_id",
    "destination_service_peer_id",
    "destination_delegator_peer_id",
)


def peers_of(records: list[dict[str, Any]]) -> set[str]:
    """The peers a page of records names: the page looks up their names only, not every
    known peer's (10,000 rows per view at 10,000 peers)."""
    return {record[field] for record in records for field in PEER_FIELDS if record[field]}


def _csv_safe(value: Any) -> str:
    """No spreadsheet formulas from a field (CSV injection): prefix them with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class TransactionReader:
    """Reads the transaction log of ``[txlog] database``; with no log configured, nothing."""

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str | None) -> TransactionReader:
        if not url:
            return cls(None)
        engine = create_engine(url)
        try:
            # The log's own migrations (idempotent, locked): the table exists before the
            # gateways first wrote to it.
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def configured(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine | None:
        """The log's engine (None: no log configured), shared with the /integrity page."""
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _select(self, where: TransactionFilter) -> Any:
        c = schema.records.c
        query = sa.select(schema.records)
        if where.after is not None:
            query = query.where(c.created_at >= where.after)
        if where.before is not None:
            query = query.where(c.created_at < where.before)
        if where.peer_id:
            query = query.where(
                sa.or_(
                    c.source_outway_peer_id == where.peer_id,
                    c.destination_service_peer_id == where.peer_id,
                    c.source_delegator_peer_id == where.peer_id,
                    c.destination_delegator_peer_id == where.peer_id,
                )
            )
        if where.service_name:
            query = query.where(c.service_name == where.service_name)
        if where.direction:
            query = query.where(c.direction == where.direction)
        if where.transaction_id and len(where.transaction_id) == UUID_LENGTH:
            query = query.where(c.transaction_id == where.transaction_id.lower())
        elif where.transaction_id:
            # A start of an id (hex digits and dashes only: nothing LIKE would read as a pattern).
            query = query.where(c.transaction_id.startswith(where.transaction_id.lower()))
        if where.grant_hash:
            query = query.where(c.grant_hash == where.grant_hash)
        return query

    def query(
        self, where: TransactionFilter, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str]:
        """A page of records, newest first, and the cursor of the next page (``""``: none)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        if self._engine is None:
            return [], ""
        c = schema.records.c
        query = self._select(where)
        if cursor:
            match = _CURSOR.fullmatch(cursor)
            if match is None:
                raise CursorError(f"unknown cursor {cursor!r}")
            try:
                pivot = _EPOCH + timedelta(microseconds=int(match.group(1)))
            except OverflowError:
                raise CursorError(f"unknown cursor {cursor!r}") from None
            pivot_id = int(match.group(2))
            query = query.where(beyond(c.created_at, c.id, pivot, pivot_id, descending=True))
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        with reading(self._engine).connect() as conn:
            rows = conn.execute(query).all()
        page = rows[:limit]
        following = f"{_micros(page[-1].created_at)}-{page[-1].id}" if len(rows) > limit else ""
        return [_record(row) for row in page], following

    def export_csv(self, where: TransactionFilter) -> Iterator[bytes]:
        """Every matching record (at most :data:`EXPORT_MAX_ROWS`), newest first, as CSV."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue().encode("utf-8")
        cursor: str | None = None
        sent = 0
        while sent < EXPORT_MAX_ROWS:
            records, cursor = self.query(where, cursor=cursor, limit=MAX_LIMIT)
            buffer.seek(0)
            buffer.truncate()
            for record in records[: EXPORT_MAX_ROWS - sent]:
                writer.writerow([_csv_safe(record[column]) for column in CSV_COLUMNS])
            sent += len(records)
            yield buffer.getvalue().encode("utf-8")
            if not cursor:
                return
