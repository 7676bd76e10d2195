"""The transaction log's writer, measured per batch, and the export's lag (issue 20).

:class:`TxlogMetrics` is the writer's observer (``appliance.txlog.store.WriterObserver``):
the group-commit thread calls it once per batch (never per record), so what it costs is a few
histogram updates per commit. The gateways pass it in ``appliance.txlog.gateway.open_log``
unless ``SLUIS_METRICS=off``. Series (summed over the workers, like the data path's)::

    sluis_txlog_commit_duration_seconds      histogram: one batch's transaction, to its flush
    sluis_txlog_batch_records                histogram: records per commit
    sluis_txlog_queue_records                records waiting for the next batch (live sum)
    sluis_txlog_write_failures_total{cause}  records refused: commit (the batch failed) or
                                             timeout (not confirmed in time)

The export (``sluis txlog export-jsonl --metrics-file``) runs outside gunicorn; it writes its
figures to a file for node-exporter's textfile collector (:func:`export_text`)::

    sluis_txlog_export_lag_seconds           age of the oldest record not exported yet (0: none)
    sluis_txlog_export_last_run_timestamp_seconds
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.metrics.client import Counter, Gauge, Histogram

COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

COMMIT = Histogram(
    "sluis_txlog_commit_duration_seconds",
    "Time one batch of the transaction log took to commit (to disk).",
    buckets=COMMIT_BUCKETS,
)
BATCH = Histogram(
    "sluis_txlog_batch_records",
    "Records per commit of the transaction log (group commit).",
    buckets=BATCH_BUCKETS,
)
QUEUE = Gauge(
    "sluis_txlog_queue_records",
    "Records waiting for the transaction log's next commit.",
    multiprocess_mode="livesum",
)
FAILURES = Counter(
    "sluis_txlog_write_failures",
    "Transaction log records not confirmed (their requests refused), by cause.",
    ["cause"],
)


class TxlogMetrics:
    """The writer's observer: called from its thread, once per batch."""

    def batch(self, records: int, seconds: float, failed: bool) -> None:
        COMMIT.observe(seconds)
        BATCH.observe(records)
        if failed:
            FAILURES.labels("commit").inc(records)

    def queued(self, records: int) -> None:
        QUEUE.set(records)

    def timed_out(self) -> None:
        FAILURES.labels("timeout").inc()


def export_text(lag_seconds: float, finished_at: float) -> str:
    """The export's figures in the Prometheus text format (a textfile collector's file)."""
    return (
        "# HELP sluis_txlog_export_lag_seconds Age of the oldest transaction log record not "
        "exported yet (0: every record exported).\n"
        "# TYPE sluis_txlog_export_lag_seconds gauge\n"
        f"sluis_txlog_export_lag_seconds {lag_seconds:.3f}\n"
        "# HELP sluis_txlog_export_last_run_timestamp_seconds When the export last finished.\n"
        "# TYPE sluis_txlog_export_last_run_timestamp_seconds gauge\n"
        f"sluis_txlog_export_last_run_timestamp_seconds {finished_at:.3f}\n"
    )


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically (the collector never reads half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
