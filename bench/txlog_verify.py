"""What the transaction log's hash chain costs: writes per second with and without chaining,
and the records per second ``sluis txlog verify`` checks.

    .venv/bin/python bench/txlog_verify.py [--writers 64] [--records 4000] [--rounds 5]
                                           [--verify-records 20000] [--dir DIR]

Writes: bench/txlog_commit.py's load (``--writers`` tasks on one event loop, each awaiting its
writes as a gateway request does; group commit with the defaults; SQLite WAL with
``synchronous = FULL``), once with the chain and once without (``chained=False``, which only
benchmarks use), interleaved for ``--rounds`` rounds so that a shared machine's noise hits
both alike; each run a new database file. Because throughput on a shared machine is noisy, the
writer's own CPU time per record is measured too (batches of ``--batch`` committed directly,
``time.process_time``), which is what the chain adds to each gateway request. Verify: a store
of ``--verify-records`` chained records, checked from the database and from its export file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from txlog_commit import Result, _record, _run

from appliance.txlog import TransactionLog
from appliance.txlog.audit import verify_engine, verify_jsonl
from appliance.txlog.database import create_engine
from appliance.txlog.export import export_jsonl


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _writer_cpu(url: str, *, chained: bool, records: int, batch: int) -> float:
    """CPU microseconds per record of committing ``records`` in batches (no event loop)."""
    log = TransactionLog.open(url, chained=chained)
    try:
        items = [_record() for _ in range(records)]
        started = time.process_time()
        for start in range(0, records, batch):
            log._commit_batch(items[start : start + batch])
        return (time.process_time() - started) / records * 1e6
    finally:
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--records", type=int, default=4000, help="records per write run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--verify-records", type=int, default=20000, help="records to verify")
    parser.add_argument("--batch", type=int, default=60, help="records per batch (CPU runs)")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    args = parser.parse_args()

    print(f"load average before: {_load()}")
    runs: dict[str, list[Result]] = {"chained": [], "unchained": []}
    with tempfile.TemporaryDirectory(prefix="sluis-txlog-chain-", dir=args.dir) as tmp:
        for round_ in range(args.rounds):
            # Alternate which goes first, so neither always meets a warmer cache.
            order = ["chained", "unchained"] if round_ % 2 == 0 else ["unchained", "chained"]
            for mode in order:
                url = f"sqlite:///{Path(tmp) / f'write-{round_}-{mode}.db'}"
                options = {"chained": mode == "chained"}
                runs[mode].append(
                    asyncio.run(_run(mode, url, args.writers, args.records, dict(options)))
                )
        print(
            f"writes: SQLite WAL, synchronous=FULL, in {Path(tmp).parent}; {args.writers} "
            f"writers, {args.records} records per run, {args.rounds} rounds interleaved"
        )
        header = f"{'mode':<11}{'median rec/s':>14}{'min':>9}{'max':>9}{'rec/commit':>12}"
        print(header)
        print("-" * len(header))
        medians = {}
        for mode, results in runs.items():
            rates = [r.rate for r in results]
            medians[mode] = statistics.median(rates)
            per_commit = statistics.fmean(r.records / max(r.commits, 1) for r in results)
            print(
                f"{mode:<11}{medians[mode]:>14,.0f}{min(rates):>9,.0f}{max(rates):>9,.0f}"
                f"{per_commit:>12.1f}"
            )
        ratios = [c.rate / u.rate for c, u in zip(runs["chained"], runs["unchained"], strict=True)]
        print(
            f"chained / unchained: {medians['chained'] / medians['unchained']:.3f} of the "
            f"throughput (per round: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
        print(f"load average after writes: {_load()}")

        cpu: dict[str, list[float]] = {"chained": [], "unchained": []}
        for round_ in range(args.rounds):
            for mode in ("chained", "unchained") if round_ % 2 == 0 else ("unchained", "chained"):
                url = f"sqlite:///{Path(tmp) / f'cpu-{round_}-{mode}.db'}"
                cpu[mode].append(
                    _writer_cpu(
                        url, chained=mode == "chained", records=args.records, batch=args.batch
                    )
                )
        chained_cpu = statistics.median(cpu["chained"])
        unchained_cpu = statistics.median(cpu["unchained"])
        print(
            f"writer CPU per record (batches of {args.batch}, median of {args.rounds}): "
            f"chained {chained_cpu:.1f} us, unchained {unchained_cpu:.1f} us, the chain adds "
            f"{chained_cpu - unchained_cpu:.1f} us"
        )
        print(f"load average after CPU runs: {_load()}")

        url = f"sqlite:///{Path(tmp) / 'verify.db'}"
        asyncio.run(_run("fill", url, args.writers, args.verify_records, {}))
        engine = create_engine(url)
        try:
            started = time.perf_counter()
            result = verify_engine(engine)
            store_seconds = time.perf_counter() - started
        finally:
            engine.dispose()
        assert result.ok, result.problems
        bundle = Path(tmp) / "export.jsonl"
        export_jsonl(url, bundle, Path(tmp) / "cursor", settle_seconds=0)
        started = time.perf_counter()
        exported = verify_jsonl(bundle)
        file_seconds = time.perf_counter() - started
        assert exported.ok, exported.problems
        print(
            f"verify: {result.records} records from the SQLite store in {store_seconds:.2f} s "
            f"({result.records / store_seconds:,.0f} records/s); from the export file in "
            f"{file_seconds:.2f} s ({exported.records / file_seconds:,.0f} records/s)"
        )
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
