"""The figures read at scrape time, and the transaction log's counters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from appliance.metrics.collectors import (
    ContractsCollector,
    HostCollector,
    TxlogStats,
    count_deliveries,
)
from appliance.metrics.registry import exposition


def test_host_figures(tmp_path: Path) -> None:
    text = exposition([HostCollector([tmp_path])]).decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines[f'sluis_disk_free_bytes{{path="{tmp_path}"}}']) > 0
    assert float(lines["sluis_open_files"]) > 3
    assert float(lines["sluis_workers"]) == 1
    assert float(lines['sluis_worker_resident_memory_bytes{stat="max"}']) > 1e6


def test_host_figures_without_proc_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the sluis role's sandbox (ProcSubset=pid) /proc/stat, and with it the boot time,
    cannot be read: the figures are still there, and the scrape never fails for them."""
    import psutil._pslinux

    def hidden() -> float:
        raise FileNotFoundError(2, "No such file or directory", "/proc/stat")

    monkeypatch.setattr(psutil._pslinux, "boot_time", hidden)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as under gunicorn
    text = exposition([HostCollector([tmp_path])]).decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    # This process stands for a worker: its parent for the master, its siblings for workers.
    assert float(lines["sluis_workers"]) >= 1
    assert float(lines["sluis_open_files"]) > 3

    def broken() -> None:
        raise PermissionError(13, "Permission denied", "/proc")

    monkeypatch.setattr(psutil, "process_iter", broken)
    text = exposition([HostCollector([tmp_path])]).decode()
    assert f'sluis_disk_free_bytes{{path="{tmp_path}"}}' in text
    assert "sluis_workers " not in text


def test_contracts_by_state_and_a_store_that_is_down() -> None:
    text = exposition([ContractsCollector(lambda: {"valid": 3, "proposed": 1})]).decode()
    assert 'sluis_manager_contracts{state="valid"} 3.0' in text

    def down() -> dict[str, int]:
        raise OSError("connection refused")

    assert "sluis_manager_contracts{" not in exposition([ContractsCollector(down)]).decode()


def test_contract_counts_are_counted_once_per_max_age() -> None:
    """A scrape every 15 s must not count 100,000 contracts each time."""
    now = [1000.0]
    calls: list[float] = []

    def counts() -> dict[str, int]:
        calls.append(now[0])
        return {"valid": len(calls)}

    collector = ContractsCollector(counts, max_age=60, clock=lambda: now[0])

    def scraped() -> str:
        return exposition([collector]).decode()

    assert 'sluis_manager_contracts{state="valid"} 1.0' in scraped()
    now[0] += 59
    assert 'sluis_manager_contracts{state="valid"} 1.0' in scraped()  # the cached count
    now[0] += 1
    assert 'sluis_manager_contracts{state="valid"} 2.0' in scraped()  # counted again
    assert calls == [1000.0, 1060.0]


@dataclass
class Stats:
    records: int = 0
    batches: int = 0
    failed_records: int = 0
    failed_batches: int = 0


def test_the_writer_figures_become_counters() -> None:
    def total(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    before = total("sluis_txlog_records_total"), total("sluis_txlog_failed_records_total")
    stats = Stats(records=10, batches=4)
    sampler = TxlogStats(lambda: stats)
    sampler.sample()
    stats.records, stats.failed_records = 15, 2
    sampler.sample()
    sampler.sample()  # nothing new: nothing added
    assert total("sluis_txlog_records_total") - before[0] == 15
    assert total("sluis_txlog_failed_records_total") - before[1] == 2


def test_deliveries_by_result() -> None:
    def total(result: str) -> float:
        return REGISTRY.get_sample_value("sluis_manager_deliveries_total", {"result": result}) or 0

    before = total("delivered"), total("failed")
    count_deliveries(3, 1)
    count_deliveries(0, 0)
    assert (total("delivered") - before[0], total("failed") - before[1]) == (3, 1)
