"""Readiness: every check named in the answer, 503 when one fails, a slow or broken check a
failed one; liveness asks nothing. The endpoints of the real components:
tests/metrics/test_metrics_under_gunicorn.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import falcon
import falcon.asgi
import falcon.testing

from appliance.metrics import mount_metrics
from appliance.metrics.health import (
    CHECK_TIMEOUT,
    Check,
    Readiness,
    log_check,
    reachable_check,
    sqlite_file,
)
from appliance.serving.app import create_base_app
from appliance.serving.fsc_errors import ErrorDomain


def run_check(check: Check) -> str | None:
    return asyncio.run(Readiness([check]).report())[1]["checks"][check.name]["detail"]


def passing(name: str) -> Check:
    async def ok() -> str | None:
        return None

    return Check(name, ok, "fine")


def failing(name: str, why: str) -> Check:
    async def bad() -> str | None:
        return why

    return Check(name, bad, "fine")


def client(readiness: Readiness, tls_settings: object = None) -> falcon.testing.TestClient:
    app = create_base_app(ErrorDomain.OUTWAY, require_peer=False)
    mount_metrics(app, tls_settings, readiness)  # type: ignore[arg-type]
    return falcon.testing.TestClient(app)


def test_ready_when_every_check_passes_else_503_naming_the_failing_one() -> None:
    good = client(Readiness([passing("a"), passing("b")]))
    answer = good.simulate_get("/health/ready")
    assert answer.status_code == 200
    assert answer.json == {
        "status": "ready",
        "checks": {"a": {"ok": True, "detail": "fine"}, "b": {"ok": True, "detail": "fine"}},
    }
    bad = client(Readiness([passing("a"), failing("b", "the disk is full")]))
    answer = bad.simulate_get("/health/ready")
    assert answer.status_code == 503
    assert answer.json["status"] == "not ready"
    assert answer.json["checks"]["b"] == {"ok": False, "detail": "the disk is full"}
    assert answer.headers["content-type"] == "application/json"


def test_live_asks_no_check() -> None:
    answer = client(Readiness([failing("a", "down")])).simulate_get("/health/live")
    assert answer.status_code == 200
    assert answer.json["status"] == "live"


def test_routing_headers_mean_the_request_is_for_a_service() -> None:
    answer = client(Readiness([])).simulate_get("/health/ready", headers={"Fsc-Grant-Hash": "$1$x"})
    assert answer.status_code == 404  # the bare app has no sink: it was not answered as health


def test_a_broken_or_slow_check_fails_instead_of_answering_500() -> None:
    async def broken() -> str | None:
        raise RuntimeError("no such token")

    async def slow() -> str | None:
        await asyncio.sleep(CHECK_TIMEOUT + 5)
        return None

    assert run_check(Check("hsm", broken, "fine")) == "RuntimeError: no such token"
    assert run_check(Check("slow", slow, "fine")) == f"no result within {CHECK_TIMEOUT:g} s"


def test_results_are_kept_for_a_moment() -> None:
    calls = []

    async def counted() -> str | None:
        calls.append(1)
        return None

    readiness = Readiness([Check("c", counted, "fine")], cache_seconds=60)

    async def twice() -> None:
        await readiness.report()
        await readiness.report()

    asyncio.run(twice())
    assert len(calls) == 1


def test_the_log_check(tmp_path: Path) -> None:
    database = tmp_path / "txlog.db"
    database.write_bytes(b"")
    assert run_check(log_check(lambda: False, database)) == "writes succeed"
    assert "requests are refused" in (run_check(log_check(lambda: True, database)) or "")
    gone = tmp_path / "gone" / "txlog.db"  # (chmod would not stop root)
    assert run_check(log_check(lambda: False, gone)) == f"{gone.parent} is not writable"
    assert sqlite_file(f"sqlite:///{database}") == database
    assert sqlite_file("postgresql://db/txlog") is None


def test_the_reachability_check() -> None:
    async def scenario() -> tuple[str | None, str | None, int]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        up = await reachable_check("manager", "127.0.0.1", port).run()
        server.close()
        await server.wait_closed()
        down = await reachable_check("manager", "127.0.0.1", port).run()
        return up, down, port

    up, down, port = asyncio.run(scenario())
    assert up is None
    assert down is not None
    assert down.startswith(f"127.0.0.1:{port}: ")


def test_body_is_small_json() -> None:
    answer = client(Readiness([passing("a")])).simulate_get("/health/ready")
    assert len(answer.content) < 200
    json.loads(answer.content)
