"""Helpers for the transaction log tests: peers, records, running writes, logging.yaml."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from appliance.cli.main import main
from appliance.config import SluisConfig
from appliance.controller.store import ControllerStore
from appliance.demo.provision import Organisation, provision_with_token
from appliance.hsm.settings import HsmSettings
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.txlog import (
    Destination,
    Direction,
    LogRecord,
    PurposeBinding,
    Source,
    TransactionLog,
    new_transaction_id,
    schema,
)
from appliance.txlog import store as store_module
from appliance.txlog.chain import record_hash
from appliance.txlog.database import create_engine

# The FSC documents sit beside the repository (shared/fsc), as docs/manager.md refers to them.
FSC = Path(__file__).resolve().parents[3] / "shared" / "fsc"
LOGGING_YAML = FSC / "logging.yaml"
MANAGER_YAML = FSC / "manager.yaml"

PEER_A = "00000001000000000001"
PEER_B = "00000001000000000002"
PEER_C = "00000001000000000003"
PEER_D = "00000001000000000004"
PEER_E = "00000001000000000005"
GRANT_1 = "$1$3$" + "A" * 86
GRANT_2 = "$1$3$" + "B" * 86
T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)

T = TypeVar("T")


def record(
    *,
    source: str = PEER_A,
    destination: str = PEER_B,
    source_delegator: str | None = None,
    destination_delegator: str | None = None,
    service: str = "basisregistratie",
    grant: str = GRANT_1,
    direction: Direction = Direction.OUTGOING,
    created_at: datetime | None = None,
    transaction_id: str | None = None,
    purpose: PurposeBinding | None = None,
) -> LogRecord:
    return LogRecord(
        transaction_id=transaction_id or new_transaction_id(),
        direction=direction,
        grant_hash=grant,
        service_name=service,
        source=Source(source, source_delegator),
        destination=Destination(destination, destination_delegator),
        created_at=created_at or datetime.now(UTC),
        purpose=purpose or PurposeBinding(),
    )


def records_at(
    count: int, start: datetime = T0, step: timedelta = timedelta(seconds=1), **kw: Any
) -> list[LogRecord]:
    return [record(created_at=start + i * step, **kw) for i in range(count)]


def run(coroutine: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coroutine

    return asyncio.run(wrapper())


async def write_all(
    log: TransactionLog, records: Iterable[LogRecord]
) -> list[BaseException | None]:
    """Write concurrently; the exception of each write (None for success), in order."""
    results = await asyncio.gather(*(log.write(r) for r in records), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def stored(url: str) -> list[dict[str, Any]]:
    """Every row of txlog_records, read through a new engine (a new connection)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM txlog_records ORDER BY id"))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


@contextlib.contextmanager
def at_commit(log: TransactionLog, hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` at every commit of the log's writer, before the commit itself: SQLite
    commits on the driver's connection (the writer's fast path), PostgreSQL through
    SQLAlchemy (its commit event)."""
    if log.engine.dialect.name == "sqlite":
        original = store_module._sqlite_commit

        def commit(cursor: Any) -> None:
            hook()
            original(cursor)

        store_module._sqlite_commit = commit
        try:
            yield
        finally:
            store_module._sqlite_commit = original
    else:

        def listener(_connection: Any) -> None:
            hook()

        sa.event.listen(log.engine, "commit", listener)
        try:
            yield
        finally:
            sa.event.remove(log.engine, "commit", listener)


@contextlib.contextmanager
def counting_commits(log: TransactionLog) -> Iterator[Callable[[], int]]:
    """The number of commits of the log's writer so far, while in the block."""
    commits = [0]

    def count() -> None:
        commits[0] += 1

    with at_commit(log, count):
        yield lambda: commits[0]


# -- verifying: the CLI's answer and tampering as the database's owner ----------------------------

OUT = "DIRECTION_OUTGOING"
IN = "DIRECTION_INCOMING"
Capsys = pytest.CaptureFixture[str]


def verify(capsys: Capsys, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["txlog", "verify", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def tamper(url: str, change: Callable[[sa.Connection], None]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            change(connection)
    finally:
        engine.dispose()


def ids(url: str, stream: str = OUT) -> dict[int, int]:
    """seq -> log_id of a stream."""
    c = schema.records.c
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(c.chain_seq, c.id).where(c.direction == stream, c.chain_seq.is_not(None))
            )
            return {int(seq): int(log_id) for seq, log_id in rows}
    finally:
        engine.dispose()


def sql(statement: str, **params: Any) -> Callable[[sa.Connection], None]:
    return lambda connection: connection.execute(sa.text(statement), params)


def insert_forged(
    connection: sa.Connection,
    table: sa.Table,
    stream: sa.ColumnElement[bool],
    seq: int,
    link: Callable[[Mapping[str, Any], int, str], str],
    **changes: Any,
) -> None:
    """A forged row at ``seq`` of ``stream`` (the rows from there on move one up): a copy of
    the row before it with ``changes``, linked to that row as ``link`` hashes it, so that only
    the link after it breaks (the transaction log's and the audit log's tamper tests)."""
    c = table.c
    before = connection.execute(sa.select(table).where(stream, c.chain_seq == seq - 1)).one()
    # Through negative numbers: a stream's seq is unique, checked row by row.
    connection.execute(
        sa.update(table).where(stream, c.chain_seq >= seq).values(chain_seq=-c.chain_seq - 1)
    )
    connection.execute(
        sa.update(table).where(stream, c.chain_seq < 0).values(chain_seq=-c.chain_seq)
    )
    forged = {k: v for k, v in before._mapping.items() if k != "id"}
    forged.update(changes)
    forged["chain_seq"] = seq
    forged["chain_prev"] = link(before._mapping, seq - 1, before.chain_prev)
    connection.execute(sa.insert(table), [forged])


def only_problem(report: dict[str, Any]) -> dict[str, Any]:
    assert report["ok"] is False
    (problem,) = report["problems"]
    return dict(problem)


def recompute_after_change(connection: sa.Connection) -> None:
    """Change outgoing seq 5, then recompute every link after it, as the database's owner could."""
    c = schema.records.c
    connection.execute(
        sa.update(schema.records)
        .where(c.direction == OUT, c.chain_seq == 5)
        .values(service_name="andere-dienst")
    )
    rows = connection.execute(
        sa.select(schema.records)
        .where(c.direction == OUT, c.chain_seq.is_not(None))
        .order_by(c.chain_seq)
    ).all()
    prev = "0" * 64
    for row in rows:
        connection.execute(sa.update(schema.records).where(c.id == row.id).values(chain_prev=prev))
        prev = record_hash(row._mapping, row.chain_seq, prev)


def append_audit(store: ControllerStore, count: int, *, start: int = 0, at: datetime = T0) -> None:
    """``count`` entries in the controller's audit log, numbered from ``start``, a second apart."""
    for number in range(start, start + count):
        store.append_audit(
            at=at + timedelta(seconds=number),
            actor=f"user{number % 3}",
            role="administrator" if number % 2 else None,
            action="user.create",
            outcome="success",
            peer_address="192.0.2.7",
            target=f"account{number}",
            detail=None if number % 4 else "with detail",
        )


def edit(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(line) + "\n" for line in change(lines)))


# -- an organisation that signs (checkpoints) ------------------------------------------------------

MakeToken = Callable[..., HsmSettings]


@dataclass(frozen=True)
class SigningOrganisation:
    """A provisioned organisation in the session's SoftHSM: token, key, certificate from a demo
    CA, and its ``sluis.toml`` (without a ``[txlog]`` section: :func:`with_txlog` adds one)."""

    config: SluisConfig
    root: Path

    def with_txlog(self, database: str) -> Path:
        path = self.root / f"sluis-{abs(hash(database))}.toml"
        assert self.config.source is not None
        text = self.config.source.read_text(encoding="utf-8")
        path.write_text(f'{text}\n[txlog]\ndatabase = "{database}"\n', encoding="utf-8")
        return path


def provision_signing(
    make_token: MakeToken, root: Path, ca: DemoCA, label: str, oin: str
) -> SigningOrganisation:
    settings = make_token(label, generate=False)
    root.mkdir(parents=True)
    assert settings.pin_file is not None
    (root / "hsm.pin").write_bytes(settings.pin_file.read_bytes())
    (root / "hsm.pin").chmod(0o600)
    identity = OrganisationIdentity(name=f"Organisation {label}", oin=oin, fqdns=(f"{label}.test",))
    config = provision_with_token(
        ca, Organisation(identity, label), root, init_token=False, login_lock=settings.login_lock
    )
    return SigningOrganisation(config, root)


# -- logging.yaml ---------------------------------------------------------------------------


@functools.cache
def logging_spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LOGGING_YAML.read_text(encoding="utf-8"))
    return data


@functools.cache
def manager_spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANAGER_YAML.read_text(encoding="utf-8"))
    return data


def _validator(schema: Mapping[str, Any]) -> jsonschema.Draft7Validator:
    root = {**schema, "components": logging_spec()["components"]}
    return jsonschema.Draft7Validator(root)


def _resolve_discriminator(property_schema: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """OpenAPI's ``discriminator`` picks one ``oneOf`` branch by ``type``; plain JSON Schema
    does not know it (and a delegated source matches both branches, so ``oneOf`` alone would
    fail). Validate against exactly the mapped branch, as an OpenAPI validator does."""
    mapping = property_schema["discriminator"]["mapping"]
    kind = value.get("type") if isinstance(value, dict) else None
    assert kind in mapping, f"type {kind!r} is not one of {sorted(mapping)}"
    return {"$ref": mapping[kind]}


def validate_log_record(data: Any) -> None:
    """``data`` is a valid logging.yaml ``logRecord`` (discriminators honoured)."""
    log_record = logging_spec()["components"]["schemas"]["logRecord"]
    flat = dict(log_record)
    flat["properties"] = dict(log_record["properties"])
    for name in ("source", "destination"):
        flat["properties"][name] = _resolve_discriminator(
            log_record["properties"][name], data.get(name)
        )
    _validator(flat).validate(data)
    # The delegated branches are supersets: a plain type must not carry a delegator either.
    for name, plain in (
        ("source", "SOURCE_TYPE_SOURCE"),
        ("destination", "DESTINATION_TYPE_DESTINATION"),
    ):
        if data[name]["type"] == plain:
            assert "delegator_peer_id" not in data[name], data


def validate_logs_response(body: Any) -> None:
    """``body`` is a valid 200 answer of ``GET /logs``."""
    response = logging_spec()["paths"]["/logs"]["get"]["responses"][200]
    schema = response["content"]["application/json"]["schema"]
    envelope = dict(schema)
    envelope["properties"] = {**schema["properties"], "records": {"type": "array"}}
    _validator(envelope).validate(body)
    for item in body["records"]:
        validate_log_record(item)
