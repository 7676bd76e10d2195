"""Faults under load against real processes (issue 16), the quick part; bench/faults.py runs
the same faults longer and prints the table.

One Group (tests/faults/faultgroup.py): SoftHSM tokens, Managers, B's inway and A's outway
with two gunicorn workers each, two backend services, a durable SQLite log at both gateways.
Each test drives 50 requests a second through the outway, injects one fault for a few
seconds, lets the load run on, and reconciles both transaction logs with what the
application was answered. For every fault:

- no 2xx without a record at both ends, no record twice, no transaction at a backend twice,
  every answer with the request's own ``Fsc-Transaction-Id`` (``_assert_invariant``);
- what the product promises today for that fault (docs/outway.md, docs/inway.md,
  docs/txlog.md, docs/configuration.md), asserted in the fault's test;
- what issue 16 wants and the product does not do yet: a test of its own, marked xfail
  (strict=False) until the fix lands.

The table of all faults is printed in pytest's terminal summary (tests/faults/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultgroup import (
    LOADED,
    OTHER,
    QUICK,
    REPORTED,
    FaultGroup,
    FaultResult,
    faults,
    run_fault,
)

pytestmark = pytest.mark.slow

# Refusals of a request that was not forwarded: the log record could not be written (fail
# closed, docs/txlog.md), or the service's share of the gateway's connections is full
# (appliance/forwarding/limits.py, 503 with Retry-After).
REFUSED = {"500 TRANSACTION_LOG_WRITE_ERROR", "503 ERROR_CODE_SERVICE_BUSY"}
# Seconds, generous for a shared 2-core machine (a load average of 15 from other test runs is
# common): the faults' own delays are 5 s and more (pool waits, timeouts, a worker's boot).
SOON = 2.0  # "recovered at once"
UNDISTURBED = 2.0  # "not slowed down": the slowest request of an unfaulted service
FAULTS = {fault.name: fault for fault in faults(QUICK.kill_every)}
RESULTS: dict[str, FaultResult] = {}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultGroup]:
    with FaultGroup.running(tmp_path_factory.mktemp("faults")) as running:
        yield running


def _run(group: FaultGroup, name: str) -> FaultResult:
    result = run_fault(group, FAULTS[name], QUICK)
    RESULTS[name] = result
    REPORTED.append(result)  # the table at the end (conftest.py)
    print(result.row())
    _assert_invariant(result)
    return result


def _result(name: str) -> FaultResult:
    if name not in RESULTS:
        pytest.skip(f"the {name} run did not happen")
    return RESULTS[name]


def _assert_invariant(result: FaultResult) -> None:
    assert result.sent > 0
    assert result.unlogged == [], "2xx without a record at both ends"
    assert result.duplicated == [], "a record or a backend request twice"
    assert result.misechoed == [], "an answer with another transaction id"


def _in_flight_at_a_kill(result: FaultResult) -> list[str]:
    """Failures of requests that were not in flight when a worker was killed."""
    return [
        f"{o.failure} {o.began:.3f}-{o.ended:.3f}"
        for o in result.failed()
        if not any(o.began <= kill <= o.ended for kill in result.window.kills)
    ]


# -- workers killed ------------------------------------------------------------------------------

INWAY_WORKER_SUPERVISION = pytest.mark.xfail(
    strict=False,
    reason="issue 16, a killed inway worker: the stall (up to 12 s, 503 SERVICE_BUSY in five "
    "quick runs of seven) was a handshake storm in the outway's pool, now capped at 2 TLS "
    "handshakes per inway (31e71d2): 6 kills since, at most 1 request failed, in flight; "
    "kept xfail until more runs show it holds on a loaded machine",
)


def _broken_only_in_flight(result: FaultResult) -> list[str]:
    """Answers cut without a status or mid-body (the worker died while it answered): such a
    request was in hand at the killed worker, so it may fail; any other may not."""
    return [
        f"{o.failure} {o.began:.3f}-{o.ended:.3f}"
        for o in result.failed()
        if not o.failure.startswith(("502 ", "503 "))
        and not any(o.began <= kill <= o.ended for kill in result.window.kills)
    ]


OUTWAY_WORKER_SUPERVISION = pytest.mark.xfail(
    strict=False,
    reason="issue 16 item worker supervision, in progress: in the bench (a kill every 5 s) "
    "the surviving outway worker stalled for 21 s after a kill (706 of 1,502 failed, mostly "
    "503 SERVICE_BUSY); two quick runs of seven lost only requests in flight, the others none",
)


def test_kill_inway_worker(group: FaultGroup) -> None:
    """The refusals are the documented ones (502 INWAY_UNREACHABLE for a request whose
    outcome is unknown: never executed twice; 503 SERVICE_BUSY), and gunicorn starts a new
    worker."""
    result = _run(group, "kill-inway-worker")
    assert {o.failure for o in result.failed() if o.failure.startswith(("502 ", "503 "))} <= {
        "502 ERROR_CODE_INWAY_UNREACHABLE",
        "503 ERROR_CODE_SERVICE_BUSY",
    }
    assert _broken_only_in_flight(result) == []
    assert result.workers_after["inway"] == 2


@INWAY_WORKER_SUPERVISION
def test_kill_inway_worker_costs_only_the_requests_in_flight(group: FaultGroup) -> None:
    """Issue 16: a killed worker costs no idempotent GET but those it had in hand (those
    cannot be answered: the outway never sends a request again once it may have reached the
    inway, docs/outway.md); a pooled connection to the dead worker is not used, and the other
    worker serves everything else without delay."""
    result = _result("kill-inway-worker")
    assert _in_flight_at_a_kill(result) == []
    assert "503 ERROR_CODE_SERVICE_BUSY" not in {o.failure for o in result.failed()}
    assert result.recovery() is not None
    assert (result.recovery() or 0.0) < SOON


def test_kill_outway_worker(group: FaultGroup) -> None:
    """The failures are broken connections (no answer) or the documented refusals, and
    gunicorn starts a new worker."""
    result = _run(group, "kill-outway-worker")
    assert {o.failure for o in result.failed() if o.status} <= {
        "502 ERROR_CODE_INWAY_UNREACHABLE",
        "503 ERROR_CODE_SERVICE_BUSY",
    }
    assert result.workers_after["outway"] == 2


@OUTWAY_WORKER_SUPERVISION
def test_kill_outway_worker_costs_only_the_requests_in_flight(group: FaultGroup) -> None:
    """Issue 16: only the application's connections to the killed worker break; the other
    worker serves the rest at once."""
    result = _result("kill-outway-worker")
    assert _in_flight_at_a_kill(result) == []
    assert all(o.status == 0 for o in result.failed())
    assert result.recovery() is not None
    assert (result.recovery() or 0.0) < SOON


# -- the provider's Manager ----------------------------------------------------------------------


def test_kill_manager(group: FaultGroup) -> None:
    """docs/outway.md, 'When a Manager is down': a token in hand is used until it expires;
    a Manager that refuses connections during the refresh window costs no request for want
    of a token. Anything else refused is a documented refusal."""
    result = _run(group, "kill-manager")
    assert {o.failure for o in result.failed()} <= {
        "502 ERROR_CODE_INWAY_UNREACHABLE",
        "503 ERROR_CODE_SERVICE_BUSY",
    }


@pytest.mark.xfail(
    strict=False,
    reason="issue 16 items Manager outage and worker supervision, in progress: in one quick "
    "run of seven, 6 requests were refused 503 SERVICE_BUSY while the restarted Manager booted "
    "on B's token (B's inway stalled, as when a worker is replaced); none for want of a token",
)
def test_kill_manager_costs_nothing(group: FaultGroup) -> None:
    """Issue 16: during a Manager outage with a valid cached token, and its restart: 0
    failed."""
    result = _result("kill-manager")
    assert result.failures() == {}


def test_hang_manager(group: FaultGroup) -> None:
    """The same for a Manager that hangs (SIGSTOP) during the refresh window."""
    result = _run(group, "hang-manager")
    assert result.failures() == {}


# -- the inway's transaction log -----------------------------------------------------------------


def test_lock_inway_log(group: FaultGroup) -> None:
    """docs/txlog.md: fail closed. A record that cannot be written (the lock outlasts the
    busy timeout) refuses its request with TRANSACTION_LOG_WRITE_ERROR and forwards nothing;
    nothing else fails, and requests succeed once the lock is gone."""
    result = _run(group, "lock-inway-log")
    assert {o.failure for o in result.failed()} <= REFUSED
    assert "500 TRANSACTION_LOG_WRITE_ERROR" in {o.failure for o in result.failed()}
    assert result.recovery() is not None
    assert (result.recovery() or 0.0) < 5.0


# -- backends ------------------------------------------------------------------------------------


def test_hang_backend(group: FaultGroup) -> None:
    """A backend that hangs delays its own service's requests (released at the end, within
    the inway's read timeout: they succeed late), or they are refused when the service's
    share is full."""
    result = _run(group, "hang-backend")
    assert {o.failure for o in result.failed(OTHER)} <= {
        "502 ERROR_CODE_SERVICE_UNREACHABLE",
        "503 ERROR_CODE_SERVICE_BUSY",
    }
    assert result.slowest(OTHER) >= QUICK.fault * 0.5  # the fault did hold requests


@pytest.mark.xfail(
    strict=False,
    reason="issue 16 item per-service isolation, in progress: on the current tree a "
    "request of the loaded service took more than a second in two quick runs of seven "
    "(5.3 s in one)",
)
def test_hang_backend_leaves_the_other_service_alone(group: FaultGroup) -> None:
    """Issue 16, per-service isolation: the loaded service neither fails nor slows down
    while another service's backend hangs."""
    result = _result("hang-backend")
    assert result.failed(LOADED) == []
    assert result.slowest(LOADED) < UNDISTURBED


def test_dead_backend(group: FaultGroup) -> None:
    """A backend that refuses connections: its requests are 502 SERVICE_UNREACHABLE at once,
    and succeed again as soon as it listens."""
    result = _run(group, "dead-backend")
    assert {o.failure for o in result.failed()} == {"502 ERROR_CODE_SERVICE_UNREACHABLE"}
    assert {o.service for o in result.failed()} == {OTHER}
    assert max(o.seconds for o in result.failed()) < 3.0  # refused, not timed out
    assert result.recovery() is not None
    assert (result.recovery() or 0.0) < SOON


def test_dead_backend_leaves_the_other_service_alone(group: FaultGroup) -> None:
    """Issue 16, per-service isolation: not one request of the loaded service fails."""
    result = _result("dead-backend")
    assert result.failed(LOADED) == []
    assert result.slowest(LOADED) < UNDISTURBED


# -- slow clients --------------------------------------------------------------------------------


def test_slow_clients_on_the_outway(group: FaultGroup) -> None:
    """docs/configuration.md ([http] limits): 1,000 clients sending their heads a byte a
    second cost normal clients nothing."""
    result = _run(group, "slow-clients")
    print(result.slow_client_answers)
    assert result.failures() == {}
    assert '"connections"' in result.slow_client_answers
