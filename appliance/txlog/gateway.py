"""The transaction log as the gateways and the Manager use it, opened from ``[txlog]``.

``inway_writer`` is the factory ``[inway] transaction_log = "appliance.txlog.gateway:inway_writer"``
names: it opens the durable log in the worker (after fork, where it is used) and stores the
inway's logging.yaml records through group commit.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from appliance.config import SluisConfig, TxlogSettings
from appliance.errors import ConfigurationError
from appliance.txlog.record import LogRecord
from appliance.txlog.store import TransactionLog, WriterObserver

log = logging.getLogger("sluis.txlog")
UNCHAINED_FOR_BENCHMARK = "SLUIS_BENCH_TXLOG_UNCHAINED"


def txlog_settings(config: SluisConfig) -> TxlogSettings:
    if config.txlog is None:
        raise ConfigurationError(f"{config.source}: no [txlog] section: where is the log?")
    return config.txlog


def open_log(config: SluisConfig) -> TransactionLog:
    settings = txlog_settings(config)
    # bench/chain.py --chain-cost only: what the hash chain costs. The records written so are
    # reported by `sluis txlog verify` (stored without a place in the chain).
    chained = os.environ.get(UNCHAINED_FOR_BENCHMARK) != "1"
    if not chained:
        log.warning(
            "%s=1: the transaction log is written WITHOUT its hash chain (a benchmark only)",
            UNCHAINED_FOR_BENCHMARK,
        )
    return TransactionLog.open(
        settings.database,
        max_batch=settings.max_batch,
        # A request alone on the gateway is not held back waiting for others to log with.
        linger_alone=False,
        write_timeout=float(settings.write_timeout_seconds),
        chained=chained,
        observer=_observer(),
    )


def _observer() -> WriterObserver | None:
    """The writer's metrics (appliance.metrics.txlog), unless SLUIS_METRICS is off."""
    from appliance.metrics.registry import enabled

    if not enabled():
        return None
    from appliance.metrics.txlog import TxlogMetrics

    return TxlogMetrics()


class DurableLogWriter:
    """Adapts the inway's record dicts (logging.yaml ``logRecord``) to the durable log."""

    def __init__(self, log: TransactionLog) -> None:
        self._log = log

    async def write(self, record: dict[str, Any]) -> None:
        await self._log.write(LogRecord.from_api(record, fractional_time=True))


def inway_writer(config: SluisConfig) -> DurableLogWriter:
    return DurableLogWriter(open_log(config))
