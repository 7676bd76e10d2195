"""Settings both gateways check alike: Group ID, timeouts, the per-service ``pass_headers`` and
``service_limits``."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping

from appliance.errors import ConfigurationError
from appliance.forwarding.headers import allow_list

# Core "Group ID" and the Service name of contracts (appliance.manager.contracts.validation).
SHARE_OF_POOL = 4  # the default service_limit: a quarter of the pool (64 of 256 connections)
GROUP_ID = re.compile(r"[a-zA-Z0-9./_-]{1,100}")
SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]{1,100}")


def check_gateway_settings(
    section: str,
    group_id: str,
    *,
    positive: Mapping[str, float],
    not_negative: Mapping[str, float],
) -> None:
    """The checks the inway's and the outway's sections share, with the section's name."""
    if not GROUP_ID.fullmatch(group_id):
        raise ConfigurationError(
            f"[{section}] group_id {group_id!r} is not a Group ID (set [{section}] or [manager] "
            "group_id; letters, digits and ./_- , at most 100)"
        )
    for name, value in positive.items():
        if value <= 0:
            raise ConfigurationError(f"[{section}] {name} must be positive")
    for name, value in not_negative.items():
        if value < 0:
            raise ConfigurationError(f"[{section}] {name} must not be negative")


def pass_headers(
    section: str,
    table: tuple[tuple[str, str], ...],
    *,
    is_service: Callable[[str], bool],
    what: str,
) -> dict[str, frozenset[str]]:
    """``[section] pass_headers = {service = "Header-A, Header-B"}``: each service's allow list
    (lower-case names); ``is_service`` checks a key, ``what`` says what a key must be."""
    lists: dict[str, frozenset[str]] = {}
    for service, names in table:
        if not is_service(service):
            raise ConfigurationError(f"[{section}] pass_headers: {service!r} is not {what}")
        try:
            lists[service] = allow_list(names)
        except ValueError as exc:
            raise ConfigurationError(f"[{section}] pass_headers {service}: {exc}") from None
    return lists


def service_limits(
    section: str,
    default: int,
    table: tuple[tuple[str, int], ...],
    *,
    connections: tuple[str, int],
    is_service: Callable[[str], bool],
    what: str,
) -> tuple[int, dict[str, int]]:
    """``[section] service_limit = n`` and ``service_limits = {service = n}``: the default and
    each listed service's requests in flight per worker. At most the pool's size
    (``connections``: its setting and value); below it is what leaves connections for the other
    services. ``service_limit = 0`` (the default): a quarter of the pool."""
    pool_setting, pool = connections
    if default == 0:
        default = max(pool // SHARE_OF_POOL, 1)
    limits: dict[str, int] = {}
    for service, limit in (("", default), *table):
        name = f"service_limits {service}" if service else "service_limit"
        if service and not is_service(service):
            raise ConfigurationError(f"[{section}] service_limits: {service!r} is not {what}")
        if not 0 < limit <= pool:
            raise ConfigurationError(
                f"[{section}] {name} must be 1..{pool_setting} ({pool}): one service must "
                "not be able to hold more connections than the pool has"
            )
        if service:
            limits[service] = limit
    return default, limits


def check_inway_address(address: str) -> tuple[str, int]:
    """The host and port of an inway address, as written (nothing stripped); ValueError unless
    it is an https URL with host and port and nothing else. The Manager checks the address it
    puts into a token with it, the gateways before they compare one."""
    parts = urllib.parse.urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (
        parts.scheme.lower() != "https"
        or not parts.hostname
        or port is None
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"inway address {address!r} must be an https URL with host and port, like "
            "https://inway.example.nl:443"
        )
    return parts.hostname, port


def normalise_address(address: str) -> str:
    """An inway address (the inway's own, a token's ``aud``) in the form they are compared in:
    lower-case scheme and host, no trailing slash. Raises ValueError unless it is an https URL
    with host and port."""
    hostname, port = check_inway_address(address.strip())
    host = hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"
