"""The SELECT statements an action runs, and their query plans: for the tests that a listing
reads an index (no sort, no scan) and for bench/controller_scale.py and bench/growth.py, which
print the plans. SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


def statements_of(engine: sa.Engine, action: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SELECT statements (with parameters, a WITH before one too) that ``action`` runs on
    ``engine``."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen


def plan_rows(engine: sa.Engine, statement: str, parameters: Any) -> list[tuple[Any, ...]]:
    """The rows of ``statement``'s query plan on ``engine``."""
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        cursor.execute(prefix + statement, parameters)
        return [tuple(row) for row in cursor.fetchall()]


def plan_text(engine: sa.Engine, statement: str, parameters: Any) -> str:
    """The plan as text, a line per row, for assertions on index names and steps."""
    return "\n".join(
        " ".join(str(v) for v in row) for row in plan_rows(engine, statement, parameters)
    )
