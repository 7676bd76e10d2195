"""The contract listings: keyset pages (stable cursors, page boundaries, filtered windows) and
a number of SQL statements per request that does not grow with the contracts in the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bulk import add_copies, copy_tables
from contracttest import NOW, OIN_A, Group
from controllertest import SERVICE, Env, controller_env
from cryptography import x509

from appliance.controller.listing import ContractListing, CursorError, Filter
from appliance.controller.roles import Role
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.storage import ManagerStore
from appliance.manager.storage import schema as t

COPIES = 24  # every sixth waits for B's approval (bulk.add_copies)


@contextmanager
def copied(
    group: Group, crls: list[x509.CertificateRevocationList], root: Path, copies: int
) -> Iterator[tuple[Env, str]]:
    """B's controller: the publication, A's connection (valid) and ``copies`` copies of it."""
    with controller_env(group, crls, root) as env:
        env.published(SERVICE)
        template = env.connection_from_a()
        env.controller.manager.sign(template, SignatureType.ACCEPT)
        add_copies(env, template, 0, copies)
        yield env, template


@pytest.fixture(scope="module")
def listing_env(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Env, str]]:
    with copied(group, crls, tmp_path_factory.mktemp("listing"), COPIES) as found:
        yield found


def _walk(
    env: Env, where: Filter, limit: int, cursor: str | None = None, **kwargs: Any
) -> list[list[str]]:
    """The pages from ``cursor`` (None: the first) to the end."""
    pages = []
    while True:
        page = env.controller.manager.listing.page(where, NOW, cursor=cursor, limit=limit, **kwargs)
        pages.append([row.content_hash for row in page.rows])
        cursor = page.next_cursor
        if cursor is None:
            return pages


def _newest_first(env: Env) -> list[str]:
    with env.service.store.engine.connect() as conn:
        c = sa.table("contracts", sa.column("content_hash"), sa.column("created_at"))
        query = sa.select(c.c.content_hash).order_by(c.c.created_at.desc(), c.c.content_hash.desc())
        return list(conn.execute(query).scalars())


def test_pages_cover_every_contract_once_newest_first(listing_env: tuple[Env, str]) -> None:
    env, _ = listing_env
    everything = _newest_first(env)
    assert len(everything) == COPIES + 2
    for limit in (1, 5, 7, COPIES + 1, COPIES + 2, 1000):
        pages = _walk(env, Filter(), limit)
        assert [h for page in pages for h in page] == everything, limit
        assert all(len(page) == limit for page in pages[:-1])
    # Exactly full: no empty page after it; one more than fits: a page of one.
    assert len(_walk(env, Filter(), COPIES + 2)) == 1
    assert _walk(env, Filter(), COPIES + 1)[-1] == [everything[-1]]


def test_a_cursor_is_stable_while_contracts_arrive(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> None:
    with copied(group, crls, tmp_path, 10) as (env, _):
        first = env.controller.manager.listing.page(Filter(), NOW, limit=4)
        before = _newest_first(env)
        env.connection_from_a()  # a new contract, newer than all: before the cursor
        rest = [h for page in _walk(env, Filter(), 4, first.next_cursor) for h in page]
        assert [row.content_hash for row in first.rows] + rest == before


def test_a_filter_without_an_index_looks_at_a_window_and_the_cursor_goes_on(
    listing_env: tuple[Env, str],
) -> None:
    env, _ = listing_env
    manager = env.controller.manager
    connections = {c.hash for c in manager.contracts(Filter(kind="connection"), limit=1000)[0]}
    assert len(connections) == COPIES + 1
    for window in (1, 3, 7, 1000):
        pages = _walk(env, Filter(kind="connection"), 2, window=window)
        found = [h for page in pages for h in page]
        assert found == [h for h in _newest_first(env) if h in connections], window


def test_indexed_filters_walk_every_match_in_order(listing_env: tuple[Env, str]) -> None:
    env, _ = listing_env
    manager = env.controller.manager
    newest = _newest_first(env)
    pending = {c.hash for c in manager.contracts(Filter(pending=True), limit=1000)[0]}
    assert len(pending) == COPIES // 6
    with env.service.store.engine.connect() as conn:
        cp = t.contract_peers.c
        of_a = set(conn.execute(sa.select(cp.contract_hash).where(cp.peer_id == OIN_A)).scalars())
    assert len(of_a) == COPIES + 1  # all but the publication
    for where, expected in (
        (Filter(pending=True), pending),
        (Filter(state="proposed"), pending),
        (Filter(state="valid"), set(newest) - pending),
        (Filter(pending=False), set(newest) - pending),
        (Filter(peer_id=OIN_A), of_a),
        (Filter(peer_id=OIN_A, pending=True), pending),
        (Filter(peer_id=OIN_A, state="valid"), of_a - pending),
        (Filter(state="rejected"), set()),
    ):
        for limit in (1, 3, 1000):
            pages = _walk(env, where, limit)
            found = [h for page in pages for h in page]
            assert found == [h for h in newest if h in expected], (where, limit)
            # Each page but the last is full: an index answers, there is no window.
            assert all(len(page) == limit for page in pages[:-1]), (where, limit)
        assert manager.listing.count(where, NOW) == len(expected), where
    for contract in manager.contracts(Filter(state="proposed"), limit=1000)[0]:
        assert contract.state == "proposed"
    assert {c.kind for c in manager.contracts(Filter(kind="publication"))[0]} == {"publication"}


def test_the_state_in_sql_is_the_managers(listing_env: tuple[Env, str]) -> None:
    env, _ = listing_env
    listed, _ = env.controller.manager.contracts(limit=1000)
    for contract in listed:
        assert contract == env.controller.manager.get(contract.hash)


def test_an_unknown_cursor_is_refused(listing_env: tuple[Env, str]) -> None:
    env, _ = listing_env
    with pytest.raises(CursorError):
        env.controller.manager.listing.page(Filter(), NOW, cursor="$1$1$" + "A" * 86)
    result = env.client.simulate_get(
        "/api/v1/contracts",
        params={"cursor": "$1$1$" + "A" * 86},
        **env.as_role(Role.AUDITOR, csrf=False),
    )
    assert result.status_code == 400


def test_the_api_pages_with_next_cursor(listing_env: tuple[Env, str]) -> None:
    env, _ = listing_env
    auth = env.as_role(Role.AUDITOR, csrf=False)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        body = env.client.simulate_get("/api/v1/contracts", params=params, **auth).json
        seen.extend(c["hash"] for c in body["contracts"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == _newest_first(env)


LISTINGS = (
    "/",
    "/contracts",
    "/services",
    "/api/v1/overview",
    "/api/v1/services",
    "/api/v1/contracts",
    "/api/v1/contracts?pending=true",
    "/api/v1/contracts?state=valid",
)


def _statements(env: Env, path: str) -> int:
    count = 0

    def counted(*_: Any) -> None:
        nonlocal count
        count += 1

    engines = (env.service.store.engine, env.store.engine)
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", counted)
    try:
        result = env.client.simulate_get(path, **env.as_role(Role.AUDITOR, csrf=False))
        assert result.status_code == 200, result.text
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", counted)
    return count


def test_statements_per_listing_do_not_grow_with_the_contracts(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> None:
    with copied(group, crls, tmp_path, 5) as (env, template):
        for path in LISTINGS:
            _statements(env, path)  # the session's first use is not the listing's
        few = {path: _statements(env, path) for path in LISTINGS}
        add_copies(env, template, 5, 600)
        many = {path: _statements(env, path) for path in LISTINGS}
        add_copies(env, template, 605, 600)
        more = {path: _statements(env, path) for path in LISTINGS}
    # A short filtered page asks one more (where its window ended): at most one more.
    assert all(few[path] - 1 <= many[path] <= few[path] for path in LISTINGS), (few, many)
    assert more == many
    assert max(few.values()) <= 20, few


def test_the_same_pages_on_postgresql(
    listing_env: tuple[Env, str], fresh_postgres_url: str
) -> None:
    """The listing's SQL on PostgreSQL: the Manager's tables copied there list the same."""
    env, _ = listing_env
    source = env.service.store.engine
    target = ManagerStore.open(fresh_postgres_url)
    try:
        copy_tables(source, target.engine)
        here = env.controller.manager.listing
        there = ContractListing(target.engine, here.own_peer_id)
        for where in (
            Filter(),
            Filter(pending=True),
            Filter(state="valid"),
            Filter(peer_id=OIN_A),
            Filter(kind="publication"),
        ):
            for limit in (3, 1000):
                mine = here.page(where, NOW, limit=limit)
                theirs = there.page(where, NOW, limit=limit)
                assert [tuple(r) for r in theirs.rows] == [tuple(r) for r in mine.rows]
                assert theirs.next_cursor == mine.next_cursor
                assert theirs.signatures == mine.signatures
        assert there.count(Filter(pending=True), NOW) == here.count(Filter(pending=True), NOW)
        assert there.publications(here.own_peer_id, NOW) == here.publications(here.own_peer_id, NOW)
    finally:
        target.close()
