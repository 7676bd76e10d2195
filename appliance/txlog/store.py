"""The transaction log store: durable writes with group commit, and the ``/logs`` query.

:meth:`TransactionLog.write` returns only after the record's transaction has committed
(SQLite in WAL mode with ``synchronous = FULL``; PostgreSQL with ``synchronous_commit`` at
least ``on``). A gateway writes first and forwards after; when ``write`` raises
:class:`TransactionLogWriteError` it refuses the request. There is no buffering that could
acknowledge a record before it is on disk, and no path on which a failed commit goes unseen.

Group commit: one writer thread per open log (per worker process) takes the records waiting
in its queue and commits them in one transaction, so that concurrent requests share one disk
flush instead of paying for one each. A batch is committed when it holds ``max_batch`` records,
or when its oldest record has waited ``max_delay`` seconds (2 ms by default); while a batch
commits, the next one fills up. With ``linger_alone=False`` (the gateways' logs) a record
waits for company only when the previous batch had some: a lone request is not held back
for nothing, while under load batches form as before. Every writer in a batch is answered
after the commit: all succeed, or all get :class:`TransactionLogWriteError`. A record whose
transaction id and direction are already stored is refused
(:class:`DuplicateTransactionError`) without failing the others in its batch.

The writer thread is started by the first write and belongs to the process that opened the
log: open it in each gunicorn worker after fork, as every database handle.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from appliance.database import beyond
from appliance.statelog import FailureState
from appliance.txlog import chain, schema
from appliance.txlog.database import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    create_engine,
    migrate,
    reading,
)
from appliance.txlog.errors import (
    DuplicateTransactionError,
    InvalidTransactionIdError,
    TransactionLogClosedError,
    TransactionLogError,
    TransactionLogWriteError,
    UnknownCursorError,
)
from appliance.txlog.record import (
    Destination,
    Direction,
    LogRecord,
    PurposeBinding,
    Source,
    parse_transaction_id,
)

log = logging.getLogger("sluis.txlog")

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_DELAY = 0.002  # seconds the oldest record of a batch may wait for company
DEFAULT_WRITE_TIMEOUT = 30.0  # a write not confirmed by then fails (the gateway refuses)
DEFAULT_LIMIT = 25  # logging.yaml queryPaginationLimit
MAX_LIMIT = 1000
MAX_TRANSACTION_IDS = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
_Key = tuple[str, str]
_Outcome = TransactionLogWriteError | None


# --- the group-commit writer -------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    record: LogRecord
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic() by which its batch should start committing


@dataclass(slots=True)
class WriterStats:
    """What the writer did since the log was opened (read them for metrics)."""

    batches: int = 0
    records: int = 0
    failed_batches: int = 0
    failed_records: int = 0
    largest_batch: int = 0


class WriterObserver(Protocol):
    """Told about each batch by the writer thread (``appliance.metrics.txlog``): never per
    record, and it must not block."""

    def batch(self, records: int, seconds: float, failed: bool) -> None: ...

    def queued(self, records: int) -> None: ...

    def timed_out(self) -> None: ...


class _GroupCommitWriter:
    """A thread that commits queued records in batches and answers each caller's future."""

    def __init__(
        self,
        commit: Callable[[Sequence[LogRecord]], list[_Outcome]],
        *,
        max_batch: int,
        max_delay: float,
        linger_alone: bool = True,
        name: str,
        observer: WriterObserver | None = None,
    ) -> None:
        self._commit = commit
        self._observer = observer
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._linger_alone = linger_alone
        self._last_size = 0
        self._name = name
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closing = False
        self._pid = os.getpid()
        self.stats = WriterStats()
        # A locked or read-only store fails every batch: one line when that begins, a count
        # each minute, one when commits succeed again (not a line per batch).
        self._failing = FailureState(
            log, "transaction log commits failing", "records not committed", level=logging.ERROR
        )

    def submit(self, record: LogRecord, future: asyncio.Future[None]) -> None:
        pending = _Pending(record, future, future.get_loop(), time.monotonic() + self._max_delay)
        with self._cond:
            if self._closing:
                raise TransactionLogClosedError("the transaction log is closed")
            if os.getpid() != self._pid:
                raise TransactionLogClosedError(
                    "the transaction log was opened in another process: open it in each "
                    "worker after fork"
                )
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append(pending)
            # Wake the writer only when it waits for a first record or a batch is full; while
            # it lingers for company it wakes by itself at the oldest record's deadline.
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                self._cond.notify()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop the thread; later submits are refused."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._flush(batch)
        finally:
            # Normally the queue is empty here. Should the thread ever stop otherwise, nothing
            # may wait forever: refuse what is queued and every later write.
            with self._cond:
                self._closing = True
                leftovers = list(self._queue)
                self._queue.clear()
            stopped = TransactionLogClosedError("the transaction log writer stopped")
            _settle([(pending, stopped) for pending in leftovers])

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if self._linger_alone or self._last_size > 1:
                deadline = self._queue[0].deadline
                while len(self._queue) < self._max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            size = min(len(self._queue), self._max_batch)
            self._last_size = size
            batch = [self._queue.popleft() for _ in range(size)]
            left = len(self._queue)
        # Outside the lock: the event loop's submits wait for it (the metrics' memory-mapped
        # write is not theirs to wait for).
        if self._observer is not None:
            self._observer.queued(left)
        return batch

    def _flush(self, batch: list[_Pending]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.records += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        started = time.perf_counter()
        try:
            outcomes = self._commit([pending.record for pending in batch])
            if len(outcomes) != len(batch):  # a bug, never a success
                raise RuntimeError("the commit answered for a different number of records")
        except BaseException as exc:
            if self._observer is not None:
                self._observer.batch(len(batch), time.perf_counter() - started, True)
            stats.failed_batches += 1
            stats.failed_records += len(batch)
            self._failing.failed(
                f"a batch of {len(batch)} records was not committed "
                f"({type(exc).__name__}: {_reason(exc)}); every request in it is refused",
                len(batch),
            )
            failed: list[tuple[_Pending, BaseException | None]] = []
            for pending in batch:
                error = TransactionLogWriteError(
                    f"the transaction log record was not committed ({type(exc).__name__})"
                )
                error.__cause__ = exc
                failed.append((pending, error))
            _settle(failed)
            return
        if self._observer is not None:
            self._observer.batch(len(batch), time.perf_counter() - started, False)
        self._failing.recovered()
        _settle(list(zip(batch, outcomes, strict=True)))


def _expire(future: asyncio.Future[None], timeout: float, observer: WriterObserver | None) -> None:
    if not future.done():
        if observer is not None:
            observer.timed_out()
        future.set_exception(
            TransactionLogWriteError(
                f"the transaction log did not confirm the record within {timeout} s"
            )
        )


def _reason(exc: BaseException) -> str:
    """The database's own words, without the statement or its parameters."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return (
            str(exc.orig).strip().splitlines()[0]
            if str(exc.orig).strip()
            else type(exc.orig).__name__
        )
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_Answer = tuple[asyncio.Future[None], BaseException | None]


def _settle(outcomes: Sequence[tuple[_Pending, BaseException | None]]) -> None:
    """Answer every caller in its own loop: one wake-up per loop and batch, not per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for pending, error in outcomes:
        by_loop.setdefault(pending.loop, []).append((pending.future, error))
    for loop, answers in by_loop.items():
        # RuntimeError: the caller's loop is closed, nobody is left to answer.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_answer, answers)


def _answer(answers: list[_Answer]) -> None:
    for future, error in answers:
        if future.done():  # cancelled, or timed out: nobody waits for it
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


# --- rows ----------------------------------------------------------------------------------------


def _row(record: LogRecord) -> dict[str, Any]:
    return {
        "transaction_id": record.transaction_id,
        "direction": record.direction.value,
        "grant_hash": record.grant_hash,
        "service_name": record.service_name,
        "source_outway_peer_id": record.source.outway_peer_id,
        "source_delegator_peer_id": record.source.delegator_peer_id,
        "destination_service_peer_id": record.destination.service_peer_id,
        "destination_delegator_peer_id": record.destination.delegator_peer_id,
        "created_at": record.created_at,
        "processing_activity_id": record.purpose.processing_activity_id,
        "trace_id": record.purpose.trace_id,
        "data_subject_pseudonym": record.purpose.data_subject_pseudonym,
    }


# The columns in the order of the parameters _insert_sqlite passes (a test compares them
# with the table).
_SQLITE_INSERT = (
    "INSERT INTO txlog_records (transaction_id, direction, grant_hash, service_name, "
    "source_outway_peer_id, source_delegator_peer_id, destination_service_peer_id, "
    "destination_delegator_peer_id, created_at, processing_activity_id, trace_id, "
    "data_subject_pseudonym, chain_seq, chain_prev) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (transaction_id, direction) DO NOTHING"
)
# What SQLAlchemy's SQLite DATETIME stores: UTC without offset, so text order is time order.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_commit(cursor: Any) -> None:
    cursor.execute("COMMIT")  # returns once the WAL is flushed (synchronous = FULL)


def _insert_sqlite(
    connection: Connection,
    records: Sequence[LogRecord],
    *,
    chained: bool = True,
    cache: chain.HeadCache | None = None,
) -> set[_Key]:
    """The batch in one SQLite transaction on the driver's own connection.

    The writer's hot path: SQLAlchemy's statement and row processing cost more CPU than
    SQLite's own insert (a profile of the chain showed it as the writer thread's main
    work besides the flush). The values are exactly those the Core insert stores (the
    readers go through SQLAlchemy). ``synchronous = FULL`` and the busy timeout are the
    engine's connect-time settings; BEGIN IMMEDIATE as the engine's writers use, which also
    holds the chain's heads for the transaction (one writer per file).
    """
    raw = connection.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    inserted: set[_Key] = set()
    try:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            heads = (
                chain.sqlite_heads(cursor, {r.direction.value for r in records}, cache)
                if chained
                else None
            )
            for record in records:
                link = heads.link(_row(record)) if heads is not None else None
                source, destination, purpose = record.source, record.destination, record.purpose
                direction = record.direction.value
                cursor.execute(
                    _SQLITE_INSERT,
                    (
                        record.transaction_id,
                        direction,
                        record.grant_hash,
                        record.service_name,
                        source.outway_peer_id,
                        source.delegator_peer_id,
                        destination.service_peer_id,
                        destination.delegator_peer_id,
                        record.created_at.strftime(_SQLITE_TIME),  # UTC: LogRecord converts
                        purpose.processing_activity_id,
                        purpose.trace_id,
                        purpose.data_subject_pseudonym,
                        link[0] if link is not None else None,
                        link[1] if link is not None else None,
                    ),
                )
                if cursor.rowcount == 1:
                    inserted.add((record.transaction_id, direction))
                    if heads is not None and link is not None:  # a duplicate takes no seq
                        heads.advance(direction, link[0], link[2], link[1])
            _sqlite_commit(cursor)
            if heads is not None and cache is not None:
                cache.committed(heads)
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
    finally:
        cursor.close()
    return inserted


def _record(row: sa.Row[Any]) -> LogRecord:
    return LogRecord(
        transaction_id=row.transaction_id,
        direction=Direction(row.direction),
        grant_hash=row.grant_hash,
        service_name=row.service_name,
        source=Source(row.source_outway_peer_id, row.source_delegator_peer_id),
        destination=Destination(row.destination_service_peer_id, row.destination_delegator_peer_id),
        created_at=row.created_at,
        purpose=PurposeBinding(
            processing_activity_id=row.processing_activity_id,
            trace_id=row.trace_id,
            data_subject_pseudonym=row.data_subject_pseudonym,
        ),
    )


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _cursor(row: sa.Row[Any]) -> str:
    return f"{_micros(row.created_at)}-{row.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise UnknownCursorError(cursor)
    micros, row_id = int(match.group(1)), int(match.group(2))
    try:
        return _EPOCH + timedelta(microseconds=micros), row_id
    except OverflowError:
        raise UnknownCursorError(cursor) from None


def _moment(value: int | datetime, what: str, *, plus_seconds: int = 0) -> datetime:
    """A Unix timestamp (logging.yaml ``timestamp``) or an aware datetime, plus some seconds."""
    try:
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                raise ValueError(f"{what} must be a timezone-aware datetime")
            return value.astimezone(UTC) + timedelta(seconds=plus_seconds)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} must be a non-negative Unix timestamp")
        return _EPOCH + timedelta(seconds=value + plus_seconds)
    except OverflowError:
        raise ValueError(f"{what} is out of range") from None


def _peer_columns() -> tuple[sa.Column[Any], ...]:
    """The columns that may name a peer the log answers about (logging spec)."""
    c = schema.records.c
    return (
        c.source_outway_peer_id,
        c.destination_service_peer_id,
        c.source_delegator_peer_id,
        c.destination_delegator_peer_id,
    )


def _naming(peer_id: str) -> sa.ColumnElement[bool]:
    return sa.or_(*(column == peer_id for column in _peer_columns()))


# --- the log ------------------------------------------------------------------------------------


class TransactionLog:
    """The FSC transaction log of this appliance, on SQLite (default) or PostgreSQL."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_delay: float = DEFAULT_MAX_DELAY,
        linger_alone: bool = True,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        dispose_engine: bool = False,
        chained: bool = True,
        observer: WriterObserver | None = None,
    ) -> None:
        if not 1 <= max_batch <= 10_000:
            raise ValueError("max_batch must be 1..10000")
        if not 0 <= max_delay <= 1:
            raise ValueError("max_delay must be 0..1 seconds")
        if write_timeout is not None and write_timeout <= 0:
            raise ValueError("write_timeout must be positive (or None)")
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise TransactionLogError(f"unsupported database {engine.dialect.name!r}")
        if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
            raise TransactionLogError(
                "the transaction log must be durable: give a database file, not :memory:"
            )
        self._engine = engine
        self._dispose_engine = dispose_engine
        self._chained = chained  # False only to measure what the chain costs (bench/)
        self._head_cache = chain.HeadCache()  # the writer thread's only
        self._write_timeout = write_timeout
        self._insert = self._insert_statement(engine)
        self._observer = observer
        self._writer = _GroupCommitWriter(
            self._commit_batch,
            max_batch=max_batch,
            max_delay=max_delay,
            linger_alone=linger_alone,
            name=f"sluis-txlog-writer-{engine.url.get_backend_name()}",
            observer=observer,
        )
        self._closed = False
        # SQLite: the writer thread keeps its connection between batches (a checkout from the
        # pool and its reset cost about as much as a small batch). A PostgreSQL connection is
        # checked out per batch, so that the pool's pre-ping finds one the server dropped.
        self._keep_connection = engine.dialect.name == "sqlite"
        self._connection: Connection | None = None
        self._connection_pool = engine.pool

    @classmethod
    def open(
        cls,
        url: str | URL,
        *,
        migrate_schema: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_delay: float = DEFAULT_MAX_DELAY,
        linger_alone: bool = True,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
        chained: bool = True,
        observer: WriterObserver | None = None,
        **engine_kwargs: Any,
    ) -> TransactionLog:
        """Connect to ``url`` (``sqlite:////var/lib/sluis/txlog.db``, ``postgresql://...``),
        bring the log's tables up to date, and return the log (close it when done)."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            raise TransactionLogError(
                "the transaction log must be durable: give a database file, not :memory:"
            )
        engine = create_engine(parsed, sqlite_busy_timeout=sqlite_busy_timeout, **engine_kwargs)
        try:
            if migrate_schema:
                migrate(engine)
            return cls(
                engine,
                max_batch=max_batch,
                max_delay=max_delay,
                linger_alone=linger_alone,
                write_timeout=write_timeout,
                dispose_engine=True,
                chained=chained,
                observer=observer,
            )
        except BaseException:
            engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    # -- writing ----------------------------------------------------------------------------

    async def write(self, record: LogRecord) -> None:
        """Store ``record``; return once it is committed, raise if it is not.

        Raises :class:`TransactionLogWriteError` (a :class:`DuplicateTransactionError` for a
        transaction id and direction already stored, a :class:`TransactionLogClosedError`
        after :meth:`close`) when the record is not durably stored: refuse the request then.
        """
        if not isinstance(record, LogRecord):
            raise TypeError(f"expected a LogRecord, got {type(record).__name__}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._writer.submit(record, future)
        if self._write_timeout is None:
            await future
            return
        # A timer on the future itself (cheaper than asyncio.wait_for on every request). A
        # record that times out may still be committed later; the request is refused anyway.
        timer = loop.call_later(
            self._write_timeout, _expire, future, self._write_timeout, self._observer
        )
        try:
            await future
        finally:
            timer.cancel()

    @staticmethod
    def _insert_statement(engine: Engine) -> Any:
        table = schema.records
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        return (
            insert(table)
            .on_conflict_do_nothing(index_elements=["transaction_id", "direction"])
            .returning(table.c.transaction_id, table.c.direction)
        )

    def _commit_batch(self, batch: Sequence[LogRecord]) -> list[_Outcome]:
        """One transaction for the batch (runs in the writer thread); raises if not committed.

        ``ON CONFLICT DO NOTHING`` says exactly which rows went in, also when another process
        stored the same key a moment earlier.
        """
        outcomes: list[_Outcome] = [None] * len(batch)
        first: dict[_Key, int] = {}
        unique: list[LogRecord] = []
        for index, record in enumerate(batch):
            key = (record.transaction_id, record.direction.value)
            if key in first:
                outcomes[index] = DuplicateTransactionError(*key)
                continue
            first[key] = index
            unique.append(record)
        connection = self._connection
        if connection is not None and self._connection_pool is not self._engine.pool:
            # The engine was disposed (its pool replaced): connect afresh, as a pooled
            # checkout would.
            self._connection = None
            connection.invalidate()
            connection.close()
            connection = None
        if connection is None:
            self._connection_pool = self._engine.pool
            connection = self._engine.connect()
        try:
            if self._keep_connection:
                inserted = _insert_sqlite(
                    connection, unique, chained=self._chained, cache=self._head_cache
                )
            else:
                with connection.begin():
                    heads, inserted = self._insert_locked(connection, unique)
                if heads is not None:  # only once committed
                    self._head_cache.committed(heads)
        except BaseException:
            # A commit that failed (or may have: a lost connection) leaves nothing to trust.
            self._head_cache.forget()
            # A connection that failed a write is not trusted again (SQLite opens a file
            # it may not write read-only, and stays so after the operator fixes it):
            # start afresh, so the log recovers by itself once the database does.
            self._connection = None
            connection.invalidate()
            connection.close()
            self._engine.dispose()
            raise
        if self._keep_connection:
            self._connection = connection
        else:
            connection.close()
        # Only here, after the commit returned, is any record acknowledged.
        for key, index in first.items():
            if key not in inserted:
                outcomes[index] = DuplicateTransactionError(*key)
        return outcomes

    def _insert_locked(
        self, connection: Connection, records: Sequence[LogRecord]
    ) -> tuple[chain.Heads | None, set[_Key]]:
        """PostgreSQL: the batch after the heads of its streams, locked until the commit.

        A duplicate is in the same stream as the record it repeats, so under the head's lock
        it is found before any seq is given out; the insert then must take every row.
        """
        rows = [_row(r) for r in records]
        if not rows:
            return None, set()
        if not self._chained:
            result = connection.execute(self._insert, rows)
            return None, {(row[0], row[1]) for row in result}
        heads = chain.locked_heads(connection, {row["direction"] for row in rows}, self._head_cache)
        c = schema.records.c
        present = {
            (row.transaction_id, row.direction)
            for row in connection.execute(
                sa.select(c.transaction_id, c.direction).where(
                    c.transaction_id.in_([row["transaction_id"] for row in rows])
                )
            )
        }
        fresh = [row for row in rows if (row["transaction_id"], row["direction"]) not in present]
        chain.chain_rows(heads, fresh)
        inserted: set[_Key] = set()
        if fresh:
            result = connection.execute(self._insert, fresh)
            inserted = {(row[0], row[1]) for row in result}
        if len(inserted) != len(fresh):  # a row written past the lock: store nothing
            raise TransactionLogError("a record was stored outside the chain's lock")
        return heads, inserted

    # -- reading ----------------------------------------------------------------------------

    def query(
        self,
        peer_id: str,
        *,
        after: int | datetime | None = None,
        before: int | datetime | None = None,
        grant_hashes: Sequence[str] | None = None,
        service_names: Sequence[str] | None = None,
        transaction_ids: Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        descending: bool = True,
        processing_activity_id: str | None = None,
        data_subject_pseudonym: str | None = None,
    ) -> tuple[list[LogRecord], str]:
        """Records naming ``peer_id`` (logging spec "Providing TransactionLog records").

        Only records with ``peer_id`` as source outway, destination service, or either
        delegator are ever returned. ``after``/``before`` (Unix seconds, exclusive, compared
        with the API's whole-second ``created_at``); ``grant_hashes`` and ``service_names``
        match when either list matches (logging.yaml: "either condition"). Order: creation
        time, then insertion; newest first unless ``descending`` is False. Returns the page and
        the cursor of the next one (``""`` when there is none).

        ``transaction_ids`` overrides pagination and the other filters (logging.yaml) and
        returns every record of those transactions that names ``peer_id``.
        ``processing_activity_id`` and ``data_subject_pseudonym`` are for local audits only.
        """
        if not isinstance(peer_id, str) or not peer_id:
            raise ValueError("peer_id is required: the log answers only about a peer")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
        c = schema.records.c
        order = (c.created_at.desc(), c.id.desc()) if descending else (c.created_at, c.id)
        if transaction_ids is not None:
            if len(transaction_ids) > MAX_TRANSACTION_IDS:
                raise ValueError(f"at most {MAX_TRANSACTION_IDS} transaction ids at once")
            wanted = []
            for value in transaction_ids:
                try:
                    wanted.append(parse_transaction_id(value, any_version=True))
                except InvalidTransactionIdError:
                    continue  # cannot match a stored record
            if not wanted:
                return [], ""
            # Driven by the unique (transaction_id, direction) index: two rows per id at most.
            query = (
                sa.select(schema.records)
                .where(c.transaction_id.in_(wanted), _naming(peer_id))
                .order_by(*order)
            )
            with reading(self._engine).connect() as connection:
                return [_record(row) for row in connection.execute(query)], ""
        conditions: list[Any] = []
        if after is not None:
            # The API shows whole seconds: "after T" means shown created_at > T.
            conditions.append(c.created_at >= _moment(after, "after", plus_seconds=1))
        if before is not None:
            conditions.append(c.created_at < _moment(before, "before"))
        matches = []
        if grant_hashes:
            matches.append(c.grant_hash.in_(list(grant_hashes)))
        if service_names:
            matches.append(c.service_name.in_(list(service_names)))
        if matches:
            conditions.append(sa.or_(*matches))
        if processing_activity_id is not None:
            conditions.append(c.processing_activity_id == processing_activity_id)
        if data_subject_pseudonym is not None:
            conditions.append(c.data_subject_pseudonym == data_subject_pseudonym)
        if cursor:
            pivot_time, pivot_id = _parse_cursor(cursor)
            conditions.append(
                beyond(c.created_at, c.id, pivot_time, pivot_id, descending=descending)
            )
        # One ordered, limited range of (peer column, created_at, id) per peer column: the
        # page is among their first limit + 1 rows each. An OR of the four columns made both
        # databases read every record naming the peer (SQLite) or walk the time index down to
        # the cursor (PostgreSQL) for each page. UNION, not UNION ALL: a record may name the
        # peer in two columns.
        ranges = [
            sa.select(schema.records)
            .where(column == peer_id, *conditions)
            .order_by(*order)
            .limit(limit + 1)
            .subquery()
            for column in _peer_columns()
        ]
        union = sa.union(*(sa.select(*r.c) for r in ranges)).subquery("naming")
        u = union.c
        query = (
            sa.select(union)
            .order_by(*((u.created_at.desc(), u.id.desc()) if descending else (u.created_at, u.id)))
            .limit(limit + 1)
        )
        with reading(self._engine).connect() as connection:
            rows = connection.execute(query).all()
        more = len(rows) > limit
        page = rows[:limit]
        return [_record(row) for row in page], (_cursor(page[-1]) if more else "")

    # -- life cycle ---------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what is queued, stop the writer, release the database (if opened here)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close(timeout)
        connection, self._connection = self._connection, None
        if connection is not None and not self._writer.running:  # never under a hung commit
            connection.close()
        if self._dispose_engine:
            self._engine.dispose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
