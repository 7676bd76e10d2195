"""Content and grant hashes: vectors computed by hand from the specification's steps, properties."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from contracttest import (
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
    sha3_b64,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import (
    check_path_hash,
    content_hash,
    find_grant,
    grant_hash,
    grant_hashes,
)
from appliance.manager.contracts.model import Contract

VECTOR = {
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
                    "name": "example-service",
                },
                "outway": {"peer_id": "00000000000000000002", "public_key_thumbprint": THUMBPRINT},
                "properties": {"b": 1.5, "a": "\u20ac", "c": [10, 1e21]},
            }
        }
    ],
    "hash_algorithm": "HASH_ALGORITHM_SHA3_512",
    "created_at": 1672527600,
}
# RFC 8785 by hand: members sorted, no whitespace, 1e21 as ECMAScript writes it, UTF-8 as is.
VECTOR_GRANT_DATA_JCS = (
    '{"outway":{"peer_id":"00000000000000000002","public_key_thumbprint":"' + THUMBPRINT + '"},'
    '"properties":{"a":"\u20ac","b":1.5,"c":[10,1e+21]},'
    '"service":{"name":"example-service","peer_id":"00000000000000000001",'
    '"type":"SERVICE_TYPE_SERVICE"},"type":"GRANT_TYPE_SERVICE_CONNECTION"}'
)
VECTOR_CONTENT_JCS = (
    '{"created_at":1672527600,"grants":[{"data":' + VECTOR_GRANT_DATA_JCS + "}],"
    '"group_id":"fsc-example-group","hash_algorithm":"HASH_ALGORITHM_SHA3_512",'
    '"iv":"06338364-8305-7b74-8000-de4963503139",'
    '"validity":{"not_after":1704063600,"not_before":1672527600}}'
)


def test_content_hash_vector() -> None:
    # Steps 1-6: JCS, SHA3-512, base64url without '=', "$1$" for SHA3-512, "1$" for a contract.
    expected = "$1$1$" + sha3_b64(VECTOR_CONTENT_JCS.encode("utf-8"))
    assert content_hash(Contract.from_json(VECTOR)) == expected
    assert re.fullmatch(r"\$1\$1\$[A-Za-z0-9_-]{86}", expected)  # 64 bytes, no padding


def test_grant_hash_vector() -> None:
    # Steps 1-9: content hash, JCS of grant.data appended, hashed; "$1$" + HashType 3 + "$".
    parsed = Contract.from_json(VECTOR)
    text = content_hash(parsed) + VECTOR_GRANT_DATA_JCS
    expected = "$1$3$" + sha3_b64(text.encode("utf-8"))
    assert grant_hash(parsed, parsed.grants[0]) == expected
    assert grant_hashes(parsed) == (expected,)


def test_member_order_of_the_input_does_not_change_hashes() -> None:
    reordered = json.loads(json.dumps(VECTOR), object_pairs_hook=lambda p: dict(reversed(p)))
    assert list(reordered) != list(VECTOR)
    assert content_hash(Contract.from_json(reordered)) == content_hash(Contract.from_json(VECTOR))
    a, b = Contract.from_json(reordered), Contract.from_json(VECTOR)
    assert grant_hashes(a) == grant_hashes(b)


def _independent_jcs(value: Any) -> str:
    # Enough for ASCII member names, integers and strings: sorted, compact, UTF-8.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("grant", "hash_type"),
    [
        (publication_data(), 2),
        (connection_data(), 3),
        (connection_data(delegator=OIN_D), 4),
        (publication_data(delegator=OIN_D), 5),
        (connection_data(service_delegator=OIN_E), 3),
    ],
)
def test_grant_hash_type_numbers(grant: dict[str, Any], hash_type: int) -> None:
    # READING.md item 1: the HashType table, not the grant type number of step 8's example.
    obj = content(grant)
    parsed = Contract.from_json(obj)
    expected_content = "$1$1$" + sha3_b64(_independent_jcs(obj).encode())
    assert content_hash(parsed) == expected_content
    text = expected_content + _independent_jcs(grant["data"])
    assert grant_hash(parsed, parsed.grants[0]) == f"$1${hash_type}${sha3_b64(text.encode())}"


def test_unknown_hash_algorithm() -> None:
    parsed = contract(hash_algorithm="HASH_ALGORITHM_SHA256")
    for compute in (
        lambda: content_hash(parsed),
        lambda: grant_hash(parsed, parsed.grants[0]),
    ):
        with pytest.raises(ContractError) as caught:
            compute()
        assert caught.value.code == ErrorCode.UNKNOWN_HASH_ALGORITHM_HASH
        assert caught.value.status == 422


def test_grant_of_another_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        grant_hash(contract(), contract(connection_data(name="other")).grants[0])


def test_iv_makes_grant_hashes_unique_per_contract() -> None:
    one = contract(iv="06338364-8305-7b74-8000-de4963503139")
    two = contract(iv="06338364-8305-7b74-8000-de4963503140")
    assert one.grants[0] == two.grants[0]
    assert grant_hashes(one) != grant_hashes(two)


def test_find_grant_and_path_hash() -> None:
    parsed = contract(connection_data(name="one"), connection_data(name="two"))
    first, second = grant_hashes(parsed)
    assert find_grant(parsed, second) is parsed.grants[1]
    assert find_grant(parsed, first) is parsed.grants[0]
    assert find_grant(parsed, "$1$3$unknown") is None
    check_path_hash(parsed, content_hash(parsed))
    with pytest.raises(ContractError) as caught:
        check_path_hash(parsed, content_hash(contract()))
    assert caught.value.code == ErrorCode.URL_PATH_CONTENT_HASH_MISMATCH


# -- properties ----------------------------------------------------------------------------

_peer = st.sampled_from([OIN_A, OIN_B, OIN_C, OIN_D, OIN_E])
_name = st.from_regex(r"[a-z][a-z0-9._-]{2,20}", fullmatch=True)
_properties = st.none() | st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.text(max_size=8)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=4), children, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


@st.composite
def _grant(draw: st.DrawFn, name: str) -> dict[str, Any]:
    properties = draw(_properties)
    if draw(st.booleans()):
        return connection_data(
            outway=draw(_peer),
            service_peer=draw(_peer),
            name=name,
            thumbprint=draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
            delegator=draw(st.none() | _peer),
            service_delegator=draw(st.none() | _peer),
            properties=properties,
        )
    return publication_data(
        directory=draw(_peer),
        service_peer=draw(_peer),
        name=name,
        protocol=draw(st.sampled_from(["PROTOCOL_TCP_HTTP_1.1", "PROTOCOL_TCP_HTTP_2"])),
        delegator=draw(st.none() | _peer),
        properties=properties,
    )


@st.composite
def contents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_name, min_size=1, max_size=4, unique=True))
    return content(
        *[draw(_grant(name)) for name in names],
        iv=str(draw(st.uuids())),
        group_id=draw(st.from_regex(r"[a-zA-Z0-9./_-]{1,20}", fullmatch=True)),
        not_before=draw(st.integers(0, 2**40)),
        not_after=draw(st.integers(0, 2**40)),
        created_at=draw(st.integers(0, 2**40)),
    )


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, member in value.items():
            yield from _leaves(member, (*path, key))
    elif isinstance(value, list):
        for index, element in enumerate(value):
            yield from _leaves(element, (*path, index))
    else:
        yield path, value


def _changed(path: tuple[Any, ...], value: Any) -> Any:
    """Another value the schema still accepts, or None when there is none."""
    key = path[-1]
    schema_field = "properties" not in path[:-1]
    if path == ("iv",):
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    if schema_field and key in ("type", "hash_algorithm"):
        return None  # another value changes the schema branch or is refused
    if schema_field and key == "protocol":
        return "PROTOCOL_TCP_HTTP_2" if value.endswith("1.1") else "PROTOCOL_TCP_HTTP_1.1"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        bigger = value + 1.0
        return bigger if bigger != value else value / 2
    if isinstance(value, str):
        return value + "x"
    return 0  # null


@settings(max_examples=60, deadline=None)
@given(contents(), st.data())
def test_any_change_to_any_field_changes_the_content_hash(
    obj: dict[str, Any], data: st.DataObject
) -> None:
    original = content_hash(Contract.from_json(obj))
    leaves = [(path, value) for path, value in _leaves(obj) if _changed(path, value) is not None]
    path, value = data.draw(st.sampled_from(leaves))
    mutated = copy.deepcopy(obj)
    target: Any = mutated
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = _changed(path, value)
    assert content_hash(Contract.from_json(mutated)) != original


@settings(max_examples=40, deadline=None)
@given(contents())
def test_structural_changes_change_the_content_hash(obj: dict[str, Any]) -> None:
    original = content_hash(Contract.from_json(obj))
    changes = []
    if len(obj["grants"]) > 1:
        reordered = copy.deepcopy(obj)
        reordered["grants"].reverse()
        changes.append(reordered)
    fewer = copy.deepcopy(obj)
    fewer["grants"].pop()
    changes.append(fewer)
    more = copy.deepcopy(obj)
    more["grants"][0]["data"].setdefault("properties", {})["added-member"] = None
    changes.append(more)
    for changed in changes:
        assert content_hash(Contract.from_json(changed)) != original


@settings(max_examples=60, deadline=None)
@given(contents())
def test_grant_hashes_differ_per_grant(obj: dict[str, Any]) -> None:
    parsed = Contract.from_json(obj)
    hashes = grant_hashes(parsed)
    assert len(set(hashes)) == len(parsed.grants)
    assert content_hash(parsed) not in hashes
    for grant, value in zip(parsed.grants, hashes, strict=True):
        assert find_grant(parsed, value) is grant
