"""Contract contents an operator proposes: a service publication or a service connection."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import Any

HASH_ALGORITHM = "HASH_ALGORITHM_SHA3_512"


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """RFC 9562 UUIDv7: time-ordered, so contracts sort by creation in any store."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand_a = int.from_bytes(os.urandom(2), "big") & 0x0FFF
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def _base(group_id: str, grants: list[dict[str, Any]], now: datetime, days: int) -> dict[str, Any]:
    if days < 1:
        raise ValueError("a contract must be valid for at least one day")
    start = int(now.timestamp())
    return {
        "iv": str(uuid7(start * 1000)),
        "group_id": group_id,
        "validity": {"not_before": start, "not_after": start + days * 86400},
        "grants": grants,
        "hash_algorithm": HASH_ALGORITHM,
        "created_at": start,
    }


def publication_content(
    *,
    group_id: str,
    directory_peer_id: str,
    service_peer_id: str,
    service_name: str,
    protocol: str,
    now: datetime,
    days: int,
) -> dict[str, Any]:
    grant = {
        "data": {
            "type": "GRANT_TYPE_SERVICE_PUBLICATION",
            "directory": {"peer_id": directory_peer_id},
            "service": {"peer_id": service_peer_id, "name": service_name, "protocol": protocol},
        }
    }
    return _base(group_id, [grant], now, days)


def connection_content(
    *,
    group_id: str,
    service_peer_id: str,
    service_name: str,
    outway_peer_id: str,
    outway_public_key_thumbprint: str,
    now: datetime,
    days: int,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "GRANT_TYPE_SERVICE_CONNECTION",
        "service": {
            "type": "SERVICE_TYPE_SERVICE",
            "peer_id": service_peer_id,
            "name": service_name,
        },
        "outway": {
            "peer_id": outway_peer_id,
            "public_key_thumbprint": outway_public_key_thumbprint,
        },
    }
    if properties is not None:
        data["properties"] = properties
    return _base(group_id, [{"data": data}], now, days)
