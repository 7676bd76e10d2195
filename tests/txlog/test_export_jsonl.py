"""``sluis txlog export-jsonl`` and ``sluis controller audit export-jsonl`` (one export, over
either chained log): every record once, in order, only its fields, across restarts, crashes
between the two writes, torn lines and a rotated output file. The audit log's checkpoints in
the export and the collector's copy verified: tests/txlog/test_audit_chain.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from txlogtest import PEER_A, PEER_B, T0, append_audit, record, records_at, run, write_all

from appliance.cli.main import main
from appliance.controller.auditlog import AUDIT
from appliance.controller.store import ControllerStore
from appliance.txlog import PurposeBinding, TransactionLog
from appliance.txlog.chain import TXLOG, Log
from appliance.txlog.export import (
    FSC_FIELDS,
    ExportError,
    ExportResult,
    export_jsonl,
    read_cursor,
    write_cursor,
)
from appliance.txlog.schema import PURPOSE_FIELDS

CHAIN_FIELDS = ("chain_seq", "chain_prev", "purpose_digest")


@dataclass
class Source:
    """One chained log on a new database, as the export sees it."""

    url: str
    log: Log
    command: tuple[str, ...]  # its CLI group
    append: Callable[[int, int, datetime], None]  # count, the first one's number, its time
    written: int = 0

    def write(self, count: int, at: datetime | None = None) -> None:
        """``count`` records a second apart, from ``at`` (default: after the ones before)."""
        self.append(count, self.written, at or T0 + timedelta(seconds=self.written))
        self.written += count

    def export(self, out: Path, state: Path, **kw: Any) -> ExportResult:
        return export_jsonl(self.url, out, state, log=self.log, **kw)

    def fields(self) -> set[str]:
        """Every field of a record's line (no purpose fields)."""
        digest = ("purpose_digest",) if self.log.purpose else ()
        return {"log_id", self.log.moment, *self.log.fields, "chain_seq", "chain_prev", *digest}


@pytest.fixture(params=["txlog", "audit"])
def source(request: pytest.FixtureRequest, store_url: str) -> Iterator[Source]:
    """The transaction log, or the controller's audit log, on each backend."""
    if request.param == "txlog":
        with TransactionLog.open(store_url) as opened:

            def transactions(count: int, _first: int, at: datetime) -> None:
                _write(opened, count, start=at)

            yield Source(store_url, TXLOG, ("txlog",), transactions)
        return
    store = ControllerStore.open(store_url)

    def entries(count: int, first: int, at: datetime) -> None:
        append_audit(store, count, start=first, at=at - timedelta(seconds=first))

    try:
        yield Source(store_url, AUDIT, ("controller", "audit"), entries)
    finally:
        store.close()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(log: TransactionLog, count: int, start: datetime = T0) -> None:
    results = run(write_all(log, records_at(count, start)))
    assert results == [None] * count


def test_every_record_once_in_order(source: Source, tmp_path: Path) -> None:
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    source.write(5)
    first = source.export(out, state, batch=2, settle_seconds=0)
    assert first.exported == 5
    before = out.read_text()
    source.write(3, at=T0 + timedelta(hours=1))
    second = source.export(out, state, settle_seconds=0)
    assert second.exported == 3
    assert source.export(out, state, settle_seconds=0).exported == 0
    assert out.read_text().startswith(before)  # appended, the lines before untouched
    lines = _lines(out)
    ids = [line["log_id"] for line in lines]
    assert ids == sorted(ids)
    assert len(set(ids)) == 8
    assert read_cursor(state) == ids[-1] == second.cursor
    assert all(set(line) == source.fields() for line in lines)
    assert str(lines[0][source.log.moment]).endswith("+00:00")


def test_only_record_fields_and_purpose_on_request(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    purpose = PurposeBinding(processing_activity_id="urn:pa:1", trace_id="a" * 32)
    run(log.write(record(purpose=purpose)))
    plain, full = tmp_path / "plain.jsonl", tmp_path / "full.jsonl"
    export_jsonl(store_url, plain, tmp_path / "c1", settle_seconds=0)
    export_jsonl(store_url, full, tmp_path / "c2", purpose=True, settle_seconds=0)
    (line,) = _lines(plain)
    assert set(line) == {"log_id", "created_at", *FSC_FIELDS, *CHAIN_FIELDS}
    assert (line["source_outway_peer_id"], line["destination_service_peer_id"]) == (PEER_A, PEER_B)
    (line,) = _lines(full)
    assert set(line) == {"log_id", "created_at", *FSC_FIELDS, *PURPOSE_FIELDS, *CHAIN_FIELDS}
    assert line["processing_activity_id"] == "urn:pa:1"


def test_crash_before_the_cursor_write_sends_nothing_twice(source: Source, tmp_path: Path) -> None:
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    source.write(4)
    source.export(out, state, settle_seconds=0)
    write_cursor(state, 1)  # the lines reached the disk, the cursor did not move
    assert source.export(out, state, settle_seconds=0).exported == 0
    assert len(_lines(out)) == 4
    assert read_cursor(state) == _lines(out)[-1]["log_id"]


def test_torn_last_line_is_written_again_whole(source: Source, tmp_path: Path) -> None:
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    source.write(3)
    source.export(out, state, settle_seconds=0)
    text = out.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    out.write_text(text[: last_start + 10])  # a crash in the middle of the last line
    write_cursor(state, _lines_from(text)[-2]["log_id"])
    assert source.export(out, state, settle_seconds=0).exported == 1
    assert out.read_text() == text


def _lines_from(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_rotated_output_starts_a_new_file_without_repeats(source: Source, tmp_path: Path) -> None:
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    source.write(2)
    source.export(out, state, settle_seconds=0)
    out.rename(tmp_path / "export.jsonl.1")
    source.write(1, at=T0 + timedelta(hours=2))
    assert source.export(out, state, settle_seconds=0).exported == 1
    assert len(_lines(out)) == 1


def test_settle_time_holds_back_recent_records(source: Source, tmp_path: Path) -> None:
    source.write(1, at=datetime.now(UTC))
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    assert source.export(out, state, settle_seconds=3600).exported == 0
    assert source.export(out, state, settle_seconds=0).exported == 1


def test_foreign_output_file_is_refused(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    out.write_text('{"something": "else"}\n')
    with pytest.raises(ExportError):
        source.export(out, tmp_path / "cursor", settle_seconds=0)


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    """Made by the export's root service, it would lock the controller or gateway out."""
    database = tmp_path / "controller.db"
    with pytest.raises(ExportError, match="no such database"):
        export_jsonl(f"sqlite:///{database}", tmp_path / "out", tmp_path / "cursor", log=AUDIT)
    assert not database.exists()
    assert not (tmp_path / "out").exists()


def test_cli(source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source.write(2)
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    argv = [*source.command, "export-jsonl", "--database", source.url, "--output", str(out)]
    argv += ["--state", str(state), "--settle-seconds", "0", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["exported"] == 2
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"exported": 0, "cursor": read_cursor(state)}
