"""Re-key: new contracts for a new outway key, and the old ones revoked once they are replaced.

A connection grant binds the outway's public key (``outway.public_key_thumbprint``), so a new
organisation key needs new contracts (FSC Core, "Certificate renewal", second scenario). For
every valid contract holding a connection grant of this peer's outway for another key,
:func:`replace_key` proposes a copy in which those grants name the new key: the same grants,
peers and end of validity, a new ``iv``, valid from now. The other peers sign it as any
contract; :func:`replace_key` only reports how far each replacement is, so a playbook can run
it again until every replacement is valid (it never proposes a second copy).

:func:`revoke_replaced` revokes the old contracts whose replacement is valid, and only once
this Manager's live certificate holds the new key: before the switch the outway still needs
them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from appliance.manager.contracts.model import GrantType
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.contracts.state import ContractState
from appliance.manager.proposals import uuid7
from appliance.manager.service import ContractView, ManagerError, ManagerService

# A replacement in one of these states counts; a rejected or revoked one is reported, and
# the operator decides (proposing the same again would meet the same answer).
_LIVE_STATES = (ContractState.PROPOSED, ContractState.VALID)
# A replacement in one of these will not become valid: the operator decides.
_REFUSED_STATES = frozenset({ContractState.REJECTED, ContractState.REVOKED, ContractState.EXPIRED})
_CONNECTION_TYPES = (GrantType.SERVICE_CONNECTION, GrantType.DELEGATED_SERVICE_CONNECTION)


@dataclass(frozen=True)
class Replacement:
    """An old contract of the outway's former key and the contract replacing it."""

    old_hash: str
    old_state: str
    new_hash: str | None  # None: not proposed (dry run)
    new_state: str | None
    proposed_now: bool = False
    revoked_now: bool = False

    @property
    def waiting(self) -> bool:
        """Proposed, not signed by every peer yet."""
        return self.new_state == ContractState.PROPOSED.value

    @property
    def refused(self) -> bool:
        """Proposed once, then rejected, revoked or expired: the operator decides."""
        return self.new_state in _REFUSED_STATES

    @property
    def done(self) -> bool:
        return self.new_state == ContractState.VALID.value

    def as_json(self) -> dict[str, Any]:
        return {
            "old": self.old_hash,
            "old_state": self.old_state,
            "new": self.new_hash,
            "new_state": self.new_state,
            "proposed_now": self.proposed_now,
            "revoked_now": self.revoked_now,
        }


def _own_connection_grants(content: dict[str, Any], own: str) -> list[dict[str, Any]]:
    """The grant data of this peer's outway in ``content`` (JSON, as stored)."""
    return [
        grant["data"]
        for grant in content["grants"]
        if grant["data"]["type"] in _CONNECTION_TYPES and grant["data"]["outway"]["peer_id"] == own
    ]


def _with_key(content: dict[str, Any], own: str, thumbprint: str) -> dict[str, Any]:
    changed = copy.deepcopy(content)
    for data in _own_connection_grants(changed, own):
        data["outway"]["public_key_thumbprint"] = thumbprint
    return changed


def _same_grants(content: dict[str, Any]) -> str:
    """What a replacement keeps: group and grants (not iv, creation or validity)."""
    return json.dumps([content["group_id"], content["grants"]], sort_keys=True)


def _connection_contracts(service: ManagerService) -> Iterator[ContractView]:
    seen: set[str] = set()
    for grant_type in _CONNECTION_TYPES:
        cursor: str | None = None
        while True:
            views, cursor = service.contracts(
                peer_id=service.peer_id, grant_type=grant_type.value, cursor=cursor, limit=200
            )
            for view in views:
                if view.content_hash not in seen:
                    seen.add(view.content_hash)
                    yield view
            if not cursor:
                break


def _pairs(
    service: ManagerService, thumbprint: str
) -> list[tuple[ContractView, ContractView | None]]:
    """Each valid contract for another key of our outway, with its live replacement if any."""
    own = service.peer_id
    old: list[ContractView] = []
    replacements: dict[str, ContractView] = {}
    for view in _connection_contracts(service):
        grants = _own_connection_grants(view.content, own)
        keys = {g["outway"]["public_key_thumbprint"] for g in grants}
        if not keys:
            continue
        if keys == {thumbprint}:
            # Listing is newest first: the newest replacement counts, a live one before any
            # rejected or revoked one.
            key = _same_grants(view.content)
            current = replacements.get(key)
            if current is None or (
                view.state in _LIVE_STATES and current.state not in _LIVE_STATES
            ):
                replacements[key] = view
        elif view.state == ContractState.VALID:
            old.append(view)
    return [
        (view, replacements.get(_same_grants(_with_key(view.content, own, thumbprint))))
        for view in old
    ]


def replacement_content(
    view: ContractView, own: str, thumbprint: str, now_seconds: int
) -> dict[str, Any]:
    content = _with_key(view.content, own, thumbprint)
    not_after = int(content["validity"]["not_after"])
    if not_after <= now_seconds:
        raise ManagerError(f"contract {view.content_hash} ends before it could be replaced")
    content["iv"] = str(uuid7(now_seconds * 1000))
    content["created_at"] = now_seconds
    content["validity"] = {"not_before": now_seconds, "not_after": not_after}
    return content


def replace_key(
    service: ManagerService, thumbprint: str, *, dry_run: bool = False
) -> list[Replacement]:
    """Propose a replacement for the new key of every valid contract that has none yet."""
    own = service.peer_id
    now = int(service.clock().timestamp())
    result = []
    for view, replacement in _pairs(service, thumbprint):
        old = (view.content_hash, view.state)
        if replacement is not None and (replacement.state in _LIVE_STATES or not dry_run):
            # A live one: how far it is. Rejected or revoked by a peer: said, not asked again.
            result.append(Replacement(*old, replacement.content_hash, replacement.state))
        elif dry_run:
            result.append(Replacement(*old, None, None))
        else:
            proposed = service.propose(replacement_content(view, own, thumbprint, now))
            result.append(
                Replacement(*old, proposed.content_hash, proposed.state, proposed_now=True)
            )
    return result


def revoke_replaced(
    service: ManagerService, thumbprint: str, *, dry_run: bool = False
) -> list[Replacement]:
    """Revoke every old contract whose replacement for ``thumbprint`` is valid."""
    live = service.identity.public_key_thumbprint
    if live != thumbprint:
        raise ManagerError(
            f"the live certificate holds key {live}, not {thumbprint}: the outway still needs "
            "the old contracts; install the new certificate first"
        )
    result = []
    for view, replacement in _pairs(service, thumbprint):
        if replacement is None or replacement.state != ContractState.VALID:
            result.append(
                Replacement(
                    view.content_hash,
                    view.state,
                    replacement.content_hash if replacement else None,
                    replacement.state if replacement else None,
                )
            )
            continue
        state = view.state
        if not dry_run:
            state = service.sign(view.content_hash, SignatureType.REVOKE).state
        result.append(
            Replacement(
                view.content_hash,
                state,
                replacement.content_hash,
                replacement.state,
                revoked_now=not dry_run,
            )
        )
    return result
