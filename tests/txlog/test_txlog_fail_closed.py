"""Fail closed: when the log cannot be written, every pending and every later write raises
TransactionLogWriteError and nothing claims success (logging spec: the Inway and the Outway
MUST deny the request if the record could not be written)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hosttools import require
from postgres import psycopg_conninfo
from psycopg import sql
from sqlalchemy.engine import make_url
from txlogtest import at_commit, record, run, stored, write_all

from appliance.serving.fsc_errors import ErrorDomain
from appliance.txlog import (
    TransactionLog,
    TransactionLogClosedError,
    TransactionLogError,
    TransactionLogWriteError,
    fsc_error_for,
)
from appliance.txlog.database import migrate

PENDING = 50
LATER = 20


def _backend(url: str) -> str:
    return make_url(url).get_backend_name()


def _all_refused(outcomes: list[BaseException | None]) -> None:
    assert outcomes, "no writes"
    claimed = [o for o in outcomes if o is None]
    assert not claimed, f"{len(claimed)} of {len(outcomes)} writes claimed success"
    assert all(isinstance(o, TransactionLogWriteError) for o in outcomes), outcomes
    # And the gateway answers each with 500 TRANSACTION_LOG_WRITE_ERROR.
    for outcome in outcomes:
        assert isinstance(outcome, TransactionLogError)
        error = fsc_error_for(outcome, ErrorDomain.INWAY)
        assert error.fsc_code == "TRANSACTION_LOG_WRITE_ERROR"
        assert error.status == "500 Internal Server Error"


@contextlib.contextmanager
def _holding_the_table(url: str) -> Iterator[Callable[[], None]]:
    """Another session locks the log's table; calling the yielded function drops the table
    and commits, so the writers waiting for the lock find no table."""
    if _backend(url) == "sqlite":
        database = make_url(url).database
        assert database is not None
        raw = sqlite3.connect(database, isolation_level=None, timeout=10, check_same_thread=False)
        raw.execute("BEGIN IMMEDIATE")  # the write lock: every writer queues behind it

        def drop() -> None:
            raw.execute("DROP TABLE txlog_records")
            raw.execute("COMMIT")

        try:
            yield drop
        finally:
            raw.close()
    else:
        admin = psycopg.connect(psycopg_conninfo(url))
        admin.execute("LOCK TABLE txlog_records IN ACCESS EXCLUSIVE MODE")

        def drop() -> None:
            admin.execute("DROP TABLE txlog_records")
            admin.commit()

        try:
            yield drop
        finally:
            admin.close()


def test_pending_and_later_writes_fail_when_the_table_goes(store_url: str) -> None:
    """Writers queue behind a lock; the table is dropped under them: every one of them, and
    every write after, is refused."""
    with TransactionLog.open(store_url) as log:
        run(log.write(record()))

        async def scenario() -> tuple[list[BaseException | None], list[BaseException | None]]:
            with _holding_the_table(store_url) as drop:
                tasks = [asyncio.ensure_future(log.write(record())) for _ in range(PENDING)]
                await asyncio.sleep(0.3)
                assert not any(t.done() for t in tasks), "a write finished under the lock"
                await asyncio.to_thread(drop)
                pending = await asyncio.gather(*tasks, return_exceptions=True)
            later = await write_all(log, [record() for _ in range(LATER)])
            return [o if isinstance(o, BaseException) else None for o in pending], later

        pending, later = run(scenario())
        _all_refused(pending)
        _all_refused(later)
        assert log.stats.failed_records == PENDING + LATER


def test_a_failing_commit_fails_every_writer_of_the_batch(store_url: str) -> None:
    """The COMMIT itself fails (after the INSERT went through): no writer of the batch hears
    success and nothing of it is stored; once the database works again, writes succeed."""
    with TransactionLog.open(store_url) as log:
        run(log.write(record()))

        def refuse() -> None:
            raise OSError("disk full")

        with at_commit(log, refuse):
            _all_refused(run(write_all(log, [record() for _ in range(PENDING)])))
            _all_refused(run(write_all(log, [record() for _ in range(LATER)])))
        assert len(stored(store_url)) == 1
        assert run(write_all(log, [record() for _ in range(10)])) == [None] * 10
        assert len(stored(store_url)) == 11


def _immutable(paths: list[Path], on: bool) -> None:
    for path in paths:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


def _can_make_immutable(tmp_path: Path) -> bool:
    require("chattr")
    probe = tmp_path / "probe"
    probe.touch()
    try:
        _immutable([probe], True)
    except subprocess.CalledProcessError:
        return False
    _immutable([probe], False)
    probe.unlink()
    return True


@pytest.mark.parametrize("connections", ["open", "new"])
def test_sqlite_files_made_read_only(tmp_path: Path, connections: str) -> None:
    """The database directory and file (and its write-ahead log) made read-only while the
    log runs: with the connection it already has ("disk I/O error") and with new ones
    ("attempt to write a readonly database"). chmod does not stop root, so as root the files
    get the immutable attribute instead. The shared-memory file stays writable: SQLite maps
    it, and an immutable mapping ends the process with SIGBUS."""
    directory = tmp_path / "db"
    directory.mkdir()
    url = f"sqlite:///{directory / 'txlog.db'}"
    as_root = os.geteuid() == 0
    if as_root and not _can_make_immutable(tmp_path):
        pytest.skip("running as root without chattr +i: file modes do not stop root")
    with TransactionLog.open(url) as log:
        run(log.write(record()))
        files = [p for p in directory.iterdir() if not p.name.endswith("-shm")]
        targets = [*files, directory]
        modes = {p: p.stat().st_mode for p in targets}
        if as_root:
            _immutable(targets, True)
        else:
            for p in targets:
                p.chmod(0o500 if p.is_dir() else 0o400)
        try:
            if connections == "new":
                log.engine.dispose()
            _all_refused(run(write_all(log, [record() for _ in range(PENDING)])))
            _all_refused(run(write_all(log, [record() for _ in range(LATER)])))
        finally:
            if as_root:
                _immutable(targets, False)
            for p, mode in modes.items():
                p.chmod(mode)
        # Writable again: the log recovers without a restart.
        assert run(write_all(log, [record() for _ in range(5)])) == [None] * 5
    assert len(stored(url)) == 6


def test_sqlite_read_only_connections(tmp_path: Path) -> None:
    """Every new connection is read-only (``PRAGMA query_only``): nothing is acknowledged."""
    url = f"sqlite:///{tmp_path / 'txlog.db'}"
    with TransactionLog.open(url) as log:
        run(log.write(record()))

        def read_only(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA query_only = ON")

        sa.event.listen(log.engine, "connect", read_only)
        log.engine.dispose()
        _all_refused(run(write_all(log, [record() for _ in range(PENDING)])))
        assert len(log.query(record().source.outway_peer_id)[0]) == 1  # reading still works


def test_postgresql_insert_revoked_mid_run(fresh_postgres_url: str) -> None:
    """The log's own database role loses INSERT while writers wait for the table: they, and
    every later write, are refused."""
    url = fresh_postgres_url
    role = f"txlog_writer_{secrets.token_hex(4)}"
    migrate(url)
    admin = psycopg.connect(psycopg_conninfo(url), autocommit=True)
    name = sql.Identifier(role)
    try:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
        admin.execute(sql.SQL("GRANT SELECT, INSERT ON txlog_records TO {}").format(name))
        admin.execute(sql.SQL("GRANT USAGE ON SEQUENCE txlog_records_id_seq TO {}").format(name))
        limited = make_url(url).set(username=role).render_as_string(hide_password=False)
        with TransactionLog.open(limited, migrate_schema=False) as log:
            run(log.write(record()))

            async def scenario() -> list[BaseException | None]:
                locker = psycopg.connect(psycopg_conninfo(url))
                try:
                    locker.execute("LOCK TABLE txlog_records IN ACCESS EXCLUSIVE MODE")
                    tasks = [asyncio.ensure_future(log.write(record())) for _ in range(PENDING)]
                    await asyncio.sleep(0.3)
                    assert not any(t.done() for t in tasks)
                    locker.execute(sql.SQL("REVOKE INSERT ON txlog_records FROM {}").format(name))
                    locker.commit()
                    results = await asyncio.gather(*tasks, return_exceptions=True)
                finally:
                    locker.close()
                return [r if isinstance(r, BaseException) else None for r in results]

            _all_refused(run(scenario()))
            _all_refused(run(write_all(log, [record() for _ in range(LATER)])))
            assert "permission denied" in str(log_cause(log, limited))
        assert len(stored(url)) == 1
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP OWNED BY {}").format(name))
            admin.execute(sql.SQL("DROP ROLE {}").format(name))
        admin.close()


def log_cause(log: TransactionLog, _url: str) -> BaseException | None:
    """The database error behind a refused write."""
    try:
        run(log.write(record()))
    except TransactionLogWriteError as exc:
        return exc.__cause__
    return None


def test_a_commit_that_hangs_fails_at_the_write_timeout(store_url: str) -> None:
    with TransactionLog.open(store_url, write_timeout=0.3) as log:
        run(log.write(record()))
        release = threading.Event()

        def hang() -> None:
            release.wait(10)

        with at_commit(log, hang):
            started = time.perf_counter()
            with pytest.raises(TransactionLogWriteError, match="did not confirm"):
                run(log.write(record()))
            assert time.perf_counter() - started < 2
            release.set()


def test_a_closed_log_refuses_and_close_commits_what_is_queued(store_url: str) -> None:
    log = TransactionLog.open(store_url, max_delay=0.5)

    async def scenario() -> list[BaseException | None]:
        tasks = [asyncio.ensure_future(log.write(record())) for _ in range(20)]
        await asyncio.sleep(0.05)  # queued, the writer lingers
        await log.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    assert run(scenario()) == [None] * 20
    with pytest.raises(TransactionLogClosedError):
        run(log.write(record()))
    log.close()  # twice: harmless
    assert len(stored(store_url)) == 20


def test_a_log_opened_before_fork_refuses_in_the_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'txlog.db'}"
    with TransactionLog.open(url) as log:
        run(log.write(record()))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a gunicorn worker that inherited the master's log
            code = 1
            try:
                run(log.write(record()))
            except TransactionLogClosedError:
                code = 0
            except BaseException:
                code = 2
            os.write(write, bytes([code]))
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"\x00", "the child wrote through the parent's log"
    assert len(stored(url)) == 1


def test_writes_of_wrong_types_are_refused(tmp_path: Path) -> None:
    with TransactionLog.open(f"sqlite:///{tmp_path / 'txlog.db'}") as log, pytest.raises(TypeError):
        run(log.write({"transaction_id": "x"}))  # type: ignore[arg-type]
