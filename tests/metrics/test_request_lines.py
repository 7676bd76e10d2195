"""One JSON line per request on stdout: who, what, how it went, and never the path or query."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from inway.inwaytest import OIN_PEER as PEER_ID
from inway.inwaytest import SERVICE, TRANSACTION, EchoBackend, fsc_headers, inway, token

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
PERSONAL = "999993653"  # a (test) BSN in the path and the query


@pytest.fixture
def echo() -> Iterator[EchoBackend]:
    backend = EchoBackend()
    yield backend
    backend.stop()


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_line_per_request_with_the_trace_id_and_nothing_of_the_path(
    echo: EchoBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    with inway({SERVICE: echo.url + "/api/"}) as gw:
        capsys.readouterr()
        answered = gw.request(
            "GET",
            f"/persons/{PERSONAL}",
            query_string=f"bsn={PERSONAL}",
            headers={**fsc_headers(token()), "traceparent": TRACEPARENT},
        )
        refused = gw.request("GET", f"/persons/{PERSONAL}", headers={})
    assert answered.status_code == 200
    assert refused.status_code == 401
    out = capsys.readouterr().out
    assert PERSONAL not in out
    ok, bad = lines(out)
    assert ok.pop("ts").endswith("+00:00")
    assert ok.pop("duration_ms") > 0
    assert ok.pop("upstream_ms") > 0
    assert ok == {
        "gateway": "inway",
        "transaction_id": TRANSACTION,
        "service": SERVICE,
        "peer": PEER_ID,
        "status": 200,
        "fsc_error_code": None,
        "bytes_in": 0,
        "bytes_out": len(answered.content),
        "trace_id": TRACE,
    }
    assert (bad["status"], bad["fsc_error_code"]) == (401, "ERROR_CODE_ACCESS_TOKEN_MISSING")
    assert (bad["service"], bad["transaction_id"], bad["trace_id"]) == (None, None, None)
    # The trace context goes on to the service.
    (seen,) = echo.state.seen()
    assert ("traceparent", TRACEPARENT) in [(k.lower(), v) for k, v in seen.headers]


def test_an_invalid_traceparent_gives_no_trace_id(
    echo: EchoBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    with inway({SERVICE: echo.url + "/api/"}) as gw:
        capsys.readouterr()
        gw.request("GET", "/x", headers={**fsc_headers(token()), "traceparent": "00-zz-yy-01"})
    (line,) = lines(capsys.readouterr().out)
    assert line["trace_id"] is None
