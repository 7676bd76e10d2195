"""The gateways' pools of connections to their next hops (issue 20): the inway's to the
Services' backends, the outway's to the inways.

Series (summed over the workers, ``appliance.metrics.registry``)::

    sluis_upstream_connections{peer,state}            open now: in_use (an exchange on it)
                                                      or idle (kept alive for the next)
    sluis_upstream_connections_opened_total{peer}     new connections (at the outway each a
                                                      TLS handshake signed in the HSM)
    sluis_upstream_connections_reused_total{peer}     exchanges on a kept-alive connection

``peer`` is the next hop's FSC peer id, from the certificate its TLS handshake verified (the
outway's inways: the Service's organisation), ``-`` for a next hop without one (the inway's
backends). No host name or address is a label: the inway's ``/metrics`` is readable by the
Group's peers on its FSC listener, and the backends' addresses are nothing of theirs. The
reuse rate is reused over (reused + opened).

:class:`UpstreamPool <appliance.upstream.client.UpstreamPool>` reports to a
:class:`PoolMetrics` (one per pool) unless ``SLUIS_METRICS=off``.
"""

from __future__ import annotations

from appliance.metrics.client import Counter, Gauge
from appliance.metrics.labels import NONE, PEER_ID, Bounded, certificate_peer

PEER_LIMIT = 500
IN_USE = "in_use"
IDLE = "idle"

CONNECTIONS = Gauge(
    "sluis_upstream_connections",
    "Connections to the next hops (backends, inways) open now, in use or idle.",
    ["peer", "state"],
    multiprocess_mode="livesum",
)
OPENED = Counter(
    "sluis_upstream_connections_opened",
    "Connections opened to the next hops (backends, inways).",
    ["peer"],
)
REUSED = Counter(
    "sluis_upstream_connections_reused",
    "Exchanges with a next hop on a kept-alive connection.",
    ["peer"],
)


class PoolMetrics:
    """One pool's recorder; the labelled children are kept per peer (a dictionary lookup and
    a memory-mapped increment per event)."""

    def __init__(self) -> None:
        self._peer = Bounded(PEER_ID, PEER_LIMIT)
        self._children: dict[str, tuple[Gauge, Gauge, Counter, Counter]] = {}

    def label(self, certificate: bytes | None) -> str:
        """The ``peer`` of a new connection whose handshake verified ``certificate``."""
        return self._peer(certificate_peer(certificate)) if certificate else NONE

    def _of(self, peer: str) -> tuple[Gauge, Gauge, Counter, Counter]:
        children = self._children.get(peer)
        if children is None:
            children = self._children[peer] = (
                CONNECTIONS.labels(peer, IN_USE),
                CONNECTIONS.labels(peer, IDLE),
                OPENED.labels(peer),
                REUSED.labels(peer),
            )
        return children

    def moved(self, peer: str, before: str | None, after: str | None) -> None:
        """A connection to ``peer`` went from state ``before`` to ``after`` (None: not open)."""
        in_use, idle, _, _ = self._of(peer)
        if before is not None:
            (in_use if before == IN_USE else idle).dec()
        if after is not None:
            (in_use if after == IN_USE else idle).inc()

    def opened(self, peer: str) -> None:
        self._of(peer)[2].inc()

    def reused(self, peer: str) -> None:
        self._of(peer)[3].inc()
