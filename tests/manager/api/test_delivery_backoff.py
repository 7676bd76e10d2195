"""The delivery back-off after a refusal: a provider that does not offer the service yet (its
publication's accept from the directory has not reached it) is asked again on the normal short
back-off, a real refusal only an hour later.

Peer A's Manager delivers to Peer B's real Manager app in-process: :class:`InProcessPeer`
stands in for the network (the answer becomes a :class:`PeerCallError` the way
``PeerClient._call`` makes one), everything else is the real service, store and outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from apitest import Api, address_of, make_service, sign
from contracttest import NOW, OIN_A, OIN_B, OIN_C, Group, connection_data, content
from cryptography import x509
from prometheus_client import REGISTRY

from appliance.manager.delivery import (
    NOT_YET_ATTEMPTS,
    REFUSED_BACKOFF,
    backoff,
    deliver_due,
    retry_after,
)
from appliance.manager.peer_client import PeerCallError
from appliance.manager.service import ManagerService
from appliance.manager.storage import schema as t


class InProcessPeer:
    """POST /v1/contracts to ``provider``'s app as peer A, raising as PeerClient does."""

    def __init__(self, provider: Api, group: Group) -> None:
        self.provider = provider
        self.group = group

    async def submit_contract(self, address: str, body: dict[str, Any], signature: str) -> None:
        # In a thread: the test client runs the app in an event loop of its own.
        result = await asyncio.to_thread(
            self.provider.post_contract,
            body,
            signature,
            peer=self.group[OIN_A],
            address=address_of(OIN_A),
        )
        if result.status_code >= 300:
            raise PeerCallError(
                address,
                f"POST /contracts -> {result.status_code} {result.text[:500]}",
                status=result.status_code,
                code=result.headers.get("Fsc-Error-Code"),
            )


@pytest.fixture
def consumer(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path, bare_provider: Api
) -> Iterator[ManagerService]:
    """Peer A's Manager, delivering to B's (which offers no service yet)."""
    service = make_service(group, OIN_A, tmp_path / "consumer.db", crls=crls)
    service.client = InProcessPeer(bare_provider, group)  # type: ignore[assignment]
    service.store.upsert_peer(OIN_B, manager_address=address_of(OIN_B))
    try:
        yield service
    finally:
        service.store.close()


def _wait_of(service: ManagerService, now: datetime) -> tuple[timedelta, str]:
    """The wait before the next attempt of the one outbox row, and its last error."""
    with service.store.engine.connect() as conn:
        (row,) = conn.execute(sa.select(t.outbox.c.id)).all()
    found = service.store.get_delivery(row.id)
    assert found is not None
    assert found.last_error is not None
    return found.next_attempt_at - now, found.last_error


def _deliver_at(service: ManagerService, now: datetime) -> int:
    service.clock = lambda: now
    return asyncio.run(deliver_due(service))


def test_a_proposal_before_the_publication_reached_the_provider_is_retried_soon(
    consumer: ManagerService, bare_provider: Api, publication: dict[str, Any], group: Group
) -> None:
    def failures() -> float:
        name = "sluis_manager_peer_delivery_failures_total"
        return REGISTRY.get_sample_value(name, {"peer": OIN_B}) or 0.0

    before = failures()
    proposal = content(connection_data(thumbprint=group[OIN_A].public_key_thumbprint))
    digest = consumer.propose(proposal).content_hash
    assert _deliver_at(consumer, NOW) == 0
    assert failures() - before == 1  # counted against the peer it was for
    wait, error = _wait_of(consumer, NOW)
    assert "offers no service" in error
    assert wait == backoff(0)  # not REFUSED_BACKOFF

    # The directory's accept of B's publication arrives at B; the retry gets through.
    bare_provider.service.propose(publication)
    directory_accept = bare_provider.put_signature(
        "accept", publication, sign(publication, group[OIN_C]), peer=group[OIN_C]
    )
    assert directory_accept.status_code == 201, directory_accept.text
    assert _deliver_at(consumer, NOW + wait) == 1
    assert failures() - before == 1
    assert bare_provider.service.get(digest).state == "proposed"


def test_a_provider_that_keeps_offering_nothing_is_a_refusal_after_a_while(
    consumer: ManagerService, group: Group
) -> None:
    proposal = content(connection_data(thumbprint=group[OIN_A].public_key_thumbprint))
    consumer.propose(proposal)
    now = NOW
    waits = []
    for _ in range(NOT_YET_ATTEMPTS + 1):
        assert _deliver_at(consumer, now) == 0
        wait, _ = _wait_of(consumer, now)
        waits.append(wait)
        now += wait
    assert waits[:NOT_YET_ATTEMPTS] == [backoff(n) for n in range(NOT_YET_ATTEMPTS)]
    assert waits[-1] == REFUSED_BACKOFF


def test_any_other_refusal_waits_an_hour(bare_provider: Api, group: Group) -> None:
    """A real answer of B's that is not 'offers no service' (a thumbprint it refuses)."""
    bad = content(connection_data(thumbprint=group[OIN_A].public_key_thumbprint.upper()))
    peer = InProcessPeer(bare_provider, group)
    with pytest.raises(PeerCallError) as refused:
        asyncio.run(peer.submit_contract(address_of(OIN_B), bad, sign(bad, group[OIN_A])))
    assert refused.value.status == 422

    class Row:
        attempts = 0

    assert retry_after(refused.value, Row()) == REFUSED_BACKOFF  # type: ignore[arg-type]
    unreachable = PeerCallError(address_of(OIN_B), "connect failed", status=None, code=None)
    assert retry_after(unreachable, Row()) == backoff(0)  # type: ignore[arg-type]
