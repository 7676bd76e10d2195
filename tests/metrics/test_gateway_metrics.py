"""The data path's metrics, recorded by the inway app (in this process, one registry).

The sums over gunicorn's workers are tests/metrics/test_metrics_under_gunicorn.py's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from inway.inwaytest import OIN_PEER as PEER_ID
from inway.inwaytest import SERVICE, TRANSACTION, EchoBackend, fsc_headers, inway, token
from prometheus_client import REGISTRY

from appliance.metrics.datapath import PEER_LIMIT, GatewayMetrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def series(name: str) -> int:
    return sum(1 for family in REGISTRY.collect() for s in family.samples if s.name == name)


@pytest.fixture
def echo() -> Iterator[EchoBackend]:
    backend = EchoBackend()
    yield backend
    backend.stop()


def test_a_forwarded_and_a_refused_request_are_counted(echo: EchoBackend) -> None:
    ok = {"gateway": "inway", "service": SERVICE, "peer": PEER_ID, "status": "2xx"}
    refused = {"gateway": "inway", "service": "-", "peer": PEER_ID, "status": "4xx"}
    code = {"gateway": "inway", "code": "ERROR_CODE_ACCESS_TOKEN_MISSING"}
    per_service = {"gateway": "inway", "service": SERVICE}

    def figures() -> list[float]:
        return [
            value("sluis_gateway_requests_total", **ok),
            value("sluis_gateway_requests_total", **refused),
            value("sluis_gateway_fsc_errors_total", **code),
            value("sluis_gateway_request_duration_seconds_count", **per_service),
            value("sluis_gateway_upstream_duration_seconds_count", **per_service),
            value("sluis_gateway_received_bytes_total", **per_service),
            value("sluis_gateway_sent_bytes_total", **per_service),
        ]

    before = figures()
    with inway({SERVICE: echo.url + "/api/"}) as gw:
        answered = gw.request("POST", "/echo", headers=fsc_headers(token()), body=b"x" * 1000)
        assert answered.status_code == 200, answered.text
        missing = gw.request("GET", "/persons/1", headers={"Fsc-Transaction-Id": TRANSACTION})
        assert missing.status_code == 401
        assert missing.headers["fsc-error-code"] == code["code"]
    deltas = [a - b for a, b in zip(figures(), before, strict=True)]
    assert deltas[:5] == [1, 1, 1, 1, 1]
    assert deltas[5] == 1000
    assert deltas[6] == len(answered.content) > 0


def test_hostile_label_values_make_a_bounded_number_of_series() -> None:
    metrics = GatewayMetrics("test-hostile")

    def hostile_requests(count: int) -> None:
        for n in range(count):
            metrics.record(
                service=f"svc-{n}",
                peer=f"{n:020d}",
                status=200 + n % 400,
                code=f"ERROR_CODE_X{n}",
                duration=0.001,
                upstream=None,
                received=0,
                sent=0,
            )

    hostile_requests(3 * PEER_LIMIT)
    counts = [
        series("sluis_gateway_requests_total"),
        series("sluis_gateway_fsc_errors_total"),
        series("sluis_gateway_request_duration_seconds_count"),
    ]
    hostile_requests(3 * PEER_LIMIT)  # as many again: no new series
    assert [
        series("sluis_gateway_requests_total"),
        series("sluis_gateway_fsc_errors_total"),
        series("sluis_gateway_request_duration_seconds_count"),
    ] == counts
    # Every one was counted all the same, past the bounds under "other".
    total = sum(
        s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == "sluis_gateway_requests_total" and s.labels["gateway"] == "test-hostile"
    )
    assert total == 6 * PEER_LIMIT
    assert (
        value(
            "sluis_gateway_requests_total",
            gateway="test-hostile",
            service="other",
            peer="other",
            status="5xx",
        )
        > 0
    )
