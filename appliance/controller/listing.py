"""The controller's contract listings as SQL over the Manager's tables: keyset pages.

A contract's state is an SQL expression over columns the Manager store keeps for it
(:mod:`appliance.manager.storage.states`: the clock-free inputs stored, the clock compared in
the query), with the rules of :func:`appliance.manager.contracts.state.contract_state`. A page
walks an index newest first and stops after ``limit + 1`` rows; the page's grants,
signatures and peer names take one statement each. The index a page walks:

- no filter, or a publication: ``contracts (created_at, content_hash)``;
- a state: ``ix_contracts_state (decision, created_at, ...)``, which holds every column the
  state needs (one range for revoked or rejected; the undecided contracts for the others);
- a peer: ``ix_contract_peers_listing (peer_id, created_at, contract_hash)``;
- waiting for our approval: ``ix_contract_peers_unsigned (peer_id, signed, decided,
  created_at, contract_hash, not_after)``, only the undecided contracts we have not signed,
  with their end: counting them reads that index only (:func:`states.awaiting`);

so counting those is exact at any size. A kind other than publication and "connections of a
peer" have no index: they look at the newest :data:`WINDOW` contracts after the cursor only,
so that no request does per-row work over the whole store; the cursor then goes on from the
last one looked at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from appliance.database import beyond, reading
from appliance.errors import SluisError
from appliance.manager.storage import schema as t
from appliance.manager.storage.states import (
    STATE_COLUMNS,
    awaiting,
    proposed_at,
    state_column,
    state_is,
)

PUBLICATION_TYPES = (
    "GRANT_TYPE_SERVICE_PUBLICATION",
    "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION",
)
CONNECTION_TYPES = (
    "GRANT_TYPE_SERVICE_CONNECTION",
    "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION",
)
KINDS = ("publication", "connection", "other")
MAX_PAGE = 1000
# A filter without an index (a kind but publication, connections of a peer) looks at this
# many contracts (newest first) per request (see WINDOW in docs/controller.md).
WINDOW = 500
_CURSOR = re.compile(r"\$1\$[0-9]+\$[A-Za-z0-9_-]{1,200}")

c = t.contracts.c
ORDER = (c.created_at.desc(), c.content_hash.desc())
# What a listing shows of a contract (not content_json: the columns hold what it needs).
LISTED = (c.content_hash, c.created_at, c.not_before, c.not_after)


class CursorError(SluisError):
    """The cursor names no stored contract."""


@dataclass(frozen=True)
class Filter:
    state: str | None = None
    kind: str | None = None
    pending: bool | None = None
    peer_id: str | None = None
    content_hash: str | None = None
    # Contracts with a connection grant to this peer's service or from its outway.
    connection_of: str | None = None

    @property
    def windowed(self) -> bool:
        """Whether the filter needs a look at each contract (no index answers it)."""
        if self.content_hash is not None:
            return False
        return self.kind in ("connection", "other") or self.connection_of is not None


@dataclass(frozen=True)
class Page:
    """Rows of ``contracts`` (with ``state``) and, per content hash, their grants (rows of
    ``grants`` in position order) and signatures (type -> peer ids)."""

    rows: list[Any]
    grants: dict[str, list[sa.Row[Any]]]
    signatures: dict[str, dict[str, list[str]]]
    next_cursor: str | None


def _has_grant(types: Sequence[str]) -> sa.Exists:
    g = t.grants.alias("kind_g")
    return sa.exists().where(g.c.contract_hash == c.content_hash, g.c.grant_type.in_(types))


def kind_is(kind: str) -> sa.ColumnElement[bool]:
    if kind == "publication":
        return _has_grant(PUBLICATION_TYPES)
    if kind == "connection":
        return sa.and_(~_has_grant(PUBLICATION_TYPES), _has_grant(CONNECTION_TYPES))
    return sa.and_(~_has_grant(PUBLICATION_TYPES), ~_has_grant(CONNECTION_TYPES))


class ContractListing:
    """Keyset pages of contracts, newest first (``created_at``, then content hash)."""

    def __init__(self, engine: Engine, own_peer_id: str) -> None:
        self._engine = reading(engine)
        self.own_peer_id = own_peer_id

    def _pending(self, now: datetime, states_of: sa.FromClause) -> sa.ColumnElement[bool]:
        """Proposed, on this peer, and this peer has signed nothing yet."""
        cp = t.contract_peers.alias("own_cp")
        unsigned = sa.exists().where(
            cp.c.contract_hash == c.content_hash,
            cp.c.peer_id == self.own_peer_id,
            cp.c.signed == sa.false(),
        )
        return sa.and_(unsigned, proposed_at(now, states_of))

    def _driver(self, f: Filter, now: datetime) -> tuple[sa.FromClause, Any, Any, list[Any]]:
        """The rows a page walks (FROM), its order columns (time, key), and the conditions
        that index answers. Waiting for our approval and a peer walk that peer's rows of
        ``contract_peers`` (their own created_at, index order); anything else ``contracts``."""
        if f.windowed or (f.pending is not True and f.peer_id is None):
            return t.contracts, c.created_at, c.content_hash, []
        cp = t.contract_peers.alias("drv")
        if f.pending:
            conditions = awaiting(self.own_peer_id, now, cp)
        else:
            conditions = [cp.c.peer_id == f.peer_id]
        joined = cp.join(t.contracts, c.content_hash == cp.c.contract_hash)
        return joined, cp.c.created_at, cp.c.contract_hash, conditions

    def _where(
        self,
        query: sa.Select[Any],
        f: Filter,
        now: datetime,
        states_of: sa.FromClause = t.contracts,
    ) -> sa.Select[Any]:
        """``query`` with the conditions of ``f`` that its driver does not answer; the
        state compared on ``states_of`` (a window's own columns: see :func:`_window`)."""
        if f.content_hash is not None:
            query = query.where(c.content_hash == f.content_hash)
        driven = not f.windowed and (f.pending is True or f.peer_id is not None)
        # A peer other than ours, when the walk is over our unsigned contracts (or a window).
        if f.peer_id is not None and not (driven and f.pending is not True):
            cp = t.contract_peers.alias("f_cp")
            query = query.where(
                sa.exists().where(cp.c.contract_hash == c.content_hash, cp.c.peer_id == f.peer_id)
            )
        if f.connection_of is not None:
            g = t.grants.alias("f_g")
            # coalesce: probe each contract's grants by the primary key; SQLite picked the
            # (service_peer_id, ...) index instead and walked every grant of ours per row.
            ours = sa.func.coalesce(g.c.service_peer_id, "") == f.connection_of
            theirs = sa.func.coalesce(g.c.outway_peer_id, "") == f.connection_of
            query = query.where(
                sa.exists().where(
                    g.c.contract_hash == c.content_hash,
                    g.c.grant_type.in_(CONNECTION_TYPES),
                    sa.or_(ours, theirs),
                )
            )
        if f.kind == "publication":
            g = t.grants.alias("pub_g")
            # Publication grants alone have no outway: a short range of that index.
            query = query.where(
                c.content_hash.in_(
                    sa.select(g.c.contract_hash).where(
                        g.c.outway_peer_id.is_(None), g.c.grant_type.in_(PUBLICATION_TYPES)
                    )
                )
            )
        elif f.kind is not None:
            query = query.where(kind_is(f.kind))
        if f.state is not None:
            query = query.where(state_is(f.state, now, states_of))
        # When driven, the driver's conditions are "waiting for our approval" entirely.
        if f.pending is not None and not (f.pending is True and driven):
            pending = self._pending(now, states_of)
            query = query.where(pending if f.pending else ~pending)
        return query

    def _pivot(self, conn: Connection, cursor: str | None) -> datetime | None:
        if cursor is None:
            return None
        if not _CURSOR.fullmatch(cursor):
            raise CursorError("the cursor is not a contract hash")
        pivot: datetime | None = conn.execute(
            sa.select(c.created_at).where(c.content_hash == cursor)
        ).scalar_one_or_none()
        if pivot is None:
            raise CursorError("the cursor names no contract (start again without it)")
        return pivot

    def page(
        self,
        f: Filter,
        now: datetime,
        *,
        cursor: str | None = None,
        limit: int = 100,
        window: int = WINDOW,
    ) -> Page:
        """At most ``limit`` contracts after ``cursor`` (the content hash of the last contract
        of the previous page; :class:`CursorError` if no contract has it).

        A filter without an index (:attr:`Filter.windowed`) is tried on the next ``window``
        contracts only: a page may then hold fewer than ``limit`` (even none) while
        ``next_cursor`` says where the search goes on.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        source, time_column, key_column, conditions = self._driver(f, now)
        order = (time_column.desc(), key_column.desc())
        with self._engine.connect() as conn:
            pivot = self._pivot(conn, cursor)
            after = None
            if pivot is not None:
                after = beyond(time_column, key_column, pivot, cursor, descending=True)
            listed = sa.select(*LISTED, state_column(now))
            scanned: sa.Subquery | None = None
            if f.windowed:
                scanned = _window(window, after)
                # The window drives the query: the filter runs on its rows only.
                query = self._where(listed.select_from(_driven_by(scanned)), f, now, scanned)
            else:
                query = self._where(listed.select_from(source).where(*conditions), f, now)
                if after is not None:
                    query = query.where(after)
            rows = list(conn.execute(query.order_by(*order).limit(limit + 1)).all())
            following: str | None = None
            if len(rows) > limit:
                rows = rows[:limit]
                following = rows[-1].content_hash
            elif scanned is not None:
                # The page is short: go on after the last contract looked at, if the window
                # was full (there may be more further back).
                last = conn.execute(
                    sa.select(c.content_hash, sa.func.count().over().label("n"))
                    .select_from(_driven_by(scanned))
                    .order_by(c.created_at.asc(), c.content_hash.asc())
                    .limit(1)
                ).first()
                if last is not None and last.n >= window:
                    following = last.content_hash
            hashes = [row.content_hash for row in rows]
            return Page(
                rows=rows,
                grants=_grants(conn, hashes),
                signatures=_signatures(conn, hashes),
                next_cursor=following,
            )

    def count(self, f: Filter, now: datetime) -> int:
        """How many contracts match ``f``, exactly; for filters an index answers only
        (:attr:`Filter.windowed` is false), so the count walks that index's range."""
        if f.windowed:
            raise ValueError("a filter without an index is not counted")
        if f == Filter(pending=True):
            # The driver's conditions are the whole filter: its index range, no contracts row.
            cp = t.contract_peers.alias("drv")
            query = sa.select(sa.func.count()).where(*awaiting(self.own_peer_id, now, cp))
        else:
            source, _, _, conditions = self._driver(f, now)
            query = self._where(
                sa.select(sa.func.count()).select_from(source).where(*conditions), f, now
            )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def publications(self, service_peer_id: str, now: datetime) -> list[Any]:
        """Every publication grant of ``service_peer_id`` with its contract's times and state.

        Only publication grants have no outway: ``outway_peer_id IS NULL`` is a short range
        of its index, however many connection grants there are.
        """
        g = t.grants.c
        query = (
            sa.select(
                g.contract_hash,
                g.grant_hash,
                g.grant_type,
                g.service_name,
                g.directory_peer_id,
                g.data_json,
                c.created_at,
                c.not_after,
                state_column(now),
            )
            .join(t.contracts, c.content_hash == g.contract_hash)
            .where(
                g.outway_peer_id.is_(None),
                g.grant_type.in_(PUBLICATION_TYPES),
                # coalesce: keep the planner on the outway index (see above).
                sa.func.coalesce(g.service_peer_id, "") == service_peer_id,
            )
        )
        with self._engine.connect() as conn:
            rows = list(conn.execute(query).all())
        # Sorted here: an ORDER BY on the contracts index made SQLite walk every contract.
        rows.sort(key=lambda row: (row.created_at, row.contract_hash), reverse=True)
        return rows

    def connection_counts(self, service_peer_id: str, now: datetime) -> dict[str, int]:
        """Valid connections per service of ``service_peer_id`` among the newest contracts."""
        g = t.grants.alias("cnt_g")
        scan = _window(WINDOW)
        query = (
            sa.select(g.c.service_name, sa.func.count())
            .select_from(_driven_by(scan).join(g, g.c.contract_hash == c.content_hash))
            .where(
                sa.func.coalesce(g.c.service_peer_id, "") == service_peer_id,  # as in _where
                g.c.grant_type.in_(CONNECTION_TYPES),
                state_is("valid", now, scan),
            )
            .group_by(g.c.service_name)
        )
        with self._engine.connect() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(query)}

    def names(self, peer_ids: Sequence[str]) -> dict[str, str | None]:
        if not peer_ids:
            return {}
        p = t.peers.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(p.peer_id, p.name).where(p.peer_id.in_(sorted(set(peer_ids))))
            ).all()
        return {row.peer_id: row.name for row in rows}


def _window(size: int, after: Any = None) -> sa.Subquery:
    """The next ``size`` contracts (after the keyset condition ``after``), newest first,
    with the columns their state needs: a windowed filter compares the state on these, so
    the planner cannot walk ``ix_contracts_state`` over the whole store instead of the window
    (SQLite did, at 100,000 contracts: 1.5 s for the overview)."""
    columns = [c.content_hash, *(c[name] for name in STATE_COLUMNS)]
    scan = sa.select(*columns).order_by(*ORDER).limit(size)
    if after is not None:
        scan = scan.where(after)
    return scan.subquery("scanned")


def _driven_by(window: sa.Subquery) -> sa.Join:
    """``contracts`` joined to a window of content hashes, the window first (SQLite keeps a
    LIMIT subquery in FROM as the outer loop; with IN it may test every contract)."""
    return window.join(t.contracts, c.content_hash == window.c.content_hash)


def _grants(conn: Connection, hashes: Sequence[str]) -> dict[str, list[sa.Row[Any]]]:
    found: dict[str, list[sa.Row[Any]]] = {h: [] for h in hashes}
    if hashes:
        g = t.grants.c
        query = sa.select(t.grants).where(g.contract_hash.in_(list(hashes)))
        for row in conn.execute(query.order_by(g.contract_hash, g.position)):
            found[row.contract_hash].append(row)
    return found


def _signatures(conn: Connection, hashes: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = {
        h: {"accept": [], "reject": [], "revoke": []} for h in hashes
    }
    if hashes:
        s = t.signatures.c
        query = sa.select(s.contract_hash, s.signature_type, s.peer_id).where(
            s.contract_hash.in_(list(hashes))
        )
        for row in conn.execute(query.order_by(s.contract_hash, s.signature_type, s.peer_id)):
            found[row.contract_hash][row.signature_type].append(row.peer_id)
    return found
