"""Figures read when scraped (by the worker that answers), not counted per request.

- :class:`HostCollector`: what the appliance cares about of its host, through psutil: the
  free space under the transaction log, the open files and the memory of the component's
  processes (the gunicorn master and all its workers, found from the answering worker).
- :class:`ContractsCollector`: the Manager's contracts by state, from its store.
- :class:`TxlogStats`: the durable log's writer figures (:class:`appliance.txlog.store.
  WriterStats`), copied into counters every few seconds by each worker, so that they add up
  over the workers like the data path's.

Series::

    sluis_disk_free_bytes{path}                     free space for the component's data
    sluis_open_files                                 open file descriptors, master and workers
    sluis_workers                                    gunicorn workers running
    sluis_worker_resident_memory_bytes{stat}         max and sum over the workers
    sluis_manager_contracts{state}                   proposed, accepted, valid, rejected, ...
                                                     (counted at most once a minute per worker)
    sluis_txlog_records_total                        records the writer committed or tried
    sluis_txlog_batches_total                        commits (a batch of records each)
    sluis_txlog_failed_records_total                 records whose commit failed (refused)
    sluis_txlog_failed_batches_total
    sluis_manager_deliveries_total{result}           outbox deliveries: delivered, failed
    sluis_manager_tokens_total{result}               token requests: issued, or the OAuth error
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from appliance.metrics.client import Counter

log = logging.getLogger("sluis.metrics")

SAMPLE_SECONDS = 5.0
# How old the Manager's contract counts may be when scraped (ContractsCollector).
CONTRACT_COUNTS_MAX_AGE = 60.0


class HostCollector(Collector):
    def __init__(self, disk_paths: Sequence[Path]) -> None:
        self._paths = tuple(disk_paths)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        disk = GaugeMetricFamily(
            "sluis_disk_free_bytes", "Free bytes for the component's data.", labels=["path"]
        )
        for path in self._paths:
            with contextlib.suppress(OSError):
                disk.add_metric([str(path)], float(shutil.disk_usage(path).free))
        yield disk
        try:
            master, workers = _processes()
        except (psutil.Error, OSError) as exc:  # the series go missing, not the scrape
            log.warning("process figures not read for the metrics: %s", exc)
            return
        files = 0.0
        rss: list[float] = []
        for process in ([master] if master is not None else []) + workers:
            with contextlib.suppress(psutil.Error):
                files += process.num_fds()
                if process is not master:
                    rss.append(float(process.memory_info().rss))
        yield GaugeMetricFamily(
            "sluis_open_files", "Open file descriptors of the master and workers.", value=files
        )
        yield GaugeMetricFamily("sluis_workers", "gunicorn workers running.", value=len(rss))
        memory = GaugeMetricFamily(
            "sluis_worker_resident_memory_bytes",
            "Resident memory of the workers: the largest, and all together.",
            labels=["stat"],
        )
        memory.add_metric(["max"], max(rss, default=0.0))
        memory.add_metric(["sum"], sum(rss))
        yield memory


def _processes() -> tuple[psutil.Process | None, list[psutil.Process]]:
    """The gunicorn master (None when this process runs alone, as in tests) and its workers.

    Found by parent pid only: psutil's ``parent()`` and ``children()`` also compare start
    times, which needs the boot time from ``/proc/stat``, and the sluis role's units hide that
    file (``ProcSubset=pid``): the scrape failed with a 500 under the sandbox."""
    me = psutil.Process()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None, [me]
    master = psutil.Process(os.getppid())
    workers = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.ppid() == master.pid:
                workers.append(process)
    return master, workers


class ContractsCollector(Collector):
    """The Manager's contracts by state, counted at most once per ``max_age`` seconds per
    worker: one count is a pass over an index (108 ms at 100,000 contracts on SQLite,
    docs/controller.md) that holds up the worker's event loop, so a scrape every 15 s (or a
    Prometheus pair scraping) must not pay it each time. The series lag by up to ``max_age``."""

    def __init__(
        self,
        counts: Callable[[], Mapping[str, int]],
        max_age: float = CONTRACT_COUNTS_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counts = counts
        self._max_age = max_age
        self._clock = clock
        self._cached: Mapping[str, int] | None = None
        self._counted_at = 0.0

    def _current(self) -> Mapping[str, int]:
        now = self._clock()
        if self._cached is None or now - self._counted_at >= self._max_age:
            self._cached = self._counts()
            self._counted_at = now
        return self._cached

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sluis_manager_contracts",
            "Contracts in the Manager's store by state.",
            labels=["state"],
        )
        try:
            counts = self._current()
        except Exception as exc:  # the store is down: the series go missing, not the scrape
            log.warning("contract counts not read for the metrics: %s", exc)
            return
        for state, count in sorted(counts.items()):
            family.add_metric([state], float(count))
        yield family


_TXLOG = {
    "records": Counter("sluis_txlog_records", "Transaction log records the writer handled."),
    "batches": Counter("sluis_txlog_batches", "Transaction log commits (batches)."),
    "failed_records": Counter(
        "sluis_txlog_failed_records", "Records whose commit failed: their requests refused."
    ),
    "failed_batches": Counter("sluis_txlog_failed_batches", "Commits that failed."),
}


_DELIVERIES = Counter(
    "sluis_manager_deliveries",
    "Outbox deliveries to peers' Managers (contracts, signatures) by result.",
    ["result"],
)


def count_deliveries(delivered: int, failed: int) -> None:
    """After a round of the Manager's outbox (``appliance.manager.delivery``)."""
    if delivered:
        _DELIVERIES.labels("delivered").inc(delivered)
    if failed:
        _DELIVERIES.labels("failed").inc(failed)


_TOKENS = Counter(
    "sluis_manager_tokens",
    "Access tokens the Manager was asked for, by result: issued, or the OAuth error it answered.",
    ["result"],
)
# RFC 6749's error codes the token endpoint answers (appliance.manager.api): a bounded label.
TOKEN_RESULTS = frozenset(
    {"issued", "invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type"}
)


def count_token(result: str) -> None:
    """After an answer of the Manager's token endpoint: ``issued`` or the OAuth error."""
    _TOKENS.labels(result if result in TOKEN_RESULTS else "other").inc()


class TxlogStats:
    """Falcon lifespan middleware: copies ``stats()`` into the counters every few seconds."""

    def __init__(self, stats: Callable[[], Any], interval: float = SAMPLE_SECONDS) -> None:
        self._stats = stats
        self._interval = interval
        self._seen = dict.fromkeys(_TXLOG, 0)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        stats = self._stats()
        for name, counter in _TXLOG.items():
            value = int(getattr(stats, name))
            if value > self._seen[name]:
                counter.inc(value - self._seen[name])
            self._seen[name] = value

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.sample()

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


def gateway_collectors(config: Any, writer: Any, app: Any) -> list[Collector]:
    """A gateway's: the host figures (the free space under a SQLite log), and the durable
    log's writer counters (``writer``: the log, or the inway's adapter of it) sampled by a
    lifespan task added to ``app``."""
    from appliance.metrics.health import sqlite_file

    database = sqlite_file(config.txlog.database) if config.txlog is not None else None
    log_store = getattr(writer, "_log", writer)  # the inway's DurableLogWriter wraps the log
    if hasattr(log_store, "stats"):
        app.add_middleware(TxlogStats(lambda: log_store.stats))
    return [HostCollector([database.parent] if database is not None else [])]
