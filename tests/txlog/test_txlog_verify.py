"""``sluis txlog verify``: every kind of tampering is found, at the right place, in a store
(SQLite and PostgreSQL, changed as the database's owner could) and in an exported file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from txlogtest import (
    IN,
    OUT,
    Capsys,
    edit,
    ids,
    insert_forged,
    only_problem,
    recompute_after_change,
    records_at,
    run,
    sql,
    tamper,
    verify,
    write_all,
)

from appliance.cli.main import main
from appliance.txlog import Direction, TransactionLog, schema
from appliance.txlog.chain import record_hash
from appliance.txlog.database import create_engine
from appliance.txlog.export import export_jsonl


@pytest.fixture
def filled(store_url: str) -> str:
    """20 outgoing and 5 incoming records, interleaved in group commits."""
    with TransactionLog.open(store_url) as log:
        items = records_at(20) + records_at(5, direction=Direction.INCOMING)
        assert run(write_all(log, items)) == [None] * 25
    return store_url


def test_an_untouched_store_verifies(filled: str, capsys: Capsys) -> None:
    code, report = verify(capsys, "--database", filled)
    assert code == 0
    assert report["ok"] is True
    assert report["records"] == 25
    assert report["streams"][OUT]["head"]["seq"] == 20
    assert report["streams"][IN]["head"]["seq"] == 5
    assert main(["txlog", "verify", "--database", filled]) == 0
    assert "OK: every record and every link verified" in capsys.readouterr().out


def test_a_changed_field_breaks_the_link_after_it(filled: str, capsys: Capsys) -> None:
    seqs = ids(filled)
    tamper(
        filled,
        sql(
            "UPDATE txlog_records SET service_name = 'andere-dienst' "
            "WHERE direction = :d AND chain_seq = 5",
            d=OUT,
        ),
    )
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["log_id"]) == (OUT, 6, seqs[6])
    assert f"seq 5 (log_id {seqs[5]}) was changed" in problem["problem"]
    assert report["streams"][IN]["head"]["seq"] == 5  # the other stream is still vouched for


def test_a_deleted_record_is_a_gap(filled: str, capsys: Capsys) -> None:
    seqs = ids(filled)
    tamper(filled, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq = 7", d=OUT))
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (8, seqs[8])
    assert "seq 7..7 missing (deleted)" in problem["problem"]


def test_an_inserted_record_is_found(filled: str, capsys: Capsys) -> None:
    """Renumbered behind it and linked to its predecessor: the link after it breaks."""
    seqs = ids(filled)

    def insert(connection: sa.Connection) -> None:
        forged = "0197a000-0000-7000-8000-0000000000ff"
        stream = schema.records.c.direction == OUT
        insert_forged(connection, schema.records, stream, 10, record_hash, transaction_id=forged)

    tamper(filled, insert)
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    # The record that was seq 10 is now 11, and no longer follows what stands before it.
    assert (problem["seq"], problem["log_id"]) == (11, seqs[10])
    assert "the link to seq 10 (log_id" in problem["problem"]


def test_a_record_without_a_chain_position_is_found(filled: str, capsys: Capsys) -> None:
    def insert(connection: sa.Connection) -> None:
        c = schema.records.c
        row = connection.execute(sa.select(schema.records).where(c.chain_seq == 3)).first()
        assert row is not None
        forged = {k: v for k, v in row._mapping.items() if k != "id"}
        forged.update(transaction_id="0197a000-0000-7000-8000-0000000000fe", chain_seq=None)
        forged["chain_prev"] = None
        connection.execute(sa.insert(schema.records), [forged])

    tamper(filled, insert)
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    assert problem["log_id"] == 26
    assert "without a place in the chain" in problem["problem"]


def test_two_records_swapped_break_at_the_first(filled: str, capsys: Capsys) -> None:
    seqs = ids(filled)

    def swap(connection: sa.Connection) -> None:
        for old, new in ((12, -1), (13, 12), (-1, 13)):
            connection.execute(
                sa.text(
                    "UPDATE txlog_records SET chain_seq = :n "
                    "WHERE direction = :d AND chain_seq = :o"
                ),
                {"n": new, "o": old, "d": OUT},
            )

    tamper(filled, swap)
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (12, seqs[13])
    assert f"the link to seq 11 (log_id {seqs[11]}) is broken" in problem["problem"]


def test_a_cut_tail_is_found_against_a_known_head(filled: str, capsys: Capsys) -> None:
    _, before = verify(capsys, "--database", filled)
    head = before["streams"][OUT]["head"]
    known = f"{OUT}={head['seq']}:{head['hash']}"
    tamper(filled, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq > 17", d=OUT))
    # Alone, a shorter chain is a valid chain (what checkpoints are for; docs/txlog.md)...
    code, report = verify(capsys, "--database", filled)
    assert code == 0
    assert report["streams"][OUT]["head"]["seq"] == 17
    # ... but not against the head an auditor saw before.
    code, report = verify(capsys, "--database", filled, "--head", known)
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"]) == (OUT, 18)
    assert (
        "the tail was cut: the known head is seq 20, the last record is seq 17"
        in (problem["problem"])
    )


def test_a_recomputed_chain_is_found_against_a_known_head(filled: str, capsys: Capsys) -> None:
    _, before = verify(capsys, "--database", filled)
    head = before["streams"][OUT]["head"]
    seqs = ids(filled)

    tamper(filled, recompute_after_change)
    assert verify(capsys, "--database", filled)[0] == 0
    code, report = verify(capsys, "--database", filled, "--head", f"{OUT}=20:{head['hash']}")
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (20, seqs[20])
    assert "not the record of the known head" in problem["problem"]


# -- an exported file, offline ------------------------------------------------------------------


@pytest.fixture
def bundle(filled: str, tmp_path: Path) -> Path:
    out = tmp_path / "export.jsonl"
    export_jsonl(filled, out, tmp_path / "cursor", settle_seconds=0)
    return out


def out_line(lines: list[dict[str, Any]], seq: int) -> dict[str, Any]:
    (line,) = [x for x in lines if x["direction"] == OUT and x["chain_seq"] == seq]
    return line


def test_an_untouched_export_verifies_offline(bundle: Path, capsys: Capsys) -> None:
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 0
    assert report["records"] == 25


@pytest.mark.parametrize(
    ("name", "change", "seq", "words"),
    [
        (
            "field",
            lambda lines: [
                {**x, "grant_hash": "$1$4$x"}
                if x["direction"] == OUT and x["chain_seq"] == 5
                else x
                for x in lines
            ],
            6,
            "seq 5 (log_id",
        ),
        (
            "delete",
            lambda lines: [x for x in lines if not (x["direction"] == OUT and x["chain_seq"] == 7)],
            8,
            "seq 7..7 missing",
        ),
        (
            "insert",
            lambda lines: [*lines, {**out_line(lines, 9), "log_id": 99}],
            9,
            "a second record with seq 9",
        ),
        (
            "swap",
            lambda lines: [
                {**x, "chain_seq": 25 - x["chain_seq"]}
                if x["direction"] == OUT and x["chain_seq"] in (12, 13)
                else x
                for x in lines
            ],
            12,
            "the link to seq 11 (log_id",
        ),
        (
            "purpose",
            lambda lines: [
                {**x, "purpose_digest": "0" * 64}
                if x["direction"] == OUT and x["chain_seq"] == 3
                else x
                for x in lines
            ],
            4,
            "seq 3 (log_id",
        ),
    ],
)
def test_tampering_with_an_export_is_found(
    bundle: Path,
    capsys: Capsys,
    name: str,
    change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    seq: int,
    words: str,
) -> None:
    edit(bundle, change)
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 1, name
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"]) == (OUT, seq)
    assert words in problem["problem"]


def test_a_line_delivered_twice_is_read_once(bundle: Path, capsys: Capsys) -> None:
    """The log shipper may send a line again after a broken connection: an exact repeat of a
    record adds nothing and breaks nothing (a changed one is the insert above; checkpoints
    repeated: tests/txlog/test_audit_chain.py)."""
    lines = bundle.read_text().splitlines(keepends=True)
    bundle.write_text("".join([*lines[:10], lines[4], lines[9], *lines[10:]]))
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 0, report["problems"]
    assert (report["records"], report["repeated"]) == (25, 2)


def test_a_foreign_line_is_refused(bundle: Path, capsys: Capsys) -> None:
    with bundle.open("a") as out:
        out.write('{"hello": 1}\n')
    assert main(["txlog", "verify", "--bundle", str(bundle)]) == 2
    assert "line 26: not an exported record" in capsys.readouterr().err


def test_certificates_that_cannot_be_read_are_said_not_a_traceback(
    bundle: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Exit 2 (cannot verify), not 1 (a broken log), with the path and why."""
    missing = tmp_path / "no-such.pem"
    assert main(["txlog", "verify", "--bundle", str(bundle), "--certificates", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"cannot verify: {missing}: cannot read it (No such file or directory)" in err
    assert "Traceback" not in err


def test_a_purge_verifies_from_the_acknowledged_start(filled: str, capsys: Capsys) -> None:
    seqs = ids(filled)
    c = schema.records.c
    engine = create_engine(filled)
    try:
        with engine.connect() as connection:
            cut_hash = connection.execute(
                sa.select(c.chain_prev).where(c.direction == OUT, c.chain_seq == 9)
            ).scalar_one()
    finally:
        engine.dispose()
    tamper(filled, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq <= 8", d=OUT))
    code, report = verify(capsys, "--database", filled)
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (9, seqs[9])
    assert "seq 1..8 are missing (deleted)" in problem["problem"]
    code, report = verify(capsys, "--database", filled, "--start", f"{OUT}=8:{cut_hash}")
    assert code == 0
    assert report["streams"][OUT]["records"] == 12
    code, report = verify(capsys, "--database", filled, "--start", f"{OUT}=8:{'0' * 64}")
    assert code == 1
    assert "does not follow the given start's hash" in only_problem(report)["problem"]
    code, report = verify(capsys, "--database", filled, "--start", f"{OUT}=6:{cut_hash}")
    assert code == 1
    assert "seq 7..8 are missing" in only_problem(report)["problem"]
