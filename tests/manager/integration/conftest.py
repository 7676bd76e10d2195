"""A Group of three Manager processes (directory, a, b) on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from managergroup import Member, plan

from appliance.demo.processes import start_component
from appliance.pki.ca import DemoCA


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def members(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Member]]:
    root = tmp_path_factory.mktemp(f"managers-{request.param}")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    if request.param == "sqlite":

        def database(name: str) -> str:
            return f"sqlite:///{root / name / 'manager.db'}"

    else:
        base = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in ("directory", "a", "b"):
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS mgr_{name} WITH (FORCE)"))
                conn.execute(sa.text(f"CREATE DATABASE mgr_{name} TEMPLATE template0"))
        engine.dispose()

        def database(name: str) -> str:
            return base.rsplit("/", 1)[0] + f"/mgr_{name}"

    group = plan(ca, root, database)
    try:
        for member in group.values():
            member.manager = start_component(
                f"manager-{member.name}",
                member.config_path,
                "manager",
                port=member.port,
                workers=2,
                log_dir=root / "logs",
            )
        yield group
    finally:
        for member in group.values():
            if member.manager is not None:
                member.manager.stop()
