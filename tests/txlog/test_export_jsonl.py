"""``sluis txlog export-jsonl``: every record once, in order, only its fields, across restarts,
crashes between the two writes, torn lines and a rotated output file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from txlogtest import PEER_A, PEER_B, record, records_at, run, write_all

from appliance.cli.main import main
from appliance.txlog import PurposeBinding, TransactionLog
from appliance.txlog.export import (
    FSC_FIELDS,
    PURPOSE_FIELDS,
    ExportError,
    export_jsonl,
    read_cursor,
    write_cursor,
)

CHAIN_FIELDS = ("chain_seq", "chain_prev", "purpose_digest")


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(log: TransactionLog, count: int, **kw: object) -> None:
    results = run(write_all(log, records_at(count, **kw)))
    assert results == [None] * count


def test_every_record_once_in_order(log: TransactionLog, store_url: str, tmp_path: Path) -> None:
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    _write(log, 5)
    first = export_jsonl(store_url, out, state, batch=2, settle_seconds=0)
    assert first.exported == 5
    _write(log, 3, start=records_at(1)[0].created_at.replace(hour=13))
    second = export_jsonl(store_url, out, state, settle_seconds=0)
    assert second.exported == 3
    assert export_jsonl(store_url, out, state, settle_seconds=0).exported == 0
    lines = _lines(out)
    ids = [line["log_id"] for line in lines]
    assert ids == sorted(ids)
    assert len(set(ids)) == 8
    assert read_cursor(state) == ids[-1] == second.cursor
    assert {line["source_outway_peer_id"] for line in lines} == {PEER_A}
    assert {line["destination_service_peer_id"] for line in lines} == {PEER_B}
    assert str(lines[0]["created_at"]).endswith("+00:00")


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
    (line,) = _lines(full)
    assert set(line) == {"log_id", "created_at", *FSC_FIELDS, *PURPOSE_FIELDS, *CHAIN_FIELDS}
    assert line["processing_activity_id"] == "urn:pa:1"


def test_crash_before_the_cursor_write_sends_nothing_twice(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    _write(log, 4)
    export_jsonl(store_url, out, state, settle_seconds=0)
    write_cursor(state, 1)  # the lines reached the disk, the cursor did not move
    assert export_jsonl(store_url, out, state, settle_seconds=0).exported == 0
    assert len(_lines(out)) == 4
    assert read_cursor(state) == _lines(out)[-1]["log_id"]


def test_torn_last_line_is_written_again_whole(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    _write(log, 3)
    export_jsonl(store_url, out, state, settle_seconds=0)
    text = out.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    out.write_text(text[: last_start + 10])  # a crash in the middle of the last line
    write_cursor(state, _lines_from(text)[-2]["log_id"])
    assert export_jsonl(store_url, out, state, settle_seconds=0).exported == 1
    assert out.read_text() == text


def _lines_from(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_rotated_output_starts_a_new_file_without_repeats(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    _write(log, 2)
    export_jsonl(store_url, out, state, settle_seconds=0)
    out.rename(tmp_path / "txlog.jsonl.1")
    _write(log, 1, start=records_at(1)[0].created_at.replace(hour=14))
    assert export_jsonl(store_url, out, state, settle_seconds=0).exported == 1
    assert len(_lines(out)) == 1


def test_settle_time_holds_back_recent_records(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    run(log.write(record()))  # created now
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    assert export_jsonl(store_url, out, state, settle_seconds=3600).exported == 0
    assert export_jsonl(store_url, out, state, settle_seconds=0).exported == 1


def test_foreign_output_file_is_refused(
    log: TransactionLog, store_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "txlog.jsonl"
    out.write_text('{"something": "else"}\n')
    with pytest.raises(ExportError):
        export_jsonl(store_url, out, tmp_path / "cursor", settle_seconds=0)


def test_cli(
    log: TransactionLog, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(log, 2)
    out, state = tmp_path / "txlog.jsonl", tmp_path / "cursor"
    argv = ["txlog", "export-jsonl", "--database", store_url, "--output", str(out)]
    argv += ["--state", str(state), "--settle-seconds", "0", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["exported"] == 2
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"exported": 0, "cursor": read_cursor(state)}
