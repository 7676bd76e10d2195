"""The controller's audit log is hash-chained and checkpointed like the transaction log (the same
code, ``chain.Log``): ``sluis controller audit checkpoint`` signs its head in a real SoftHSM
token, and ``sluis controller audit verify`` finds a changed field, a deleted, an inserted and
a moved entry, a cut tail, a replaced checkpoint and one signed with another key, each at the
right place, on SQLite and PostgreSQL; entries from before the chain (migration 0005) are
counted, not vouched for; two writers on one database still give one chain."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from txlogtest import (
    Capsys,
    SigningOrganisation,
    append_audit,
    edit,
    insert_forged,
    only_problem,
)

from appliance.cli.main import main
from appliance.controller import schema
from appliance.controller.auditlog import AUDIT, STREAM
from appliance.controller.database import create_engine, migrate
from appliance.controller.store import ControllerStore
from appliance.txlog.chain import GENESIS

T0 = datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)
ENTRIES = 12


@pytest.fixture
def audited(store_url: str) -> str:
    """A controller store with ENTRIES audit entries."""
    store = ControllerStore.open(store_url)
    try:
        append_audit(store, ENTRIES)
    finally:
        store.close()
    return store_url


def config_for(organisation: SigningOrganisation, database: str) -> Path:
    """The organisation's sluis.toml with a ``[controller]`` section on ``database``."""
    path = organisation.root / f"controller-{abs(hash(database))}.toml"
    assert organisation.config.source is not None
    text = organisation.config.source.read_text(encoding="utf-8")
    path.write_text(f'{text}\n[controller]\ndatabase = "{database}"\n', encoding="utf-8")
    return path


def verify(capsys: Capsys, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["controller", "audit", "verify", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def checkpoint(capsys: Capsys, config: Path, *argv: str) -> list[dict[str, Any]]:
    assert (
        main(["controller", "audit", "checkpoint", "--config", str(config), "--json", *argv]) == 0
    )
    made: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return made


def tamper(url: str, change: Callable[[sa.Connection], None]) -> None:
    """As the database's owner: the append-only triggers off, then ``change``."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("ALTER TABLE controller_audit DISABLE TRIGGER USER"))
            else:
                for event in ("update", "delete"):
                    connection.execute(sa.text(f"DROP TRIGGER controller_audit_no_{event}"))
            change(connection)
    finally:
        engine.dispose()


def sql(statement: str, **params: Any) -> Callable[[sa.Connection], None]:
    def change(connection: sa.Connection) -> None:
        connection.execute(sa.text(statement), params)

    return change


def altered(seq: int, **changes: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """For :func:`edit`: the entry line at ``seq`` with ``changes``."""

    def change(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**line, **changes} if line.get("chain_seq") == seq else line for line in lines]

    return change


def ids(url: str) -> dict[int, int]:
    """seq -> id of the audit entries."""
    c = schema.audit.c
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(c.chain_seq, c.id).where(c.chain_seq.is_not(None)))
            return {int(seq): int(entry) for seq, entry in rows}
    finally:
        engine.dispose()


def test_an_untouched_audit_log_verifies(audited: str, capsys: Capsys) -> None:
    code, report = verify(capsys, "--database", audited)
    assert code == 0, report
    stream = report["streams"][STREAM]
    assert (report["records"], stream["head"]["seq"], report["unchained"]) == (ENTRIES, ENTRIES, 0)
    # The canonical form, recomputed here from the documented fields: the head's hash.
    engine = create_engine(audited)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(schema.audit).order_by(schema.audit.c.chain_seq))
        prev = GENESIS
        for row in rows:
            assert row.chain_prev == prev
            prev = AUDIT.hash(row._mapping, row.chain_seq, prev)
    engine.dispose()
    assert stream["head"]["hash"] == prev


def test_a_changed_field_breaks_the_link_after_it(audited: str, capsys: Capsys) -> None:
    seqs = ids(audited)
    tamper(audited, sql("UPDATE controller_audit SET actor = 'someone' WHERE chain_seq = 5"))
    code, report = verify(capsys, "--database", audited)
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["log_id"]) == (STREAM, 6, seqs[6])
    assert f"the link to seq 5 (log_id {seqs[5]}) is broken" in problem["problem"]


def test_a_deleted_entry_is_a_gap(audited: str, capsys: Capsys) -> None:
    seqs = ids(audited)
    tamper(audited, sql("DELETE FROM controller_audit WHERE chain_seq = 7"))
    code, report = verify(capsys, "--database", audited)
    problem = only_problem(report)
    assert code == 1
    assert (problem["seq"], problem["log_id"]) == (8, seqs[8])
    assert "seq 7..7 missing (deleted)" in problem["problem"]


def test_an_inserted_entry_is_found(audited: str, capsys: Capsys) -> None:
    """Renumbered behind it and linked to its predecessor: the link after it breaks."""
    seqs = ids(audited)

    def insert(connection: sa.Connection) -> None:
        insert_forged(connection, schema.audit, sa.true(), 10, AUDIT.hash, target="forged")

    tamper(audited, insert)
    code, report = verify(capsys, "--database", audited)
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (11, seqs[10])
    assert "the link to seq 10 (log_id" in problem["problem"]


def test_an_entry_without_a_place_in_the_chain_is_found(audited: str, capsys: Capsys) -> None:
    tamper(
        audited,
        sql(
            "INSERT INTO controller_audit (at, actor, action, outcome, peer_address) "
            "VALUES (:at, 'intruder', 'user.create', 'success', 'local')",
            at=T0,
        ),
    )
    code, report = verify(capsys, "--database", audited)
    assert code == 1
    problem = only_problem(report)
    assert problem["log_id"] == ENTRIES + 1
    assert "without a place in the chain" in problem["problem"]


def test_two_entries_swapped_break_at_the_first(audited: str, capsys: Capsys) -> None:
    seqs = ids(audited)

    def swap(connection: sa.Connection) -> None:
        for old, new in ((4, -1), (5, 4), (-1, 5)):
            connection.execute(
                sa.text("UPDATE controller_audit SET chain_seq = :n WHERE chain_seq = :o"),
                {"n": new, "o": old},
            )

    tamper(audited, swap)
    code, report = verify(capsys, "--database", audited)
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (4, seqs[5])
    assert f"the link to seq 3 (log_id {seqs[3]}) is broken" in problem["problem"]


def test_entries_from_before_the_chain_are_counted_not_vouched_for(
    store_url: str, capsys: Capsys
) -> None:
    """Migration 0005: the entries already there keep no seq; the chain starts after them."""
    migrate(store_url, "0004")
    engine = create_engine(store_url)
    with engine.begin() as connection:
        for number in range(3):
            connection.execute(
                sa.text(
                    "INSERT INTO controller_audit (at, actor, action, outcome, peer_address) "
                    "VALUES (:at, 'old', 'user.create', 'success', 'local')"
                ),
                {"at": T0 + timedelta(seconds=number)},
            )
    engine.dispose()
    store = ControllerStore.open(store_url)  # migrates to the head
    try:
        append_audit(store, 4)
    finally:
        store.close()
    code, report = verify(capsys, "--database", store_url)
    assert code == 0, report
    assert (report["unchained"], report["records"]) == (3, 4)
    assert report["streams"][STREAM]["head"]["seq"] == 4


def test_two_writers_on_one_database_extend_one_chain(store_url: str, capsys: Capsys) -> None:
    """Two stores (two workers, or two controllers) appending at once: seq 1..N, no gap, no
    duplicate, every link right (the lock around the head)."""
    stores = [ControllerStore.open(store_url), ControllerStore.open(store_url)]
    errors: list[BaseException] = []

    def writer(store: ControllerStore, start: int) -> None:
        try:
            append_audit(store, 25, start=start)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, 100 * number))
        for number, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert sorted(ids(store_url)) == list(range(1, 51))
    code, report = verify(capsys, "--database", store_url)
    assert code == 0, report


@pytest.fixture
def signed(
    audited: str, organisation: SigningOrganisation, capsys: Capsys
) -> tuple[str, Path, int]:
    """The entries with a signed checkpoint of the head; the config and the checkpoint's id."""
    config = config_for(organisation, audited)
    (made,) = checkpoint(capsys, config)
    assert (made["stream"], made["seq"], made["reason"]) == (STREAM, ENTRIES, "manual")
    return audited, config, int(made["checkpoint_id"])


def test_a_signed_audit_log_verifies_and_signs_only_what_is_new(
    signed: tuple[str, Path, int], capsys: Capsys
) -> None:
    url, config, made = signed
    code, report = verify(capsys, "--config", str(config))
    assert code == 0, report
    assert report["checkpoints"] == 1
    assert report["streams"][STREAM]["last_checkpoint"]["checkpoint"] == made
    assert checkpoint(capsys, config) == []
    store = ControllerStore.open(url)
    append_audit(store, 2, start=ENTRIES)
    store.close()
    (again,) = checkpoint(capsys, config, "--reason", "rotation")
    assert (again["seq"], again["reason"]) == (ENTRIES + 2, "rotation")
    # The txlog's checkpoints are another table: this store has none of them to check.
    assert verify(capsys, "--config", str(config))[1]["streams"][STREAM]["checkpoints"] == 2


def test_a_cut_tail_is_found_through_the_checkpoint(
    signed: tuple[str, Path, int], capsys: Capsys
) -> None:
    url, config, made = signed
    tamper(url, sql("DELETE FROM controller_audit WHERE chain_seq > 9"))
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["checkpoint"]) == (10, made)
    assert f"the tail was cut: checkpoint {made} (signed " in problem["problem"]
    assert f"is seq {ENTRIES}, the last record is seq 9" in problem["problem"]


def test_a_recomputed_chain_is_found_and_not_signed_over(
    signed: tuple[str, Path, int], capsys: Capsys
) -> None:
    url, config, made = signed
    seqs = ids(url)

    def recompute(connection: sa.Connection) -> None:
        c = schema.audit.c
        connection.execute(sa.update(schema.audit).where(c.chain_seq == 5).values(actor="x"))
        rows = connection.execute(sa.select(schema.audit).order_by(c.chain_seq)).all()
        prev = GENESIS
        for row in rows:
            connection.execute(
                sa.update(schema.audit).where(c.id == row.id).values(chain_prev=prev)
            )
            prev = AUDIT.hash(row._mapping, row.chain_seq, prev)

    tamper(url, recompute)
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (ENTRIES, seqs[ENTRIES])
    assert f"not the record of checkpoint {made} (signed" in problem["problem"]
    store = ControllerStore.open(url)
    append_audit(store, 1, start=ENTRIES)
    store.close()
    assert main(["controller", "audit", "checkpoint", "--config", str(config)]) == 1
    assert "not signed" in capsys.readouterr().err


def test_a_replaced_checkpoint_is_found(signed: tuple[str, Path, int], capsys: Capsys) -> None:
    """Its row says another head than the JWS signed."""
    url, config, made = signed
    tamper(
        url,
        sql("UPDATE controller_audit_checkpoints SET head = :h WHERE id = :i", h="a" * 64, i=made),
    )
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = report["problems"][0]
    assert (problem["stream"], problem["checkpoint"]) == (STREAM, made)
    assert "is not what was signed" in problem["problem"]


def test_a_checkpoint_signed_with_another_key_is_found(
    audited: str,
    organisation: SigningOrganisation,
    other_organisation: SigningOrganisation,
    capsys: Capsys,
) -> None:
    (forged,) = checkpoint(capsys, config_for(other_organisation, audited))
    code, report = verify(capsys, "--config", str(config_for(organisation, audited)))
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["checkpoint"]) == (ENTRIES, forged["checkpoint_id"])
    assert "not among the organisation's" in problem["problem"]
    # Our key does not build on it either.
    assert (
        main(
            [
                "controller",
                "audit",
                "checkpoint",
                "--config",
                str(config_for(organisation, audited)),
            ]
        )
        == 1
    )
    assert "does not verify" in capsys.readouterr().err


def test_a_bundle_verifies_offline_and_shows_tampering(
    signed: tuple[str, Path, int], tmp_path: Path, capsys: Capsys
) -> None:
    _, config, _ = signed
    bundle = tmp_path / "audit.jsonl"
    argv = ["controller", "audit", "export-bundle", "--config", str(config)]
    assert main([*argv, "--output", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"records": ENTRIES, "checkpoints": 1}
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 0, report
    assert (report["roots_from"], report["checkpoints"]) == ("the bundle", 1)
    edit(bundle, altered(3, outcome="failure"))
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 1
    problem = only_problem(report)
    assert problem["seq"] == 4
    assert "the link to seq 3" in problem["problem"]


# -- shipped: export-jsonl's file, and the collector's copy of it, verified offline --------------


def export(capsys: Capsys, config: Path, out: Path, *argv: str) -> dict[str, Any]:
    """``sluis controller audit export-jsonl --config`` as the shipping service runs it (once)."""
    command = ["controller", "audit", "export-jsonl", "--config", str(config), "--output"]
    command += [str(out), "--state", str(out.with_name("cursor")), "--json", *argv]
    assert main(command) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_the_shipped_export_verifies_and_shows_an_altered_entry(
    signed: tuple[str, Path, int],
    organisation: SigningOrganisation,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    url, config, made = signed
    out = tmp_path / "audit.jsonl"
    # No settle time: the checkpoint was signed just now (PostgreSQL's default waits 120 s).
    first = export(capsys, config, out, "--settle-seconds", "0")
    assert first == {"exported": ENTRIES, "cursor": ids(url)[ENTRIES]}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["chain_seq"] for line in lines[:ENTRIES]] == list(range(1, ENTRIES + 1))
    assert (lines[-1]["checkpoint_id"], len(lines)) == (made, ENTRIES + 1)
    # Run again: only the new entries and checkpoint are appended, each once.
    before = out.read_text()
    store = ControllerStore.open(url)
    append_audit(store, 2, start=ENTRIES)
    store.close()
    (again,) = checkpoint(capsys, config)
    assert export(capsys, config, out, "--settle-seconds", "0")["exported"] == 2
    assert export(capsys, config, out, "--settle-seconds", "0")["exported"] == 0
    added = [json.loads(line) for line in out.read_text().removeprefix(before).splitlines()]
    assert [line.get("chain_seq") for line in added] == [ENTRIES + 1, ENTRIES + 2, None]
    assert added[-1]["checkpoint_id"] == again["checkpoint_id"]
    # The collector's copy, with the organisation's certificate and trust anchors.
    tls = organisation.config.tls
    assert tls.trust_anchors is not None
    given = ["--certificates", str(tls.certificate_chain), "--certificates", str(tls.trust_anchors)]
    code, report = verify(capsys, "--bundle", str(out), *given)
    assert code == 0, report
    assert (report["records"], report["checkpoints"], report["roots_from"]) == (
        ENTRIES + 2,
        2,
        "given",
    )
    head = report["streams"][STREAM]["head"]
    assert head["seq"] == ENTRIES + 2
    assert report["streams"][STREAM]["last_checkpoint"]["checkpoint"] == again["checkpoint_id"]
    # ... and against the head seen before (what the lead's --head gives).
    known = f"{STREAM}={head['seq']}:{head['hash']}"
    assert verify(capsys, "--bundle", str(out), *given, "--head", known)[0] == 0
    # Every line delivered twice (the shipper's redelivery after a broken connection): each
    # exact repeat of an entry or a checkpoint is read once.
    twice = tmp_path / "twice.jsonl"
    twice.write_text(out.read_text() * 2)
    code, report = verify(capsys, "--bundle", str(twice), *given, "--head", known)
    assert code == 0, report
    assert (report["records"], report["checkpoints"], report["repeated"]) == (
        ENTRIES + 2,
        2,
        ENTRIES + 2 + 2,
    )
    # An altered line in the copy: found at the entry after it, by seq and log_id.
    edit(out, altered(3, actor="someone-else"))
    seqs = ids(url)
    code, report = verify(capsys, "--bundle", str(out), *given)
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["log_id"]) == (STREAM, 4, seqs[4])
    assert f"the link to seq 3 (log_id {seqs[3]}) is broken" in problem["problem"]


def test_a_checkpoint_is_shipped_after_its_entry(
    audited: str, organisation: SigningOrganisation, tmp_path: Path, capsys: Capsys
) -> None:
    """An entry held back by the settle time (another controller's clock ahead) holds back the
    checkpoint that signed it, so the collector never reads a checkpoint before its entry."""
    config = config_for(organisation, audited)
    ahead = datetime.now(UTC) + timedelta(hours=1)
    store = ControllerStore.open(audited)
    append_audit(store, 1, start=ENTRIES, at=ahead - timedelta(seconds=ENTRIES))
    store.close()
    (made,) = checkpoint(capsys, config)
    assert made["seq"] == ENTRIES + 1
    signed_at = datetime.fromisoformat(made["signed_at"].replace("Z", "+00:00"))
    while datetime.now(UTC) <= signed_at + timedelta(seconds=1):  # the checkpoint settled
        time.sleep(0.05)
    out = tmp_path / "audit.jsonl"
    export(capsys, config, out, "--settle-seconds", "1")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("chain_seq") for line in lines] == list(range(1, ENTRIES + 1))
    export(capsys, config, out, "--settle-seconds", "0")  # the entry's time has come
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("chain_seq") for line in lines[ENTRIES:]] == [ENTRIES + 1, None]
    assert lines[-1]["checkpoint_id"] == made["checkpoint_id"]
