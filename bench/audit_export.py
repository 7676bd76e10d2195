"""What shipping the audit log costs: the entries a second ``sluis controller audit export-jsonl``
appends to its file (the transaction log's export, ``appliance.txlog.export``, over the audit
log; its own figure is bench/growth.py's "export records/s").

    .venv/bin/python bench/audit_export.py [--entries 20000] [--rounds 3] [--dir DIR]
                                           [--database URL]

A store of ``--entries`` chained entries (appended in transactions of 1,000 with the store's
own chain code: the head under the lock, ``chain_rows``), on a new SQLite file (WAL, the
engine's settings) or on ``--database`` (a PostgreSQL URL: its entries are deleted first, so
give a scratch database). Then ``--rounds`` whole exports into a new file each (every line
written and fsynced in batches of 1,000, the cursor moved after each), and one more run that
finds nothing new (what the service pays every interval when nobody acts). Reported: the
median wall time and CPU time (``time.process_time``) per entry and entries a second, with the
load average. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from audit_verify import _entry, _load, _open  # the same entries and scratch database

from appliance.controller import schema
from appliance.controller.auditlog import AUDIT, STREAM
from appliance.txlog import chain
from appliance.txlog.export import export_jsonl

BATCH = 1000


def _fill(url: str, entries: int) -> None:
    store = _open(url)
    try:
        for start in range(0, entries, BATCH):
            rows = [_entry(number) for number in range(start, min(entries, start + BATCH))]
            with store.engine.begin() as connection:
                chain.chain_rows(chain.locked_heads(connection, (STREAM,), log=AUDIT), rows)
                connection.execute(schema.audit.insert(), rows)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=20000, help="entries in the store")
    parser.add_argument("--rounds", type=int, default=3, help="whole exports")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--database", default=None, help="a scratch PostgreSQL URL instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        url = args.database or f"sqlite:///{root / 'controller.db'}"
        print(f"load average before: {_load()}")
        _fill(url, args.entries)
        walls, cpus = [], []
        for number in range(args.rounds):
            out, state = root / f"audit-{number}.jsonl", root / f"cursor-{number}"
            wall, cpu = time.perf_counter(), time.process_time()
            result = export_jsonl(url, out, state, settle_seconds=0, log=AUDIT)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert result.exported == args.entries, result
        wall, cpu = time.perf_counter(), time.process_time()
        idle = export_jsonl(url, out, state, settle_seconds=0, log=AUDIT)
        idle_wall, idle_cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert idle.exported == 0, idle
        median = statistics.median(walls)
        print(
            f"export-jsonl of {args.entries:,} audit entries: {args.entries / median:,.0f} "
            f"entries/s (median wall {median:.2f} s, rounds "
            f"{', '.join(f'{w:.2f}' for w in walls)} s), "
            f"{statistics.median(cpus) / args.entries * 1e6:.0f} us CPU per entry; "
            f"{out.stat().st_size / args.entries:.0f} bytes a line"
        )
        print(
            f"a run with nothing new: {idle_wall * 1000:.1f} ms wall, {idle_cpu * 1000:.1f} ms CPU"
        )
        print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
