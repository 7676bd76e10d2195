"""The transaction log on a Patroni cluster loses no acknowledged record when its primary dies.

A real cluster (tests/ha/patronicluster.py: etcd, two PostgreSQL 15 nodes under Patroni,
``synchronous_mode`` on) and the real log (:class:`TransactionLog` with its group-commit writer,
through the shared engine of appliance/database.py with a multi-host URL). Writers keep writing
while the primary's Patroni and postmaster are SIGKILLed; then:

- every record whose ``write`` returned is on the new primary (records lost: 0);
- writes in the gap raised :class:`TransactionLogWriteError` (fail closed), none hung;
- writes succeed again through the same log and engine (no restart, no new engine);
- the new primary runs without a standby and keeps taking writes: the default,
  ``synchronous_mode_strict: false``; switched to strict, a write is refused instead.

The figures (gap, refused writes, records lost) are printed: ``pytest tests/ha -s``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import pytest
from hosttools import require
from patronicluster import PG_BIN, PatroniCluster, patroni_cluster

from appliance.txlog import (
    Destination,
    Direction,
    LogRecord,
    PurposeBinding,
    Source,
    TransactionLog,
    TransactionLogWriteError,
    new_transaction_id,
)

require("patroni")
require("etcd")
require(str(PG_BIN / "initdb"))

WRITERS = 4
PAUSE_SECONDS = 0.05  # between one writer's writes: a steady load, not a flood
WRITE_TIMEOUT_SECONDS = 5.0
WRITES_AFTER_RECOVERY = 40
FAILOVER_DEADLINE_SECONDS = 45.0


def _record() -> LogRecord:
    return LogRecord(
        transaction_id=new_transaction_id(),
        direction=Direction.OUTGOING,
        grant_hash="$1$3$" + "A" * 86,
        service_name="basisregistratie",
        source=Source("00000001000000000001", None),
        destination=Destination("00000001000000000002", None),
        created_at=datetime.now(UTC),
        purpose=PurposeBinding(),
    )


@dataclass
class Outcome:
    acknowledged: set[str] = field(default_factory=set)
    refused: int = 0
    other_errors: list[BaseException] = field(default_factory=list)
    last_ack_before_gap: float = 0.0
    first_refusal: float | None = None
    first_ack_after_gap: float | None = None
    acks_after_gap: int = 0


async def _writer(log: TransactionLog, outcome: Outcome, stop: asyncio.Event) -> None:
    while not stop.is_set():
        record = _record()
        try:
            await log.write(record)
        except TransactionLogWriteError:
            outcome.refused += 1
            if outcome.first_refusal is None:
                outcome.first_refusal = time.monotonic()
        except Exception as exc:  # anything but a refusal is a defect: collected, asserted
            outcome.other_errors.append(exc)
        else:
            now = time.monotonic()
            outcome.acknowledged.add(record.transaction_id)
            if outcome.first_refusal is None:
                outcome.last_ack_before_gap = now
            else:
                if outcome.first_ack_after_gap is None:
                    outcome.first_ack_after_gap = now
                outcome.acks_after_gap += 1
                if outcome.acks_after_gap >= WRITES_AFTER_RECOVERY:
                    stop.set()
        await asyncio.sleep(PAUSE_SECONDS)


async def _kill_primary_under_load(log: TransactionLog, cluster: PatroniCluster) -> Outcome:
    outcome = Outcome()
    stop = asyncio.Event()
    leader = cluster.leader()
    assert leader is not None
    tasks = [asyncio.ensure_future(_writer(log, outcome, stop)) for _ in range(WRITERS)]
    try:
        await asyncio.sleep(1.0)
        assert len(outcome.acknowledged) > 10
        assert outcome.refused == 0
        await asyncio.to_thread(cluster.kill, leader)
        killed = time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), FAILOVER_DEADLINE_SECONDS)
        except TimeoutError:
            pytest.fail(
                f"no writes {FAILOVER_DEADLINE_SECONDS} s after the kill:\n{cluster.logs()}"
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    if outcome.first_ack_after_gap is not None:
        print(
            f"\nkill to the first acknowledged write: {outcome.first_ack_after_gap - killed:.1f} s"
        )
    return outcome


def _stored(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT transaction_id FROM txlog_records")}


def _patch_config(cluster: PatroniCluster, change: dict[str, object]) -> None:
    leader = cluster.leader()
    assert leader is not None
    request = urllib.request.Request(
        f"http://127.0.0.1:{leader.api_port}/config",
        data=json.dumps(change).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (http://127.0.0.1)
        assert response.status == 200


def _wait_for_setting(url: str, name: str, expected: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
        if row is not None and row[0] == expected:
            return
        assert time.monotonic() < deadline, f"{name} is {row}, not {expected!r}"
        time.sleep(0.2)


def test_no_acknowledged_record_is_lost_when_the_primary_dies() -> None:
    with patroni_cluster(2) as cluster:
        old_leader = cluster.wait_ready()
        with TransactionLog.open(
            cluster.url(), linger_alone=False, write_timeout=WRITE_TIMEOUT_SECONDS
        ) as log:
            engine = log.engine
            outcome = asyncio.run(_kill_primary_under_load(log, cluster))
            new_leader = cluster.leader()
            assert new_leader is not None
            assert new_leader is not old_leader
            assert log.engine is engine  # recovered through the same engine and pool

            stored = _stored(cluster.node_url(new_leader))
            lost = outcome.acknowledged - stored
            assert outcome.first_refusal is not None
            assert outcome.first_ack_after_gap is not None
            gap = outcome.first_ack_after_gap - outcome.last_ack_before_gap
            print(
                f"acknowledged {len(outcome.acknowledged)}, refused {outcome.refused}, "
                f"other errors {len(outcome.other_errors)}, "
                f"longest gap {gap:.1f} s, records lost {len(lost)}, "
                f"stored but refused {len(stored - outcome.acknowledged)}"
            )
            assert not outcome.other_errors, outcome.other_errors
            assert outcome.refused > 0  # the gap was there, and writes in it were refused
            assert not lost, f"{len(lost)} acknowledged records are not on the new primary"
            # The default (not strict): the new primary, its standby gone, carries on alone.
            assert cluster.sync_standby() is None
            assert outcome.acks_after_gap >= WRITES_AFTER_RECOVERY

            # The operator's switch: strict, a primary without a standby takes no writes.
            node = cluster.node_url(new_leader)
            _patch_config(cluster, {"synchronous_mode_strict": True})
            _wait_for_setting(node, "synchronous_standby_names", "*")
            with pytest.raises(TransactionLogWriteError):  # the commit waits: timed out
                asyncio.run(log.write(_record()))
            _patch_config(cluster, {"synchronous_mode_strict": False})
            _wait_for_setting(node, "synchronous_standby_names", "")
            asyncio.run(log.write(_record()))
