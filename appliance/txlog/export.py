"""Export a chained log as JSON lines, for a log shipper (rsyslog's imfile) to send on.

The transaction log lives in its database (:mod:`appliance.txlog.store`), the controller's audit
log in the controller's; a SIEM or a log collector wants lines in a file. :func:`export_jsonl`
appends every record of one log (``log``: :data:`~appliance.txlog.chain.TXLOG` by default, or
the audit log) not exported yet to one file, one JSON object per line, in the order the records
were stored (their ``id``), and remembers how far it got:

- nothing is lost: a line is on disk (``fsync``) before the cursor moves past it, and the
  cursor file is replaced atomically (written, synced, renamed, directory synced);
- nothing is sent twice: on start the cursor is the larger of the cursor file and the ``id``
  of the last complete line in the output file (a crash between the two writes), and a torn
  last line (a crash in the middle of a write) is cut off before anything is appended;
- a rotated output file (logrotate moved it away, a new one is empty) changes nothing: the
  cursor file still says where to go on.

:func:`export_bundle` writes an auditor's bundle of any chained log (``log``: the transaction
log by default, or the controller's audit log), with :func:`line_for`'s lines.

Only the record's fields are written, never message content (the log has none): the FSC
fields of ``GET /logs``, the row id (``log_id``, the export's cursor) and the creation time in
RFC 3339 with microseconds, and the record's place in the hash chain (``chain_seq``,
``chain_prev``, ``purpose_digest``: :mod:`appliance.txlog.chain`); an audit entry's line has
its own fields (:data:`appliance.controller.auditlog.FIELDS`, ``at``) the same way, and no
purpose digest. The three local purpose-binding fields of a transaction (processing activity,
trace id, data-subject pseudonym) are left out unless ``purpose=True``: they are meant for the
organisation's own audits, not necessarily for a shared collector.

The signed checkpoints (:mod:`appliance.txlog.checkpoint`) travel in the same file, one line
each (``checkpoint_id``, ``stream``, ``seq``, ``head``, ``signed_at``, ``reason``, ``jws``),
after the records they vouch for (a checkpoint waits until the record it signed is in the
file), so the collector's copy can be verified on its own. Their cursor is a second file beside
the first (``<state>.checkpoints``), kept the same way.

The database is only read (``SELECT``; on SQLite without a write lock). On PostgreSQL, ids are
taken from a sequence before their transactions commit, so a record with a lower id may become
visible after one with a higher id: there only records older than ``settle_seconds`` (by
``created_at``, or an audit entry's ``at``; default 120, four times the gateways' write timeout)
are exported, by which time every earlier write has committed or failed. SQLite has one writer
at a time, so ids become visible in order and no wait is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from appliance.errors import SluisError
from appliance.txlog.chain import TXLOG, Log, purpose_digest
from appliance.txlog.checkpoint import Certificates, Checkpoint
from appliance.txlog.checkpoint import stored as stored_checkpoints
from appliance.txlog.database import create_engine, reading
from appliance.txlog.schema import FSC_FIELDS as FSC_FIELDS  # the line's fields, for readers
from appliance.txlog.schema import PURPOSE_FIELDS

DEFAULT_BATCH = 1000
POSTGRESQL_SETTLE_SECONDS = 120.0
# How far back from the end of the output file the last complete line is looked for; a
# record's line is well below 2 KiB (a grant hash is at most 1024 characters).
_TAIL_BYTES = 64 * 1024


class ExportError(SluisError):
    """The export cannot go on (an unreadable cursor, a foreign output file)."""


@dataclass(frozen=True)
class ExportResult:
    exported: int  # record lines appended in this run
    cursor: int  # the id of the last record exported (0: none yet)
    checkpoints: int = 0  # checkpoint lines appended in this run
    lag_seconds: float = 0.0  # age of the oldest record not exported yet (0: none left)


def line_for(row: sa.Row[Any], *, purpose: bool = False, log: Log = TXLOG) -> str:
    """The JSON line (without the newline) of one row of ``log``'s records table."""
    mapping = row._mapping
    created: datetime = mapping[log.moment]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    document: dict[str, Any] = {"log_id": int(mapping["id"])}
    for name in log.fields:
        document[name] = mapping[name]
    document[log.moment] = created.astimezone(UTC).isoformat(timespec="microseconds")
    if purpose and log.purpose:
        for name in PURPOSE_FIELDS:
            document[name] = mapping[name]
    if mapping["chain_seq"] is not None:
        # The hash chain, so that the collector's copy can be verified (docs/txlog.md).
        document["chain_seq"] = int(mapping["chain_seq"])
        document["chain_prev"] = mapping["chain_prev"]
        if log.purpose:
            document["purpose_digest"] = purpose_digest(mapping)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True, sort_keys=False)


def read_cursor(state_file: Path) -> int:
    """The id of the last record exported, from the cursor file (0 when there is none)."""
    try:
        text = state_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read the export cursor {state_file}: {exc}") from exc
    if not text.isdigit():
        raise ExportError(f"the export cursor {state_file} does not hold an id: {text[:40]!r}")
    return int(text)


def write_cursor(state_file: Path, cursor: int) -> None:
    """Replace the cursor file atomically and durably."""
    tmp = state_file.with_name(f".{state_file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{cursor}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, state_file)
    _fsync_dir(state_file.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_state(state_file: Path) -> Path:
    """The checkpoints' cursor file, beside the records' one."""
    return state_file.with_name(f"{state_file.name}.checkpoints")


def repair_tail(output: Path) -> int:
    """Cut a torn last line off ``output``; the ``log_id`` of its last record line (0: none)."""
    return _repair(output)[0]


def _repair(output: Path) -> tuple[int, int]:
    """Cut a torn last line off ``output``; the last ``log_id`` and ``checkpoint_id`` in it.

    A line without its newline is what a crash in the middle of a write leaves; it was never
    counted (the cursor moves only after the fsync), so it is written again, whole.
    """
    try:
        fd = os.open(output, os.O_RDWR)
    except FileNotFoundError:
        return 0, 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        start = max(0, size - _TAIL_BYTES)
        os.lseek(fd, start, os.SEEK_SET)
        tail = b""
        while len(tail) < size - start:
            chunk = os.read(fd, size - start - len(tail))
            if not chunk:
                break
            tail += chunk
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = start + cut + 1 if cut >= 0 else start
            if cut < 0 and start > 0:
                raise ExportError(f"{output}: no complete line in its last {_TAIL_BYTES} bytes")
            os.ftruncate(fd, keep)
            os.fsync(fd)
            tail = tail[: cut + 1] if cut >= 0 else b""
        log_id = checkpoint_id = 0
        for line in reversed(tail.splitlines()[1 if start > 0 else 0 :]):
            try:
                last = json.loads(line)
                if "checkpoint_id" in last:
                    checkpoint_id = checkpoint_id or int(last["checkpoint_id"])
                    continue
                log_id = int(last["log_id"])
                break
            except (ValueError, KeyError, TypeError) as exc:
                raise ExportError(
                    f"{output}: its last line is not an exported record (log_id): {exc}"
                ) from exc
        return log_id, checkpoint_id
    finally:
        os.close(fd)


def _rows(
    engine: Engine, after: int, *, batch: int, settle_seconds: float, log: Log = TXLOG
) -> Iterator[list[sa.Row[Any]]]:
    table = log.records
    c = table.c
    while True:
        query = sa.select(table).where(c.id > after).order_by(c.id).limit(batch)
        if settle_seconds > 0:
            horizon = datetime.now(UTC) - timedelta(seconds=settle_seconds)
            query = query.where(c[log.moment] <= horizon)
        with reading(engine).connect() as connection:
            rows = list(connection.execute(query))
        if not rows:
            return
        yield rows
        after = int(rows[-1]._mapping["id"])
        if len(rows) < batch:
            return


def export_engine(
    engine: Engine,
    output: Path,
    state_file: Path,
    *,
    purpose: bool = False,
    batch: int = DEFAULT_BATCH,
    settle_seconds: float | None = None,
    log: Log = TXLOG,
) -> ExportResult:
    """Append every record of ``log`` after the cursor to ``output``; see the module text."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if settle_seconds is None:
        settle_seconds = POSTGRESQL_SETTLE_SECONDS if engine.dialect.name == "postgresql" else 0.0
    in_file, checkpoint_in_file = _repair(output)
    cursor = max(read_cursor(state_file), in_file)
    exported = 0
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        for rows in _rows(engine, cursor, batch=batch, settle_seconds=settle_seconds, log=log):
            lines = (line_for(row, purpose=purpose, log=log) + "\n" for row in rows)
            data = "".join(lines).encode("ascii")
            _write_all(fd, data)
            cursor = int(rows[-1]._mapping["id"])
            exported += len(rows)
            write_cursor(state_file, cursor)
        checkpoints = _export_checkpoints(
            engine,
            fd,
            checkpoint_state(state_file),
            checkpoint_in_file,
            settle_seconds,
            log,
            cursor,
        )
    finally:
        os.close(fd)
    # Record a cursor found only in the output file (a crash before the cursor write).
    if exported == 0 and read_cursor(state_file) != cursor:
        write_cursor(state_file, cursor)
    return ExportResult(
        exported=exported,
        cursor=cursor,
        checkpoints=checkpoints,
        lag_seconds=_lag(engine, cursor, log),
    )


def _lag(engine: Engine, cursor: int, log: Log) -> float:
    """How long the oldest record after ``cursor`` has waited (0 when there is none)."""
    c = log.records.c
    with reading(engine).connect() as connection:
        oldest = connection.execute(sa.select(sa.func.min(c[log.moment])).where(c.id > cursor))
        moment = oldest.scalar()
    if moment is None:
        return 0.0
    if isinstance(moment, str):  # SQLite's aggregate loses the column type
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _export_checkpoints(
    engine: Engine,
    fd: int,
    state_file: Path,
    in_file: int,
    settle_seconds: float,
    log: Log,
    records_cursor: int,
) -> int:
    """Append the checkpoints after the cursor whose records are in the file already; how many.

    Signed before the records' horizon (on PostgreSQL an earlier checkpoint id may still
    commit until then), and the record each signed has an id up to ``records_cursor``: one
    written and signed between the records' query and this one waits for the next run. Ids
    follow seqs within a stream (both are taken under the stream's lock), so the records
    before it are out too; a signed record no longer stored (purged) holds nothing back. In
    id order, up to the first that must wait, so the cursor passes none."""
    cursor = max(read_cursor(state_file), in_file)
    horizon = datetime.now(UTC) - timedelta(seconds=settle_seconds)
    waiting = sorted(
        stored_checkpoints(engine, log, after=cursor), key=lambda checkpoint: checkpoint.id or 0
    )
    fresh = []
    for checkpoint in waiting:
        if checkpoint.signed_at > horizon or _signed_id(engine, log, checkpoint) > records_cursor:
            break
        fresh.append(checkpoint)
    if fresh:
        _write_all(
            fd,
            "".join(c.line() + "\n" for c in fresh).encode("ascii"),
        )
        cursor = fresh[-1].id or cursor
    if read_cursor(state_file) != cursor:
        write_cursor(state_file, cursor)
    return len(fresh)


def _signed_id(engine: Engine, log: Log, checkpoint: Checkpoint) -> int:
    """The id of the record ``checkpoint`` signed (0 when it is not stored: purged)."""
    c = log.records.c
    query = sa.select(c.id).where(c.chain_seq == checkpoint.seq)
    if log.stream_column is not None:
        query = query.where(c[log.stream_column] == checkpoint.stream)
    with reading(engine).connect() as connection:
        found = connection.execute(query).scalar()
    return int(found) if found is not None else 0


def export_jsonl(
    database_url: str,
    output: Path,
    state_file: Path,
    *,
    purpose: bool = False,
    batch: int = DEFAULT_BATCH,
    settle_seconds: float | None = None,
    log: Log = TXLOG,
) -> ExportResult:
    """Open ``log`` at ``database_url`` (read only) and run :func:`export_engine`.

    An SQLite file that is not there is refused, not created: made by root (the export's
    service), it would lock out the component that should create it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise ExportError(f"{url.database}: no such database (yet); nothing to export")
    engine = create_engine(database_url)
    try:
        return export_engine(
            engine,
            output,
            state_file,
            purpose=purpose,
            batch=batch,
            settle_seconds=settle_seconds,
            log=log,
        )
    finally:
        engine.dispose()


def export_bundle(
    engine: Engine,
    output: Path,
    certificates: Certificates,
    *,
    purpose: bool = False,
    batch: int = DEFAULT_BATCH,
    log: Log = TXLOG,
) -> ExportResult:
    """Write an auditor's bundle of ``log``: one JSON-lines file with the organisation's
    certificates (first line, ``{"certificates": [PEM, ...]}``), every record and every
    checkpoint, which ``sluis txlog verify --bundle`` (``sluis controller audit verify
    --bundle``) checks with nothing else. Written to a temporary file
    beside ``output`` and renamed, so a bundle is whole or absent."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    tmp = output.with_name(f".{output.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    exported = cursor = 0
    try:
        pems = [pem.decode("ascii") for pem in certificates.pems()]
        _write_all(fd, (json.dumps({"certificates": pems}) + "\n").encode("ascii"))
        for rows in _rows(engine, 0, batch=batch, settle_seconds=0.0, log=log):
            data = "".join(line_for(row, purpose=purpose, log=log) + "\n" for row in rows)
            _write_all(fd, data.encode("ascii"))
            exported += len(rows)
            cursor = int(rows[-1]._mapping["id"])
        checkpoints = stored_checkpoints(engine, log)
        _write_all(
            fd,
            "".join(c.line() + "\n" for c in checkpoints).encode("ascii"),
        )
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, output)
    _fsync_dir(output.parent)
    return ExportResult(exported=exported, cursor=cursor, checkpoints=len(checkpoints))
