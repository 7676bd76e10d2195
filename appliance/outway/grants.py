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
Reading and checking every contract (signatures, state, grant hashes) takes 10 to 40 ms of
processor time, far too much for each request; and a token the service's peer issued before a
revocation stays valid at its inway for much longer than that anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from appliance.manager.contracts.hashing import grant_hash
from appliance.manager.contracts.model import CONNECTION_GRANTS, Contract, GrantType
from appliance.manager.contracts.state import ContractState
from appliance.manager.service import ManagerService
from appliance.outway.errors import OutwayError, OutwayErrorCode

ROUTES_MAX_AGE = 5.0  # seconds a worker keeps the grants it read from the store


@dataclass(frozen=True)
class Route:
    """A usable connection grant: whose token to ask for, and for which Service."""

    grant_hash: str
    service_peer_id: str
    service_name: str


class GrantSource(Protocol):
    def routes(self) -> list[Route]:
        """Every valid connection grant whose outway is this peer."""
        ...


def by_grant_hash(source: GrantSource, grant_hash: str) -> Route:
    for route in source.routes():
        if route.grant_hash == grant_hash:
            return route
    raise OutwayError(
        OutwayErrorCode.GRANT_NOT_FOUND,
        "no valid connection contract of this outway holds the grant in Fsc-Grant-Hash",
    )


def by_service(source: GrantSource, peer_id: str, service: str) -> Route:
    found = {
        r.grant_hash: r
        for r in source.routes()
        if r.service_peer_id == peer_id and r.service_name == service
    }
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
    return next(iter(found.values()))


class StoreGrants:
    """The grants in the local Manager store (``appliance.manager.setup.build_service``)."""

    def __init__(self, service: ManagerService, *, page: int = 500) -> None:
        self._service = service
        self._page = page

    def routes(self) -> list[Route]:
        own = self._service.peer_id
        # The Manager service was built from the live chain when this worker started.
        key = self._service.identity.public_key_thumbprint
        routes: list[Route] = []
        for grant_type in (
            GrantType.SERVICE_CONNECTION.value,
            GrantType.DELEGATED_SERVICE_CONNECTION.value,
        ):
            cursor: str | None = None
            while True:
                views, cursor = self._service.contracts(
                    peer_id=own, grant_type=grant_type, cursor=cursor, limit=self._page
                )
                for view in views:
                    if view.state != ContractState.VALID:
                        continue
                    contract = Contract.from_json(view.content)
                    for grant in contract.grants:
                        if (
                            isinstance(grant, CONNECTION_GRANTS)
                            and grant.outway_peer_id == own
                            and grant.public_key_thumbprint == key
                        ):
                            routes.append(
                                Route(
                                    grant_hash(contract, grant),
                                    grant.service_peer_id,
                                    grant.service_name,
                                )
                            )
                if not cursor:
                    break
        return list(dict.fromkeys(routes))


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
        self._routes: list[Route] = []
        self._read_at: float | None = None

    def routes(self) -> list[Route]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._max_age:
            # A failed read raises (the request fails) and is tried again by the next one.
            self._routes = self._source.routes()
            self._read_at = now
        return self._routes
