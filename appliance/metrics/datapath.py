"""The data path's metrics (inway and outway), recorded once per request.

Series (``gateway`` is ``inway`` or ``outway``; ``peer`` is the other organisation's serial
number: at the inway the client's, at the outway the Service's; ``service`` the Service's
name; both ``-`` for a request refused before they were known, ``other`` past their bound,
see :mod:`appliance.metrics.labels`)::

    sluis_gateway_requests_total{gateway,service,peer,status}    status: 2xx, 4xx, 5xx, ...
    sluis_gateway_fsc_errors_total{gateway,code}                 Fsc-Error-Code of the answer
    sluis_gateway_request_duration_seconds{gateway,service}      head in to last byte out
    sluis_gateway_upstream_duration_seconds{gateway,service}     request out to answer's head in
    sluis_gateway_received_bytes_total{gateway,service}          request bodies
    sluis_gateway_sent_bytes_total{gateway,service}              answer bodies
    sluis_open_connections                                       client connections (livesum)
    sluis_outway_token_lookups_total                             access tokens asked of the cache
    sluis_outway_token_fetches_total{result}                     asked of the Manager: ok, failed

The labelled children are kept per label tuple, so that a request costs a dictionary lookup
and a few increments of memory-mapped values, not prometheus-client's label handling.
"""

from __future__ import annotations

import re

from appliance.metrics.client import Counter, Gauge, Histogram
from appliance.metrics.labels import PEER_ID, Bounded, status_class

# Bounds per worker process. A Group rarely has more peers, an inway or outway more services;
# beyond them the figures stay right in total, under ``other``.
PEER_LIMIT = 500
SERVICE_LIMIT = 500
CODE_LIMIT = 64
_SERVICE = re.compile(r"[a-zA-Z0-9._-]{1,100}")  # appliance.forwarding.settings.SERVICE_NAME
_CODE = re.compile(r"ERROR_CODE_[A-Z0-9_]{1,64}")

# From 1 ms (a cached answer next door) to 60 s (the default read timeout).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "sluis_gateway_requests",
    "Requests answered, by Service, peer and status class.",
    ["gateway", "service", "peer", "status"],
)
FSC_ERRORS = Counter(
    "sluis_gateway_fsc_errors",
    "Answers with an Fsc-Error-Code header, by code (the gateway's own or passed on).",
    ["gateway", "code"],
)
DURATION = Histogram(
    "sluis_gateway_request_duration_seconds",
    "Time from the request's arrival to the answer's last byte.",
    ["gateway", "service"],
    buckets=DURATION_BUCKETS,
)
UPSTREAM = Histogram(
    "sluis_gateway_upstream_duration_seconds",
    "Time from sending the request to the next hop (inway or backend) to its answer's head.",
    ["gateway", "service"],
    buckets=DURATION_BUCKETS,
)
RECEIVED = Counter(
    "sluis_gateway_received_bytes",
    "Request body bytes received and forwarded.",
    ["gateway", "service"],
)
SENT = Counter("sluis_gateway_sent_bytes", "Answer body bytes sent.", ["gateway", "service"])
CONNECTIONS = Gauge(
    "sluis_open_connections", "Open client connections.", multiprocess_mode="livesum"
)
TOKEN_LOOKUPS = Counter(
    "sluis_outway_token_lookups", "Access tokens the outway's requests asked its cache for."
)
TOKEN_FETCHES = Counter(
    "sluis_outway_token_fetches",
    "Access tokens the outway asked a Manager for (a cache miss or a refresh).",
    ["result"],
)


class GatewayMetrics:
    """One gateway's recorder (one per worker)."""

    def __init__(self, gateway: str) -> None:
        self._gateway = gateway
        self._peer = Bounded(PEER_ID, PEER_LIMIT)
        self._service = Bounded(_SERVICE, SERVICE_LIMIT)
        self._code = Bounded(_CODE, CODE_LIMIT)
        self._requests: dict[tuple[str | None, str | None, int], Counter] = {}
        self._per_service: dict[str | None, tuple[Histogram, Histogram, Counter, Counter]] = {}
        self._codes: dict[str, Counter] = {}

    def record(
        self,
        *,
        service: str | None,
        peer: str | None,
        status: int,
        code: str | None,
        duration: float,
        upstream: float | None,
        received: int,
        sent: int,
    ) -> None:
        key = (service, peer, status)
        requests = self._requests.get(key)
        if requests is None:
            requests = REQUESTS.labels(
                self._gateway, self._service(service), self._peer(peer), status_class(status)
            )
            if len(self._requests) < 4 * PEER_LIMIT:  # raw keys: hostile values stay uncached
                self._requests[key] = requests
        requests.inc()
        children = self._per_service.get(service)
        if children is None:
            label = self._service(service)
            children = (
                DURATION.labels(self._gateway, label),
                UPSTREAM.labels(self._gateway, label),
                RECEIVED.labels(self._gateway, label),
                SENT.labels(self._gateway, label),
            )
            if len(self._per_service) < 2 * SERVICE_LIMIT:
                self._per_service[service] = children
        duration_h, upstream_h, received_c, sent_c = children
        duration_h.observe(duration)
        if upstream is not None:
            upstream_h.observe(upstream)
        if received:
            received_c.inc(received)
        if sent:
            sent_c.inc(sent)
        if code is not None:
            errors = self._codes.get(code)
            if errors is None:
                errors = FSC_ERRORS.labels(self._gateway, self._code(code))
                if len(self._codes) < 4 * CODE_LIMIT:
                    self._codes[code] = errors
            errors.inc()
