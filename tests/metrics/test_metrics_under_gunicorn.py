"""The metrics of a real chain under gunicorn, two workers per gateway: the counts of every
worker add up in each scrape, whichever worker answers it.

A Group (directory, a, b) as tests/gateway's chain tests make it; a's outway and b's inway
run ``sluis serve`` with two workers each. The outway's sample directory is named through
``PROMETHEUS_MULTIPROC_DIR`` (as a systemd unit would), with a stale file of an earlier run
in it; the inway's is the master's own.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
from gateway.chaintest import echo_group, group_plans, publish_and_connect

from appliance.demo.group import start_managers, stop_managers
from appliance.demo.processes import Component, start_component
from appliance.metrics.collectors import SAMPLE_SECONDS
from appliance.metrics.health import CACHE_SECONDS

pytestmark = pytest.mark.slow

SERVICE = "metrics-echo"
OINS = ("00000001000000000911", "00000001000000000912", "00000001000000000913")
OK_REQUESTS = 60
REFUSED_REQUESTS = 20
GRANT_NOT_FOUND = "ERROR_CODE_GRANT_NOT_FOUND"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("metrics-chain")
    started = time.time()
    members, backend, gateways = echo_group(
        root, group_plans(OINS, "metrics.test"), "metrics.test", SERVICE
    )
    samples = root / "outway-samples"
    samples.mkdir()
    (samples / "counter_1.db").write_bytes(b"stale")  # an earlier run's: removed at start
    components: list[Component] = []
    try:
        start_managers(members, root / "logs", workers=1)
        connection = publish_and_connect(members, SERVICE)
        grant = members["a"].sluis("contract", "show", connection)["grant_hashes"][0]
        for name, member, component, port, env in (
            ("inway-b", members["b"], "inway", gateways.inway_port, {}),
            (
                "outway-a",
                members["a"],
                "outway",
                gateways.outway_port,
                {"PROMETHEUS_MULTIPROC_DIR": str(samples)},
            ),
        ):
            components.append(
                start_component(
                    name,
                    member.config_path,
                    component,
                    port=port,
                    workers=2,
                    log_dir=root / "logs",
                    env=env,
                )
            )
        yield {
            "grant": grant,
            "port": gateways.outway_port,
            "outway": components[1],
            "samples": samples,
            "service_peer": OINS[2],
            "manager": members["a"].manager,
            "started": started,
        }
    finally:
        for component in components:
            component.stop()
        stop_managers(members)
        backend.stop()


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _scrape(port: int) -> dict[str, float]:
    status, body = _get(port, "/metrics", {})
    assert status == 200
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match and not line.startswith("#"):
            found[match[1]] = float(match[2])
    return found


def _workers(component: Component) -> list[psutil.Process]:
    return psutil.Process(component.process.pid).children()


def test_the_counts_of_both_workers_add_up(chain: dict[str, Any]) -> None:
    port, grant = chain["port"], chain["grant"]
    assert not (chain["samples"] / "counter_1.db").exists()

    def ok(_: int) -> int:
        return _get(port, "/api/echo", {"Fsc-Grant-Hash": grant})[0]

    def refused(_: int) -> int:
        return _get(port, "/api/echo", {"Fsc-Grant-Hash": "$1$" + "A" * 43})[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(ok, range(OK_REQUESTS)))
        statuses += list(pool.map(refused, range(REFUSED_REQUESTS)))
    assert statuses.count(200) == OK_REQUESTS, statuses

    # Both workers served (each has its own sample files), and every scrape, whichever worker
    # answers it, shows the sum of both.
    pids = {
        int(m[1]) for f in chain["samples"].iterdir() if (m := re.search(r"_(\d+)\.db$", f.name))
    }
    assert {w.pid for w in _workers(chain["outway"])} <= pids
    peer = chain["service_peer"]
    served = (
        "sluis_gateway_requests_total"
        f'{{gateway="outway",peer="{peer}",service="{SERVICE}",status="2xx"}}'
    )
    refusals = f'sluis_gateway_fsc_errors_total{{code="{GRANT_NOT_FOUND}",gateway="outway"}}'
    durations = (
        f'sluis_gateway_upstream_duration_seconds_count{{gateway="outway",service="{SERVICE}"}}'
    )
    # The outway's pool to b's inway: every forwarded request took a new connection or a
    # kept-alive one (the refused ones went nowhere); all are back in the pool now.
    opened = f'sluis_upstream_connections_opened_total{{peer="{peer}"}}'
    reused = f'sluis_upstream_connections_reused_total{{peer="{peer}"}}'
    # Its token fetches reached b's Manager (the peer its certificate names).
    contact = f'sluis_manager_peer_last_contact_timestamp_seconds{{peer="{peer}"}}'
    for _ in range(6):
        scraped = _scrape(port)
        assert scraped[served] == OK_REQUESTS
        assert scraped[refusals] == REFUSED_REQUESTS
        assert scraped[durations] == OK_REQUESTS
        assert scraped["sluis_outway_token_lookups_total"] == OK_REQUESTS
        assert scraped['sluis_outway_token_fetches_total{result="ok"}'] >= 1
        assert scraped[opened] + scraped[reused] == OK_REQUESTS
        assert scraped[opened] >= 1
        assert scraped[reused] >= 1  # 60 requests, 8 at once: kept-alive connections serve
        assert scraped[f'sluis_upstream_connections{{peer="{peer}",state="in_use"}}'] == 0
        assert scraped[f'sluis_upstream_connections{{peer="{peer}",state="idle"}}'] >= 1
        assert chain["started"] <= scraped[contact] <= time.time()


def test_host_and_transaction_log_figures(chain: dict[str, Any]) -> None:
    time.sleep(SAMPLE_SECONDS + 1)  # every worker has copied its writer's figures
    # (before the next test kills one: a killed worker's last seconds of them are lost)
    scraped = _scrape(chain["port"])
    assert scraped["sluis_workers"] == 2
    assert scraped["sluis_open_files"] > 10
    assert scraped['sluis_worker_resident_memory_bytes{stat="max"}'] > 10e6
    assert any(k.startswith("sluis_disk_free_bytes{") and v > 0 for k, v in scraped.items())
    # Every forwarded request was logged first; refused ones were not.
    assert scraped["sluis_txlog_records_total"] >= OK_REQUESTS
    assert scraped["sluis_txlog_batches_total"] >= 1
    assert scraped["sluis_txlog_failed_records_total"] == 0


def _held_by(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def test_a_killed_workers_counts_stay_and_its_connections_go(chain: dict[str, Any]) -> None:
    port = chain["port"]
    held = []
    for _ in range(6):  # kept-alive connections, spread over the workers by the kernel
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        held.append(conn)
    before = _scrape(port)
    assert before["sluis_open_connections"] == len(held) + 1  # and the scrape's own
    victim = max(_workers(chain["outway"]), key=lambda w: _held_by(w, port))
    lost = _held_by(victim, port)
    assert lost > 0
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim.is_running() or len(_workers(chain["outway"])) < 2:
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.2)
    after = _scrape(port)
    # The dead worker's connections no longer count (child_exit: mark_process_dead) ...
    assert after["sluis_open_connections"] == len(held) + 1 - lost
    # ... and what it counted still does.
    served = [k for k in before if k.startswith("sluis_gateway_requests_total{")]
    assert served
    for key in served:
        assert after[key] == before[key]
    for conn in held:
        conn.close()


def test_live_and_ready_then_not_ready_without_its_manager(chain: dict[str, Any]) -> None:
    """Last in this module: it stops a's Manager."""
    port = chain["port"]
    status, body = _get(port, "/health/live", {})
    assert status == 200
    assert json.loads(body)["status"] == "live"
    status, body = _get(port, "/health/ready", {})
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["checks"].keys() == {"certificate", "crls", "hsm", "transaction_log", "manager"}
    assert all(check["ok"] for check in answer["checks"].values())

    chain["manager"].stop()
    time.sleep(CACHE_SECONDS + 0.5)
    for _ in range(4):  # whichever worker answers
        status, body = _get(port, "/health/ready", {})
        answer = json.loads(body)
        assert status == 503
        assert answer["status"] == "not ready"
        assert answer["checks"]["manager"]["ok"] is False
        assert answer["checks"]["hsm"]["ok"] is True
