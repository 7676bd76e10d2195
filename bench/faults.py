"""Faults under load against a real Group, the long runs (issue 16); tests/faults is the quick part.

Builds the Group of tests/faults/faultgroup.py (SoftHSM tokens, Managers, contracts, B's inway
and A's outway with two gunicorn workers each, two backend services, a durable SQLite log at
both gateways) and, for each fault in turn: drives ``--rate`` requests a second through the
outway (a fifth on the second service), injects the fault after ``--before`` seconds for
``--fault`` seconds, keeps the load on for ``--after`` seconds, and reconciles both
transaction logs with what the application was answered. Prints one row per fault: requests
sent, failed (by service, status and FSC code), the slowest request, the recovery time (from
the fault's end until requests succeed again) and the 2xx answers without a record at both
ends (must be 0), plus records or backend requests seen twice (must be 0). Exits 1 when either
is not 0.

    .venv/bin/python bench/faults.py [--before 5] [--fault 15] [--after 10] [--rate 50]
                                     [--burst 100] [--kill-every 5] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_harness() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tests" / "faults" / "faultgroup.py"
    spec = importlib.util.spec_from_file_location("faultgroup", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def say(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def details(result: Any) -> list[str]:
    """Per service: sent, failed, slowest; the workers after the run; the slow clients."""
    lines = []
    for service in harness.SERVICES:
        sent = sum(1 for o in result.outcomes if o.service == service)
        lines.append(
            f"    {service}: {sent} sent, {len(result.failed(service))} failed, slowest "
            f"{result.slowest(service):.2f} s"
        )
    slow = sorted(result.outcomes, key=lambda o: o.seconds)[-3:]
    lines.append(
        "    slowest three (service, answer, start and end relative to the fault's start): "
        + "; ".join(
            f"{o.service} {o.failure or o.status} {o.began - result.window.began:+.2f}.."
            f"{o.ended - result.window.began:+.2f} s"
            for o in reversed(slow)
        )
    )
    lines.append(f"    workers after: {result.workers_after}")
    if result.slow_client_answers:
        lines.append(f"    slow clients' connections and answers: {result.slow_client_answers}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    long = harness.LONG
    parser.add_argument("--before", type=float, default=long.before, help="load before (s)")
    parser.add_argument("--fault", type=float, default=long.fault, help="the fault's length (s)")
    parser.add_argument("--after", type=float, default=long.after, help="load after (s)")
    parser.add_argument("--rate", type=float, default=long.rate, help="requests a second")
    parser.add_argument(
        "--burst",
        type=float,
        default=long.burst,
        help="requests a second more on the hung service while its backend hangs",
    )
    parser.add_argument(
        "--kill-every", type=float, default=long.kill_every, help="kill a worker every N s"
    )
    names = [fault.name for fault in harness.faults()]
    parser.add_argument("--only", nargs="+", choices=names, help="run only these faults")
    parser.add_argument("--keep", action="store_true", help="keep the Group's files")
    args = parser.parse_args()
    profile = harness.Profile(
        before=args.before,
        fault=args.fault,
        after=args.after,
        rate=args.rate,
        kill_every=args.kill_every,
        burst=args.burst,
    )
    root = Path(tempfile.mkdtemp(prefix="sluis-bench-faults-"))
    results = []
    began = time.monotonic()
    try:
        with harness.FaultGroup.running(root, say) as group:
            for fault in harness.faults(profile.kill_every):
                if args.only and fault.name not in args.only:
                    continue
                say(f"{fault.name}: {fault.what}")
                result = harness.run_fault(group, fault, profile)
                results.append(result)
                print(result.row(), file=sys.stderr, flush=True)
    finally:
        if args.keep:
            say(f"the Group's files are in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"# {os.cpu_count()} cores, shared; {profile.rate:g} req/s through the outway (a fifth on "
        f"{harness.OTHER}), {profile.before:g} s + {profile.fault:g} s fault + "
        f"{profile.after:g} s per fault; inway and outway {harness.GATEWAY_WORKERS} workers; "
        f"{time.monotonic() - began:.0f} s in all"
    )
    print(harness.table(results))
    print()
    for result in results:
        print(f"{result.fault.name}: {result.fault.what}")
        print("\n".join(details(result)))
    broken = [r.fault.name for r in results if r.unlogged or r.duplicated or r.misechoed]
    for name in broken:
        print(f"FAILED: {name}: 2xx without a record at both ends, or a record twice")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
