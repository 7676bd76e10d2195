"""A real PostgreSQL for the tests (a pytest plugin, loaded by tests/conftest.py).

``postgres_url`` (session): ``SLUIS_TEST_POSTGRES_URL`` if it is set (a server where that user
may create databases); otherwise a private PostgreSQL 15 cluster, made for this session in a
temporary directory with Debian's ``initdb``/``pg_ctl`` and removed at the end. PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` system user (through
``runuser``). It listens on a unix socket in its directory and on 127.0.0.1 at a free port,
trusts local connections, and runs without fsync (a test cluster has nothing to keep).

``fresh_postgres_url`` (function): a new empty database on that server for one test
(``CREATE DATABASE ... TEMPLATE template0``), dropped after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

POSTGRES_ENV = "SLUIS_TEST_POSTGRES_URL"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_SYSTEM_USER = "postgres"
SERVER_OPTIONS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=50",
    "shared_buffers=32MB",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_cluster_owner(*command: str | Path) -> list[str]:
    argv = [str(part) for part in command]
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
    return argv


def _run(*command: str | Path, cwd: Path) -> None:
    result = subprocess.run(
        _as_cluster_owner(*command), cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


def psycopg_conninfo(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq URI for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def _private_cluster() -> Iterator[str]:
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not initdb.exists():
        pytest.fail(
            f"PostgreSQL 15 is not installed ({initdb} is missing): run scripts/setup.sh, "
            f"or set {POSTGRES_ENV} to a server the tests may create databases on"
        )
    # Not under pytest's basetemp: that is 0700 root and the cluster's owner must reach it.
    root = Path(tempfile.mkdtemp(prefix="sluis-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user=PG_SYSTEM_USER, group=PG_SYSTEM_USER)
        data = root / "data"
        _run(
            initdb,
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            cwd=root,
        )
        port = _free_port()
        options = " ".join(
            [f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"]
            + [f"-c {option}" for option in SERVER_OPTIONS]
        )
        _run(pg_ctl, "-D", data, "-l", root / "server.log", "-o", options, "-w", "start", cwd=root)
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", cwd=root)
    except RuntimeError as exc:
        log = root / "server.log"
        detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"{exc}\nserver log:\n{detail}") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The session's PostgreSQL server, as a SQLAlchemy URL with the psycopg 3 driver."""
    given = os.environ.get(POSTGRES_ENV)
    if given:
        url = make_url(given)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
        return
    with _private_cluster() as url:
        with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
            conn.execute("CREATE DATABASE sluis_test TEMPLATE template0")
        yield make_url(url).set(database="sluis_test").render_as_string(hide_password=False)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new empty database for one test; dropped afterwards (open connections or not)."""
    name = f"sluis_test_{secrets.token_hex(6)}"
    admin = psycopg_conninfo(postgres_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
