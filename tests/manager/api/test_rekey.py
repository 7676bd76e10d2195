"""Re-key: replacements for the outway's new key, and revoking what they replace
(appliance.manager.rekey; the CLI is ``sluis contract replace-key`` / ``revoke-replaced``).

A real ManagerService on SQLite; peer B's signatures arrive through the Manager API.
"""

from __future__ import annotations

from typing import Any

import pytest
from apitest import Api, hash_of, sign
from contracttest import NOW, OIN_A, OIN_B, OIN_D, Group, T, connection_data, content

from appliance.manager.contracts.hashing import grant_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.state import ContractState
from appliance.manager.rekey import (
    Replacement,
    replace_key,
    replacement_content,
    revoke_replaced,
)
from appliance.manager.service import ContractView, ManagerError, ManagerService
from appliance.outway.grants import Route, StoreGrants


def _accepted_by_b(api: Api, group: Group, contract: dict[str, Any]) -> None:
    result = api.put_signature("accept", contract, sign(contract, group[OIN_B]), peer=group[OIN_B])
    assert result.status_code == 201, result.text


def _switched(api: Api, group: Group, new_key: Any) -> ManagerService:
    """The same Manager after the switch: its live chain holds the new key."""
    old = api.service
    return ManagerService(
        settings=old.settings,
        store=old.store,
        own_chain=list(new_key.chain),
        trust_anchors=group.ca.anchors,
        crls=old.crls,
        signer=new_key.signer,
        clock=lambda: NOW,
    )


def test_replace_then_revoke_the_old_contract(
    consumer: Api, group: Group, connection: dict[str, Any]
) -> None:
    consumer.service.propose(connection)
    _accepted_by_b(consumer, group, connection)
    old = hash_of(connection)
    new_key = group.ca.issue(OIN_A)  # the same peer, a new key pair
    assert new_key.public_key_thumbprint != group[OIN_A].public_key_thumbprint

    first = replace_key(consumer.service, new_key.public_key_thumbprint)
    assert [(r.old_hash, r.new_state, r.proposed_now) for r in first] == [(old, "proposed", True)]
    new_hash = first[0].new_hash
    assert new_hash is not None
    new_content = consumer.service.get(new_hash).content
    assert new_content["grants"][0]["data"]["outway"] == {
        "peer_id": OIN_A,
        "public_key_thumbprint": new_key.public_key_thumbprint,
    }
    assert new_content["grants"][0]["data"]["service"] == connection["grants"][0]["data"]["service"]
    assert new_content["validity"] == {
        "not_before": T,
        "not_after": connection["validity"]["not_after"],
    }
    assert new_content["iv"] != connection["iv"]

    # Again, before B signed: nothing new is proposed; the old contract still serves.
    again = replace_key(consumer.service, new_key.public_key_thumbprint)
    assert [(r.new_hash, r.new_state, r.proposed_now) for r in again] == [
        (new_hash, "proposed", False)
    ]
    assert consumer.service.get(old).state == "valid"
    with pytest.raises(ManagerError, match="install the new certificate first"):
        revoke_replaced(consumer.service, new_key.public_key_thumbprint)

    _accepted_by_b(consumer, group, new_content)
    ready = replace_key(consumer.service, new_key.public_key_thumbprint)
    assert [(r.new_hash, r.new_state) for r in ready] == [(new_hash, "valid")]

    # Both valid now: each outway worker uses the grant for the key it connects with.
    new_grant = grant_hash(
        Contract.from_json(new_content), Contract.from_json(new_content).grants[0]
    )
    switched = _switched(consumer, group, new_key)
    assert StoreGrants(switched).routes() == [Route(new_grant, OIN_B, "basisregistratie")]
    assert len(StoreGrants(consumer.service).routes()) == 1
    assert StoreGrants(consumer.service).routes()[0].grant_hash != new_grant

    dry = revoke_replaced(switched, new_key.public_key_thumbprint, dry_run=True)
    assert [(r.old_state, r.revoked_now) for r in dry] == [("valid", False)]
    assert consumer.service.get(old).state == "valid"
    done = revoke_replaced(switched, new_key.public_key_thumbprint)
    assert [(r.old_hash, r.old_state, r.revoked_now) for r in done] == [(old, "revoked", True)]
    assert switched.get(old).state == "revoked"
    assert StoreGrants(consumer.service).routes() == []  # a worker still on the old key
    # Nothing left to replace or revoke: later runs change nothing.
    assert replace_key(switched, new_key.public_key_thumbprint) == []
    assert revoke_replaced(switched, new_key.public_key_thumbprint) == []


def test_a_rejected_replacement_is_reported_not_proposed_again(
    consumer: Api, group: Group, connection: dict[str, Any]
) -> None:
    consumer.service.propose(connection)
    _accepted_by_b(consumer, group, connection)
    new_key = group.ca.issue(OIN_A)
    assert (
        replace_key(consumer.service, new_key.public_key_thumbprint, dry_run=True)[0].new_hash
        is None
    )
    assert len(consumer.service.contracts()[0]) == 1  # the dry run proposed nothing
    proposed = replace_key(consumer.service, new_key.public_key_thumbprint)[0]
    assert proposed.new_hash is not None
    new_content = consumer.service.get(proposed.new_hash).content
    result = consumer.put_signature(
        "reject", new_content, sign(new_content, group[OIN_B], "reject"), peer=group[OIN_B]
    )
    assert result.status_code == 201, result.text
    later = replace_key(consumer.service, new_key.public_key_thumbprint)
    assert [(r.new_hash, r.new_state, r.proposed_now) for r in later] == [
        (proposed.new_hash, "rejected", False)
    ]
    assert len(consumer.service.contracts()[0]) == 2
    # The old contract is not revoked without a valid replacement, even after the switch.
    switched = _switched(consumer, group, new_key)
    kept = revoke_replaced(switched, new_key.public_key_thumbprint)
    assert [(r.old_state, r.new_state, r.revoked_now) for r in kept] == [
        ("valid", "rejected", False)
    ]


def test_only_our_outway_grants_change_in_a_replacement(group: Group) -> None:
    ours = connection_data(thumbprint=group[OIN_A].public_key_thumbprint)
    theirs = connection_data(outway=OIN_D, thumbprint=group[OIN_D].public_key_thumbprint)
    old = content(ours, theirs, iv="0197a000-0000-7000-8000-0000000000b1")
    view = ContractView("x", old, {}, ContractState.VALID, ())
    new = replacement_content(view, OIN_A, "cd" * 32, T + 60)
    assert new["grants"][0]["data"]["outway"]["public_key_thumbprint"] == "cd" * 32
    assert new["grants"][1] == theirs
    assert new["validity"]["not_before"] == T + 60
    assert old["grants"][0]["data"]["outway"]["public_key_thumbprint"] != "cd" * 32  # copied
    with pytest.raises(ManagerError, match="ends before"):
        replacement_content(view, OIN_A, "cd" * 32, old["validity"]["not_after"])


@pytest.mark.parametrize(
    ("state", "waiting", "refused", "done"),
    [
        (None, False, False, False),  # not proposed (dry run)
        ("proposed", True, False, False),
        ("accepted", False, False, False),  # signed by all, valid from a moment ahead
        ("valid", False, False, True),
        ("rejected", False, True, False),
        ("revoked", False, True, False),
        ("expired", False, True, False),
    ],
)
def test_what_the_cli_makes_of_a_replacement(
    state: str | None, waiting: bool, refused: bool, done: bool
) -> None:
    """`sluis contract replace-key` exits 1 while one waits, 2 when one is refused, 0 when done."""
    pair = Replacement("old", "valid", None if state is None else "new", state)
    assert (pair.waiting, pair.refused, pair.done) == (waiting, refused, done)
