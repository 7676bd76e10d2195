"""The outway's settings, checked and resolved from the appliance configuration.

``[outway]`` (``appliance.config.OutwaySettings``)::

    [outway]
    bind = "0.0.0.0:8080"             # `sluis serve outway` without --bind (internal network)
    group_id = "fsc.group"            # default: [manager] group_id; tokens must carry it (gid)
    transaction_log = ""              # empty: [txlog]; see appliance.outway.logging
    connect_timeout_seconds = 5       # inway connect (and pool wait)
    read_timeout_seconds = 30         # inway silent for this long: 502 / abort
    write_timeout_seconds = 30        # inway takes no piece of the request body this long
    inway_connections = 256           # keep-alive pool to the inways, per worker
    token_timeout_seconds = 10        # a token request to a Manager, in total
    token_refresh_seconds = 30        # fetch a new token this long before exp
    forward_purpose_headers = false   # send Sluis-Processing-Activity etc. to the other peer
    pass_headers = {"00000001001234567002/kadaster" = "X-Remote-User"}  # per service: removed
                                      # headers it needs anyway (never Fsc-*)
    service_limit = 0                 # requests in flight per inway and service, per worker;
                                      # 0: a quarter of inway_connections
    service_limits = {"00000001001234567002/kadaster" = 16}  # per service: its own limit

The outway finds its grants in the local Manager's store, so the box also has ``[manager]``;
``[manager] resolve`` (host:port=ip:port) applies to inway addresses too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.config import OutwaySettings, SluisConfig
from appliance.errors import ConfigurationError
from appliance.forwarding.settings import (
    SERVICE_NAME,
    check_gateway_settings,
    pass_headers,
    service_limits,
)

PEER_ID = re.compile(r"[A-Za-z0-9._~-]{1,20}")


@dataclass(frozen=True)
class OutwayRuntime:
    group_id: str
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    inway_connections: int = 256
    token_timeout: float = 10.0
    token_refresh: float = 30.0
    forward_purpose_headers: bool = False
    # "peer-id/service" -> lower-case header names (appliance.forwarding.headers)
    pass_headers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    service_limit: int = 64  # requests in flight per inway and service, per worker
    service_limits: Mapping[str, int] = field(default_factory=dict)  # "peer-id/service" -> n


def _is_service(key: str) -> bool:
    peer, sep, service = key.partition("/")
    return bool(sep) and bool(PEER_ID.fullmatch(peer)) and bool(SERVICE_NAME.fullmatch(service))


def outway_settings(config: SluisConfig) -> OutwaySettings:
    if config.outway is None:
        raise ConfigurationError(f"{config.source}: no [outway] section; this box runs no outway")
    return config.outway


def resolve_runtime(config: SluisConfig) -> OutwayRuntime:
    settings = outway_settings(config)
    group_id = settings.group_id or (config.manager.group_id if config.manager else "")
    check_gateway_settings(
        "outway",
        group_id,
        positive={
            "connect_timeout_seconds": settings.connect_timeout_seconds,
            "read_timeout_seconds": settings.read_timeout_seconds,
            "write_timeout_seconds": settings.write_timeout_seconds,
            "inway_connections": settings.inway_connections,
            "token_timeout_seconds": settings.token_timeout_seconds,
        },
        not_negative={"token_refresh_seconds": settings.token_refresh_seconds},
    )
    limit, limits = service_limits(
        "outway",
        settings.service_limit,
        settings.service_limits,
        connections=("inway_connections", settings.inway_connections),
        is_service=_is_service,
        what="peer-id/service",
    )
    return OutwayRuntime(
        group_id=group_id,
        connect_timeout=float(settings.connect_timeout_seconds),
        read_timeout=float(settings.read_timeout_seconds),
        write_timeout=float(settings.write_timeout_seconds),
        inway_connections=settings.inway_connections,
        token_timeout=float(settings.token_timeout_seconds),
        token_refresh=float(settings.token_refresh_seconds),
        forward_purpose_headers=settings.forward_purpose_headers,
        pass_headers=pass_headers(
            "outway", settings.pass_headers, is_service=_is_service, what="peer-id/service"
        ),
        service_limit=limit,
        service_limits=limits,
    )
