"""Services, contracts and the authorisation overview, read from the Manager's store.

Everything here goes through :class:`~appliance.manager.service.ManagerService`, the same code
the Manager and ``sluis contract`` use: proposals and signatures are made in this appliance's
HSM and land in the Manager's outbox, and the running Manager delivers them to the other peers.
The overview is derived from contracts whose state is ``valid`` now, never from a cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from appliance.controller.listing import (
    CONNECTION_TYPES,
    PUBLICATION_TYPES,
    WINDOW,
    ContractListing,
    Filter,
    Page,
)
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.contracts.state import ContractState
from appliance.manager.proposals import connection_content, publication_content
from appliance.manager.service import ContractView, ManagerError, ManagerService
from appliance.manager.storage import ContractRow, GrantRow

PAGE = 1000
LIVE_STATES = (ContractState.PROPOSED, ContractState.ACCEPTED, ContractState.VALID)


class Conflict(ManagerError):
    """The contract is not in a state that allows the change (HTTP 409)."""


class UnknownContract(ManagerError):
    """No contract with that content hash (HTTP 404)."""


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _epoch_iso(seconds: int) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC)) or ""


@dataclass(frozen=True)
class Grant:
    type: str
    hash: str
    service_peer_id: str | None
    service_name: str | None
    outway_peer_id: str | None
    outway_public_key_thumbprint: str | None
    directory_peer_id: str | None
    delegator_peer_id: str | None

    @classmethod
    def of(cls, row: GrantRow | Row[Any]) -> Grant:
        """From the Manager store's row, or a row of its ``grants`` table (the listings)."""
        return cls(
            type=row.grant_type,
            hash=row.grant_hash,
            service_peer_id=row.service_peer_id,
            service_name=row.service_name,
            outway_peer_id=row.outway_peer_id,
            outway_public_key_thumbprint=row.outway_public_key_thumbprint,
            directory_peer_id=row.directory_peer_id,
            delegator_peer_id=row.delegator_peer_id or row.service_delegator_peer_id,
        )

    def as_api(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "hash": self.hash,
            "service_peer_id": self.service_peer_id,
            "service_name": self.service_name,
            "outway_peer_id": self.outway_peer_id,
            "outway_public_key_thumbprint": self.outway_public_key_thumbprint,
            "directory_peer_id": self.directory_peer_id,
            "delegator_peer_id": self.delegator_peer_id,
        }


@dataclass(frozen=True)
class Contract:
    """A contract as the controller shows it."""

    hash: str
    state: str
    grants: tuple[Grant, ...]
    peers: tuple[str, ...]
    created_at: str
    not_before: str
    not_after: str
    accepted_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    revoked_by: tuple[str, ...]
    own_peer_id: str

    @property
    def awaiting(self) -> tuple[str, ...]:
        return tuple(p for p in self.peers if p not in self.accepted_by)

    @property
    def pending_our_action(self) -> bool:
        """Proposed, and this peer has neither accepted nor rejected it yet."""
        return (
            self.state == ContractState.PROPOSED
            and self.own_peer_id in self.peers
            and self.own_peer_id not in self.accepted_by
            and self.own_peer_id not in self.rejected_by
            and self.own_peer_id not in self.revoked_by
        )

    @property
    def kind(self) -> str:
        types = {g.type for g in self.grants}
        if types & set(PUBLICATION_TYPES):
            return "publication"
        if types & set(CONNECTION_TYPES):
            return "connection"
        return "other"

    def as_api(self, names: dict[str, str | None]) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "state": self.state,
            "kind": self.kind,
            "grants": [g.as_api() for g in self.grants],
            "peers": [{"peer_id": p, "name": names.get(p)} for p in self.peers],
            "created_at": self.created_at,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "accepted_by": list(self.accepted_by),
            "rejected_by": list(self.rejected_by),
            "revoked_by": list(self.revoked_by),
            "awaiting": list(self.awaiting),
            "pending_our_action": self.pending_our_action,
        }


class ManagerViews:
    def __init__(self, service: ManagerService, inway_services: Iterable[str] = ()) -> None:
        self.service = service
        # Services the inway is configured to offer ("name=backend" entries of [inway]).
        self.inway_services = tuple(sorted({s.partition("=")[0] for s in inway_services}))
        self.listing = ContractListing(service.store.engine, service.peer_id)

    @property
    def peer_id(self) -> str:
        return self.service.peer_id

    # -- reading ------------------------------------------------------------------------------

    def _contract(self, row: ContractRow, view: ContractView | None = None) -> Contract:
        view = view or self.service.view(row)
        grants = tuple(Grant.of(g) for g in row.grants)
        content = view.content
        validity = content["validity"]
        peers = tuple(dict.fromkeys(p for g in grants for p in _grant_peers(g)))
        return Contract(
            hash=view.content_hash,
            state=str(view.state),
            grants=grants,
            peers=peers,
            created_at=_epoch_iso(int(content["created_at"])),
            not_before=_epoch_iso(int(validity["not_before"])),
            not_after=_epoch_iso(int(validity["not_after"])),
            accepted_by=tuple(sorted(view.signatures["accept"])),
            rejected_by=tuple(sorted(view.signatures["reject"])),
            revoked_by=tuple(sorted(view.signatures["revoke"])),
            own_peer_id=self.peer_id,
        )

    def _listed(self, page: Page) -> list[Contract]:
        """The page's contracts, from the columns and the state the listing's SQL gave."""
        found = []
        for row in page.rows:
            grants = tuple(Grant.of(g) for g in page.grants[row.content_hash])
            signed = page.signatures[row.content_hash]
            found.append(
                Contract(
                    hash=row.content_hash,
                    state=row.state,
                    grants=grants,
                    peers=tuple(dict.fromkeys(p for g in grants for p in _grant_peers(g))),
                    created_at=iso(row.created_at) or "",
                    not_before=iso(row.not_before) or "",
                    not_after=iso(row.not_after) or "",
                    accepted_by=tuple(signed["accept"]),
                    rejected_by=tuple(signed["reject"]),
                    revoked_by=tuple(signed["revoke"]),
                    own_peer_id=self.peer_id,
                )
            )
        return found

    def contracts(
        self, where: Filter | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Contract], str | None]:
        """A page of contracts, newest first, and the cursor of the next one (None: no more).
        :class:`~appliance.controller.listing.CursorError` for an unknown cursor."""
        page = self.listing.page(
            where or Filter(), self.service.clock(), cursor=cursor, limit=limit
        )
        return self._listed(page), page.next_cursor

    def pending_count(self) -> int:
        """Contracts waiting for our approval, exactly (an index range of ours unsigned)."""
        return self.listing.count(Filter(pending=True), self.service.clock())

    def all_contracts(self) -> list[Contract]:
        """Every contract, newest first: for ``sluis``'s tests and small stores only; the
        listings page (:meth:`contracts`)."""
        found: list[Contract] = []
        cursor: str | None = None
        while True:
            rows = self.service.store.list_contracts(after=cursor, limit=PAGE, descending=True)
            found.extend(self._contract(row) for row in rows)
            if len(rows) < PAGE:
                return found
            cursor = rows[-1].content_hash

    def get(self, content_hash: str) -> Contract:
        row = self.service.store.get_contract(content_hash)
        if row is None:
            raise UnknownContract(f"no contract {content_hash}")
        return self._contract(row)

    def _stored(self, view: ContractView) -> Contract:
        row = self.service.store.get_contract(view.content_hash)
        assert row is not None
        return self._contract(row, view)

    def peer_names(self, peer_ids: Iterable[str] | None = None) -> dict[str, str | None]:
        """Names of ``peer_ids`` (of every known peer if None)."""
        if peer_ids is not None:
            return self.listing.names(list(peer_ids))
        return {p.peer_id: p.name for p in self.service.store.list_peers()}

    def names_of(self, contracts: Iterable[Contract]) -> dict[str, str | None]:
        return self.peer_names({p for contract in contracts for p in contract.peers})

    def services(self, *, counted: bool = True) -> list[dict[str, Any]]:
        """Our services: published (or being published) through the directory, or configured
        in the inway; with the number of peers that may connect now (counted among the
        newest ``WINDOW`` contracts; ``counted=False``: 0, for the overview, which lists
        the peers instead)."""
        now = self.service.clock()
        services: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return services.setdefault(
                name,
                {
                    "name": name,
                    "protocol": None,
                    "state": "unpublished",
                    "publication_contract": None,
                    "directory_peer_id": None,
                    "not_after": None,
                    "in_inway": name in self.inway_services,
                    "connections": 0,
                },
            )

        rank = {"valid": 0, "accepted": 1, "proposed": 2}
        for grant in self.listing.publications(self.peer_id, now):  # newest first
            item = entry(grant.service_name)
            if grant.state not in rank:
                continue
            current = item["state"]
            if current not in rank or rank[grant.state] < rank[current]:
                item.update(
                    state=grant.state,
                    publication_contract=grant.contract_hash,
                    directory_peer_id=grant.directory_peer_id,
                    not_after=iso(grant.not_after),
                    protocol=_protocol(grant.data_json),
                )
        counts = self.listing.connection_counts(self.peer_id, now) if counted else {}
        for name, count in counts.items():
            entry(name)["connections"] = count
        for name in self.inway_services:
            entry(name)
        return [services[name] for name in sorted(services)]

    def overview(self, limit: int = 100) -> dict[str, Any]:
        """Who may use what, from the contracts that are valid now.

        ``provided``: per service of ours, the peers whose outways may connect (and until
        when, under which contract and grant). ``consumed``: per other peer, the services of
        theirs that our outway may use. Each from the newest ``limit`` valid connection
        contracts among the newest ``WINDOW`` (``more`` says whether there are more: the
        contracts page lists them all).
        """
        provided: dict[str, dict[str, Any]] = {
            s["name"]: {
                "service_name": s["name"],
                "publication_state": s["state"],
                "publication_contract": s["publication_contract"],
                "consumers": [],
            }
            for s in self.services(counted=False)
        }
        consumed: dict[str, dict[str, Any]] = {}
        contracts, more_contracts = self.contracts(
            Filter(state="valid", connection_of=self.peer_id), limit=limit
        )
        names = self.names_of(contracts)
        for contract in contracts:
            for grant in contract.grants:
                if grant.type not in CONNECTION_TYPES or not grant.service_name:
                    continue
                entry = {
                    "not_before": contract.not_before,
                    "not_after": contract.not_after,
                    "contract_hash": contract.hash,
                    "grant_hash": grant.hash,
                    "delegator_peer_id": grant.delegator_peer_id,
                }
                if grant.service_peer_id == self.peer_id and grant.outway_peer_id:
                    service = provided.setdefault(
                        grant.service_name,
                        {
                            "service_name": grant.service_name,
                            "publication_state": "unpublished",
                            "publication_contract": None,
                            "consumers": [],
                        },
                    )
                    service["consumers"].append(
                        {
                            "peer_id": grant.outway_peer_id,
                            "peer_name": names.get(grant.outway_peer_id),
                            "outway_public_key_thumbprint": grant.outway_public_key_thumbprint,
                            **entry,
                        }
                    )
                if grant.outway_peer_id == self.peer_id and grant.service_peer_id:
                    peer = consumed.setdefault(
                        grant.service_peer_id,
                        {
                            "peer_id": grant.service_peer_id,
                            "peer_name": names.get(grant.service_peer_id),
                            "services": [],
                        },
                    )
                    peer["services"].append({"service_name": grant.service_name, **entry})
        return {
            "peer_id": self.peer_id,
            "peer_name": self.service.settings.peer_name,
            "provided": [provided[name] for name in sorted(provided)],
            "consumed": [consumed[peer] for peer in sorted(consumed)],
            "pending_approvals": self.pending_count(),
            # True: the lists cover the newest contracts only (the count is exact).
            "more": more_contracts is not None,
            "window": WINDOW,
        }

    # -- changes (signed in the HSM) -----------------------------------------------------------

    def publish(self, name: str, protocol: str, days: int) -> Contract:
        settings = self.service.settings
        if not settings.directory_peer_id:
            raise ManagerError("[manager] directory_peer_id is needed to publish a service")
        content = publication_content(
            group_id=settings.group_id,
            directory_peer_id=settings.directory_peer_id,
            service_peer_id=self.peer_id,
            service_name=name,
            protocol=protocol,
            now=self.service.clock(),
            days=days,
        )
        return self._stored(self.service.propose(content))

    def withdraw(self, name: str) -> list[Contract]:
        """Revoke every live publication contract of our service ``name``."""
        revoked = []
        live = {
            grant.contract_hash
            for grant in self.listing.publications(self.peer_id, self.service.clock())
            if grant.state in LIVE_STATES and grant.service_name == name
        }
        for content_hash in sorted(live):
            revoked.append(self.sign(content_hash, SignatureType.REVOKE))
        if not revoked:
            raise UnknownContract(f"service {name!r} has no publication to withdraw")
        return revoked

    def propose_connection(self, service_peer_id: str, service_name: str, days: int) -> Contract:
        if service_peer_id == self.peer_id:
            raise ManagerError("a connection is asked of another peer, not of this one")
        content = connection_content(
            group_id=self.service.settings.group_id,
            service_peer_id=service_peer_id,
            service_name=service_name,
            outway_peer_id=self.peer_id,
            # Our outway connects with this appliance's certificate: bind the grant to its key.
            outway_public_key_thumbprint=self.service.identity.public_key_thumbprint,
            now=self.service.clock(),
            days=days,
        )
        return self._stored(self.service.propose(content))

    def sign(self, content_hash: str, kind: SignatureType) -> Contract:
        """Accept, reject or revoke (a signature made in the HSM, queued for the peers)."""
        current = self.get(content_hash)
        if self.peer_id not in current.peers:
            raise Conflict(f"this peer is not on contract {content_hash}")
        if current.state in ("rejected", "revoked", "expired"):
            raise Conflict(f"contract {content_hash} is {current.state}; it cannot be {kind}ed")
        if kind == SignatureType.ACCEPT and self.peer_id in current.accepted_by:
            raise Conflict(f"this peer has accepted contract {content_hash} already")
        if kind == SignatureType.REJECT and self.peer_id in current.accepted_by:
            raise Conflict(
                f"this peer has accepted contract {content_hash}: revoke it instead of rejecting"
            )
        return self._stored(self.service.sign(content_hash, kind))


def _protocol(data_json: str) -> str | None:
    service = json.loads(data_json).get("service", {})
    protocol = service.get("protocol") if isinstance(service, dict) else None
    return protocol if isinstance(protocol, str) else None


def _grant_peers(grant: Grant) -> Iterable[str]:
    for peer in (
        grant.service_peer_id,
        grant.outway_peer_id,
        grant.directory_peer_id,
        grant.delegator_peer_id,
    ):
        if peer:
            yield peer
