"""The transaction log's metrics (appliance.metrics.txlog): the writer's commit latency, batch
sizes, queue and failures, counted per batch through its observer; the export's lag."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from txlogtest import at_commit, records_at, run, write_all

from appliance.cli.main import main
from appliance.metrics.txlog import TxlogMetrics
from appliance.txlog import TransactionLog, TransactionLogWriteError
from appliance.txlog.export import export_jsonl

NAMES = (
    "sluis_txlog_batch_records_count",
    "sluis_txlog_batch_records_sum",
    "sluis_txlog_commit_duration_seconds_count",
)


def figures() -> dict[str, float]:
    found = {name: REGISTRY.get_sample_value(name) or 0.0 for name in NAMES}
    for cause in ("commit", "timeout"):
        value = REGISTRY.get_sample_value("sluis_txlog_write_failures_total", {"cause": cause})
        found[cause] = value or 0.0
    return found


def grown(before: dict[str, float]) -> dict[str, float]:
    return {name: value - before[name] for name, value in figures().items()}


def test_batches_are_measured(store_url: str) -> None:
    before = figures()
    with TransactionLog.open(store_url, observer=TxlogMetrics()) as log:
        assert run(write_all(log, records_at(40))) == [None] * 40
        batches = log.stats.batches
    delta = grown(before)
    assert delta["sluis_txlog_batch_records_sum"] == 40
    assert delta["sluis_txlog_batch_records_count"] == batches
    assert delta["sluis_txlog_commit_duration_seconds_count"] == batches
    assert (delta["commit"], delta["timeout"]) == (0, 0)
    assert REGISTRY.get_sample_value("sluis_txlog_queue_records") == 0


def test_failed_commits_and_timeouts_are_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'txlog.db'}"
    before = figures()
    with TransactionLog.open(url, observer=TxlogMetrics(), write_timeout=0.2) as log:

        def fail() -> None:
            raise OSError("disk full")

        with at_commit(log, fail):
            results = run(write_all(log, records_at(3)))
        assert all(isinstance(r, TransactionLogWriteError) for r in results)
        release = threading.Event()
        with at_commit(log, lambda: release.wait(5)):
            results = run(write_all(log, records_at(1)))
            release.set()
        assert isinstance(results[0], TransactionLogWriteError)
    delta = grown(before)
    assert delta["commit"] == 3
    assert delta["timeout"] == 1


def test_the_export_reports_its_lag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'txlog.db'}"
    old = datetime.now(UTC) - timedelta(seconds=100)
    with TransactionLog.open(url) as log:
        assert run(write_all(log, records_at(3, start=old))) == [None] * 3
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    held_back = export_jsonl(url, out, state, settle_seconds=300)  # none old enough
    assert held_back.exported == 0
    assert 100 <= held_back.lag_seconds < 160
    metrics = tmp_path / "sluis_txlog_export.prom"
    argv = ["txlog", "export-jsonl", "--database", url, "--output", str(out), "--state"]
    assert main([*argv, str(state), "--metrics-file", str(metrics)]) == 0
    capsys.readouterr()
    assert "sluis_txlog_export_lag_seconds 0.000\n" in metrics.read_text()
    assert "# TYPE sluis_txlog_export_last_run_timestamp_seconds gauge" in metrics.read_text()


def test_the_gateways_log_has_the_observer_unless_metrics_are_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.config import TxlogSettings
    from appliance.txlog.gateway import open_log

    class Config:
        source = None
        txlog = TxlogSettings(database=f"sqlite:///{tmp_path / 'txlog.db'}")

    for setting, metered in (("on", True), ("off", False)):
        monkeypatch.setenv("SLUIS_METRICS", setting)
        log = open_log(Config())  # type: ignore[arg-type]
        try:
            assert isinstance(log._observer, TxlogMetrics) is metered
        finally:
            log.close()
