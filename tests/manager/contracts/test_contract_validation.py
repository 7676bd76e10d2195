"""Core "Contract validation": one test (at least) per rule."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from contracttest import (
    DAY,
    GROUP_ID,
    NOW,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    OIN_E,
    OIN_OUTSIDER,
    T,
    connection_data,
    contract,
    publication_data,
)

from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.validation import (
    MAX_TIMESTAMP,
    validate_contract,
    validate_iv_unique,
    validate_offered_services,
    validate_participants,
)


def _refused(parsed: Contract, code: str = ErrorCode.CONTRACT_INVALID, **kwargs: Any) -> str:
    with pytest.raises(ContractError) as caught:
        validate_contract(parsed, group_id=GROUP_ID, now=NOW, **kwargs)
    assert caught.value.code == code
    assert caught.value.status == 422
    return caught.value.message


@pytest.mark.parametrize(
    "grants",
    [
        [connection_data()],
        [connection_data(), connection_data(name="other", delegator=OIN_D)],
        [connection_data(service_delegator=OIN_E)],
        [connection_data(delegator=OIN_D, service_delegator=OIN_E, properties={"a": 1})],
        [publication_data()],
        [publication_data(), publication_data(name="other")],
        [publication_data(delegator=OIN_D, properties={})],
    ],
)
def test_valid_contracts_pass(grants: list[dict[str, Any]]) -> None:
    validate_contract(contract(*grants), group_id=GROUP_ID, now=NOW)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        validate_contract(contract(), group_id=GROUP_ID, now=datetime(2025, 6, 1))


def test_own_group_id_must_be_valid() -> None:
    with pytest.raises(ValueError, match="group id"):
        validate_contract(contract(group_id="a b"), group_id="a b", now=NOW)


def test_hash_algorithm_must_be_known() -> None:
    _refused(
        contract(hash_algorithm="HASH_ALGORITHM_SHA256"), ErrorCode.UNKNOWN_HASH_ALGORITHM_HASH
    )


def test_group_id_must_be_the_managers() -> None:
    message = _refused(contract(group_id="another-group"), ErrorCode.INCORRECT_GROUP_ID)
    assert "another-group" in message


def test_created_at_cannot_be_in_the_future() -> None:
    _refused(contract(created_at=T + 3600))
    # A clock a little ahead is tolerated by default, not when no skew is allowed.
    validate_contract(contract(created_at=T + 60), group_id=GROUP_ID, now=NOW)
    _refused(contract(created_at=T + 60), clock_skew=timedelta(0))
    validate_contract(contract(created_at=T), group_id=GROUP_ID, now=NOW, clock_skew=timedelta(0))


@pytest.mark.parametrize("field", ["created_at", "not_before", "not_after"])
def test_dates_must_be_valid(field: str) -> None:
    values = {"created_at": T - 60, "not_before": T, "not_after": T + DAY, field: MAX_TIMESTAMP + 1}
    assert "not a valid date" in _refused(contract(**values))


def test_not_after_must_be_after_not_before() -> None:
    assert "must be after" in _refused(contract(not_before=T + DAY, not_after=T + DAY))
    assert "must be after" in _refused(contract(not_before=T + 2 * DAY, not_after=T + DAY))


def test_not_after_must_be_in_the_future() -> None:
    assert "future" in _refused(contract(not_before=T - 2 * DAY, not_after=T - DAY))
    assert "future" in _refused(contract(not_before=T - 2 * DAY, not_after=T))
    validate_contract(contract(not_before=T - DAY, not_after=T + 1), group_id=GROUP_ID, now=NOW)


def test_not_before_may_be_in_the_future() -> None:
    validate_contract(contract(not_before=T + DAY), group_id=GROUP_ID, now=NOW)


def test_at_least_one_grant() -> None:
    parsed = contract()
    obj = parsed.to_json()
    obj["grants"] = []
    assert "no grants" in _refused(Contract.from_json(obj))


@pytest.mark.parametrize(
    "grants",
    [
        [publication_data(), connection_data()],
        [connection_data(), publication_data()],
        [publication_data(delegator=OIN_D), connection_data()],
        [publication_data(), connection_data(delegator=OIN_D)],
        [publication_data(), publication_data(name="other", delegator=OIN_D)],
    ],
)
def test_publication_grants_are_not_mixed(grants: list[dict[str, Any]]) -> None:
    message = _refused(contract(*grants), ErrorCode.GRANT_COMBINATION_NOT_ALLOWED)
    assert "cannot combine" in message


@pytest.mark.parametrize(
    "grant",
    [
        connection_data(outway="0000000100000000000A"),
        connection_data(service_peer="123"),
        connection_data(delegator="000000010000000000041"),
        connection_data(service_delegator=" 0000001000000000005"),
        publication_data(directory="directory"),
        publication_data(service_peer="00000001-00000000002"),
        publication_data(delegator="0000000100000000000٤"),  # an Arabic-Indic digit
    ],
)
def test_peer_ids_are_oins(grant: dict[str, Any]) -> None:
    assert "OIN" in _refused(contract(grant))


@pytest.mark.parametrize("name", ["has space", "slash/name", "ünïcode", "x" * 101, "naam!"])
def test_service_names(name: str) -> None:
    _refused(contract(publication_data(name=name)))
    _refused(contract(connection_data(name=name)))


def test_service_name_alphabet() -> None:
    name = "Aa0-._" + "z" * 94
    validate_contract(contract(publication_data(name=name)), group_id=GROUP_ID, now=NOW)


@pytest.mark.parametrize(
    "thumbprint",
    [
        "3A56F2E9269AC63F0D4394C46B96539DA1625B6A985D38029FF89F34E490960C",  # upper case
        "3a56f2e9269ac63f0d4394c46b96539da1625b6a985d38029ff89f34e490960",  # 63
        "3a56f2e9269ac63f0d4394c46b96539da1625b6a985d38029ff89f34e490960c0",  # 65
        "OlbyPSaaxj8NQ5TEa2lTnaFiW2qYXTgCn_ifNOSQlgw",  # base64url
        "",
    ],
)
def test_public_key_thumbprint_format(thumbprint: str) -> None:
    parsed = contract(connection_data(thumbprint=thumbprint))
    _refused(parsed, ErrorCode.INCORRECT_PUBLIC_KEY_THUMBPRINT)
    delegated = contract(connection_data(thumbprint=thumbprint, delegator=OIN_D))
    _refused(delegated, ErrorCode.INCORRECT_PUBLIC_KEY_THUMBPRINT)


def test_properties_size_limit() -> None:
    big = {"blob": "x" * (1024 * 1024)}
    assert "1 MB" in _refused(contract(connection_data(properties=big)))
    small = {"blob": "x" * (1024 * 1024 - 20)}
    validate_contract(contract(connection_data(properties=small)), group_id=GROUP_ID, now=NOW)


def test_iv_must_be_unique() -> None:
    parsed = contract()
    validate_iv_unique(parsed, known_content_hash=None)
    validate_iv_unique(parsed, known_content_hash=content_hash(parsed))  # the same contract
    with pytest.raises(ContractError) as caught:
        validate_iv_unique(parsed, known_content_hash=content_hash(contract(group_id="x")))
    assert caught.value.code == ErrorCode.CONTRACT_INVALID
    assert "unique" in caught.value.message


def test_participants() -> None:
    parsed = contract(connection_data(outway=OIN_A, service_peer=OIN_B, service_delegator=OIN_E))
    validate_participants(parsed, submitting_peer_id=OIN_A, receiving_peer_id=OIN_B)
    validate_participants(parsed, submitting_peer_id=OIN_A, receiving_peer_id=OIN_E)
    for submitting, receiving in ((OIN_OUTSIDER, OIN_B), (OIN_A, OIN_C)):
        with pytest.raises(ContractError) as caught:
            validate_participants(
                parsed, submitting_peer_id=submitting, receiving_peer_id=receiving
            )
        assert caught.value.code == ErrorCode.PEER_NOT_PART_OF_CONTRACT
        assert caught.value.status == 422


def test_offered_services() -> None:
    parsed = contract(
        connection_data(service_peer=OIN_B, name="kadaster"),
        connection_data(service_peer=OIN_C, name="elsewhere"),
    )
    validate_offered_services(parsed, provider_peer_id=OIN_B, offered_services={"kadaster"})
    with pytest.raises(ContractError, match="offers no service 'kadaster'"):
        validate_offered_services(parsed, provider_peer_id=OIN_B, offered_services={"brp"})
    publication = contract(publication_data(service_peer=OIN_B, name="unknown"))
    validate_offered_services(publication, provider_peer_id=OIN_B, offered_services=set())
