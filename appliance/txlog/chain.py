"""The hash chain of a log: every record carries the hash of its predecessor in its stream.

One :class:`Log` describes a chained log: its table, its streams and the fields its canonical
form hashes. :data:`TXLOG` is the transaction log (below); the controller's audit log is
another (``appliance.controller.auditlog``, one stream). Everything here (the heads under the
writer's lock, the checks of :func:`verify`) works on any of them.

The transaction log:

A *stream* is one direction (``DIRECTION_OUTGOING``: the outway's records,
``DIRECTION_INCOMING``: the inway's). Each stream has one order, its ``chain_seq`` 1, 2, 3...,
assigned inside the transaction that stores the record, after reading the stream's head
(its last record, whose hash is recomputed) under a lock: SQLite's ``BEGIN IMMEDIATE`` admits
one writer at a time per file, and on PostgreSQL a transaction-scoped advisory lock per stream
is taken first, so group commit, several gunicorn workers and several nodes sharing one
database all extend the same chain one transaction after the other. A record whose
transaction id is already stored for its direction is refused without taking a seq (the
duplicate can only be in the same stream, so the check runs under the same lock).

The canonical form (docs/txlog.md gives it for other tools): the record's hash is the
lowercase hexadecimal SHA-256 of the RFC 8785 (JCS) serialisation of ::

    {"v": 1, "seq": <chain_seq>, "prev": <hash of seq-1, or 64 zeros for seq 1>,
     "transaction_id", "direction", "grant_hash", "service_name", "source_outway_peer_id",
     "source_delegator_peer_id", "destination_service_peer_id",
     "destination_delegator_peer_id": <the stored text, null when absent>,
     "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always six digits),
     "purpose": <purpose digest>}

where the purpose digest is the hexadecimal SHA-256 of the JCS of ``{"transaction_id",
"processing_activity_id", "trace_id", "data_subject_pseudonym"}`` (null when absent): an
export without the purpose fields still lets the chain be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from appliance.jcs import Members
from appliance.txlog import schema
from appliance.txlog.schema import FSC_FIELDS, PURPOSE_FIELDS

FORMAT = 1
GENESIS = "0" * 64
STREAMS = ("DIRECTION_INCOMING", "DIRECTION_OUTGOING")

_Head = tuple[int, str]


def timestamp(moment: datetime | str) -> str:
    """``created_at`` as the canonical form writes it (UTC, microseconds, ``Z``), from a
    datetime or text (SQLite's column, an export's RFC 3339)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is UTC:  # the writer's records: "+00:00" becomes "Z"
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    if moment.tzinfo is None:  # SQLite's text, read without the column type: UTC
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_PURPOSE_FORM = Members(("transaction_id", *PURPOSE_FIELDS))


def purpose_digest(values: Mapping[Any, Any]) -> str:
    document = {"transaction_id": values["transaction_id"]}
    for name in PURPOSE_FIELDS:
        document[name] = values[name]
    return hashlib.sha256(_PURPOSE_FORM.canonicalize(document)).hexdigest()


@dataclass(frozen=True)
class Log:
    """A chained log: where its records and checkpoints are, and what its canonical form hashes.

    A record's hash is the SHA-256 of the JCS of ``{"v": 1, "seq", "prev"}`` with each of
    ``fields`` as stored (null when absent), ``moment`` as :func:`timestamp` writes it and, for
    the transaction log, ``"purpose"`` (its purpose digest).
    """

    name: str  # how reports name it: "transaction log"
    records: sa.Table
    checkpoints: sa.Table
    stream_column: str | None  # the column naming a record's stream; None: one stream
    streams: tuple[str, ...]
    fields: tuple[str, ...]
    moment: str
    locks: Mapping[str, int]  # PostgreSQL: a transaction-scoped advisory lock per stream
    checkpoint_type: str  # the signed checkpoint's "type"
    purpose: bool = False  # the txlog's purpose digest is part of the form
    label: str | None = None  # the column a report names beside the id ("transaction")

    def stream_of(self, values: Mapping[Any, Any]) -> str:
        return str(values[self.stream_column]) if self.stream_column else self.streams[0]

    def hash(
        self, values: Mapping[Any, Any], seq: int, prev: str, digest: str | None = None
    ) -> str:
        """The hash of a record with column values ``values`` at ``seq`` after ``prev``.

        ``digest``: the purpose digest when the purpose fields themselves are not at hand (an
        export without them).
        """
        document: dict[str, Any] = {"v": FORMAT, "seq": seq, "prev": prev}
        for name in self.fields:
            document[name] = values[name]
        document[self.moment] = timestamp(values[self.moment])
        if self.purpose:
            document["purpose"] = digest if digest is not None else purpose_digest(values)
        return hashlib.sha256(self._form.canonicalize(document)).hexdigest()

    @cached_property
    def _form(self) -> Members:
        """The canonical form's member names, laid out once (every record has the same)."""
        purpose = ("purpose",) if self.purpose else ()
        return Members(("v", "seq", "prev", *self.fields, self.moment, *purpose))

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The columns a head's hash is recomputed from (and its seq and prev)."""
        purpose = PURPOSE_FIELDS if self.purpose else ()
        return (*self.fields, self.moment, *purpose, "chain_seq", "chain_prev")

    def _query(self, columns: str, parameter: str) -> str:
        where = "chain_seq IS NOT NULL"
        if self.stream_column is not None:
            where = f"{self.stream_column} = {parameter} AND {where}"
        # Names from the code's own tables, never from input.
        return (
            f"SELECT {columns} FROM {self.records.name} "  # noqa: S608
            f"WHERE {where} ORDER BY chain_seq DESC LIMIT 1"
        )

    # The head of a stream is its last record (the unique index on the stream and chain_seq
    # finds it); its hash is recomputed, so the runtime role needs no right to change a row.
    # "top": only its seq and prev, when the :class:`HeadCache` knows its hash.
    @cached_property
    def sqlite_last(self) -> str:
        return self._query(", ".join(self.columns), "?")

    @cached_property
    def sqlite_top(self) -> str:
        return self._query("chain_seq, chain_prev", "?")

    @cached_property
    def last(self) -> sa.TextClause:
        return sa.text(self._query(", ".join(self.columns), ":stream"))

    @cached_property
    def top(self) -> sa.TextClause:
        return sa.text(self._query("chain_seq, chain_prev", ":stream"))


TXLOG = Log(
    name="transaction log",
    records=schema.records,
    checkpoints=schema.checkpoints,
    stream_column="direction",
    streams=STREAMS,
    fields=FSC_FIELDS,
    moment="created_at",
    # "sluis-tx" + 1 or 2; the migrations' lock is another number. Needs no privilege, unlike
    # SELECT ... FOR UPDATE.
    locks={
        "DIRECTION_INCOMING": 0x736C_7569_732D_7401,
        "DIRECTION_OUTGOING": 0x736C_7569_732D_7402,
    },
    checkpoint_type="sluis-txlog-checkpoint",
    purpose=True,
    label="transaction_id",
)
PG_LOCKS = TXLOG.locks


def record_hash(values: Mapping[Any, Any], seq: int, prev: str, digest: str | None = None) -> str:
    """A transaction log record's hash (:meth:`Log.hash` of :data:`TXLOG`)."""
    return TXLOG.hash(values, seq, prev, digest)


# --- writing: the heads, under the writer's lock -------------------------------------------------


class Heads:
    """The heads of the streams one transaction extends (read under its lock)."""

    def __init__(
        self,
        heads: Mapping[str, _Head],
        links: Mapping[str, str] | None = None,
        log: Log | None = None,
        version: tuple[object, int] | None = None,
    ) -> None:
        self.log = log or TXLOG
        self.version = version  # SQLite: HeadCache's (connection, data_version)
        self._heads = dict(heads)
        # The head record's own chain_prev, so a cache can tell it is still that record.
        self._links = dict(links or {})

    def link(self, values: Mapping[str, Any]) -> tuple[int, str, str]:
        """``(seq, prev, hash)`` of a record appended to its stream now (not yet taken)."""
        seq, prev = self._heads.get(self.log.stream_of(values), (0, GENESIS))
        return seq + 1, prev, self.log.hash(values, seq + 1, prev)

    def advance(self, stream: str, seq: int, digest: str, prev: str) -> None:
        self._heads[stream] = (seq, digest)
        self._links[stream] = prev

    def known(self) -> dict[str, tuple[int, str, str]]:
        """``stream -> (seq, chain_prev, hash)`` of each head, for :class:`HeadCache`."""
        return {
            stream: (seq, self._links[stream], digest)
            for stream, (seq, digest) in self._heads.items()
            if stream in self._links
        }


class HeadCache:
    """The heads a writer committed last: the next transaction reads only the head's
    ``chain_seq`` and ``chain_prev`` and takes the hash from here when both are what this
    writer wrote, instead of reading the whole record and hashing it again. Another writer's
    record (another worker or node) has another seq or prev, and is read and hashed as before.

    On SQLite not even that is read while the file is as this writer left it: ``PRAGMA
    data_version`` on the same connection changes when any other connection committed (another
    worker, the checkpoint service, a purge, anyone), never for the connection's own commits."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, str, str]] = {}
        # SQLite: (connection, data_version) of this writer's last commit.
        self._version: tuple[object, int] | None = None

    def hash_of(self, stream: str, seq: int, prev: str) -> str | None:
        cached = self._heads.get(stream)
        if cached is not None and cached[0] == seq and cached[1] == prev:
            return cached[2]
        return None

    def unchanged(self, version: tuple[object, int]) -> dict[str, tuple[int, str, str]]:
        """The heads this writer committed, if no other connection committed since."""
        return self._heads if version == self._version else {}

    def committed(self, heads: Heads) -> None:
        self._heads.update(heads.known())
        self._version = heads.version

    def forget(self) -> None:
        self._heads.clear()
        self._version = None


def _head_of(log: Log, row: Sequence[Any] | None) -> tuple[_Head, str | None]:
    if row is None:
        return (0, GENESIS), None
    values = dict(zip(log.columns, row, strict=True))
    seq = int(values["chain_seq"])
    return (seq, log.hash(values, seq, values["chain_prev"])), values["chain_prev"]


def sqlite_heads(
    cursor: Any, streams: Iterable[str], cache: HeadCache | None = None, log: Log | None = None
) -> Heads:
    """The heads, on the SQLite writer's raw cursor inside its ``BEGIN IMMEDIATE``."""
    log = log or TXLOG
    heads, links = {}, {}
    version: tuple[object, int] | None = None
    own: Mapping[str, tuple[int, str, str]] = {}
    if cache is not None:
        cursor.execute("PRAGMA data_version")
        version = (cursor.connection, int(cursor.fetchone()[0]))
        own = cache.unchanged(version)
    for stream in sorted(set(streams)):
        parameters = (stream,) if log.stream_column else ()
        if stream in own:  # the file is as this writer's last commit left it
            seq, prev, digest = own[stream]
            heads[stream], links[stream] = (seq, digest), prev
            continue
        if cache is not None:
            cursor.execute(log.sqlite_top, parameters)
            top = cursor.fetchone()
            known = cache.hash_of(stream, int(top[0]), top[1]) if top is not None else None
            if known is not None:
                heads[stream], links[stream] = (int(top[0]), known), top[1]
                continue
        cursor.execute(log.sqlite_last, parameters)
        heads[stream], link = _head_of(log, cursor.fetchone())
        if link is not None:
            links[stream] = link
    return Heads(heads, links, log, version)


def locked_heads(
    connection: Connection,
    streams: Iterable[str],
    cache: HeadCache | None = None,
    log: Log | None = None,
) -> Heads:
    """The heads of ``streams``, each locked until the transaction ends: PostgreSQL advisory
    locks, taken in stream order so that two writers never wait for each other crosswise; on
    SQLite the writer's ``BEGIN IMMEDIATE`` holds the whole file already."""
    log = log or TXLOG
    heads, links = {}, {}
    postgresql = connection.dialect.name == "postgresql"
    for stream in sorted(set(streams)):
        if postgresql:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(log.locks[stream])))
        parameters = {"stream": stream} if log.stream_column else {}
        if cache is not None:
            top = connection.execute(log.top, parameters).first()
            known = cache.hash_of(stream, int(top[0]), top[1]) if top is not None else None
            if top is not None and known is not None:
                heads[stream], links[stream] = (int(top[0]), known), top[1]
                continue
        row = connection.execute(log.last, parameters).first()
        heads[stream], link = _head_of(log, tuple(row) if row is not None else None)
        if link is not None:
            links[stream] = link
    return Heads(heads, links, log)


def chain_rows(heads: Heads, rows: Sequence[dict[str, Any]]) -> None:
    """Give each of ``rows`` (none a duplicate) its seq and predecessor, in order."""
    for row in rows:
        seq, prev, digest = heads.link(row)
        row["chain_seq"] = seq
        row["chain_prev"] = prev
        heads.advance(heads.log.stream_of(row), seq, digest, prev)


# --- verifying -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first place where a stream is not what was written: the record (or, for a missing
    tail, the position) and what is wrong there."""

    stream: str
    seq: int | None
    log_id: int | None
    transaction_id: str | None
    problem: str
    checkpoint: int | None = None  # the checkpoint (its id) that is wrong, not a record

    def describe(self) -> str:
        where = f"{self.stream} seq {self.seq}" if self.seq is not None else self.stream
        if self.checkpoint is not None:
            where += f" (checkpoint {self.checkpoint})"
        if self.log_id is not None:
            where += f" (log_id {self.log_id}"
            where += f", transaction {self.transaction_id})" if self.transaction_id else ")"
        return f"{where}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "log_id": self.log_id,
            "transaction_id": self.transaction_id,
            "problem": self.problem,
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class Anchor:
    """A head known from outside the database: given by the auditor (``--head``) or signed in a
    checkpoint. The stream must hold a record at ``seq`` that hashes to ``hash``."""

    stream: str
    seq: int
    hash: str
    label: str = "the known head"  # how the reports name it
    checkpoint: int | None = None  # the checkpoint's id, when it is one (None: not stored)
    signed: bool = False  # a verified checkpoint (counted, shown as the last one)

    def claim(self) -> str:
        return f"{self.label} is seq {self.seq}"


@dataclass
class StreamResult:
    records: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    last_log_id: int | None = None
    broken: Break | None = None
    checkpoints: int = 0  # signed checkpoints that the records matched
    last_checkpoint: Anchor | None = None


@dataclass
class Verification:
    """What :func:`verify` found: per stream its count and head, and the first break."""

    streams: dict[str, StreamResult] = field(default_factory=dict)
    unchained: int = 0  # records from before the chain began (not vouched for)
    checkpoints: int = 0  # signed checkpoints read (valid or not)
    roots: list[str] = field(default_factory=list)  # the roots the checkpoints were held to
    roots_from: str = ""  # where those came from ("given", "the bundle")
    problems: list[Break] = field(default_factory=list)
    repeated: int = 0  # lines of a file read twice, byte for byte (a shipper's redelivery)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(result.records for result in self.streams.values())

    def heads(self) -> dict[str, _Head]:
        return {
            stream: (result.last_seq, result.last_hash)
            for stream, result in self.streams.items()
            if result.broken is None
        }


def _ident(row: Mapping[Any, Any], log: Log) -> tuple[int | None, str | None]:
    # ``in`` first: a missing key costs SQLAlchemy's row an exception (a sixth of verify's time).
    log_id = row["id"] if "id" in row else row.get("log_id")
    label = row[log.label] if log.label is not None else None
    return (int(log_id) if log_id is not None else None), label


def _check(
    state: StreamResult,
    row: Mapping[Any, Any],
    anchors: Mapping[int, list[Anchor]],
    stream: str,
    started: bool,
    log: Log,
) -> Break | None:
    """The problem of ``row``, the next record of ``state``'s stream, or None (and advance).

    ``started``: the stream's start was given (a purge acknowledged with ``--start``).
    """
    log_id, txid = _ident(row, log)
    seq = int(row["chain_seq"])
    prev = row["chain_prev"]

    def broken(problem: str) -> Break:
        return Break(stream, seq, log_id, txid, problem)

    before = f"seq {state.last_seq} (log_id {state.last_log_id})"
    if state.first_seq is None:
        state.first_seq = seq
        cut = anchors.get(seq - 1, []) if not started and seq > 1 else []
        if cut:  # records were purged; a signed checkpoint at the cut vouches for the rest
            state.last_seq, state.last_hash = seq - 1, cut[0].hash
        first = state.last_seq + 1  # 1, or where an acknowledged purge cut the stream
        if seq > first:
            return broken(f"the stream starts here: seq {first}..{seq - 1} are missing (deleted)")
        if seq < first:
            return broken(f"the stream was to start at seq {first} (the given start)")
        if prev != state.last_hash:
            if cut:
                return broken(f"the first record does not follow the head of {cut[0].label}")
            return broken(
                "the first record does not start from the genesis hash"
                if first == 1
                else "the first record does not follow the given start's hash"
            )
    elif seq == state.last_seq:
        return broken(
            f"a second record with seq {seq} (inserted; the other is log_id {state.last_log_id})"
        )
    elif seq != state.last_seq + 1:
        return broken(
            f"seq {state.last_seq + 1}..{seq - 1} missing (deleted) between {before} "
            "and this record"
        )
    elif prev != state.last_hash:
        return broken(
            f"the link to {before} is broken: this record holds {prev[:16]}..., that record "
            f"hashes to {state.last_hash[:16]}...: {before} was changed, or this record was "
            "changed, inserted or moved here"
        )
    # not get(): a SQLAlchemy row raises and catches inside it for a missing key (slow)
    digest = row["purpose_digest"] if "purpose_digest" in row else None  # noqa: SIM401
    if (
        log.purpose
        and digest is not None
        and all(name in row for name in PURPOSE_FIELDS)
        and purpose_digest(row) != digest
    ):
        return broken("the purpose fields do not match their digest (changed)")
    state.last_seq = seq
    state.last_hash = log.hash(row, seq, prev, digest)
    state.last_log_id = log_id
    for anchor in anchors.get(seq, ()):
        if anchor.hash != state.last_hash:
            return broken(
                f"not the record of {anchor.label} at this seq: it, or a record before it, was "
                "changed and the chain recomputed"
            )
        if anchor.signed:
            state.checkpoints += 1
            state.last_checkpoint = anchor
    return None


def verify(
    chained: Iterable[Mapping[Any, Any]],
    *,
    heads: Mapping[str, _Head] | None = None,
    starts: Mapping[str, _Head] | None = None,
    unchained_ids: Sequence[int] = (),
    anchors: Iterable[Anchor] = (),
    log: Log | None = None,
) -> Verification:
    """Check records of ``log`` (default the transaction log) given per stream in
    ``chain_seq`` order (streams one after the other).

    Each row: the column values (``id`` or ``log_id``), ``chain_seq``, ``chain_prev`` and,
    when the purpose fields are absent, ``purpose_digest``. ``heads``: heads known from
    elsewhere (an earlier run, the collector's copy): each stream must hold that seq with that
    hash (a cut tail or a recomputed chain is found). ``anchors``: more such heads, the verified
    checkpoints among them; a stream whose first records were purged may start right after
    one. ``starts``: where a purge cut a stream, ``(seq, hash)`` of the last record deleted:
    the stream must continue exactly there. ``unchained_ids``: the ids of records without a
    seq; any of them stored after a chained one was inserted.
    """
    log = log or TXLOG
    known: dict[str, dict[int, list[Anchor]]] = {}
    for anchor in [
        *(Anchor(stream, seq, digest) for stream, (seq, digest) in (heads or {}).items()),
        *anchors,
    ]:
        known.setdefault(anchor.stream, {}).setdefault(anchor.seq, []).append(anchor)
    result = Verification()
    for stream, (seq, digest) in (starts or {}).items():
        result.streams[stream] = StreamResult(last_seq=seq, last_hash=digest)
    started = set(starts or {})
    first_chained_id: int | None = None
    for row in chained:
        stream = log.stream_of(row)
        log_id, txid = _ident(row, log)
        if stream not in log.streams:
            result.problems.append(Break(stream, None, log_id, txid, "unknown stream"))
            continue
        if log_id is not None:
            first_chained_id = log_id if first_chained_id is None else min(first_chained_id, log_id)
        state = result.streams.setdefault(stream, StreamResult())
        state.records += 1
        if state.broken is None:
            state.broken = _check(state, row, known.get(stream, {}), stream, stream in started, log)
    for stream in log.streams:
        state = result.streams.setdefault(stream, StreamResult())
        beyond = [
            anchor
            for seq, found in known.get(stream, {}).items()
            if seq > state.last_seq
            for anchor in found
        ]
        if state.broken is None and beyond:
            anchor = max(beyond, key=lambda a: a.seq)
            state.broken = Break(
                stream,
                state.last_seq + 1,
                None,
                None,
                f"the tail was cut: {anchor.claim()}, the last record is seq "
                f"{state.last_seq} (log_id {state.last_log_id})",
                anchor.checkpoint,
            )
        if state.broken is not None:
            result.problems.append(state.broken)
    if first_chained_id is not None:
        late = [log_id for log_id in unchained_ids if log_id > first_chained_id]
        if late:
            result.problems.append(
                Break(
                    "-",
                    None,
                    late[0],
                    None,
                    f"a record without a place in the chain, stored after the chain began "
                    f"(inserted; {len(late)} such)",
                )
            )
    result.unchained = len(unchained_ids)
    return result
