"""Parsing contract content: the schema, every grant type, immutability and accessors."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any
from uuid import UUID

import pytest
from contracttest import (
    IV,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    OIN_E,
    THUMBPRINT,
    connection_data,
    content,
    contract,
    publication_data,
)

from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.model import (
    Contract,
    DelegatedService,
    DelegatedServiceConnectionGrant,
    DelegatedServicePublicationGrant,
    GrantType,
    Protocol,
    Service,
    ServiceConnectionGrant,
    ServicePublicationGrant,
    ServiceType,
)

# The specification's example contract, with service.type added (READING.md item 8).
SPEC_EXAMPLE = """{
    "iv": "06338364-8305-7b74-8000-de4963503139",
    "group_id": "fsc-example-group",
    "validity": {"not_before": 1672527600, "not_after": 1704063600},
    "grants": [
      {
        "data": {
          "type": "GRANT_TYPE_SERVICE_CONNECTION",
          "service": {
            "type": "SERVICE_TYPE_SERVICE",
            "peer_id": "00000000000000000001",
            "name": "example-service"
          },
          "outway": {
            "peer_id": "00000000000000000002",
            "public_key_thumbprint": "THUMBPRINT"
          }
        }
      }
    ],
    "hash_algorithm": "HASH_ALGORITHM_SHA3_512",
    "created_at": 1672527600
}""".replace("THUMBPRINT", THUMBPRINT)


def _schema_error(obj: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        Contract.from_json(obj)
    assert caught.value.code == ErrorCode.CONTRACT_INVALID
    assert caught.value.status == 400
    return caught.value


def test_spec_example_parses() -> None:
    parsed = Contract.from_json(json.loads(SPEC_EXAMPLE))
    assert parsed.iv == UUID("06338364-8305-7b74-8000-de4963503139")
    assert parsed.group_id == "fsc-example-group"
    assert (parsed.validity.not_before, parsed.validity.not_after) == (1672527600, 1704063600)
    assert parsed.hash_algorithm == "HASH_ALGORITHM_SHA3_512"
    assert parsed.created_at == 1672527600
    (grant,) = parsed.grants
    assert isinstance(grant, ServiceConnectionGrant)
    assert grant.type is GrantType.SERVICE_CONNECTION
    assert grant.outway_peer_id == "00000000000000000002"
    assert grant.public_key_thumbprint == THUMBPRINT
    assert grant.service_peer_id == "00000000000000000001"
    assert grant.service_name == "example-service"
    assert grant.delegator_peer_id is None
    assert grant.service_delegator_peer_id is None
    assert grant.properties is None
    assert parsed.peer_ids() == {"00000000000000000001", "00000000000000000002"}


def test_spec_example_without_service_type_is_refused() -> None:
    obj = json.loads(SPEC_EXAMPLE)
    del obj["grants"][0]["data"]["service"]["type"]
    assert "type" in _schema_error(obj).message


def test_every_grant_type_and_its_fields() -> None:
    parsed = contract(
        connection_data(),
        connection_data(delegator=OIN_D, service_delegator=OIN_E, properties={"k": [1, "v"]}),
    )
    plain, delegated = parsed.grants
    assert isinstance(plain, ServiceConnectionGrant)
    assert isinstance(plain.service, Service)
    assert plain.service.type is ServiceType.SERVICE
    assert isinstance(delegated, DelegatedServiceConnectionGrant)
    assert delegated.type is GrantType.DELEGATED_SERVICE_CONNECTION
    assert isinstance(delegated.service, DelegatedService)
    assert delegated.service.type is ServiceType.DELEGATED_SERVICE
    assert delegated.delegator.peer_id == OIN_D
    assert delegated.delegator_peer_id == OIN_D
    assert delegated.service.delegator.peer_id == OIN_E
    assert delegated.service_delegator_peer_id == OIN_E
    assert delegated.peer_ids() == (OIN_A, OIN_B, OIN_D, OIN_E)
    assert delegated.properties == {"k": (1, "v")}
    assert parsed.connection_grants() == parsed.grants
    assert parsed.publication_grants() == ()

    publication = contract(
        publication_data(protocol="PROTOCOL_TCP_HTTP_2"),
        publication_data(name="other", delegator=OIN_D),
    )
    own, on_behalf = publication.grants
    assert isinstance(own, ServicePublicationGrant)
    assert own.type is GrantType.SERVICE_PUBLICATION
    assert own.directory.peer_id == OIN_C
    assert own.service.peer_id == OIN_B
    assert own.service.name == "basisregistratie"
    assert own.service.protocol is Protocol.HTTP_2
    assert own.peer_ids() == (OIN_C, OIN_B)
    assert isinstance(on_behalf, DelegatedServicePublicationGrant)
    assert on_behalf.type is GrantType.DELEGATED_SERVICE_PUBLICATION
    assert on_behalf.delegator.peer_id == OIN_D
    assert on_behalf.peer_ids() == (OIN_C, OIN_B, OIN_D)
    assert publication.peer_ids() == {OIN_B, OIN_C, OIN_D}
    assert publication.publication_grants() == publication.grants


def test_to_json_returns_the_content_as_received() -> None:
    original = content(
        connection_data(name="second", properties={"z": 1, "a": [3, 2, 1]}),
        connection_data(name="first"),
    )
    original["validity"] = {"not_after": original["validity"]["not_after"], "not_before": 1}
    parsed = Contract.from_json(copy.deepcopy(original))
    assert parsed.to_json() == original
    assert json.dumps(parsed.to_json()) == json.dumps(original)  # member order too
    assert [g.service.name for g in parsed.grants] == ["second", "first"]
    assert parsed.grants[0].to_json() == original["grants"][0]["data"]


def test_contract_is_immutable() -> None:
    source = content(connection_data(properties={"list": [1, {"x": 2}]}))
    parsed = Contract.from_json(source)
    # Changing the input afterwards changes nothing.
    source["grants"][0]["data"]["properties"]["list"].append(3)
    source["group_id"] = "changed"
    assert parsed.group_id != "changed"
    assert parsed.to_json()["grants"][0]["data"]["properties"]["list"] == [1, {"x": 2}]
    # Neither does changing what to_json() returned.
    returned = parsed.to_json()
    returned["grants"].clear()
    assert len(parsed.to_json()["grants"]) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.group_id = "x"  # type: ignore[misc]
    grant = parsed.grants[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.outway = grant.outway  # type: ignore[misc]
    assert grant.properties is not None
    with pytest.raises(TypeError):
        grant.properties["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        parsed.content["iv"] = "x"  # type: ignore[index]


def test_equal_content_gives_equal_contracts() -> None:
    assert contract() == contract()
    assert contract() != contract(group_id="other")
    assert hash(contract()) == hash(contract())


_DELETE = object()


def _mutations() -> list[tuple[str, Any]]:
    def set_path(path: str, value: Any) -> dict[str, Any]:
        obj = content(connection_data(), publication_data())
        target: Any = obj
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
        return obj

    cases: list[tuple[str, Any]] = [
        ("iv", 12),
        ("iv", "not-a-uuid"),
        ("iv", IV.replace("-", "")),
        ("iv", "06338364-8305-7b74-8000-de496350313g"),
        ("iv", _DELETE),
        ("group_id", None),
        ("validity", "2024"),
        ("validity.not_before", "1672527600"),
        ("validity.not_before", 1.5),
        ("validity.not_before", True),
        ("validity.not_after", -1),
        ("validity.not_after", 2**63),
        ("validity.extra", 1),
        ("grants", {}),
        ("grants.0", []),
        ("grants.0.extra", 1),
        ("grants.0.data", _DELETE),
        ("grants.0.data.type", "GRANT_TYPE_UNKNOWN"),
        ("grants.0.data.type", _DELETE),
        ("grants.0.data.outway", _DELETE),
        ("grants.0.data.outway.peer_id", "01"),
        ("grants.0.data.outway.peer_id", "0" * 256),
        ("grants.0.data.outway.public_key_thumbprint", 5),
        ("grants.0.data.outway.extra", "x"),
        ("grants.0.data.service.type", "SERVICE_TYPE_OTHER"),
        ("grants.0.data.service.type", "SERVICE_TYPE_DELEGATED_SERVICE"),
        ("grants.0.data.service.name", "ab"),
        ("grants.0.data.service.delegator", {"peer_id": OIN_D}),
        ("grants.0.data.delegator", {"peer_id": OIN_D}),
        ("grants.0.data.properties", [1]),
        ("grants.0.data.properties", None),
        ("grants.0.data.directory", {"peer_id": OIN_C}),
        ("grants.1.data.service.protocol", "PROTOCOL_UDP"),
        ("grants.1.data.service.protocol", _DELETE),
        ("grants.1.data.service.type", "SERVICE_TYPE_SERVICE"),
        ("grants.1.data.directory.peer_id", 12345),
        ("grants.1.data.outway", {"peer_id": OIN_A, "public_key_thumbprint": THUMBPRINT}),
        ("created_at", "now"),
        ("created_at", _DELETE),
        ("hash_algorithm", 1),
        ("extra", 1),
        ("grants.0.data.properties", {"nan": float("nan")}),
        ("grants.0.data.properties", {"surrogate": "\ud800"}),
    ]
    return [(f"{path}={value!r}", set_path(path, value)) for path, value in cases]


@pytest.mark.parametrize(
    ("case", "obj"), _mutations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_schema_violations_are_refused(case: str, obj: dict[str, Any]) -> None:
    _schema_error(obj)


@pytest.mark.parametrize("obj", [None, [], "contract", 1])
def test_content_must_be_an_object(obj: Any) -> None:
    _schema_error(obj)


def test_unknown_hash_algorithm_is_left_to_hashing() -> None:
    # manager.yaml has a code for it (422), so parsing keeps it for hashing/validation.
    assert contract(hash_algorithm="HASH_ALGORITHM_MD5").hash_algorithm == "HASH_ALGORITHM_MD5"


def test_empty_grants_parse_and_are_left_to_validation() -> None:
    obj = content()
    obj["grants"] = []
    assert Contract.from_json(obj).grants == ()
