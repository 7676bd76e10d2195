"""Which grant a request uses: by ``Fsc-Grant-Hash``, or by the NLX-style ``/{peer}/{service}``.

Only connection grants (``SERVICE_CONNECTION``, ``DELEGATED_SERVICE_CONNECTION``) of a contract
in the state ``valid`` in this appliance's Manager store count, and only those whose outway
is this peer with the public key of the certificate this worker connects with. During a
re-key (docs/lifecycle.md) the old and the new contracts are both valid: workers still on the
old key use the old grants, workers started after the switch the new ones, and neither sees
two grants for one service. Contracts change while the outway runs, so each worker reads the
store again once what it read is :data:`ROUTES_MAX_AGE` seconds old (:class:`CachedGrants`): a
contract that became valid is used, and one that was revoked or expired is refused, within
that time.
The read is one query over the store's grant and state columns (the signatures were checked
when they arrived); a token the service's peer issued before a revocation stays valid at its
inway for much longer than those seconds anyway.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from appliance.manager.contracts.model import GrantType
from appliance.manager.service import ManagerService
from appliance.manager.storage import states
from appliance.manager.storage.rows import ConnectionGrantRow
from appliance.outway.errors import OutwayError, OutwayErrorCode

ROUTES_MAX_AGE = 5.0  # seconds a worker keeps the grants it read from the store
CONNECTION_GRANT_TYPES = (
    GrantType.SERVICE_CONNECTION.value,
    GrantType.DELEGATED_SERVICE_CONNECTION.value,
)


@dataclass(frozen=True)
class Route:
    """A usable connection grant: whose token to ask for, and for which Service."""

    grant_hash: str
    service_peer_id: str
    service_name: str


class RouteTable:
    """Routes indexed by grant hash and by (service peer, service name): a request's lookup
    costs the same at ten grants as at a hundred thousand. ``routes`` lists them, each once,
    in their source's order (newest contract first), built when first asked (a listing's
    need, not a request's)."""

    __slots__ = ("_order", "_routes", "by_hash", "by_service")

    def __init__(
        self,
        by_hash: Mapping[str, Route],
        by_service: Mapping[tuple[str, str], tuple[Route, ...]],
        order: Callable[[], Iterable[Route]],
    ) -> None:
        self.by_hash = by_hash
        self.by_service = by_service
        self._order = order
        self._routes: tuple[Route, ...] | None = None

    @property
    def routes(self) -> tuple[Route, ...]:
        if self._routes is None:
            self._routes = tuple(dict.fromkeys(self._order()))
        return self._routes

    @classmethod
    def of(cls, routes: Iterable[Route]) -> RouteTable:
        unique = tuple(dict.fromkeys(routes))
        by_hash: dict[str, Route] = {}
        services: dict[tuple[str, str], dict[str, Route]] = {}
        for route in unique:
            by_hash.setdefault(route.grant_hash, route)
            key = (route.service_peer_id, route.service_name)
            services.setdefault(key, {}).setdefault(route.grant_hash, route)
        by_service = {key: tuple(found.values()) for key, found in services.items()}
        return cls(by_hash, by_service, lambda: unique)


class GrantSource(Protocol):
    def table(self) -> RouteTable:
        """Every valid connection grant whose outway is this peer."""
        ...


def by_grant_hash(source: GrantSource, grant_hash: str) -> Route:
    route = source.table().by_hash.get(grant_hash)
    if route is None:
        raise OutwayError(
            OutwayErrorCode.GRANT_NOT_FOUND,
            "no valid connection contract of this outway holds the grant in Fsc-Grant-Hash",
        )
    return route


def by_service(source: GrantSource, peer_id: str, service: str) -> Route:
    found = source.table().by_service.get((peer_id, service), ())
    if not found:
        raise OutwayError(
            OutwayErrorCode.GRANT_NOT_FOUND,
            f"no valid connection contract of this outway for service {service!r} of peer "
            f"{peer_id}",
        )
    if len(found) > 1:
        raise OutwayError(
            OutwayErrorCode.GRANT_AMBIGUOUS,
            f"{len(found)} valid connection grants for service {service!r} of peer {peer_id}; "
            "name one with the Fsc-Grant-Hash header",
        )
    return found[0]


class StoreGrants:
    """The grants in the local Manager store (``appliance.manager.setup.build_service``), read
    from the store's grant and state columns (:meth:`ManagerStore.connection_grants`), not
    every contract parsed and its signatures checked again.

    The first read takes every grant of this outway in a valid or accepted contract; each
    later one only the contracts whose state columns changed since (the store's change
    number: nothing changed costs one row, at any number of contracts). The clock's part of
    the state (not_before, not_after, the accepts' certificates ending) is followed from the
    kept columns, each contract re-examined at the next moment its state may change. A
    contract that becomes valid adds its routes to the table's dicts, one that stops being
    valid takes them out: a change costs its own routes, not the table. A change number or
    clock that went backwards (a restored database, a clock set back) makes the next read a
    whole one again. A grant hash names one grant (it covers the contract's hash).
    """

    def __init__(self, service: ManagerService) -> None:
        self._service = service
        self._lock = threading.Lock()
        self._seq: int | None = None  # the change number the kept grants are as new as
        self._read_at: datetime | None = None
        self._grants: dict[str, list[ConnectionGrantRow]] = {}  # usable contracts' grants
        self._valid: set[str] = set()  # the contracts among them valid at _read_at
        self._wake: list[tuple[datetime, str]] = []  # (moment, contract) to look at again
        self._wake_at: dict[str, datetime] = {}  # each contract's one live entry in _wake
        self._by_hash: dict[str, Route] = {}
        self._services: dict[tuple[str, str], dict[str, Route]] = {}  # by grant hash
        self._uses: dict[Route, int] = {}  # valid contracts holding each route
        self._table = RouteTable.of(())

    def table(self) -> RouteTable:
        with self._lock:
            now = self._service.clock()
            whole = self._seq is None or self._read_at is None or now < self._read_at
            # The Manager service was built from the live chain when this worker started.
            seq, rows = self._service.store.connection_grants(
                self._service.peer_id,
                self._service.identity.public_key_thumbprint,
                CONNECTION_GRANT_TYPES,
                changed_after=None if whole else self._seq,
                now=now,
            )
            if not whole and self._seq is not None and seq < self._seq:
                seq, rows = self._service.store.connection_grants(
                    self._service.peer_id,
                    self._service.identity.public_key_thumbprint,
                    CONNECTION_GRANT_TYPES,
                    now=now,
                )
                whole = True
            if whole:
                self._grants, self._valid, self._wake, self._wake_at = {}, set(), [], {}
                self._by_hash, self._services, self._uses = {}, {}, {}
            changed, moved = self._take(rows)
            while self._wake and self._wake[0][0] <= now:
                moment, contract = heapq.heappop(self._wake)
                if self._wake_at.get(contract) == moment:  # else replaced by a later entry
                    del self._wake_at[contract]
                    changed.add(contract)
            if self._examine(changed, now) or moved or whole:
                services = _Services(self._services)
                self._table = RouteTable(self._by_hash, services, self._ordered)
            self._seq, self._read_at = seq, now
            return self._table

    def _take(self, rows: list[ConnectionGrantRow]) -> tuple[set[str], bool]:
        """Replace the kept grants of every contract in ``rows``: the contracts to examine,
        and whether a valid one's routes left the table meanwhile."""
        fresh: dict[str, list[ConnectionGrantRow]] = {}
        moved = False
        for row in rows:
            fresh.setdefault(row.contract_hash, []).append(row)
        for contract, grants in fresh.items():
            if len(grants) > 1:
                grants.sort(key=lambda grant: grant.position)
            if contract in self._valid:  # examined again below, with the rows read now
                self._valid.discard(contract)
                self._remove(self._grants[contract])
                moved = True
            self._grants[contract] = grants
        return set(fresh), moved

    def _examine(self, contracts: set[str], now: datetime) -> bool:
        """Whether each contract is valid at ``now``, and when to look again; True if the
        set of valid contracts changed."""
        moved = False
        valid_ones, wake_list, wake_at, kept = self._valid, self._wake, self._wake_at, self._grants
        for contract in contracts:
            grants = kept.get(contract)
            if not grants:
                continue
            first = grants[0]
            if first.decision is None:
                valid, wake = states.clock_view(
                    first.not_before, first.not_after, first.accepted_until, now
                )
            else:
                valid, wake = False, None
            if valid != (contract in valid_ones):
                moved = True
                if valid:
                    valid_ones.add(contract)
                    self._add(grants)
                else:
                    valid_ones.discard(contract)
                    self._remove(grants)
            if wake is None:
                wake_at.pop(contract, None)
                if not valid:  # only a stored change can make it valid: forget it till then
                    del kept[contract]
            elif wake_at.get(contract) != wake:  # one entry per contract and moment
                wake_at[contract] = wake
                heapq.heappush(wake_list, (wake, contract))
        return moved

    def _add(self, grants: list[ConnectionGrantRow]) -> None:
        for grant in grants:
            route = Route(grant.grant_hash, grant.service_peer_id, grant.service_name)
            uses = self._uses.get(route, 0)
            self._uses[route] = uses + 1
            if uses:
                continue
            self._by_hash.setdefault(route.grant_hash, route)
            key = (route.service_peer_id, route.service_name)
            self._services.setdefault(key, {}).setdefault(route.grant_hash, route)

    def _remove(self, grants: list[ConnectionGrantRow]) -> None:
        for grant in grants:
            route = Route(grant.grant_hash, grant.service_peer_id, grant.service_name)
            uses = self._uses.pop(route, 0) - 1
            if uses > 0:
                self._uses[route] = uses
                continue
            if self._by_hash.get(route.grant_hash) == route:
                del self._by_hash[route.grant_hash]
            key = (route.service_peer_id, route.service_name)
            found = self._services.get(key, {})
            if found.get(route.grant_hash) == route:
                del found[route.grant_hash]
                if not found:
                    del self._services[key]

    def _ordered(self) -> list[Route]:
        """The valid contracts' routes, newest contract first (as the store lists them)."""
        rows = [row for contract in self._valid for row in self._grants[contract]]
        rows.sort(key=lambda row: (row.contract_hash, row.position))
        rows.sort(key=lambda row: row.created_at, reverse=True)
        return [Route(row.grant_hash, row.service_peer_id, row.service_name) for row in rows]

    def routes(self) -> list[Route]:
        """The routes, each once, newest contract first."""
        return list(self.table().routes)


class _Services(Mapping[tuple[str, str], tuple[Route, ...]]):
    """``by_service`` over the live dicts of :class:`StoreGrants`: a key's routes become a
    tuple when a request asks for them (one route, or a few when ambiguous), so that a change
    does not copy every route of its service."""

    __slots__ = ("_found",)

    def __init__(self, found: dict[tuple[str, str], dict[str, Route]]) -> None:
        self._found = found

    def __getitem__(self, key: tuple[str, str]) -> tuple[Route, ...]:
        return tuple(self._found[key].values())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)


class CachedGrants:
    """Another source's routes, read again once they are ``max_age`` seconds old."""

    def __init__(
        self,
        source: GrantSource,
        *,
        max_age: float = ROUTES_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._max_age = max_age
        self._clock = clock
        self._table = RouteTable.of(())
        self._read_at: float | None = None

    def table(self) -> RouteTable:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._max_age:
            # A failed read raises (the request fails) and is tried again by the next one.
            self._table = self._source.table()
            self._read_at = now
        return self._table
