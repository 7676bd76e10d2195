"""Contracts for the storage tests, built the way the Manager will hand them to the store.

The content is canonical JSON (sorted keys, no spaces: RFC 8785 for the strings and integers
used here) and the hashes follow FSC's recipe (SHA3-512, base64url without padding,
``$1$1$`` for a contract, ``$1$<hash type>$`` for a grant), so the rows look like real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.manager.storage import GrantRow

GROUP = "fsc-test-group"
ALGORITHM = "HASH_ALGORITHM_SHA3_512"
START = datetime(2026, 1, 1, tzinfo=UTC)
GRANT_HASH_TYPE = {
    "GRANT_TYPE_SERVICE_PUBLICATION": 2,
    "GRANT_TYPE_SERVICE_CONNECTION": 3,
    "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION": 4,
    "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION": 5,
}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def connection_grant(
    service_peer: str, outway_peer: str, service: str = "basisregistratie", **properties: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "GRANT_TYPE_SERVICE_CONNECTION",
        "service": {"type": "SERVICE_TYPE_SERVICE", "peer_id": service_peer, "name": service},
        "outway": {"peer_id": outway_peer, "public_key_thumbprint": "ab" * 32},
    }
    if properties:
        data["properties"] = properties
    return data


def publication_grant(service_peer: str, directory_peer: str, service: str) -> dict[str, Any]:
    return {
        "type": "GRANT_TYPE_SERVICE_PUBLICATION",
        "directory": {"peer_id": directory_peer},
        "service": {"peer_id": service_peer, "name": service, "protocol": "PROTOCOL_TCP_HTTP_1.1"},
    }


@dataclass(frozen=True)
class Contract:
    """Everything ``put_contract`` takes, for one contract."""

    content_hash: str
    group_id: str
    iv: str
    hash_algorithm: str
    created_at: datetime
    not_before: datetime
    not_after: datetime
    content_json: str
    grants: tuple[GrantRow, ...] = field(default=())

    def kwargs(self) -> dict[str, Any]:
        return {
            "content_hash": self.content_hash,
            "group_id": self.group_id,
            "iv": self.iv,
            "hash_algorithm": self.hash_algorithm,
            "created_at": self.created_at,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "content_json": self.content_json,
            "grants": self.grants,
        }


def make_contract(
    grant_data: Sequence[dict[str, Any]],
    *,
    iv: str | None = None,
    group_id: str = GROUP,
    created_at: datetime = START,
    content_json: str | None = None,
) -> Contract:
    """A contract with these grants; ``content_json`` overrides the serialised content."""
    content = {
        "iv": iv or str(uuid.uuid4()),
        "group_id": group_id,
        "validity": {
            "not_before": int(created_at.timestamp()),
            "not_after": int((created_at + timedelta(days=365)).timestamp()),
        },
        "grants": [{"data": data} for data in grant_data],
        "hash_algorithm": ALGORITHM,
        "created_at": int(created_at.timestamp()),
    }
    text = content_json if content_json is not None else canonical(content)
    content_hash = "$1$1$" + _b64(hashlib.sha3_512(text.encode()).digest())
    grants = []
    for data in grant_data:
        data_json = canonical(data)
        digest = hashlib.sha3_512((content_hash + data_json).encode()).digest()
        grant_hash = f"$1${GRANT_HASH_TYPE[data['type']]}$" + _b64(digest)
        grants.append(GrantRow.from_data(grant_hash, data_json))
    return Contract(
        content_hash=content_hash,
        group_id=group_id,
        iv=content["iv"],
        hash_algorithm=ALGORITHM,
        created_at=created_at,
        not_before=created_at,
        not_after=created_at + timedelta(days=365),
        content_json=text,
        grants=tuple(grants),
    )


def jws(content_hash: str, peer_id: str, kind: str, signed_at: datetime) -> str:
    """A JWS-shaped string (the store keeps it as text and never verifies it)."""
    header = _b64(canonical({"alg": "ES256", "x5t#S256": peer_id}).encode())
    payload = canonical(
        {
            "contract_content_hash": content_hash,
            "type": kind,
            "signed_at": int(signed_at.timestamp()),
        }
    )
    return f"{header}.{_b64(payload.encode())}.{_b64(hashlib.sha256(payload.encode()).digest())}"
