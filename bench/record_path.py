"""What a gateway's bookkeeping costs per request, in CPU: the metrics it records and the
transaction log's hash chain (issues 20 and 22), measured on the real code paths without the
rest of the chain around them (bench/chain.py --metrics-cost / --chain-cost measure the whole).

    .venv/bin/python bench/record_path.py [--rounds 9] [--dir DIR]

- metrics: what one proxied request records in a worker, as the outway does it
  (``appliance.forwarding.observe`` -> ``GatewayMetrics.record``, the token cache's lookup,
  the upstream pool's connection taken, reused and given back), prometheus-client in
  multiprocess mode with its files in a temporary ``PROMETHEUS_MULTIPROC_DIR``;
- hash chain: one batch of the transaction log's writer (``TransactionLog._commit_batch``,
  the group-commit thread's work) on a real SQLite file (WAL, synchronous FULL) in ``--dir``
  (default: a temporary directory; the flush's wait is not CPU), chained and unchained
  (``chained=False``: what bench/chain.py's ``SLUIS_BENCH_TXLOG_UNCHAINED`` turns off), for
  batches of 1, 4 and 16 records.

CPU is this process's (``time.process_time``) per request or record; settings alternate per
round and the medians are printed, with the load average, since a shared machine's noise hits
every figure. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PEER = "00000001000000000302"
REQUESTS = 20_000
BATCHES = (1, 4, 16)
RECORDS = 1_600  # per batch size and setting, per round


def cpu_us(run: Callable[[], None], count: int) -> float:
    started = time.process_time()
    run()
    return (time.process_time() - started) / count * 1e6


def metrics_per_request(rounds: int) -> list[float]:
    """CPU microseconds of one request's metrics, per round."""
    from appliance.metrics.datapath import TOKEN_LOOKUPS, GatewayMetrics
    from appliance.metrics.upstream import IDLE, IN_USE, PoolMetrics

    gateway, pool = GatewayMetrics("outway"), PoolMetrics()

    def requests() -> None:
        for _ in range(REQUESTS):
            TOKEN_LOOKUPS.inc()
            pool.moved(PEER, IDLE, IN_USE)
            pool.reused(PEER)
            pool.moved(PEER, IN_USE, IDLE)
            gateway.record(
                service="basisregistratie",
                peer=PEER,
                status=200,
                code=None,
                duration=0.0031,
                upstream=0.0022,
                received=0,
                sent=512,
            )

    requests()  # the children and the files' keys made once, as a worker's first request
    return [cpu_us(requests, REQUESTS) for _ in range(rounds)]


def chain_per_record(rounds: int, directory: Path) -> dict[tuple[int, bool], list[float]]:
    """CPU microseconds per record of the writer's batches, by (batch size, chained)."""
    from txlog_commit import sample_record  # the same record as the commit bench's

    from appliance.txlog import LogRecord, TransactionLog
    from appliance.txlog.record import PurposeBinding

    def record() -> LogRecord:
        return sample_record(purpose=PurposeBinding(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"))

    logs = {
        (size, chained): TransactionLog.open(
            f"sqlite:///{directory / f'txlog-{size}-{chained}.db'}", chained=chained
        )
        for size in BATCHES
        for chained in (True, False)
    }
    figures: dict[tuple[int, bool], list[float]] = {key: [] for key in logs}
    try:
        for log in logs.values():
            log._commit_batch([record()])  # the connection opened, the head read once
        for round_ in range(rounds):
            order = list(logs.items()) if round_ % 2 == 0 else list(reversed(logs.items()))
            for (size, chained), log in order:
                batches = [[record() for _ in range(size)] for _ in range(RECORDS // size)]

                def commit(log: TransactionLog = log, batches: list[list[LogRecord]] = batches):
                    for batch in batches:
                        log._commit_batch(batch)

                figures[size, chained].append(cpu_us(commit, RECORDS))
    finally:
        for log in logs.values():
            log.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", type=Path, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluis-bench-record-") as temporary:
        metrics_dir = Path(temporary) / "metrics"
        metrics_dir.mkdir()
        # Before prometheus-client is imported: the workers' multiprocess mode.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        load_before = os.getloadavg()[0]
        metrics = metrics_per_request(args.rounds)
        chain = chain_per_record(args.rounds, args.dir or Path(temporary))
        load_after = os.getloadavg()[0]
    print(
        f"# {args.rounds} rounds, medians (min..max); CPU of this process; load average "
        f"(1 min) {load_before:.2f} before, {load_after:.2f} after"
    )
    print(
        f"metrics of one request (outway's record, token lookup, pool moves): "
        f"{statistics.median(metrics):.2f} us ({min(metrics):.2f}..{max(metrics):.2f})"
    )
    print(f"{'batch':>5}{'chained us/rec':>16}{'unchained us/rec':>18}{'chain us/rec':>14}")
    for size in BATCHES:
        on, off = figures_of(chain, size)
        print(f"{size:>5}{on:>16.2f}{off:>18.2f}{on - off:>14.2f}")
    return 0


def figures_of(chain: dict[tuple[int, bool], list[float]], size: int) -> tuple[float, float]:
    return statistics.median(chain[size, True]), statistics.median(chain[size, False])


if __name__ == "__main__":
    sys.exit(main())
