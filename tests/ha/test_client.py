"""The shared engine's client side for a cluster (appliance/database.py), on one real server.

The failover itself is tests/ha/test_failover.py; here the pieces it relies on, each on the
session's private PostgreSQL: a multi-host URL finds the server that answers, a URL that could
land on a standby is refused, and a connection that finds itself read-only (a primary demoted
under it) is dropped, so that the next transaction gets a new one.
"""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from patronicluster import free_port
from sqlalchemy.engine import make_url

from appliance.database import POSTGRES_CONNECT_DEFAULTS, create_engine


def _multi_host(url: str, *ports: int, attrs: str | None = "read-write") -> str:
    """``url``'s server behind dead ports (nothing listens on them), as ``?host=`` params."""
    parsed = make_url(url)
    hosts = [f"127.0.0.1:{port}" for port in ports] + [f"{parsed.host}:{parsed.port}"]
    query = dict(parsed.query) | {"host": hosts}
    if attrs:
        query["target_session_attrs"] = attrs
    return parsed.set(host=None, port=None, query=query).render_as_string(hide_password=False)


def test_a_multi_host_url_connects_to_the_server_that_answers(fresh_postgres_url: str) -> None:
    engine = create_engine(_multi_host(fresh_postgres_url, free_port(), free_port()))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT NOT pg_is_in_recovery()")).scalar() is True
    finally:
        engine.dispose()


@pytest.mark.parametrize("attrs", [None, "any", "read-only"])
def test_a_multi_host_url_that_may_land_on_a_standby_is_refused(attrs: str | None) -> None:
    url = _multi_host("postgresql://sluis@db1:5432/sluis", 5433, attrs=attrs)
    with pytest.raises(ValueError, match="target_session_attrs=read-write"):
        create_engine(url)
    with pytest.raises(ValueError, match="target_session_attrs=read-write"):
        create_engine(f"postgresql://sluis@db1,db2/sluis?target_session_attrs={attrs or ''}")


def test_the_network_waits_have_bounds_and_the_url_wins(fresh_postgres_url: str) -> None:
    url = make_url(fresh_postgres_url).update_query_dict({"connect_timeout": "2"})
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            dbapi = connection.connection.dbapi_connection
            assert dbapi is not None
            parameters = dbapi.info.get_parameters()
    finally:
        engine.dispose()
    assert parameters["connect_timeout"] == "2"  # the URL's, not the default
    for name, value in POSTGRES_CONNECT_DEFAULTS.items():
        if name != "connect_timeout":
            assert parameters[name] == str(value), name


def _insert(engine: sa.Engine, on_backend: int | None = None) -> int:
    """One row in one transaction; the server process that took it."""
    with engine.begin() as connection:
        pid = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        assert on_backend in (None, pid)
        connection.execute(sa.text("INSERT INTO t VALUES (1)"))
    return pid


def test_a_connection_on_a_read_only_server_is_dropped(fresh_postgres_url: str) -> None:
    """The pre-ping passes on a demoted primary (SELECT 1 works there); the refused write
    marks the connection as disconnected, and the next transaction writes on a new one."""
    engine = create_engine(fresh_postgres_url, pool_size=1)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (x int)"))
            pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            # What a demotion does to an open session: every later transaction is read-only.
            connection.execute(sa.text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
        with pytest.raises(sa.exc.DBAPIError) as refused:
            _insert(engine, on_backend=pid)
        assert isinstance(refused.value.orig, psycopg.errors.ReadOnlySqlTransaction)
        assert refused.value.connection_invalidated
        assert _insert(engine) != pid
    finally:
        engine.dispose()
