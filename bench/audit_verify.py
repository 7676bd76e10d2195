"""What the audit log's hash chain costs: an audit entry's write with and without the chain, and
the entries per second ``sluis controller audit verify`` checks.

    .venv/bin/python bench/audit_verify.py [--entries 2000] [--rounds 5]
                                           [--verify-entries 10000] [--dir DIR] [--database URL]

Writes: ``ControllerStore.append_audit`` (one transaction per entry, as the controller writes
them: the head read under the lock, the hash, the insert) against the same entry inserted in
its own transaction without the chain columns (what the store did before the chain),
interleaved for ``--rounds`` rounds on a new SQLite file each (WAL, the engine's settings), or
on ``--database`` (a PostgreSQL URL: its tables are emptied first, so give a scratch database).
Reported per entry: the median wall time and CPU time (``time.process_time``) of each kind.
Verify: a store of ``--verify-entries`` chained entries checked from the database and from an
auditor's bundle. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from appliance.controller import schema
from appliance.controller.auditlog import AUDIT
from appliance.controller.store import ControllerStore
from appliance.txlog.audit import verify_engine, verify_jsonl
from appliance.txlog.checkpoint import Certificates
from appliance.txlog.export import export_bundle


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _entry(number: int) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC),
        "actor": f"user{number % 7}",
        "role": "administrator",
        "action": "contract.accept",
        "outcome": "success",
        "peer_address": "192.0.2.10",
        "target": f"{number:064x}",
        "detail": "accepted from the controller",
    }


def _open(url: str) -> ControllerStore:
    store = ControllerStore.open(url)
    if store.engine.dialect.name == "postgresql":  # a scratch database: start empty
        with store.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE controller_audit DISABLE TRIGGER USER"))
            connection.execute(sa.text("DELETE FROM controller_audit"))
            connection.execute(sa.text("ALTER TABLE controller_audit ENABLE TRIGGER USER"))
    return store


def _write(url: str, entries: int, *, chained: bool) -> tuple[float, float]:
    """Wall and CPU microseconds per entry."""
    store = _open(url)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for number in range(entries):
            values = _entry(number)
            if chained:
                store.append_audit(**values)
            else:
                with store.engine.begin() as connection:
                    connection.execute(schema.audit.insert().values(**values))
        return (
            (time.perf_counter() - wall) / entries * 1e6,
            (time.process_time() - cpu) / entries * 1e6,
        )
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="entries per write run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--verify-entries", type=int, default=10000, help="entries to verify")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument("--database", default=None, help="a scratch PostgreSQL URL instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        files = iter(range(10_000))

        def url() -> str:
            return args.database or f"sqlite:///{Path(tmp) / f'controller-{next(files)}.db'}"

        print(f"load average before: {_load()}")
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for chained in (False, True):
                results[chained].append(_write(url(), args.entries, chained=chained))
        for chained in (False, True):
            walls = [wall for wall, _ in results[chained]]
            cpus = [cpu for _, cpu in results[chained]]
            print(
                f"{'chained  ' if chained else 'unchained'}: median {statistics.median(walls):.0f} "
                f"us wall, {statistics.median(cpus):.0f} us CPU per entry "
                f"(rounds: {', '.join(f'{w:.0f}' for w in walls)} us)"
            )

        target = url()
        store = _open(target)
        try:
            for number in range(args.verify_entries):
                store.append_audit(**_entry(number))
            started = time.perf_counter()
            result = verify_engine(store.engine, log=AUDIT)
            from_store = time.perf_counter() - started
            assert result.ok, result.problems
            bundle = Path(tmp) / "audit.jsonl"
            export_bundle(store.engine, bundle, Certificates([]), log=AUDIT)
        finally:
            store.close()
        started = time.perf_counter()
        checked = verify_jsonl(bundle, log=AUDIT)
        from_bundle = time.perf_counter() - started
        assert checked.ok, checked.problems
        print(
            f"verify: {result.records} entries in {from_store:.2f} s from the store "
            f"({result.records / from_store:,.0f} per second), {from_bundle:.2f} s from the "
            f"bundle ({checked.records / from_bundle:,.0f} per second)"
        )
        print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
