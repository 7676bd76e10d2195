"""The Manager's store: every call is one transaction, all or nothing.

:class:`ManagerStore` is what the Manager uses; each of its methods runs in a transaction of
its own. When several changes must stand or fall together (a contract, its submitter's
signature and the peer's address from one request), :meth:`ManagerStore.transaction` gives a
:class:`StoreTransaction` with the same methods, committed at the end of the ``with`` block
and rolled back if anything in it raises. Both get those methods from one base class, where each
operation is written once and says whether it writes: a :class:`ManagerStore` call begins a
writing transaction for it (``BEGIN IMMEDIATE`` on SQLite) or a reading one, a
:class:`StoreTransaction` call runs it in the transaction already open.

The outbox makes propagation reliable: ``put_contract_and_enqueue`` and
``add_signature_and_enqueue`` write the change and the deliveries to the other Managers in one
transaction, so a process that dies right after has lost nothing; a delivery worker takes
:meth:`~StoreTransaction.due_deliveries`, sends them, and marks each delivered or failed (with
the time of the next attempt: the backoff is the worker's choice).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from appliance.database import beyond, create_engine, reading
from appliance.manager.storage import schema as t
from appliance.manager.storage import states
from appliance.manager.storage.database import migrate
from appliance.manager.storage.errors import (
    DuplicateIvError,
    UnknownContractError,
    UnknownCursorError,
)
from appliance.manager.storage.rows import (
    CertificateRow,
    ConnectionGrantRow,
    ContractRow,
    Delivery,
    GrantRow,
    OutboxKind,
    OutboxRow,
    PeerRow,
    ServiceRow,
    SignatureRow,
    SignatureType,
)

MAX_PAGE = 1000  # manager.yaml: limit is at most 1000
MAX_ERROR_LENGTH = 2000
# A service's key in the listing order: (peer id, service name, contract hash).
ServiceKey = tuple[str, str, str]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")
    return value.astimezone(UTC)


def _at(value: datetime | None, what: str = "now") -> datetime:
    return _now() if value is None else _aware(value, what)


class _StoreOperations(ABC):
    """Each operation of :class:`ManagerStore` and :class:`StoreTransaction`, written once.

    An operation runs in the transaction :meth:`_begin` gives it, and says whether it writes.
    One that uses other operations calls them on that transaction, so it stays one transaction.
    """

    @abstractmethod
    def _begin(self, *, write: bool) -> AbstractContextManager[StoreTransaction]:
        """The transaction for one operation; ``write`` if the operation may write."""

    # -- contracts -------------------------------------------------------------------------

    def put_contract(
        self,
        content_hash: str,
        group_id: str,
        iv: str,
        hash_algorithm: str,
        created_at: datetime,
        not_before: datetime,
        not_after: datetime,
        content_json: str,
        grants: Sequence[GrantRow],
        *,
        received_at: datetime | None = None,
    ) -> bool:
        """Store a contract and its grants; False if it was already stored (nothing changes).

        Raises :class:`DuplicateIvError` if another contract of ``group_id`` has ``iv``.
        """
        with self._begin(write=True) as tx:
            conn = tx.connection
            if not grants:
                raise ValueError("a contract has at least one grant")
            times = {"created_at": created_at, "not_before": not_before, "not_after": not_after}
            for what, value in times.items():
                _aware(value, what)
            existing = _iv_owner(conn, group_id, iv)
            if existing == content_hash:
                return False
            if existing is not None:
                raise DuplicateIvError(group_id, iv, existing)
            insert = _insert(conn, t.contracts).values(
                content_hash=content_hash,
                group_id=group_id,
                iv=iv,
                hash_algorithm=hash_algorithm,
                created_at=created_at,
                not_before=not_before,
                not_after=not_after,
                content_json=content_json,
                received_at=_at(received_at, "received_at"),
            )
            try:
                # Only a conflict on the content hash is "already stored"; one on the iv raises.
                # The savepoint keeps the transaction usable after that (PostgreSQL aborts it).
                with conn.begin_nested():
                    inserted = _inserted(
                        conn,
                        insert.on_conflict_do_nothing(index_elements=[t.contracts.c.content_hash]),
                    )
            except IntegrityError as exc:
                owner = _iv_owner(conn, group_id, iv)  # a concurrent writer took the iv first
                if owner is not None and owner != content_hash:
                    raise DuplicateIvError(group_id, iv, owner) from exc
                if owner == content_hash:
                    # A concurrent writer stored this very contract first; PostgreSQL may
                    # report that as the iv's conflict instead of the content hash's.
                    return False
                raise
            if not inserted:
                return False
            conn.execute(
                t.grants.insert(),
                [
                    {
                        "contract_hash": content_hash,
                        "position": position,
                        "grant_hash": grant.grant_hash,
                        "grant_type": grant.grant_type,
                        "data_json": grant.data_json,
                        "service_peer_id": grant.service_peer_id,
                        "service_name": grant.service_name,
                        "outway_peer_id": grant.outway_peer_id,
                        "outway_public_key_thumbprint": grant.outway_public_key_thumbprint,
                        "directory_peer_id": grant.directory_peer_id,
                        "delegator_peer_id": grant.delegator_peer_id,
                        "service_delegator_peer_id": grant.service_delegator_peer_id,
                    }
                    for position, grant in enumerate(grants)
                ],
            )
            peer_ids = dict.fromkeys(peer for grant in grants for peer in grant.peer_ids)
            if peer_ids:
                conn.execute(
                    t.contract_peers.insert(),
                    [
                        {
                            "contract_hash": content_hash,
                            "peer_id": peer,
                            "created_at": created_at,
                            "not_after": not_after,
                        }
                        for peer in peer_ids
                    ],
                )
            # No signatures yet: decision and accepted_until stay NULL, signed false.
            return True

    def put_contract_and_enqueue(
        self,
        content_hash: str,
        group_id: str,
        iv: str,
        hash_algorithm: str,
        created_at: datetime,
        not_before: datetime,
        not_after: datetime,
        content_json: str,
        grants: Sequence[GrantRow],
        deliveries: Sequence[Delivery],
        *,
        now: datetime | None = None,
    ) -> bool:
        """:meth:`put_contract`, and if the contract is new, queue ``deliveries`` for it."""
        with self._begin(write=True) as tx:
            now = _at(now)
            stored = tx.put_contract(
                content_hash,
                group_id,
                iv,
                hash_algorithm,
                created_at,
                not_before,
                not_after,
                content_json,
                grants,
                received_at=now,
            )
            if stored:
                _enqueue_all(tx, content_hash, deliveries, now)
            return stored

    def get_contract(self, content_hash: str) -> ContractRow | None:
        with self._begin(write=False) as tx:
            found = tx.list_contracts(content_hashes=[content_hash], limit=1)
            return found[0] if found else None

    def list_contracts(
        self,
        *,
        peer_id: str | None = None,
        grant_type: str | None = None,
        content_hashes: Sequence[str] | None = None,
        grant_hashes: Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> list[ContractRow]:
        """Contracts in creation order (then content hash), at most ``limit`` of them.

        Filters combine with AND: contracts naming ``peer_id`` in a grant, with a grant of
        ``grant_type``, with one of ``content_hashes``, with a grant of one of ``grant_hashes``.
        ``after`` is the cursor: the content hash of the last contract of the previous page
        (:class:`UnknownCursorError` if no such contract is stored).
        """
        with self._begin(write=False) as tx:
            conn = tx.connection
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit}")
            c = t.contracts.c
            query = sa.select(t.contracts)
            # The order (creation time, content hash) is read from an index, never sorted:
            # a peer's contracts from ix_contract_peers_listing (its copies of both), all
            # contracts from ix_contracts_created_at_content_hash. Sorting cost grew with the
            # store (a page of 10 at 100,000 contracts: 1.1 s; docs/performance.md).
            time_column, key_column = c.created_at, c.content_hash
            if peer_id is not None:
                cp = t.contract_peers.c
                query = query.join(
                    t.contract_peers,
                    sa.and_(cp.contract_hash == c.content_hash, cp.peer_id == peer_id),
                )
                time_column, key_column = cp.created_at, cp.contract_hash
            if grant_type is not None:
                query = query.where(
                    sa.exists().where(
                        t.grants.c.contract_hash == c.content_hash,
                        t.grants.c.grant_type == grant_type,
                    )
                )
            if content_hashes is not None:
                query = query.where(c.content_hash.in_(list(content_hashes)))
            if grant_hashes is not None:
                # From ix_grants_grant_hash to the few contracts, not every contract probed.
                query = query.where(
                    c.content_hash.in_(
                        sa.select(t.grants.c.contract_hash).where(
                            t.grants.c.grant_hash.in_(list(grant_hashes))
                        )
                    )
                )
            if after is not None:
                pivot = conn.execute(
                    sa.select(c.created_at).where(c.content_hash == after)
                ).scalar_one_or_none()
                if pivot is None:
                    raise UnknownCursorError(after)
                query = query.where(
                    beyond(time_column, key_column, pivot, after, descending=descending)
                )
            order = (
                (time_column.desc(), key_column.desc())
                if descending
                else (time_column.asc(), key_column.asc())
            )
            rows = conn.execute(query.order_by(*order).limit(limit)).all()
            grants = _grants_of(conn, [row.content_hash for row in rows])
            return [_contract_row(row, grants.get(row.content_hash, ())) for row in rows]

    def contract_counts_by_state(self, now: datetime | None = None) -> dict[str, int]:
        """How many contracts are in each state at ``now`` (default: the clock), every state
        named (0 if none): ``proposed``, ``accepted``, ``valid``, ``rejected``, ``revoked``,
        ``expired``. Exact at any size; one pass over an index."""
        with self._begin(write=False) as tx:
            return states.counts_by_state(tx.connection, _at(now))

    def connection_grants(
        self,
        outway_peer_id: str,
        public_key_thumbprint: str,
        grant_types: Sequence[str],
        *,
        changed_after: int | None = None,
        now: datetime | None = None,
    ) -> tuple[int, list[ConnectionGrantRow]]:
        """The change number (``state_changes``) and the grants of ``grant_types`` whose
        outway is ``outway_peer_id`` with that key, with their contracts' state columns.

        Without ``changed_after``: the grants of every contract that is valid at ``now`` or
        will be by the clock alone (accepted, not revoked, rejected or expired). With it: the
        grants of every contract whose state columns changed after that number, in whatever
        state (a reader drops those no longer usable), read through ``ix_contracts_state_seq``:
        an outway worker asks every few seconds, and nothing changed costs one row. The
        number is read first: a change committed meanwhile may be in the rows too and comes
        again next time, none is missed."""
        g = t.grants.c
        contracts: sa.FromClause = t.contracts
        if changed_after is not None:
            # The changed contracts first, as their own (materialised) set, then their grants
            # by the primary key: joined directly, SQLite walked every grant of this outway
            # (or, without the outway index, every grant) and probed the contracts.
            contracts = (
                sa.select(t.contracts)
                .where(t.contracts.c.state_seq > changed_after)
                .cte("changed")
                .prefix_with("MATERIALIZED")
            )
        k = contracts.c
        query = (
            sa.select(
                g.contract_hash,
                k.created_at,
                g.position,
                g.grant_hash,
                g.service_peer_id,
                g.service_name,
                k.decision,
                k.not_before,
                k.not_after,
                k.accepted_until,
            )
            .select_from(contracts.join(t.grants, g.contract_hash == k.content_hash))
            .where(
                g.outway_public_key_thumbprint == public_key_thumbprint,
                g.grant_type.in_(list(grant_types)),
            )
        )
        if changed_after is None:
            moment = _at(now)
            query = query.where(
                g.outway_peer_id == outway_peer_id,
                sa.or_(states.state_is("valid", moment), states.state_is("accepted", moment)),
            )
        else:
            # coalesce: keeps SQLite off the grants' outway index (every grant of this outway).
            query = query.where(sa.func.coalesce(g.outway_peer_id, "") == outway_peer_id)
        with self._begin(write=False) as tx:
            seq = states.last_change(tx.connection)
            rows = [
                ConnectionGrantRow(*cast(tuple[Any, ...], row))
                for row in tx.connection.execute(query)
            ]
        return seq, rows

    # -- signatures ------------------------------------------------------------------------

    def add_signature(
        self,
        content_hash: str,
        peer_id: str,
        signature_type: SignatureType,
        jws: str,
        signed_at: datetime,
        certificate_thumbprint: str,
    ) -> bool:
        """Store a peer's signature; True if it is new or replaced an older one.

        The same signature again changes nothing (False). A different signature of the same
        peer and type replaces the stored one only if it was signed later (a peer signs again
        after renewing its certificate); an older or equally old one is ignored (False).
        Raises :class:`UnknownContractError` if the contract is not stored.
        """
        with self._begin(write=True) as tx:
            conn = tx.connection
            if signature_type not in t.SIGNATURE_TYPES:
                raise ValueError(f"unknown signature type {signature_type!r}")
            signed_at = _aware(signed_at, "signed_at")
            if not tx.contract_exists(content_hash):
                raise UnknownContractError(content_hash)
            s = t.signatures.c
            key = sa.and_(
                s.contract_hash == content_hash,
                s.peer_id == peer_id,
                s.signature_type == signature_type,
            )
            inserted = _inserted(
                conn,
                _insert(conn, t.signatures)
                .values(
                    contract_hash=content_hash,
                    peer_id=peer_id,
                    signature_type=signature_type,
                    jws=jws,
                    signed_at=signed_at,
                    certificate_thumbprint=certificate_thumbprint,
                )
                .on_conflict_do_nothing(
                    index_elements=[s.contract_hash, s.peer_id, s.signature_type]
                ),
            )
            changed = inserted or bool(
                conn.execute(
                    t.signatures.update()
                    .where(key, s.signed_at < signed_at, s.jws != jws)
                    .values(
                        jws=jws, signed_at=signed_at, certificate_thumbprint=certificate_thumbprint
                    )
                ).rowcount
            )
            if changed:
                states.refresh(conn, [content_hash])
            return changed

    def add_signature_and_enqueue(
        self,
        content_hash: str,
        peer_id: str,
        signature_type: SignatureType,
        jws: str,
        signed_at: datetime,
        certificate_thumbprint: str,
        deliveries: Sequence[Delivery],
        *,
        now: datetime | None = None,
    ) -> bool:
        """:meth:`add_signature`, and if it stored something, queue ``deliveries`` for it."""
        with self._begin(write=True) as tx:
            stored = tx.add_signature(
                content_hash, peer_id, signature_type, jws, signed_at, certificate_thumbprint
            )
            if stored:
                _enqueue_all(tx, content_hash, deliveries, _at(now))
            return stored

    def signatures(self, content_hash: str) -> list[SignatureRow]:
        with self._begin(write=False) as tx:
            return tx.signatures_by_contract([content_hash]).get(content_hash, [])

    def signatures_by_contract(
        self, content_hashes: Sequence[str]
    ) -> dict[str, list[SignatureRow]]:
        """The signatures of several contracts (one query), by type then peer."""
        with self._begin(write=False) as tx:
            conn = tx.connection
            if not content_hashes:
                return {}
            s = t.signatures.c
            rows = conn.execute(
                sa.select(t.signatures)
                .where(s.contract_hash.in_(list(content_hashes)))
                .order_by(s.contract_hash, s.signature_type, s.peer_id)
            ).all()
            found: dict[str, list[SignatureRow]] = {}
            for row in rows:
                found.setdefault(row.contract_hash, []).append(
                    SignatureRow(
                        content_hash=row.contract_hash,
                        peer_id=row.peer_id,
                        signature_type=row.signature_type,
                        jws=row.jws,
                        signed_at=row.signed_at,
                        certificate_thumbprint=row.certificate_thumbprint,
                    )
                )
            return found

    # -- peers -----------------------------------------------------------------------------

    def upsert_peer(
        self,
        peer_id: str,
        *,
        name: str | None = None,
        manager_address: str | None = None,
        now: datetime | None = None,
    ) -> PeerRow:
        """Record a peer; a field given as None keeps what was stored before."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            p = t.peers.c
            insert = _insert(conn, t.peers).values(
                peer_id=peer_id, name=name, manager_address=manager_address, updated_at=_at(now)
            )
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[p.peer_id],
                    set_={
                        "name": sa.func.coalesce(insert.excluded.name, p.name),
                        "manager_address": sa.func.coalesce(
                            insert.excluded.manager_address, p.manager_address
                        ),
                        "updated_at": insert.excluded.updated_at,
                    },
                )
            )
            peer = tx.get_peer(peer_id)
            assert peer is not None
            return peer

    def get_peer(self, peer_id: str) -> PeerRow | None:
        with self._begin(write=False) as tx:
            found = tx.list_peers([peer_id])
            return found[0] if found else None

    def list_peers(
        self,
        peer_ids: Sequence[str] | None = None,
        *,
        name_contains: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[PeerRow]:
        """Peers by Peer ID; ``after`` is the last Peer ID of the previous page."""
        with self._begin(write=False) as tx:
            conn = tx.connection
            p = t.peers.c
            query = sa.select(t.peers).order_by(p.peer_id)
            if peer_ids is not None:
                query = query.where(p.peer_id.in_(list(peer_ids)))
            if name_contains:
                query = query.where(p.name.icontains(name_contains, autoescape=True))
            if after is not None:
                query = query.where(p.peer_id > after)
            if limit is not None:
                query = query.limit(limit)
            return [
                PeerRow(
                    peer_id=row.peer_id,
                    name=row.name,
                    manager_address=row.manager_address,
                    updated_at=row.updated_at,
                )
                for row in conn.execute(query)
            ]

    # -- certificates ----------------------------------------------------------------------

    def put_certificate(
        self, thumbprint: str, peer_id: str, chain_pem: str, not_after: datetime
    ) -> bool:
        """Store a peer's certificate chain under its x5t#S256; False if it was there."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            not_after = _aware(not_after, "not_after")
            inserted = _inserted(
                conn,
                _insert(conn, t.certificates)
                .values(
                    thumbprint=thumbprint,
                    peer_id=peer_id,
                    chain_pem=chain_pem,
                    not_after=not_after,
                )
                .on_conflict_do_nothing(index_elements=[t.certificates.c.thumbprint]),
            )
            if inserted:
                # Signatures stored before their certificate count from now on.
                s = t.signatures.c
                signed = conn.execute(
                    sa.select(s.contract_hash).where(s.certificate_thumbprint == thumbprint)
                ).scalars()
                states.refresh(conn, list(signed))
            return inserted

    def get_certificate(self, thumbprint: str) -> CertificateRow | None:
        with self._begin(write=False) as tx:
            conn = tx.connection
            row = conn.execute(
                sa.select(t.certificates).where(t.certificates.c.thumbprint == thumbprint)
            ).first()
            return _certificate_row(row) if row is not None else None

    def certificates_of(self, peer_id: str) -> list[CertificateRow]:
        """A peer's certificates, the one valid longest first."""
        with self._begin(write=False) as tx:
            conn = tx.connection
            c = t.certificates.c
            rows = conn.execute(
                sa.select(t.certificates)
                .where(c.peer_id == peer_id)
                .order_by(c.not_after.desc(), c.thumbprint)
            )
            return [_certificate_row(row) for row in rows]

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(
        self,
        target_peer_id: str,
        kind: OutboxKind,
        contract_hash: str,
        payload_json: str,
        *,
        now: datetime | None = None,
    ) -> int:
        """Queue a delivery to another Manager, due at once; returns its id."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            if kind not in t.OUTBOX_KINDS:
                raise ValueError(f"unknown outbox kind {kind!r}")
            if not tx.contract_exists(contract_hash):
                raise UnknownContractError(contract_hash)
            now = _at(now)
            result = conn.execute(
                t.outbox.insert()
                .values(
                    target_peer_id=target_peer_id,
                    kind=kind,
                    contract_hash=contract_hash,
                    payload_json=payload_json,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                .returning(t.outbox.c.id)
            )
            return int(result.scalar_one())

    def due_deliveries(
        self, now: datetime, limit: int = 100, *, lease: timedelta | None = None
    ) -> list[OutboxRow]:
        """Undelivered entries whose next attempt is due at ``now``, oldest due first.

        With ``lease``, the entries are also claimed: their next attempt moves to ``now +
        lease``, so another worker (another node on the same PostgreSQL) does not take them
        while this one sends; :meth:`mark_failed` or :meth:`mark_delivered` ends the lease.
        """
        with self._begin(write=lease is not None) as tx:
            conn = tx.connection
            now = _aware(now, "now")
            o = t.outbox.c
            query = (
                sa.select(t.outbox)
                .where(o.delivered_at.is_(None), o.next_attempt_at <= now)
                .order_by(o.next_attempt_at, o.id)
                .limit(limit)
            )
            if lease is not None and conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [_outbox_row(row) for row in conn.execute(query)]
            if lease is not None and rows:
                until = now + lease
                conn.execute(
                    t.outbox.update()
                    .where(o.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=until)
                )
            return rows

    def mark_delivered(self, id: int, now: datetime) -> bool:
        """The entry reached its peer; False if it was not pending."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            now = _aware(now, "now")
            o = t.outbox.c
            return bool(
                conn.execute(
                    t.outbox.update()
                    .where(o.id == id, o.delivered_at.is_(None))
                    .values(delivered_at=now, attempts=o.attempts + 1, last_error=None)
                ).rowcount
            )

    def mark_failed(self, id: int, error: str, next_attempt_at: datetime) -> bool:
        """The attempt failed: count it, keep the error, try again at ``next_attempt_at``."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            next_attempt_at = _aware(next_attempt_at, "next_attempt_at")
            o = t.outbox.c
            return bool(
                conn.execute(
                    t.outbox.update()
                    .where(o.id == id, o.delivered_at.is_(None))
                    .values(
                        attempts=o.attempts + 1,
                        last_error=error[:MAX_ERROR_LENGTH],
                        next_attempt_at=next_attempt_at,
                    )
                ).rowcount
            )

    def get_delivery(self, id: int) -> OutboxRow | None:
        with self._begin(write=False) as tx:
            conn = tx.connection
            row = conn.execute(sa.select(t.outbox).where(t.outbox.c.id == id)).first()
            return _outbox_row(row) if row is not None else None

    def delete_delivered(self, before: datetime) -> int:
        """Forget entries delivered before ``before``; returns how many."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            before = _aware(before, "before")
            o = t.outbox.c
            return int(
                conn.execute(
                    t.outbox.delete().where(o.delivered_at.is_not(None), o.delivered_at < before)
                ).rowcount
            )

    # -- services (directory) --------------------------------------------------------------

    def put_service(
        self,
        peer_id: str,
        service_name: str,
        contract_hash: str,
        protocol: str,
        *,
        inway_address: str | None = None,
        delegator_peer_id: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Publish a service under the contract that grants it; False if already there."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            if not tx.contract_exists(contract_hash):
                raise UnknownContractError(contract_hash)
            s = t.services.c
            return _inserted(
                conn,
                _insert(conn, t.services)
                .values(
                    peer_id=peer_id,
                    service_name=service_name,
                    contract_hash=contract_hash,
                    protocol=protocol,
                    inway_address=inway_address,
                    delegator_peer_id=delegator_peer_id,
                    created_at=_at(now),
                )
                .on_conflict_do_nothing(
                    index_elements=[s.peer_id, s.service_name, s.contract_hash]
                ),
            )

    def list_services(self, peer_id: str | None = None) -> list[ServiceRow]:
        with self._begin(write=False) as tx:
            conn = tx.connection
            s = t.services.c
            query = sa.select(t.services).order_by(s.peer_id, s.service_name, s.contract_hash)
            if peer_id is not None:
                query = query.where(s.peer_id == peer_id)
            return [_service_row(row) for row in conn.execute(query)]

    def services_page(
        self,
        *,
        peer_id: str | None = None,
        name_contains: str | None = None,
        after: ServiceKey | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> list[ServiceRow]:
        """At most ``limit`` published services in (peer, name, contract) order.

        ``peer_id`` and ``name_contains`` (case-insensitive) filter; when both are given a
        service matching either is listed (manager.yaml). ``after`` is the key of the last
        service of the previous page, which must itself be listed under the same filters
        (:class:`UnknownCursorError` otherwise). Keyset paging on the primary key: a page
        reads its own rows and no others, at any number of services (docs/performance.md).
        """
        with self._begin(write=False) as tx:
            conn = tx.connection
            if not 1 <= limit <= MAX_PAGE + 1:  # one more than a page: is there a next?
                raise ValueError(f"limit must be 1..{MAX_PAGE + 1}, got {limit}")
            s = t.services.c
            key = sa.tuple_(s.peer_id, s.service_name, s.contract_hash)
            matches: list[sa.ColumnElement[bool]] = []
            if peer_id is not None:
                matches.append(s.peer_id == peer_id)
            if name_contains:
                # Service names are ASCII (contracts.validation), where lower() is exact.
                matches.append(
                    sa.func.lower(s.service_name).contains(name_contains.lower(), autoescape=True)
                )
            query = sa.select(t.services)
            if matches:
                query = query.where(sa.or_(*matches))
            if after is not None:
                if conn.execute(query.where(key == sa.tuple_(*after)).limit(1)).first() is None:
                    raise UnknownCursorError("/".join(after))
                query = query.where(
                    key < sa.tuple_(*after) if descending else key > sa.tuple_(*after)
                )
            columns = (s.peer_id, s.service_name, s.contract_hash)
            order = [c.desc() for c in columns] if descending else list(columns)
            return [_service_row(row) for row in conn.execute(query.order_by(*order).limit(limit))]

    def remove_services_of_contract(self, content_hash: str) -> int:
        """Unpublish what a (revoked or expired) contract published; returns how many."""
        with self._begin(write=True) as tx:
            conn = tx.connection
            return int(
                conn.execute(
                    t.services.delete().where(t.services.c.contract_hash == content_hash)
                ).rowcount
            )


class StoreTransaction(_StoreOperations):
    """The store's operations on one open transaction (see :meth:`ManagerStore.transaction`)."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    @property
    def connection(self) -> Connection:
        return self._conn

    def _begin(self, *, write: bool) -> AbstractContextManager[StoreTransaction]:
        return nullcontext(self)  # every operation runs in the transaction already open

    def contract_exists(self, content_hash: str) -> bool:
        return (
            self._conn.execute(
                sa.select(t.contracts.c.content_hash).where(
                    t.contracts.c.content_hash == content_hash
                )
            ).first()
            is not None
        )


class ManagerStore(_StoreOperations):
    """The Manager's database. Each method is one transaction; see :meth:`transaction`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reading(engine)

    @classmethod
    def open(cls, url: str | URL, **engine_options: Any) -> ManagerStore:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``) and migrate to head."""
        engine = create_engine(url, **engine_options)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ManagerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """One writing transaction: committed when the block ends, rolled back if it raises."""
        with self._engine.begin() as connection:
            yield StoreTransaction(connection)

    @contextmanager
    def snapshot(self) -> Iterator[StoreTransaction]:
        """One reading transaction: several reads that see the same state."""
        with self._reader.begin() as connection:
            yield StoreTransaction(connection)

    def _begin(self, *, write: bool) -> AbstractContextManager[StoreTransaction]:
        return self.transaction() if write else self.snapshot()


def _iv_owner(conn: Connection, group_id: str, iv: str) -> str | None:
    owner: str | None = conn.execute(
        sa.select(t.contracts.c.content_hash).where(
            t.contracts.c.group_id == group_id, t.contracts.c.iv == iv
        )
    ).scalar_one_or_none()
    return owner


def _grants_of(conn: Connection, content_hashes: Sequence[str]) -> dict[str, tuple[GrantRow, ...]]:
    if not content_hashes:
        return {}
    rows = conn.execute(
        sa.select(t.grants)
        .where(t.grants.c.contract_hash.in_(list(content_hashes)))
        .order_by(t.grants.c.contract_hash, t.grants.c.position)
    ).all()
    found: dict[str, list[GrantRow]] = {}
    for row in rows:
        found.setdefault(row.contract_hash, []).append(_grant_row(row))
    return {key: tuple(value) for key, value in found.items()}


def _enqueue_all(
    tx: StoreTransaction, contract_hash: str, deliveries: Sequence[Delivery], now: datetime
) -> None:
    for delivery in deliveries:
        tx.enqueue(
            delivery.target_peer_id,
            delivery.kind,
            contract_hash,
            delivery.payload_json,
            now=now,
        )


def _insert(connection: Connection, table: sa.Table) -> Any:
    """An INSERT with ``on_conflict_do_*`` for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the Manager's store does not support {connection.dialect.name}")


def _inserted(connection: Connection, insert: Any) -> bool:
    """Run an INSERT ... ON CONFLICT DO NOTHING; True if it inserted its row.

    RETURNING says so on both backends; ``rowcount`` does not (SQLAlchemy keeps it reliably
    only for UPDATE and DELETE, and psycopg's INSERT came back as -1).
    """
    table: sa.Table = insert.table
    return connection.execute(insert.returning(*table.primary_key.columns)).first() is not None


def _grant_row(row: Row[Any]) -> GrantRow:
    return GrantRow(
        grant_hash=row.grant_hash,
        grant_type=row.grant_type,
        data_json=row.data_json,
        service_peer_id=row.service_peer_id,
        service_name=row.service_name,
        outway_peer_id=row.outway_peer_id,
        outway_public_key_thumbprint=row.outway_public_key_thumbprint,
        directory_peer_id=row.directory_peer_id,
        delegator_peer_id=row.delegator_peer_id,
        service_delegator_peer_id=row.service_delegator_peer_id,
    )


def _contract_row(row: Row[Any], grants: tuple[GrantRow, ...]) -> ContractRow:
    return ContractRow(
        content_hash=row.content_hash,
        group_id=row.group_id,
        iv=row.iv,
        hash_algorithm=row.hash_algorithm,
        created_at=row.created_at,
        not_before=row.not_before,
        not_after=row.not_after,
        content_json=row.content_json,
        received_at=row.received_at,
        grants=grants,
    )


def _service_row(row: Row[Any]) -> ServiceRow:
    return ServiceRow(
        peer_id=row.peer_id,
        service_name=row.service_name,
        contract_hash=row.contract_hash,
        protocol=row.protocol,
        inway_address=row.inway_address,
        delegator_peer_id=row.delegator_peer_id,
        created_at=row.created_at,
    )


def _certificate_row(row: Row[Any]) -> CertificateRow:
    return CertificateRow(
        thumbprint=row.thumbprint,
        peer_id=row.peer_id,
        chain_pem=row.chain_pem,
        not_after=row.not_after,
    )


def _outbox_row(row: Row[Any]) -> OutboxRow:
    return OutboxRow(
        id=row.id,
        target_peer_id=row.target_peer_id,
        kind=cast(OutboxKind, row.kind),
        contract_hash=row.contract_hash,
        payload_json=row.payload_json,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )
