"""A contract's state as SQL over stored columns, so that a state, "waiting for our approval"
and the counts per state are index lookups at any number of contracts.

The rules are :func:`appliance.manager.contracts.state.contract_state`'s, over signatures
that were verified when they arrived (one counts only while its certificate is stored and
its signer is a peer of the contract; an accept only while that certificate is valid). What
does not depend on the clock is kept in columns, refreshed by :func:`refresh` in the
transaction of every change that can alter it (a signature stored or replaced, a certificate
stored):

- ``contracts.decision``: ``revoked``, ``rejected`` or NULL (neither), for good;
- ``contracts.accepted_until``: while every peer of the contract has an accept that counts,
  the earliest end of those accepts' certificates; NULL while one is missing;
- ``contract_peers.signed``: whether that peer signed the contract at all (accept, reject or
  revoke), for "waiting for our approval";
- ``contract_peers.created_at`` and ``not_after`` (set when the contract is stored; a
  contract never changes) and ``decided`` (``decision IS NOT NULL``, kept by :func:`refresh`):
  the contract's, so that a peer's contracts are walked in listing order on one index and
  "waiting for our approval" is counted on ``ix_contract_peers_unsigned`` alone
  (:func:`awaiting`).

What depends on the clock (``not_before``, ``not_after``, ``accepted_until`` against now) is
compared in the query (:func:`state_is`, :func:`state_column`), so no state goes stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from appliance.manager.storage import schema as t

STATES = ("proposed", "accepted", "valid", "rejected", "revoked", "expired")
# The columns of contracts that a state needs (for a subquery that carries them).
STATE_COLUMNS = ("decision", "not_after", "not_before", "accepted_until")

c = t.contracts.c


def _second(now: datetime) -> datetime:
    # Validity is in whole Unix seconds (contract_state compares epoch seconds).
    return now.replace(microsecond=0)


def _counted(kind: str) -> sa.Exists:
    """A signature of ``kind`` by a peer of the contract whose certificate is stored."""
    s, cp, ce = t.signatures.c, t.contract_peers.c, t.certificates.c
    return (
        sa.select(1)
        .select_from(t.signatures.join(t.certificates, ce.thumbprint == s.certificate_thumbprint))
        .join(
            t.contract_peers, sa.and_(cp.contract_hash == s.contract_hash, cp.peer_id == s.peer_id)
        )
        .where(s.contract_hash == c.content_hash, s.signature_type == kind)
        .exists()
    )


def _accepted_until() -> sa.ColumnElement[datetime | None]:
    """The earliest certificate end of the peers' accepts; NULL if a peer has none."""
    s, cp, ce = t.signatures.c, t.contract_peers.c, t.certificates.c
    accepts = t.signatures.join(t.certificates, ce.thumbprint == s.certificate_thumbprint)
    accepted = (
        sa.select(1)
        .select_from(accepts)
        .where(
            s.contract_hash == cp.contract_hash,
            s.peer_id == cp.peer_id,
            s.signature_type == "accept",
        )
        .exists()
    )
    missing = sa.exists().where(cp.contract_hash == c.content_hash, ~accepted)
    earliest = (
        sa.select(sa.func.min(ce.not_after))
        .select_from(
            accepts.join(
                t.contract_peers,
                sa.and_(cp.contract_hash == s.contract_hash, cp.peer_id == s.peer_id),
            )
        )
        .where(s.contract_hash == c.content_hash, s.signature_type == "accept")
        .scalar_subquery()
    )
    return sa.case((missing, sa.null()), else_=earliest)


def refresh(conn: Connection, content_hashes: Sequence[str]) -> None:
    """Recompute the stored state columns of ``content_hashes`` from their signatures."""
    hashes = sorted(set(content_hashes))
    if not hashes:
        return
    decision = sa.case((_counted("revoke"), "revoked"), (_counted("reject"), "rejected"))
    conn.execute(
        t.contracts.update()
        .where(c.content_hash.in_(hashes))
        .values(decision=decision, accepted_until=_accepted_until(), state_seq=_next_change(conn))
    )
    cp, s = t.contract_peers.c, t.signatures.c
    signed = sa.exists().where(s.contract_hash == cp.contract_hash, s.peer_id == cp.peer_id)
    decided = sa.exists().where(c.content_hash == cp.contract_hash, c.decision.is_not(None))
    conn.execute(
        t.contract_peers.update()
        .where(cp.contract_hash.in_(hashes))
        .values(signed=signed, decided=decided)
    )


def _next_change(conn: Connection) -> int:
    """The next change number (``state_changes``), taken in the caller's transaction: on
    PostgreSQL the row stays locked until it commits, so numbers become visible in order."""
    k = t.state_changes.c
    return int(
        conn.execute(
            t.state_changes.update().where(k.id == 1).values(seq=k.seq + 1).returning(k.seq)
        ).scalar_one()
    )


def last_change(conn: Connection) -> int:
    """The number of the last change of any contract's state columns (0: none yet)."""
    k = t.state_changes.c
    return int(conn.execute(sa.select(k.seq).where(k.id == 1)).scalar_one())


_SECOND = timedelta(seconds=1)


def valid_at(
    decision: str | None,
    not_before: datetime,
    not_after: datetime,
    accepted_until: datetime | None,
    now: datetime,
) -> bool:
    """:func:`state_is` ``("valid", now)`` on one contract's columns, in Python (a reader that
    keeps the columns, such as the outway's grant table, follows the clock without a query)."""
    return decision is None and clock_view(not_before, not_after, accepted_until, now)[0]


def clock_view(
    not_before: datetime, not_after: datetime, accepted_until: datetime | None, now: datetime
) -> tuple[bool, datetime | None]:
    """For a contract neither revoked nor rejected: whether it is valid at ``now``, and the
    first moment after ``now`` at which that may change by the clock alone (not_before
    reached, not_after passed, the accepts' certificates ended); None when the clock can no
    longer make it valid (only a stored change can). Validity is in whole seconds
    (:func:`_second`); the accepts' end is exact."""
    if accepted_until is None or accepted_until <= now:
        return False, None
    second = now.replace(microsecond=0)
    if not_after < second:
        return False, None
    wake = not_after.replace(microsecond=0) + _SECOND  # > now, as not_after >= second
    if accepted_until < wake:
        wake = accepted_until
    if not_before <= second:
        return True, wake
    # Valid from the first whole second not before not_before.
    starts = (
        not_before if not not_before.microsecond else not_before.replace(microsecond=0) + _SECOND
    )
    return False, min(starts, wake)


def awaiting(peer_id: str, now: datetime, peers: sa.FromClause) -> list[sa.ColumnElement[bool]]:
    """Contracts proposed at ``now`` that ``peer_id`` has not signed, on ``peers`` (an alias
    of ``contract_peers``) alone: a range of ``ix_contract_peers_unsigned`` that needs no row
    of ``contracts``. It is :func:`proposed_at` without its ``accepted_until`` part, which
    holds for every such row: a peer that signed nothing has no accept, so the contract's
    ``accepted_until`` is NULL (tests/manager/storage/test_manager_states.py checks it)."""
    k = peers.c
    return [
        k.peer_id == peer_id,
        k.signed == sa.false(),
        k.decided == sa.false(),
        k.not_after >= _second(now),
    ]


def proposed_at(now: datetime, table: sa.FromClause = t.contracts) -> sa.ColumnElement[bool]:
    """Neither decided nor expired, and some peer's accept is missing or no longer counts.

    ``table``: ``contracts``, or a subquery with its state columns (the same names)."""
    k = table.c
    return sa.and_(
        k.decision.is_(None),
        k.not_after >= _second(now),
        sa.or_(k.accepted_until.is_(None), k.accepted_until <= now),
    )


def state_is(
    state: str, now: datetime, table: sa.FromClause = t.contracts
) -> sa.ColumnElement[bool]:
    """Contracts in ``state`` at ``now``, with ``contract_state``'s precedence: revoked,
    rejected, expired, then proposed until every peer accepted, accepted until not_before."""
    k = table.c
    second = _second(now)
    if state in ("revoked", "rejected"):
        return k.decision == state
    if state == "expired":
        return sa.and_(k.decision.is_(None), k.not_after < second)
    if state == "proposed":
        return proposed_at(now, table)
    live = sa.and_(k.decision.is_(None), k.not_after >= second, k.accepted_until > now)
    if state == "accepted":
        return sa.and_(live, k.not_before > second)
    if state == "valid":
        return sa.and_(live, k.not_before <= second)
    raise ValueError(f"unknown state {state!r}")


def state_column(now: datetime, table: sa.FromClause = t.contracts) -> sa.ColumnElement[str]:
    k = table.c
    second = _second(now)
    return sa.case(
        (k.decision.is_not(None), k.decision),
        (k.not_after < second, "expired"),
        (sa.or_(k.accepted_until.is_(None), k.accepted_until <= now), "proposed"),
        (k.not_before > second, "accepted"),
        else_="valid",
    ).label("state")


def counts_by_state(conn: Connection, now: datetime) -> dict[str, int]:
    """How many contracts are in each state at ``now`` (every state, 0 if none): one pass
    over the ``ix_contracts_state`` index, which holds every column the state needs."""
    state = state_column(now)
    found = dict.fromkeys(STATES, 0)
    for name, number in conn.execute(sa.select(state, sa.func.count()).group_by(state)):
        found[name] = int(number)
    return found
