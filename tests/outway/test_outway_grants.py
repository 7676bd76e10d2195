"""StoreGrants: the outway's grants come from this appliance's Manager store.

Uses the Manager API tests' helpers (a real ManagerService on SQLite, in-memory keys).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

_MANAGER_TESTS = Path(__file__).parents[1] / "manager"
for _folder in ("contracts", "api"):
    if str(_MANAGER_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_MANAGER_TESTS / _folder))

from apitest import Api, hash_of, running_api, sign  # noqa: E402
from contracttest import (  # noqa: E402
    DAY,
    NOW,
    OIN_A,
    OIN_B,
    OIN_D,
    Group,
    T,
    connection_data,
    content,
    make_group,
)

from appliance.manager.contracts.hashing import grant_hash  # noqa: E402
from appliance.manager.contracts.model import Contract  # noqa: E402
from appliance.manager.contracts.signatures import SignatureType  # noqa: E402
from appliance.outway.errors import OutwayError  # noqa: E402
from appliance.outway.grants import Route, StoreGrants, by_grant_hash, by_service  # noqa: E402


@pytest.fixture(scope="module")
def group() -> Group:
    return make_group()


@pytest.fixture
def consumer(group: Group, tmp_path: Path) -> Iterator[Api]:
    """Peer A's Manager: A runs the outway."""
    with running_api(group, OIN_A, tmp_path / "consumer.db", crls=group.ca.crls()) as api:
        yield api


def _connection(group: Group, iv: str, **changes: Any) -> dict[str, Any]:
    data = connection_data(thumbprint=group[OIN_A].public_key_thumbprint, **changes)
    return content(data, iv=iv)


def _grant_of(contract: dict[str, Any]) -> str:
    parsed = Contract.from_json(contract)
    return grant_hash(parsed, parsed.grants[0])


def test_only_valid_connection_grants_of_this_outway_are_routes(
    consumer: Api, group: Group
) -> None:
    valid = _connection(group, "0197a000-0000-7000-8000-0000000000a1")
    consumer.service.propose(valid)
    accepted = consumer.put_signature("accept", valid, sign(valid, group[OIN_B]), peer=group[OIN_B])
    assert accepted.status_code == 201, accepted.text
    assert consumer.service.get(hash_of(valid)).state == "valid"

    proposed = _connection(group, "0197a000-0000-7000-8000-0000000000a2", name="kadaster")
    consumer.service.propose(proposed)  # B has not accepted: not usable

    grants = StoreGrants(consumer.service)
    assert grants.routes() == [Route(_grant_of(valid), OIN_B, "basisregistratie")]
    assert by_grant_hash(grants, _grant_of(valid)).service_name == "basisregistratie"
    assert by_service(grants, OIN_B, "basisregistratie").grant_hash == _grant_of(valid)
    with pytest.raises(OutwayError) as refused:
        by_grant_hash(grants, _grant_of(proposed))
    assert refused.value.fsc_code == "ERROR_CODE_GRANT_NOT_FOUND"


def test_a_grant_for_another_outway_is_no_route(consumer: Api, group: Group) -> None:
    # A offers the service here; D's outway is the one that may call it.
    other = content(
        connection_data(
            outway=OIN_D,
            service_peer=OIN_A,
            thumbprint=group[OIN_D].public_key_thumbprint,
        ),
        iv="0197a000-0000-7000-8000-0000000000a3",
    )
    consumer.service.propose(other)
    result = consumer.put_signature("accept", other, sign(other, group[OIN_D]), peer=group[OIN_D])
    assert result.status_code == 201, result.text
    assert consumer.service.get(hash_of(other)).state == "valid"
    assert StoreGrants(consumer.service).routes() == []


def test_a_grant_for_another_key_of_this_peer_is_no_route(consumer: Api, group: Group) -> None:
    # A re-key: the contract for the old key and its replacement for the new key are both
    # valid for a while; a worker uses only the one for the key it connects with.
    ours = _connection(group, "0197a000-0000-7000-8000-0000000000a4")
    other_key = content(
        connection_data(thumbprint="ab" * 32), iv="0197a000-0000-7000-8000-0000000000a5"
    )
    for contract in (ours, other_key):
        consumer.service.propose(contract)
        result = consumer.put_signature(
            "accept", contract, sign(contract, group[OIN_B]), peer=group[OIN_B]
        )
        assert result.status_code == 201, result.text
        assert consumer.service.get(hash_of(contract)).state == "valid"

    grants = StoreGrants(consumer.service)
    assert grants.routes() == [Route(_grant_of(ours), OIN_B, "basisregistratie")]
    assert by_service(grants, OIN_B, "basisregistratie").grant_hash == _grant_of(ours)


def test_revoked_and_expired_contracts_are_no_routes(consumer: Api, group: Group) -> None:
    # The routes come from the store's state columns (ManagerStore.connection_routes): a
    # revocation stored later and the clock passing not_after both take the grant away.
    kept = _connection(group, "0197a000-0000-7000-8000-0000000000a6")
    revoked = _connection(group, "0197a000-0000-7000-8000-0000000000a7", name="kadaster")
    for contract in (kept, revoked):
        consumer.service.propose(contract)
        result = consumer.put_signature(
            "accept", contract, sign(contract, group[OIN_B]), peer=group[OIN_B]
        )
        assert result.status_code == 201, result.text
    assert {r.service_name for r in StoreGrants(consumer.service).routes()} == {
        "basisregistratie",
        "kadaster",
    }

    consumer.service.sign(hash_of(revoked), SignatureType.REVOKE)
    assert consumer.service.get(hash_of(revoked)).state == "revoked"
    assert StoreGrants(consumer.service).routes() == [
        Route(_grant_of(kept), OIN_B, "basisregistratie")
    ]

    not_after = Contract.from_json(kept).validity.not_after
    later = replace(consumer.service, clock=lambda: datetime.fromtimestamp(not_after + 1, UTC))
    assert later.get(hash_of(kept)).state == "expired"
    assert StoreGrants(later).routes() == []


# -- one worker's table over time: only what changed is read --------------------------------


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _accepted(consumer: Api, group: Group, contract: dict[str, Any]) -> None:
    consumer.service.propose(contract)
    result = consumer.put_signature(
        "accept", contract, sign(contract, group[OIN_B]), peer=group[OIN_B]
    )
    assert result.status_code == 201, result.text


def _delta_rows(consumer: Api, grants: StoreGrants) -> list[int]:
    """How many grants each store read of ``grants.table()`` returned."""
    store = consumer.service.store
    real = store.connection_grants
    counts: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        seq, rows = real(*args, **kwargs)
        counts.append(len(rows))
        return seq, rows

    store.connection_grants = counted  # type: ignore[method-assign]
    try:
        grants.table()
    finally:
        del store.connection_grants
    return counts


def test_one_worker_s_table_follows_accepts_revocations_and_the_clock(
    consumer: Api, group: Group
) -> None:
    clock = _Clock(NOW)
    worker = StoreGrants(replace(consumer.service, clock=clock))
    other_worker = StoreGrants(replace(consumer.service, clock=clock))
    assert worker.routes() == other_worker.routes() == []

    # 1. A contract accepted (by the Manager, another writer than the workers) is used.
    first = _connection(group, "0197a000-0000-7000-8000-0000000000b1")
    _accepted(consumer, group, first)
    assert worker.routes() == [Route(_grant_of(first), OIN_B, "basisregistratie")]

    # 2. Nothing changed: the read returns no grant (one row, the change number).
    assert _delta_rows(consumer, worker) == [0]

    # 3. A contract that starts later, and one that ends sooner, under the same clock.
    later_start = _connection(
        group,
        "0197a000-0000-7000-8000-0000000000b2",
        name="kadaster",
    )
    later_start["validity"]["not_before"] = T + 3600
    short = _connection(group, "0197a000-0000-7000-8000-0000000000b3", name="brp")
    short["validity"]["not_after"] = T + 600
    for contract in (later_start, short):
        _accepted(consumer, group, contract)
    assert {r.service_name for r in worker.routes()} == {"basisregistratie", "brp"}
    assert _delta_rows(consumer, worker) == [0]

    # 4. The clock alone: brp ends after its not_after second, kadaster starts at not_before.
    clock.now = datetime.fromtimestamp(T + 600, UTC)
    assert {r.service_name for r in worker.routes()} == {"basisregistratie", "brp"}
    clock.now = datetime.fromtimestamp(T + 601, UTC)
    assert {r.service_name for r in worker.routes()} == {"basisregistratie"}
    clock.now = datetime.fromtimestamp(T + 3599, UTC)
    assert {r.service_name for r in worker.routes()} == {"basisregistratie"}
    clock.now = datetime.fromtimestamp(T + 3600, UTC)
    assert {r.service_name for r in worker.routes()} == {"basisregistratie", "kadaster"}
    assert _delta_rows(consumer, worker) == [0]  # followed without reading again

    # 5. A revocation stored by the Manager: gone at the next read, in every worker.
    consumer.service.sign(hash_of(first), SignatureType.REVOKE)
    assert _delta_rows(consumer, worker) == [1]  # the revoked contract's grant only
    for each in (worker, other_worker):
        assert each.routes() == [Route(_grant_of(later_start), OIN_B, "kadaster")]
    with pytest.raises(OutwayError):
        by_grant_hash(worker, _grant_of(first))

    # 6. Each table equals a whole read by a new worker at the same moment, also after the
    # clock went back (a whole read again).
    for moment in (T + 3600, T + 10, T + 602, T + 366 * DAY):
        clock.now = datetime.fromtimestamp(moment, UTC)
        fresh = StoreGrants(replace(consumer.service, clock=clock)).table()
        for each in (worker.table(), other_worker.table()):
            assert each.routes == fresh.routes, moment
            assert dict(each.by_hash) == dict(fresh.by_hash), moment
            services = {key: set(found) for key, found in each.by_service.items()}
            assert services == {key: set(found) for key, found in fresh.by_service.items()}
