"""``appliance.database.beyond``, the keyset condition of every paged listing (the Manager's
contracts, the controller's listings and transaction log page, ``GET /v1/logs``): the rows
strictly after (or before) the pivot in (time, key) order, and a range of an index that starts
with the time, from the pivot on (SQLite: ``SEARCH ... (t<?)``, not ``SCAN``: the OR alone made
a deep page walk the index from its start; docs/performance.md, "Cost growth")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from queryplans import plan_text

from appliance.database import beyond

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("t", sa.Integer, nullable=False),
    sa.Column("k", sa.String(8), nullable=False),
    sa.Index("ix_items_t_k", "t", "k"),
)
ROWS = [(n, n // 3, f"k{n % 5}") for n in range(60)]  # ties on the time


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    made = sa.create_engine("sqlite://")
    metadata.create_all(made)
    with made.begin() as conn:
        conn.execute(items.insert(), [{"id": i, "t": t, "k": k} for i, t, k in ROWS])
    yield made
    made.dispose()


@pytest.mark.parametrize("descending", [True, False])
def test_the_rows_beyond_the_pivot_in_either_order(engine: sa.Engine, descending: bool) -> None:
    c = items.c
    for _, pivot_t, pivot_k in ROWS:
        query = sa.select(c.id).where(beyond(c.t, c.k, pivot_t, pivot_k, descending=descending))
        with engine.connect() as conn:
            found = set(conn.execute(query).scalars())
        expected = {
            i
            for i, t, k in ROWS
            if ((t, k) < (pivot_t, pivot_k) if descending else (t, k) > (pivot_t, pivot_k))
        }
        assert found == expected, (pivot_t, pivot_k)


@pytest.mark.parametrize("descending", [True, False])
def test_the_condition_is_an_index_range_from_the_pivot(
    engine: sa.Engine, descending: bool
) -> None:
    c = items.c
    order = (c.t.desc(), c.k.desc()) if descending else (c.t, c.k)
    query = (
        sa.select(c.id)
        .where(beyond(c.t, c.k, 10, "k2", descending=descending))
        .order_by(*order)
        .limit(5)
    )
    compiled = query.compile(engine)
    plan = plan_text(
        engine, str(compiled), tuple(compiled.params[p] for p in compiled.positiontup or ())
    )
    assert "SEARCH items USING COVERING INDEX ix_items_t_k (t" in plan, plan
    assert "SCAN" not in plan, plan
