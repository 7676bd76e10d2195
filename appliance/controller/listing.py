"""The controller's contract listings as SQL over the Manager's tables: keyset pages.

The controller used to build every stored contract through ``ManagerService.view`` for each
listing (3-4 statements and a content hash per contract: 1.8 s at 1,000 contracts, 18 s at
10,000). Here a contract's state, kind and "needs our approval" are SQL expressions over the
``contracts``, ``contract_peers``, ``signatures`` and ``certificates`` tables, with the rules of
:func:`appliance.manager.contracts.state.contract_state` (stored signatures were verified when
they arrived; one counts only while its certificate is stored, an accept only while that
certificate is valid). A page walks the ``(created_at, content_hash)`` index newest first and
stops after ``limit + 1`` rows; the page's grants, signatures and peer names take one
statement each. A filter that no index answers (a state, "needs our approval", a peer) and a
count look at the newest :data:`WINDOW` contracts after the cursor only, so that no request
does per-row work over the whole store; the cursor then goes on from the last one looked at.
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

PUBLICATION_TYPES = (
    "GRANT_TYPE_SERVICE_PUBLICATION",
    "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION",
)
CONNECTION_TYPES = (
    "GRANT_TYPE_SERVICE_CONNECTION",
    "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION",
)
STATES = ("proposed", "accepted", "valid", "rejected", "revoked", "expired")
KINDS = ("publication", "connection", "other")
MAX_PAGE = 1000
# A filtered listing or a count looks at this many contracts (newest first) per request: a
# contract's state is per-row work, and 100,000 of them take seconds (see WINDOW in the docs).
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
        if self.content_hash is not None or self.kind == "publication":
            return False
        named = (self.state, self.kind, self.pending, self.peer_id, self.connection_of)
        return any(v is not None for v in named)


@dataclass(frozen=True)
class Page:
    """Rows of ``contracts`` (with ``state``) and, per content hash, their grants (rows of
    ``grants`` in position order) and signatures (type -> peer ids)."""

    rows: list[Any]
    grants: dict[str, list[sa.Row[Any]]]
    signatures: dict[str, dict[str, list[str]]]
    next_cursor: str | None


def _floor(now: datetime) -> datetime:
    # The state rules compare whole Unix seconds (validity is in seconds).
    return now.replace(microsecond=0)


def _signed(kind: str, *extra: Any) -> sa.Exists:
    """A signature of ``kind`` by a peer of the contract whose certificate is stored."""
    s = t.signatures.alias("s")
    cp = t.contract_peers.alias("cp")
    ce = t.certificates.alias("ce")
    return sa.exists().where(
        s.c.contract_hash == c.content_hash,
        s.c.signature_type == kind,
        cp.c.contract_hash == c.content_hash,
        cp.c.peer_id == s.c.peer_id,
        ce.c.thumbprint == s.c.certificate_thumbprint,
        *(condition(s, ce) for condition in extra),
    )


def _someone_has_not_accepted(now: datetime) -> sa.Exists:
    cp = t.contract_peers.alias("req")
    s = t.signatures.alias("acc")
    ce = t.certificates.alias("acc_ce")
    accepted = sa.exists().where(
        s.c.contract_hash == cp.c.contract_hash,
        s.c.peer_id == cp.c.peer_id,
        s.c.signature_type == "accept",
        ce.c.thumbprint == s.c.certificate_thumbprint,
        ce.c.not_after > now,
    )
    return sa.exists().where(cp.c.contract_hash == c.content_hash, ~accepted)


def _has_grant(types: Sequence[str]) -> sa.Exists:
    g = t.grants.alias("kind_g")
    return sa.exists().where(g.c.contract_hash == c.content_hash, g.c.grant_type.in_(types))


def state_is(state: str, now: datetime) -> sa.ColumnElement[bool]:
    """Contracts in ``state`` at ``now``; the precedence of ``contract_state``: revoked,
    rejected, expired, then proposed until every peer accepted, accepted until not_before."""
    second = _floor(now)
    revoked, rejected = _signed("revoke"), _signed("reject")
    live = sa.and_(~revoked, ~rejected, c.not_after >= second)
    if state == "revoked":
        return revoked
    if state == "rejected":
        return sa.and_(~revoked, rejected)
    if state == "expired":
        return sa.and_(~revoked, ~rejected, c.not_after < second)
    if state == "proposed":
        return sa.and_(live, _someone_has_not_accepted(now))
    if state == "accepted":
        return sa.and_(live, ~_someone_has_not_accepted(now), c.not_before > second)
    if state == "valid":
        return sa.and_(live, ~_someone_has_not_accepted(now), c.not_before <= second)
    raise ValueError(f"unknown state {state!r}")


def state_column(now: datetime) -> sa.ColumnElement[str]:
    second = _floor(now)
    return sa.case(
        (_signed("revoke"), "revoked"),
        (_signed("reject"), "rejected"),
        (c.not_after < second, "expired"),
        (_someone_has_not_accepted(now), "proposed"),
        (c.not_before > second, "accepted"),
        else_="valid",
    ).label("state")


def kind_is(kind: str) -> sa.ColumnElement[bool]:
    if kind == "publication":
        return _has_grant(PUBLICATION_TYPES)
    if kind == "connection":
        return sa.and_(~_has_grant(PUBLICATION_TYPES), _has_grant(CONNECTION_TYPES))
    return sa.and_(~_has_grant(PUBLICATION_TYPES), ~_has_grant(CONNECTION_TYPES))


def pending_is(own_peer_id: str, now: datetime) -> sa.ColumnElement[bool]:
    """Proposed, on this peer, and this peer has signed nothing yet (``pending_our_action``)."""
    cp = t.contract_peers.alias("own_cp")
    s = t.signatures.alias("own_s")
    return sa.and_(
        sa.exists().where(cp.c.contract_hash == c.content_hash, cp.c.peer_id == own_peer_id),
        ~sa.exists().where(s.c.contract_hash == c.content_hash, s.c.peer_id == own_peer_id),
        state_is("proposed", now),
    )


class ContractListing:
    """Keyset pages of contracts, newest first (``created_at``, then content hash)."""

    def __init__(self, engine: Engine, own_peer_id: str) -> None:
        self._engine = reading(engine)
        self.own_peer_id = own_peer_id

    def _where(self, query: sa.Select[Any], f: Filter, now: datetime) -> sa.Select[Any]:
        if f.content_hash is not None:
            query = query.where(c.content_hash == f.content_hash)
        if f.peer_id is not None:
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
            query = query.where(state_is(f.state, now))
        if f.pending is not None:
            pending = pending_is(self.own_peer_id, now)
            query = query.where(pending if f.pending else ~pending)
        return query

    def _pivot(self, conn: Connection, cursor: str | None) -> sa.ColumnElement[bool] | None:
        if cursor is None:
            return None
        if not _CURSOR.fullmatch(cursor):
            raise CursorError("the cursor is not a contract hash")
        pivot = conn.execute(
            sa.select(c.created_at).where(c.content_hash == cursor)
        ).scalar_one_or_none()
        if pivot is None:
            raise CursorError("the cursor names no contract (start again without it)")
        return beyond(c.created_at, c.content_hash, pivot, cursor, descending=True)  # type: ignore[no-any-return]

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

        A filter is tried on the next ``window`` contracts only: a page may then hold fewer
        than ``limit`` (even none) while ``next_cursor`` says where the search goes on.
        Filters an index answers (one contract, publications) have no window.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        order = ORDER
        with self._engine.connect() as conn:
            after = self._pivot(conn, cursor)
            query = self._where(sa.select(*LISTED, state_column(now)), f, now)
            scanned: sa.Subquery | None = None
            if f.windowed:
                scan = sa.select(c.content_hash).order_by(*order).limit(window)
                if after is not None:
                    scan = scan.where(after)
                scanned = scan.subquery("scanned")
                # The window drives the query: the filter runs on its rows only.
                query = query.select_from(_driven_by(scanned))
            elif after is not None:
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

    def count(self, f: Filter, now: datetime, *, window: int = WINDOW) -> tuple[int, bool]:
        """How many of the newest ``window`` contracts match, and whether the store holds
        more than those (then the count is "at least")."""
        newest = sa.select(c.content_hash).order_by(*ORDER).limit(window + 1).subquery()
        with self._engine.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(newest)).scalar_one())
            scan = sa.select(c.content_hash).order_by(*ORDER).limit(window).subquery("scanned")
            query = self._where(sa.select(sa.func.count()).select_from(_driven_by(scan)), f, now)
            return int(conn.execute(query).scalar_one()), total > window

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
        scan = sa.select(c.content_hash).order_by(*ORDER).limit(WINDOW).subquery("scanned")
        query = (
            sa.select(g.c.service_name, sa.func.count())
            .select_from(_driven_by(scan).join(g, g.c.contract_hash == c.content_hash))
            .where(
                sa.func.coalesce(g.c.service_peer_id, "") == service_peer_id,  # as in _where
                g.c.grant_type.in_(CONNECTION_TYPES),
                state_is("valid", now),
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
