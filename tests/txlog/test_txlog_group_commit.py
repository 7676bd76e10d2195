"""Group commit: concurrent writers share transactions, and nobody hears "stored" before the
transaction that holds their record has committed."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from txlogtest import at_commit, counting_commits, record, run, stored, write_all

from appliance.txlog import TransactionLog


def test_concurrent_writes_are_batched(store_url: str) -> None:
    with TransactionLog.open(store_url) as log, counting_commits(log) as commits:
        items = [record() for _ in range(200)]
        assert run(write_all(log, items)) == [None] * 200
        assert commits() <= 20, f"{commits()} transactions for 200 concurrent writes"
        assert log.stats.records == 200
        assert log.stats.batches == commits()
        assert log.stats.largest_batch >= 10
    assert {r["transaction_id"] for r in stored(store_url)} == {i.transaction_id for i in items}


def test_without_group_commit_every_record_is_a_transaction(store_url: str) -> None:
    with (
        TransactionLog.open(store_url, max_batch=1, max_delay=0) as log,
        counting_commits(log) as commits,
    ):
        assert run(write_all(log, [record() for _ in range(50)])) == [None] * 50
        assert commits() == 50
        assert log.stats.largest_batch == 1


def test_max_batch_bounds_a_batch(store_url: str) -> None:
    with TransactionLog.open(store_url, max_batch=16) as log, counting_commits(log) as commits:
        assert run(write_all(log, [record() for _ in range(200)])) == [None] * 200
        assert log.stats.largest_batch <= 16
        assert commits() >= 200 // 16


def test_a_full_batch_does_not_wait_for_the_delay(store_url: str) -> None:
    """max_delay is the most a record waits for company: a full batch goes at once."""
    with TransactionLog.open(store_url, max_batch=10, max_delay=1.0) as log:
        run(log.write(record()))  # warm up (connection); waits the full second once
        started = time.perf_counter()
        assert run(write_all(log, [record() for _ in range(10)])) == [None] * 10
        assert time.perf_counter() - started < 0.5


def test_a_lone_record_waits_at_most_the_delay(store_url: str) -> None:
    with TransactionLog.open(store_url, max_delay=0.2) as log:
        run(log.write(record()))
        started = time.perf_counter()
        run(log.write(record()))
        elapsed = time.perf_counter() - started
    assert 0.15 <= elapsed < 1.0


def test_no_write_returns_before_its_commit(store_url: str) -> None:
    """Hold the commit: while it is held, no writer of the batch has been answered and no
    other connection sees the records; once it commits, all are answered."""
    with TransactionLog.open(store_url) as log:
        run(log.write(record()))
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            assert release.wait(10)

        async def scenario() -> None:
            tasks = [asyncio.ensure_future(log.write(record())) for _ in range(50)]
            assert await asyncio.to_thread(entered.wait, 10)
            await asyncio.sleep(0.2)
            assert not any(t.done() for t in tasks), "a write returned before the commit"
            assert len(await asyncio.to_thread(stored, store_url)) == 1
            release.set()
            await asyncio.gather(*tasks)

        with at_commit(log, hold):
            run(scenario())
    assert len(stored(store_url)) == 51


def test_writers_on_several_event_loops(store_url: str) -> None:
    """One log, several threads each with its own loop: every caller gets its own answer."""
    with TransactionLog.open(store_url) as log:
        results: list[list[BaseException | None]] = []

        def worker() -> None:
            results.append(run(write_all(log, [record() for _ in range(50)])))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert results == [[None] * 50] * 4
    assert len(stored(store_url)) == 200


def test_a_cancelled_writer_does_not_disturb_the_others(store_url: str) -> None:
    with TransactionLog.open(store_url, max_delay=0.05) as log:

        async def scenario() -> list[BaseException | None]:
            doomed = asyncio.ensure_future(log.write(record()))
            others = [asyncio.ensure_future(log.write(record())) for _ in range(10)]
            await asyncio.sleep(0)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            return list(await asyncio.gather(*others))

        assert run(scenario()) == [None] * 10
        run(log.write(record()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0},
        {"max_batch": 10_001},
        {"max_delay": -1},
        {"max_delay": 2},
        {"write_timeout": 0},
    ],
)
def test_settings_are_checked(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TransactionLog.open(f"sqlite:///{tmp_path / 'txlog.db'}", **kwargs)
