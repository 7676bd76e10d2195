"""Settings both gateways check alike: Group ID, timeouts, the per-service ``pass_headers``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from appliance.errors import ConfigurationError
from appliance.forwarding.headers import allow_list

# Core "Group ID" and the Service name of contracts (appliance.manager.contracts.validation).
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
