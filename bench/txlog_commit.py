"""Transaction log writes per second on SQLite: one commit per record against group commit.

    .venv/bin/python bench/txlog_commit.py [--writers 64] [--records 4000] [--dir DIR]

Every mode gets a new database file in a temporary directory (``--dir`` chooses where: put it on
the disk the appliance uses, a tmpfs has no flush to save). ``--writers`` tasks on one event
loop each write their share of the records one after the other, awaiting every write as a
gateway request does. Modes:

- ``per-record``: ``max_batch=1`` - each record its own transaction and disk flush;
- ``group``: the defaults (``max_batch`` 256, ``max_delay`` 2 ms);
- ``group, no delay``: ``max_delay=0`` - batches only form while the previous commit runs.

Commits are SQLite WAL with ``synchronous = FULL`` (a flush per commit) in every mode.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.txlog import Destination, Direction, LogRecord, Source, TransactionLog
from appliance.txlog import new_transaction_id as new_id


@dataclass
class Result:
    mode: str
    records: int
    seconds: float
    commits: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def sample_record(**extra: Any) -> LogRecord:
    """An outgoing record as a gateway writes one (bench/record_path.py adds a purpose)."""
    return LogRecord(
        transaction_id=new_id(),
        direction=Direction.OUTGOING,
        grant_hash="$1$3$" + "A" * 86,
        service_name="basisregistratie",
        source=Source("00000001000000000001"),
        destination=Destination("00000001000000000002"),
        created_at=datetime.now(UTC),
        **extra,
    )


async def _writer(log: TransactionLog, count: int, latencies: list[float]) -> None:
    for _ in range(count):
        item = sample_record()
        started = time.perf_counter()
        await log.write(item)
        latencies.append(time.perf_counter() - started)


async def _run(mode: str, url: str, writers: int, records: int, options: dict[str, Any]) -> Result:
    log = TransactionLog.open(url, **options)
    try:
        await log.write(sample_record())  # connect, create the writer thread
        before = log.stats.batches
        latencies: list[float] = []
        share, extra = divmod(records, writers)
        counts = [share + (1 if i < extra else 0) for i in range(writers)]
        started = time.perf_counter()
        await asyncio.gather(*(_writer(log, n, latencies) for n in counts if n))
        seconds = time.perf_counter() - started
        return Result(mode, records, seconds, log.stats.batches - before, latencies)
    finally:
        await log.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--records", type=int, default=4000, help="records per mode")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    args = parser.parse_args()

    modes: list[tuple[str, dict[str, Any]]] = [
        ("per-record", {"max_batch": 1, "max_delay": 0.0}),
        ("group", {}),
        ("group, no delay", {"max_delay": 0.0}),
    ]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sluis-txlog-bench-", dir=args.dir) as tmp:
        for index, (mode, options) in enumerate(modes):
            url = f"sqlite:///{Path(tmp) / f'txlog-{index}.db'}"
            results.append(asyncio.run(_run(mode, url, args.writers, args.records, options)))
        where = Path(tmp).parent

    print(
        f"SQLite WAL, synchronous=FULL, in {where}; {args.writers} concurrent writers, "
        f"{args.records} records per mode"
    )
    header = (
        f"{'mode':<17}{'records/s':>11}{'commits':>9}{'rec/commit':>12}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:<17}{r.rate:>11,.0f}{r.commits:>9}{r.records / max(r.commits, 1):>12.1f}"
            f"{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}"
            f"{statistics.fmean(r.latencies) * 1000:>9.2f}"
        )
    base = results[0].rate
    print()
    for r in results[1:]:
        print(f"{r.mode} / per-record: {r.rate / base:.1f}x the records per second")


if __name__ == "__main__":
    main()
