"""The Group's peers as this process reaches them (issue 20): when each peer's Manager last
answered, and deliveries to it that failed.

Series (summed over the workers, ``appliance.metrics.registry``)::

    sluis_manager_peer_last_contact_timestamp_seconds{peer}   unix time of the last call to
        the peer's Manager that it answered with 2xx (the latest of every worker, exited ones
        included); on the Manager (deliveries, announcements, directory look-ups) and on the
        outway (access token fetches)
    sluis_manager_peer_delivery_failures_total{peer}          outbox deliveries to it that failed

``peer`` of a contact is the subject serialNumber of the certificate the peer's Manager
presented in the mutual TLS handshake, verified against the Group's trust anchors: only a
member of the Group can add a value. The failures are counted per outbox row's target peer.
Either way at most :data:`PEER_LIMIT` values per worker, beyond that ``other``
(:mod:`appliance.metrics.labels`).
"""

from __future__ import annotations

import time

from appliance.metrics.client import Counter, Gauge
from appliance.metrics.labels import PEER_ID, Bounded, certificate_peer

PEER_LIMIT = 500

LAST_CONTACT = Gauge(
    "sluis_manager_peer_last_contact_timestamp_seconds",
    "Unix time of the last call to the peer's Manager that it answered with 2xx.",
    ["peer"],
    multiprocess_mode="max",
)
DELIVERY_FAILURES = Counter(
    "sluis_manager_peer_delivery_failures",
    "Outbox deliveries (contracts, signatures) to the peer's Manager that failed.",
    ["peer"],
)

_peer = Bounded(PEER_ID, PEER_LIMIT)


def contacted(certificate: bytes, at: float | None = None) -> None:
    """A peer's Manager answered 2xx on a connection where it presented ``certificate`` (DER)."""
    LAST_CONTACT.labels(_peer(certificate_peer(certificate))).set(time.time() if at is None else at)


def delivery_failed(peer_id: str) -> None:
    DELIVERY_FAILURES.labels(_peer(peer_id)).inc()
