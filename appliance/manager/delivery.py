"""Send what the outbox holds to the other Managers, retrying with back-off.

The outbox row is written in the same transaction as the contract or signature it carries, so
nothing is lost when this process stops; a row leaves the outbox only when the receiving
Manager answered 2xx. Receiving is idempotent, so a delivery repeated after a crash between
"sent" and "marked delivered" does no harm. A lease on each row keeps several workers (or
several nodes on one PostgreSQL) from sending the same row at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from appliance.errors import SluisError
from appliance.manager.peer_client import PeerCallError
from appliance.manager.service import ManagerService
from appliance.manager.storage import OutboxRow
from appliance.metrics.collectors import count_deliveries
from appliance.metrics.peers import delivery_failed

log = logging.getLogger("sluis.manager.delivery")

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(minutes=5)
# A peer that refuses (4xx) will not change its mind soon; try again much later, never give up
# silently: the row, with its last error, stays visible to operators.
REFUSED_BACKOFF = timedelta(hours=1)
# A provider refuses a connection to a service whose publication it does not hold as valid
# (yet): the directory's accept reaches it on its own, often just after the proposal. That
# refusal is retried on the normal back-off for this many attempts (1 s ... 5 min: about
# 34 minutes in all), then as a refusal: the service may really not exist.
NOT_YET_ATTEMPTS = 14
# How a Sluis provider words it (ManagerService._check_roles, validate_offered_services),
# under Sluis's own ERROR_CODE_CONTRACT_INVALID: FSC has no code for it.
NOT_YET_CODE = "ERROR_CODE_CONTRACT_INVALID"
NOT_YET_WORDS = "offers no service"


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s ... capped at MAX_BACKOFF."""
    return min(timedelta(seconds=2 ** min(attempts, 16)), MAX_BACKOFF)


def not_yet(exc: PeerCallError, row: OutboxRow) -> bool:
    """Whether a refusal of ``row`` may pass by itself: a proposal (or a signature of one
    the provider never stored) refused because the provider does not offer the service
    (yet), within the first NOT_YET_ATTEMPTS attempts."""
    return (
        exc.code == NOT_YET_CODE and NOT_YET_WORDS in str(exc) and row.attempts < NOT_YET_ATTEMPTS
    )


def retry_after(exc: PeerCallError | SluisError, row: OutboxRow) -> timedelta:
    """How long to wait before the next attempt of ``row`` after ``exc``."""
    refused = isinstance(exc, PeerCallError) and exc.permanent and not not_yet(exc, row)
    return REFUSED_BACKOFF if refused else backoff(row.attempts)


async def deliver_one(service: ManagerService, row: OutboxRow) -> bool:
    assert service.client is not None
    payload = json.loads(row.payload_json)
    try:
        address = await service.manager_address(row.target_peer_id)
        if row.kind == "contract":
            await service.client.submit_contract(address, payload["content"], payload["signature"])
        else:
            await service.client.send_signature(
                address,
                row.contract_hash,
                payload["type"],
                payload["content"],
                payload["signature"],
            )
    except (PeerCallError, SluisError) as exc:
        wait = retry_after(exc, row)
        service.store.mark_failed(row.id, str(exc)[:1000], service.clock() + wait)
        delivery_failed(row.target_peer_id)
        log.warning(
            "delivery %s of %s %s to %s failed (attempt %d, next in %s): %s",
            row.id,
            row.kind,
            row.contract_hash,
            row.target_peer_id,
            row.attempts + 1,
            wait,
            exc,
        )
        return False
    service.store.mark_delivered(row.id, service.clock())
    log.info("delivered %s %s to %s", row.kind, row.contract_hash, row.target_peer_id)
    return True


async def deliver_due(service: ManagerService, limit: int = 20) -> int:
    """Send every due row once; return how many arrived."""
    rows = service.store.due_deliveries(service.clock(), limit, lease=LEASE)
    results = await asyncio.gather(*(deliver_one(service, row) for row in rows))
    delivered = sum(results)
    count_deliveries(delivered, len(results) - delivered)
    return delivered


async def announce_to_directory(service: ManagerService) -> bool:
    """Register this Manager's address with the Group's directory (core "Announce")."""
    settings = service.settings
    if settings.is_directory or not settings.directory_address or service.client is None:
        return True
    try:
        await service.client.announce(settings.directory_address)
    except PeerCallError as exc:
        log.warning("announcing to the directory failed (will retry): %s", exc)
        return False
    log.info("announced %s to the directory", settings.address)
    return True


async def delivery_loop(service: ManagerService, interval_seconds: float) -> None:
    """Runs for the life of a worker; survives every error of a single round."""
    announced = False
    while True:
        try:
            announced = announced or await announce_to_directory(service)
            await deliver_due(service)
        except Exception:  # a bad round must not end deliveries for this worker
            log.exception("delivery round failed")
        await asyncio.sleep(interval_seconds)
