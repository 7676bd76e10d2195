"""``/metrics``: certificate and CRL expiry, then the process metrics, in the Prometheus text
format (version 0.0.4).

The process metrics are prometheus-client's, summed over every gunicorn worker of the
component (:mod:`appliance.metrics.registry`): the data path's (:mod:`.datapath`) on the
gateways. docs/monitoring.md lists every series.

The manager, inway and outway mount it with :func:`mount_metrics`; the controller serves it on
its management listener only (:func:`serve_on_management_only`). Every scrape reads the files
behind ``[tls]`` again (a few certificates and CRLs: microseconds), so every gunicorn worker
answers the same and a renewal or a new CRL shows at the next scrape.

Series (one per certificate of the live chain and the trust anchors, one per CRL of the bundle)::

    sluis_certificate_not_after_timestamp_seconds{role,subject,serial}
    sluis_certificate_expiry_days{role,subject,serial}       negative once expired
    sluis_crl_next_update_timestamp_seconds{issuer,crl_number}
    sluis_crl_expiry_days{issuer,crl_number}                 negative once stale
    sluis_crl_stale{issuer,crl_number}                       1: peers of that CA are refused
    sluis_expiry_read_errors                                 files that could not be read
    sluis_ready                                              1: /health/ready answers 200
    sluis_ready_check{check}                                 1: that readiness check passes

The health endpoints (:mod:`.health`) are answered the same way. The endpoints answer only
for requests that carry neither ``Fsc-Authorization``
nor ``Fsc-Grant-Hash``: a request meant for a Service (through the inway or the outway) is
proxied as before, whatever its path. On the inway and the Manager only peers of the Group
reach it (mutual TLS); it shows nothing that their certificates do not already show.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from appliance.config import TlsSettings
from appliance.metrics.registry import exposition
from appliance.pki.expiry import ExpiryItem, collect

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from appliance.metrics.health import Readiness

# Not imported at the top: gunicorn's master imports this package (gunicorn_conf, registry)
# before it names PROMETHEUS_MULTIPROC_DIR, and the health checks import prometheus-client
# (the HSM's figures); imported there, it would count in each process, never in the files.
LIVE_PATH = "/health/live"  # appliance.metrics.health's, checked by tests/metrics
READY_PATH = "/health/ready"

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ROUTING_HEADERS = ("FSC-AUTHORIZATION", "FSC-GRANT-HASH")
_PATHS = frozenset({PATH, LIVE_PATH, READY_PATH})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_label(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(round(value, 3)) if value != int(value) else str(int(value))


def render(tls: TlsSettings, now: datetime | None = None) -> str:
    """The metrics text for the files of ``tls``."""
    now = now or datetime.now(UTC)
    report = collect(tls)
    certs = [item for item in report.items if item.kind == "certificate"]
    crls = [item for item in report.items if item.kind == "crl"]
    lines: list[str] = []

    def family(name: str, help_text: str, rows: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in rows)

    def cert_labels(item: ExpiryItem) -> str:
        return _labels(role=item.role, subject=item.name, serial=item.serial)

    def crl_labels(item: ExpiryItem) -> str:
        return _labels(issuer=item.name, crl_number=item.serial)

    def at(item: ExpiryItem) -> float:
        return item.expires.timestamp() if item.expires else 0.0

    def days(item: ExpiryItem) -> float:
        left = item.days_left(now)
        return left if left is not None else -1.0

    family(
        "sluis_certificate_not_after_timestamp_seconds",
        "notAfter of a certificate of the live organisation chain or a trust anchor.",
        [(cert_labels(item), at(item)) for item in certs],
    )
    family(
        "sluis_certificate_expiry_days",
        "Days until the certificate expires (negative: expired).",
        [(cert_labels(item), days(item)) for item in certs],
    )
    family(
        "sluis_crl_next_update_timestamp_seconds",
        "nextUpdate of a CRL the appliance checks peers against (0: none).",
        [(crl_labels(item), at(item)) for item in crls],
    )
    family(
        "sluis_crl_expiry_days",
        "Days until the CRL is stale (negative: stale, its peers are refused).",
        [(crl_labels(item), days(item)) for item in crls],
    )
    family(
        "sluis_crl_stale",
        "1 when the CRL is past its nextUpdate: handshakes of peers it covers fail (fail closed).",
        [(crl_labels(item), 1.0 if days(item) <= 0 else 0.0) for item in crls],
    )
    family(
        "sluis_expiry_read_errors",
        "Files behind [tls] (chain, trust anchors, CRL bundle) that could not be read.",
        [("", float(len(report.problems)))],
    )
    return "\n".join(lines) + "\n"


def readiness_text(ready: bool, body: dict[str, Any]) -> bytes:
    """``sluis_ready`` and ``sluis_ready_check{check}`` (1 or 0): /health/ready as series."""
    lines = [
        "# HELP sluis_ready 1 when GET /health/ready answers 200 (every check passes).",
        "# TYPE sluis_ready gauge",
        f"sluis_ready {int(ready)}",
        "# HELP sluis_ready_check 1 when the readiness check passes (certificate, crls, hsm, ...).",
        "# TYPE sluis_ready_check gauge",
    ]
    lines += [
        f"sluis_ready_check{_labels(check=name)} {int(bool(check['ok']))}"
        for name, check in sorted(body["checks"].items())
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


class MetricsMiddleware:
    """Answers ``GET /metrics``, ``/health/live`` and ``/health/ready`` before routing (the
    gateways route every path to their sink)."""

    def __init__(
        self, tls: TlsSettings, readiness: Readiness, collectors: Sequence[Collector] = ()
    ) -> None:
        self._tls = tls
        self._readiness = readiness
        self._collectors = tuple(collectors)

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        path = req.path
        if path not in _PATHS or req.method not in ("GET", "HEAD"):
            return
        if any(req.get_header(name) is not None for name in _ROUTING_HEADERS):
            return
        if path == PATH:
            resp.content_type = CONTENT_TYPE
            ready, body = await self._readiness.report()
            resp.data = (
                render(self._tls).encode("utf-8")
                + readiness_text(ready, body)
                + exposition(self._collectors)
            )
        elif path == LIVE_PATH:
            from appliance.metrics.health import live_body

            resp.content_type = falcon.MEDIA_JSON
            resp.data = live_body()
        else:
            from appliance.metrics.health import ready_body

            ready, body = await self._readiness.report()
            resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
            resp.content_type = falcon.MEDIA_JSON
            resp.data = ready_body(body)
        resp.complete = True


def mount_metrics(
    app: Any,
    tls: TlsSettings,
    readiness: Readiness | None = None,
    collectors: Sequence[Collector] = (),
) -> None:
    """Add ``/metrics`` and the health endpoints to a Falcon ASGI app (before its first
    request); ``readiness``: the component's checks (default: its certificates and CRLs);
    ``collectors``: figures read at each scrape (:mod:`.collectors`)."""
    from appliance.metrics.health import Readiness, tls_checks

    global _mounted
    readiness = readiness or Readiness(tls_checks(tls))
    _mounted = MetricsMiddleware(tls, readiness, collectors)
    app.add_middleware(_mounted)


def serve_on_management_only(
    tls: TlsSettings, readiness: Readiness, collectors: Sequence[Collector] = ()
) -> None:
    """The endpoints for this process's management listener alone, not on its app: the
    controller's, whose own listener is HTTPS without client certificates on the internal
    network, where counts are not for everyone who can reach the login page."""
    global _mounted
    _mounted = MetricsMiddleware(tls, readiness, collectors)


# The one app of this worker process mounts it; the management listener answers with it too.
_mounted: MetricsMiddleware | None = None


def mounted() -> MetricsMiddleware | None:
    """The endpoints :func:`mount_metrics` added to this process's app (None: not yet)."""
    return _mounted
