"""Core "Contract validation": the rules a contract must pass before the Manager signs or stores it.

:func:`validate_contract` covers what the content alone decides. The rules that need more than
the content are separate functions for the Manager and its store to call:

* :func:`validate_iv_unique`: one contract per ``iv`` (the store knows the others);
* :func:`validate_participants`: the submitting and the receiving Peer are on the contract
  (the per-grant "PeerID of the Manager of ..." rules; each signature's certificate is
  matched to its Peer in :mod:`.signatures`);
* :func:`validate_offered_services`: a connection grant names a Service its Peer offers.

The Group rule of Sluis (PKIoverheid): a PeerID is an OIN, 20 digits.
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import UTC, datetime, timedelta

from appliance.jcs import canonicalize
from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import check_hash_algorithm, content_hash
from appliance.manager.contracts.model import (
    CONNECTION_GRANTS,
    PUBLICATION_GRANTS,
    Contract,
    Grant,
)

GROUP_ID = re.compile(r"[a-zA-Z0-9./_-]{1,100}")
SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]{1,100}")
PEER_ID = re.compile(r"[0-9]{20}")
# READING.md item 7: lower-case hex SHA-256 of the DER SubjectPublicKeyInfo.
PUBLIC_KEY_THUMBPRINT = re.compile(r"[0-9a-f]{64}")
# "valid date": one a datetime can hold, up to 9999-12-31T23:59:59Z.
MAX_TIMESTAMP = 253_402_300_799
# Core "Properties", security considerations: RECOMMENDED limit of 1 MB per properties object.
MAX_PROPERTIES_BYTES = 1024 * 1024
# Peers' clocks differ; a contract created a moment ago elsewhere is not "in the future".
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


def _invalid(message: str) -> ContractError:
    return ContractError(ErrorCode.CONTRACT_INVALID, message)


def epoch_seconds(moment: datetime) -> int:
    """Unix seconds of an aware datetime; naive ones are refused, not guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return int(moment.astimezone(UTC).timestamp())


def validate_contract(
    contract: Contract,
    *,
    group_id: str,
    now: datetime,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> None:
    """Every content rule of core "Contract validation"; the first broken one raises."""
    if not GROUP_ID.fullmatch(group_id):
        raise ValueError(f"this Manager's group id {group_id!r} is not a valid FSC Group ID")
    current = epoch_seconds(now)
    check_hash_algorithm(contract.hash_algorithm)
    if contract.group_id != group_id:
        raise ContractError(
            ErrorCode.INCORRECT_GROUP_ID,
            f"group id {contract.group_id!r} of the contract is not this Group's {group_id!r}",
        )
    _validate_dates(contract, current, int(clock_skew.total_seconds()))
    if not contract.grants:
        raise _invalid("the contract has no grants; at least one is required")
    _validate_combination(contract.grants)
    for index, grant in enumerate(contract.grants):
        _validate_grant(grant, f"grants[{index}]")


def _validate_dates(contract: Contract, current: int, skew: int) -> None:
    validity = contract.validity
    for name, value in (
        ("created_at", contract.created_at),
        ("validity.not_before", validity.not_before),
        ("validity.not_after", validity.not_after),
    ):
        if value > MAX_TIMESTAMP:
            raise _invalid(f"{name} {value} is not a valid date")
    if contract.created_at > current + skew:
        raise _invalid(f"created_at {contract.created_at} is in the future (now {current})")
    if validity.not_after <= validity.not_before:
        raise _invalid(
            f"validity.not_after {validity.not_after} must be after "
            f"validity.not_before {validity.not_before}"
        )
    if validity.not_after <= current:
        raise _invalid(f"validity.not_after {validity.not_after} is not in the future")


def _validate_combination(grants: tuple[Grant, ...]) -> None:
    # A publication grant shares its contract only with grants of its own type: "cannot be
    # mixed with other Grants" read strictly, as manager.yaml's example message has it.
    kinds = {grant.type for grant in grants}
    publication = [grant for grant in grants if isinstance(grant, PUBLICATION_GRANTS)]
    if publication and len(kinds) > 1:
        raise ContractError(
            ErrorCode.GRANT_COMBINATION_NOT_ALLOWED,
            f"cannot combine a {publication[0].type} grant with any other grant type "
            f"(contract has {', '.join(sorted(kinds))})",
        )


def _check_peer_id(peer_id: str, where: str) -> None:
    if not PEER_ID.fullmatch(peer_id):
        raise _invalid(f"{where}.peer_id {peer_id!r} is not an OIN (20 digits)")


def _check_service_name(name: str, where: str) -> None:
    if not SERVICE_NAME.fullmatch(name):
        raise _invalid(f"{where}.name {name!r} does not match ^[a-zA-Z0-9-._]{{1,100}}$")


def _validate_grant(grant: Grant, where: str) -> None:
    for peer_id in grant.peer_ids():
        _check_peer_id(peer_id, where)
    _check_service_name(grant.service.name, f"{where}.service")
    if isinstance(grant, CONNECTION_GRANTS):
        thumbprint = grant.outway.public_key_thumbprint
        if not PUBLIC_KEY_THUMBPRINT.fullmatch(thumbprint):
            raise ContractError(
                ErrorCode.INCORRECT_PUBLIC_KEY_THUMBPRINT,
                f"{where}.outway.public_key_thumbprint {thumbprint!r} is not the lower-case hex "
                "SHA-256 of a public key",
            )
    if grant.properties is not None:
        size = len(canonicalize(grant.properties))
        if size > MAX_PROPERTIES_BYTES:
            raise _invalid(f"{where}.properties is {size} bytes; the limit is 1 MB")


def validate_iv_unique(contract: Contract, *, known_content_hash: str | None) -> None:
    """One contract per ``iv``: ``known_content_hash`` is that of the stored contract with the
    same ``iv`` (None if there is none). The same contract again is no conflict."""
    if known_content_hash is None:
        return
    actual = content_hash(contract)
    if known_content_hash != actual:
        raise _invalid(
            f"iv {contract.iv} is already used by contract {known_content_hash}; "
            "every contract needs a unique iv"
        )


def validate_participants(
    contract: Contract, *, submitting_peer_id: str, receiving_peer_id: str
) -> None:
    """The Peer that sends the contract and the Peer that receives it are both on it."""
    peers = contract.peer_ids()
    for role, peer_id in (("submitting", submitting_peer_id), ("receiving", receiving_peer_id)):
        if peer_id not in peers:
            raise ContractError(
                ErrorCode.PEER_NOT_PART_OF_CONTRACT,
                f"{role} peer {peer_id!r} is not part of the contract",
            )


def validate_offered_services(
    contract: Contract, *, provider_peer_id: str, offered_services: Container[str]
) -> None:
    """Each connection grant to ``provider_peer_id`` names a Service that Peer offers."""
    for index, grant in enumerate(contract.grants):
        if not isinstance(grant, CONNECTION_GRANTS) or grant.service.peer_id != provider_peer_id:
            continue
        if grant.service.name not in offered_services:
            raise _invalid(
                f"grants[{index}]: peer {provider_peer_id!r} offers no service "
                f"{grant.service.name!r}"
            )
