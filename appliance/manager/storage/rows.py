"""What the store takes and gives back: frozen dataclasses, times as aware UTC datetimes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CertificateRow",
    "ConnectionGrantRow",
    "ContractRow",
    "Delivery",
    "GrantRow",
    "OutboxKind",
    "OutboxRow",
    "PeerRow",
    "ServiceRow",
    "SignatureRow",
    "SignatureType",
]

SignatureType = Literal["accept", "reject", "revoke"]
OutboxKind = Literal["contract", "signature"]


@dataclass(frozen=True, slots=True)
class ConnectionGrantRow:
    """A connection grant of an outway with its contract's state columns
    (:meth:`ManagerStore.connection_grants`): enough to follow the contract's state by the
    clock (``states.valid_at``) without reading it again."""

    contract_hash: str
    created_at: datetime
    position: int
    grant_hash: str
    service_peer_id: str
    service_name: str
    decision: str | None
    not_before: datetime
    not_after: datetime
    accepted_until: datetime | None


@dataclass(frozen=True)
class GrantRow:
    """One grant of a contract: its hash, its ``data`` as received, and the names in it.

    ``data_json`` is the grant's ``data`` object as it appears in the contract content; the
    other fields are copies for queries (:meth:`from_data` fills them from ``data_json``).
    """

    grant_hash: str
    grant_type: str
    data_json: str
    service_peer_id: str | None = None
    service_name: str | None = None
    outway_peer_id: str | None = None
    outway_public_key_thumbprint: str | None = None
    directory_peer_id: str | None = None
    delegator_peer_id: str | None = None
    service_delegator_peer_id: str | None = None

    @classmethod
    def from_data(cls, grant_hash: str, data_json: str) -> GrantRow:
        """The row for a grant whose ``data`` object is ``data_json`` (FSC field names)."""
        data = json.loads(data_json)
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ValueError("grant data must be a JSON object with a string 'type'")
        service = _object(data, "service")
        return cls(
            grant_hash=grant_hash,
            grant_type=data["type"],
            data_json=data_json,
            service_peer_id=_text(service, "peer_id"),
            service_name=_text(service, "name"),
            outway_peer_id=_text(_object(data, "outway"), "peer_id"),
            outway_public_key_thumbprint=_text(_object(data, "outway"), "public_key_thumbprint"),
            directory_peer_id=_text(_object(data, "directory"), "peer_id"),
            delegator_peer_id=_text(_object(data, "delegator"), "peer_id"),
            service_delegator_peer_id=_text(_object(service, "delegator"), "peer_id"),
        )

    @property
    def peer_ids(self) -> tuple[str, ...]:
        """Every peer this grant names, each once, in a fixed order."""
        named = (
            self.service_peer_id,
            self.outway_peer_id,
            self.directory_peer_id,
            self.delegator_peer_id,
            self.service_delegator_peer_id,
        )
        return tuple(dict.fromkeys(peer for peer in named if peer))


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ContractRow:
    """A stored contract; ``content_json`` is the content exactly as it was received."""

    content_hash: str
    group_id: str
    iv: str
    hash_algorithm: str
    created_at: datetime
    not_before: datetime
    not_after: datetime
    content_json: str
    received_at: datetime
    grants: tuple[GrantRow, ...]

    @property
    def peer_ids(self) -> tuple[str, ...]:
        """Every peer the contract's grants name, each once, in grant order."""
        return tuple(dict.fromkeys(peer for grant in self.grants for peer in grant.peer_ids))


@dataclass(frozen=True)
class SignatureRow:
    content_hash: str
    peer_id: str
    signature_type: SignatureType
    jws: str
    signed_at: datetime
    certificate_thumbprint: str


@dataclass(frozen=True)
class PeerRow:
    """A peer this Manager negotiated with or that announced itself; unknown fields are None."""

    peer_id: str
    name: str | None
    manager_address: str | None
    updated_at: datetime


@dataclass(frozen=True)
class CertificateRow:
    """A certificate a peer signed with: ``chain_pem`` is the chain without the root."""

    thumbprint: str
    peer_id: str
    chain_pem: str
    not_after: datetime


@dataclass(frozen=True)
class Delivery:
    """Something to send to another Manager: put into the outbox by ``*_and_enqueue``."""

    target_peer_id: str
    kind: OutboxKind
    payload_json: str


@dataclass(frozen=True)
class OutboxRow:
    id: int
    target_peer_id: str
    kind: OutboxKind
    contract_hash: str
    payload_json: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class ServiceRow:
    """A service published in this directory by the contract ``contract_hash``."""

    peer_id: str
    service_name: str
    contract_hash: str
    protocol: str
    inway_address: str | None
    delegator_peer_id: str | None
    created_at: datetime
