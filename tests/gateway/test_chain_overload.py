"""The data path under a hung service and a locked log, with real processes (issue 16, items 2
and 3): app -> A's outway -> B's inway -> two services, one healthy and one that never answers.

- isolation: load on the hung service fills its share at the outway and at the inway (small
  pools and shares here: 8 connections, 6 and 4 requests per service), and is then refused at
  once (503 ``ERROR_CODE_SERVICE_BUSY`` with ``Retry-After``), while the healthy service behind
  the same inway keeps answering as fast as before (it got 502 for as long as the hang lasted);
- the right part is blamed: the outway waits OUTWAY_READ s, the inway would wait INWAY_READ s
  for the service and 5 s (SQLite's busy timeout) for a locked log; with the outway's deadline
  (``Sluis-Timeout``) the inway answers first with what failed: ``SERVICE_UNREACHABLE`` or
  ``TRANSACTION_LOG_WRITE_ERROR`` (the app got the outway's ``INWAY_UNREACHABLE``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from gateway.chaintest import echo_group, group_plans, publish_and_connect
from inway.inwaytest import EchoBackend, RawBackend

from appliance.demo.gateways import rewrite_config
from appliance.demo.group import start_managers, stop_managers, wait_for
from appliance.demo.processes import Component, start_component

pytestmark = pytest.mark.slow

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000000800", "00000001000000000801", "00000001000000000802"
HEALTHY, HUNG = "basisregistratie", "traagregister"
PLANS = group_plans((OIN_DIRECTORY, OIN_A, OIN_B), "overload.test")
OUTWAY_READ = 4  # A's outway: read_timeout_seconds (Sluis-Timeout)
INWAY_READ = 20  # B's inway: read_timeout_seconds, longer than the outway waits
POOL = 8  # connections per worker at both gateways
OUTWAY_SHARE, INWAY_SHARE = 6, 4  # requests in flight per service
HUNG_LOAD = 12  # concurrent requests for the hung service


@dataclass
class Chain:
    outway: Component
    backend: EchoBackend
    hung: RawBackend
    inway_log: Path


Answer = tuple[int, dict[str, str], bytes, float]  # status, headers, body, seconds


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
    await reader.read()  # never answers; until the inway gives up and closes


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain-overload")
    members, backend, gateways = echo_group(root, PLANS, "overload.test", HEALTHY)
    hung = RawBackend(_hang)
    inway_log = root / "b" / "txlog.db"
    rewrite_config(
        members["b"],
        f'\n[inway]\nservices = ["{HEALTHY}={backend.url}/api", "{HUNG}={hung.url}/api"]\n'
        f'address = "{gateways.inway_address}"\n'
        'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
        f"read_timeout_seconds = {INWAY_READ}\nbackend_connections = {POOL}\n"
        f"service_limit = {INWAY_SHARE}\n"
        f'\n[txlog]\ndatabase = "sqlite:///{inway_log}"\n',
    )
    rewrite_config(
        members["a"],
        f"\n[outway]\nread_timeout_seconds = {OUTWAY_READ}\ninway_connections = {POOL}\n"
        f'service_limits = {{"{OIN_B}/{HUNG}" = {OUTWAY_SHARE}}}\n'
        f'\n[txlog]\ndatabase = "sqlite:///{root / "a" / "txlog.db"}"\n',
    )
    components: list[Component] = []
    try:
        start_managers(members, root / "logs", workers=1)
        publish_and_connect(members, HEALTHY)
        publish_and_connect(members, HUNG)
        for name, member, component, port in (
            ("inway-b", members["b"], "inway", gateways.inway_port),
            ("outway-a", members["a"], "outway", gateways.outway_port),
        ):
            components.append(
                start_component(
                    name,
                    member.config_path,
                    component,
                    port=port,
                    workers=1,
                    log_dir=root / "logs",
                )
            )
        chain = Chain(components[-1], backend, hung, inway_log)
        wait_for(lambda: _get(chain, HEALTHY)[0] == 200, "the healthy service through the chain")
        yield chain
    finally:
        for component in components:
            component.stop()
        stop_managers(members)
        hung.stop()
        backend.stop()


def _get(chain: Chain, service: str) -> Answer:
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", chain.outway.port, timeout=60)
    try:
        conn.request("GET", f"/{OIN_B}/{service}/items/1")
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, body, time.monotonic() - began
    finally:
        conn.close()


def _error(answer: Answer) -> tuple[int, str, str]:
    """(status, Fsc-Error-Code, domain) of an answer."""
    status, headers, body, _ = answer
    domain = json.loads(body).get("domain", "") if headers.get("fsc-error-code") else ""
    return status, headers.get("fsc-error-code", ""), domain


# -- item 3: the inway's timeouts fire first ------------------------------------------------------


def test_a_hung_service_is_reported_by_the_inway_not_as_an_unreachable_inway(chain: Chain) -> None:
    answer = _get(chain, HUNG)
    assert _error(answer) == (502, "ERROR_CODE_SERVICE_UNREACHABLE", "ERROR_DOMAIN_INWAY")
    # Within the outway's wait, less the margin for the way back; not the inway's own 20 s.
    assert OUTWAY_READ - 1 < answer[3] < OUTWAY_READ, answer[3]


def test_a_locked_log_at_the_inway_is_reported_as_its_log_write_error(chain: Chain) -> None:
    started = chain.backend.state.counts()[0]
    locker = sqlite3.connect(chain.inway_log, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # the inway's writer waits for the lock (busy: 5 s)
        answer = _get(chain, HEALTHY)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert _error(answer) == (500, "TRANSACTION_LOG_WRITE_ERROR", "ERROR_DOMAIN_INWAY")
    assert answer[3] < OUTWAY_READ, answer[3]
    assert chain.backend.state.counts()[0] == started  # nothing forwarded
    wait_for(lambda: _get(chain, HEALTHY)[0] == 200, "the log writable again")


# -- item 2: a hung service does not take its neighbours down ----------------------------------


def test_a_hung_service_cannot_take_the_connections_of_a_healthy_one(chain: Chain) -> None:
    normal = [_get(chain, HEALTHY) for _ in range(10)]
    assert {a[0] for a in normal} == {200}
    usual = statistics.median(a[3] for a in normal)

    with ThreadPoolExecutor(HUNG_LOAD) as pool:
        connections = chain.hung.connections
        hung = [pool.submit(_get, chain, HUNG) for _ in range(HUNG_LOAD)]
        wait_for(
            lambda: chain.hung.connections - connections >= INWAY_SHARE,
            "the hung service's share at the inway to fill",
            timeout=10,
        )
        healthy: list[Answer] = []
        filled = time.monotonic()
        while time.monotonic() - filled < OUTWAY_READ - 1.5:  # while the hung ones wait
            healthy.append(_get(chain, HEALTHY))
        refused = [f.result() for f in hung]

    assert len(healthy) >= 5
    assert {a[0] for a in healthy} == {200}, [_error(a) for a in healthy if a[0] != 200]
    slowest = max(a[3] for a in healthy)
    assert slowest < 1, (slowest, usual)

    # The share at the outway (6) and, of those, the share at the inway (4) went on; every
    # other request was refused at once, with Retry-After.
    errors = [_error(a) for a in refused]
    busy = [a for a, e in zip(refused, errors, strict=True) if e[1] == "ERROR_CODE_SERVICE_BUSY"]
    assert errors.count((502, "ERROR_CODE_SERVICE_UNREACHABLE", "ERROR_DOMAIN_INWAY")) == (
        INWAY_SHARE
    ), errors
    assert errors.count((503, "ERROR_CODE_SERVICE_BUSY", "ERROR_DOMAIN_OUTWAY")) == (
        HUNG_LOAD - OUTWAY_SHARE
    ), errors
    assert errors.count((503, "ERROR_CODE_SERVICE_BUSY", "ERROR_DOMAIN_INWAY")) == (
        OUTWAY_SHARE - INWAY_SHARE
    ), errors
    assert all(a[1].get("retry-after") == "1" for a in busy)
    assert max(a[3] for a in busy) < 1, [a[3] for a in busy]
