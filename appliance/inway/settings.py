"""The inway's settings, checked and resolved from the appliance configuration.

``[inway]`` (``appliance.config.InwaySettings``)::

    [inway]
    services = ["basisregistratie=http://127.0.0.1:8080/api", "kadaster=https://10.0.0.5/v2"]
    address = "https://inway.example.nl:443"   # the aud of accepted tokens; default [manager]
    group_id = "fsc.group"                     # default: [manager] group_id
    bind = "0.0.0.0:443"                       # `sluis serve inway` without --bind
    transaction_log = "appliance.txlog...:factory"  # see appliance.inway.logging
    connect_timeout_seconds = 5                # backend connect (and pool wait)
    read_timeout_seconds = 30                  # backend silent for this long: 502 / abort
    write_timeout_seconds = 30                 # backend takes no request body this long: 502
    backend_connections = 256                  # keep-alive pool per worker
    clock_skew_seconds = 5                     # leeway on the token's exp and nbf
    pass_headers = {kadaster = "X-Remote-User"}  # per service: removed headers it needs
    service_limit = 0                          # requests in flight per service and worker;
                                               # 0: a quarter of backend_connections
    service_limits = {kadaster = 16}           # per service: its own limit
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from yarl import URL

from appliance.config import InwaySettings, SluisConfig
from appliance.errors import ConfigurationError
from appliance.forwarding.settings import (
    SERVICE_NAME,
    check_gateway_settings,
    normalise_address,
    pass_headers,
    service_limits,
)


@dataclass(frozen=True)
class Backend:
    """Where a Service's requests go: ``origin`` (scheme://host:port) and a base ``path``."""

    name: str
    origin: str
    path: str  # without a trailing slash; "" for the root
    pass_headers: frozenset[str] = frozenset()  # lower case; see appliance.forwarding.headers

    @property
    def url(self) -> str:
        return self.origin + (self.path or "/")


@dataclass(frozen=True)
class InwayRuntime:
    """Everything the inway app needs besides its certificates and its log writer."""

    address: str
    group_id: str
    services: Mapping[str, Backend]
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    backend_connections: int = 256
    clock_skew: float = 5.0
    service_limit: int = 64  # requests in flight per service and worker
    service_limits: Mapping[str, int] = field(default_factory=dict)  # per service


def parse_backend(entry: str) -> Backend:
    """``name=http(s)://host[:port][/base]``; no credentials, query or fragment."""
    name, sep, url_text = entry.partition("=")
    name, url_text = name.strip(), url_text.strip()
    if not sep or not SERVICE_NAME.fullmatch(name):
        raise ConfigurationError(
            f"[inway] services entry {entry!r} must be name=URL with a service name of "
            "letters, digits, '.', '_' or '-'"
        )
    raw_path = urllib.parse.urlsplit(url_text).path  # as written: yarl resolves dot segments
    try:
        url = URL(url_text)
    except (ValueError, TypeError):
        url = None
    if (
        url is None
        or url.scheme not in ("http", "https")
        or not url.host
        or url.user is not None
        or url.password is not None
        or url.raw_query_string
        or url.raw_fragment
        or "%" in raw_path
        or any(segment in (".", "..") for segment in raw_path.split("/"))
    ):
        raise ConfigurationError(
            f"[inway] services entry {entry!r}: the backend must be an http or https URL "
            "without credentials, query, fragment, dot segments or percent-escapes"
        )
    return Backend(name=name, origin=str(url.origin()), path=url.raw_path.rstrip("/"))


def parse_services(entries: tuple[str, ...]) -> dict[str, Backend]:
    services: dict[str, Backend] = {}
    for entry in entries:
        backend = parse_backend(entry)
        if backend.name in services:
            raise ConfigurationError(f"[inway] service {backend.name!r} is listed twice")
        services[backend.name] = backend
    return services


def inway_settings(config: SluisConfig) -> InwaySettings:
    if config.inway is None:
        raise ConfigurationError(f"{config.source}: no [inway] section; this box runs no inway")
    return config.inway


def resolve_runtime(config: SluisConfig) -> InwayRuntime:
    """Check ``[inway]`` and fill ``address`` and ``group_id`` from ``[manager]`` when empty."""
    settings = inway_settings(config)
    manager = config.manager
    address = settings.address or (manager.inway_address if manager else "")
    group_id = settings.group_id or (manager.group_id if manager else "")
    if not address:
        raise ConfigurationError("[inway] address is not set (nor [manager] inway_address)")
    try:
        address = normalise_address(address)
    except ValueError as exc:
        raise ConfigurationError(f"[inway] {exc}") from None
    check_gateway_settings(
        "inway",
        group_id,
        positive={
            "connect_timeout_seconds": settings.connect_timeout_seconds,
            "read_timeout_seconds": settings.read_timeout_seconds,
            "write_timeout_seconds": settings.write_timeout_seconds,
            "backend_connections": settings.backend_connections,
        },
        not_negative={"clock_skew_seconds": settings.clock_skew_seconds},
    )
    services = parse_services(settings.services)
    limit, limits = service_limits(
        "inway",
        settings.service_limit,
        settings.service_limits,
        connections=("backend_connections", settings.backend_connections),
        is_service=services.__contains__,
        what="a service",
    )
    allowed = pass_headers(
        "inway", settings.pass_headers, is_service=services.__contains__, what="a service"
    )
    return InwayRuntime(
        address=address,
        group_id=group_id,
        services={
            name: replace(b, pass_headers=allowed.get(name, frozenset()))
            for name, b in services.items()
        },
        connect_timeout=float(settings.connect_timeout_seconds),
        read_timeout=float(settings.read_timeout_seconds),
        write_timeout=float(settings.write_timeout_seconds),
        backend_connections=settings.backend_connections,
        clock_skew=float(settings.clock_skew_seconds),
        service_limit=limit,
        service_limits=limits,
    )
