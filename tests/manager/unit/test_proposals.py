"""Contract contents built for operators are valid FSC contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.validation import validate_contract
from appliance.manager.proposals import connection_content, publication_content, uuid7

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_uuid7_layout(ms: int) -> None:
    value = uuid7(ms)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == ms


def test_uuid7_sorts_by_time() -> None:
    assert uuid7(1000) < uuid7(2000)


def test_publication_and_connection_contents_validate() -> None:
    publication = publication_content(
        group_id="sluis.test",
        directory_peer_id="00000001000000000100",
        service_peer_id="00000001000000000102",
        service_name="basisregistratie",
        protocol="PROTOCOL_TCP_HTTP_1.1",
        now=NOW,
        days=30,
    )
    connection = connection_content(
        group_id="sluis.test",
        service_peer_id="00000001000000000102",
        service_name="basisregistratie",
        outway_peer_id="00000001000000000101",
        outway_public_key_thumbprint="a" * 64,
        now=NOW,
        days=30,
        properties={"purpose": "demo"},
    )
    for content in (publication, connection):
        validate_contract(Contract.from_json(content), group_id="sluis.test", now=NOW)
