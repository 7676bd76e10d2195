"""The outway's log does not grow with the failure rate (issue 16): 200 requests refused because
the inway is down, or because the outway's own transaction log cannot be written, cost a few
lines that say what, since when and how many, not a line per request.

A Group of three appliances (directory, A, B) with SoftHSM tokens and Managers under gunicorn;
B's inway in front of an echo backend, A's outway (one worker each, durable SQLite logs).
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gateway.chaintest import echo_group, group_plans, publish_and_connect
from inway.inwaytest import log_unwritable

from appliance.demo.gateways import rewrite_config
from appliance.demo.group import Member, start_managers, stop_managers, wait_for
from appliance.demo.processes import Component, start_component

pytestmark = pytest.mark.slow

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000000760", "00000001000000000761", "00000001000000000762"
SERVICE = "basisregistratie"
PLANS = group_plans((OIN_DIRECTORY, OIN_A, OIN_B), "logvolume.test")
PATH = f"/{OIN_B}/{SERVICE}/items/1"
REFUSED = 200


@dataclass
class Chain:
    root: Path
    members: dict[str, Member]
    inway: Component
    outway: Component

    def start_inway(self) -> None:
        self.inway = start_component(
            "inway-b",
            self.members["b"].config_path,
            "inway",
            port=self.inway.port,
            workers=1,
            log_dir=self.root / "logs",
        )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain-log-volume")
    members, backend, gateways = echo_group(root, PLANS, "logvolume.test", SERVICE)
    rewrite_config(
        members["b"],
        f'\n[inway]\nservices = ["{SERVICE}={backend.url}/api"]\n'
        f'address = "{gateways.inway_address}"\n'
        'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
        f'\n[txlog]\ndatabase = "sqlite:///{root / "b" / "txlog.db"}"\n',
    )
    (root / "a" / "txlog").mkdir()
    rewrite_config(
        members["a"],
        f'\n[outway]\nbind = "127.0.0.1:{gateways.outway_port}"\n'
        f'\n[txlog]\ndatabase = "sqlite:///{root / "a" / "txlog" / "txlog.db"}"\n',
    )
    components: list[Component] = []
    chain: Chain | None = None
    try:
        start_managers(members, root / "logs", workers=1)
        publish_and_connect(members, SERVICE)
        logs_dir = root / "logs"
        inway = start_component(
            "inway-b",
            members["b"].config_path,
            "inway",
            port=gateways.inway_port,
            workers=1,
            log_dir=logs_dir,
        )
        outway = start_component(
            "outway-a",
            members["a"].config_path,
            "outway",
            port=gateways.outway_port,
            workers=1,
            log_dir=logs_dir,
        )
        components += [inway, outway]
        chain = Chain(root, members, inway, outway)
        wait_for(lambda: _get(outway.port) == (200, ""), "the grant at the outway")
        yield chain
    finally:
        if chain is not None:
            components[0] = chain.inway  # restarted by a test
        for component in components:
            component.stop()
        stop_managers(members)
        backend.stop()


def _get(port: int, path: str = PATH) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Fsc-Error-Code") or ""
    finally:
        conn.close()


def _refuse(chain: Chain, expected: tuple[int, str], path: str = PATH) -> list[str]:
    """REFUSED requests, each answered ``expected``; the outway's log lines meanwhile."""
    offset = len(chain.outway.log())
    answers = [_get(chain.outway.port, path) for _ in range(REFUSED)]
    assert answers == [expected] * REFUSED
    lines = chain.outway.log()[offset:].splitlines()
    print(f"{len(lines)} outway log lines for {REFUSED} refused requests:", *lines, sep="\n")
    return lines


def _recovery(chain: Chain, before: int) -> list[str]:
    offset = len(chain.outway.log())
    assert _get(chain.outway.port) == (200, "")
    lines = chain.outway.log()[offset:].splitlines()
    print(*lines, sep="\n")
    assert len(lines) <= before, lines
    return lines


def test_an_inway_that_is_down_is_logged_as_a_state(chain: Chain) -> None:
    chain.inway.stop()
    try:
        lines = _refuse(chain, (502, "ERROR_CODE_INWAY_UNREACHABLE"))
    finally:
        chain.start_inway()
    assert 1 <= len(lines) <= 3, lines
    assert "unreachable" in lines[0]
    (over,) = _recovery(chain, 1)
    assert f"{REFUSED} requests refused in all" in over


def test_an_unwritable_log_is_logged_as_a_state(chain: Chain) -> None:
    with log_unwritable(chain.root / "a" / "txlog"):
        lines = _refuse(chain, (500, "TRANSACTION_LOG_WRITE_ERROR"))
    # One line from the store (commits), one from the outway (requests refused).
    assert 1 <= len(lines) <= 3, lines
    over = _recovery(chain, 2)
    assert any(f"{REFUSED} requests refused in all" in line for line in over), over


def test_an_application_refused_is_logged_as_a_state(chain: Chain) -> None:
    """An application asking for a service it has no grant for, 200 times."""
    lines = _refuse(chain, (404, "ERROR_CODE_GRANT_NOT_FOUND"), f"/{OIN_B}/nothing/items/1")
    assert 1 <= len(lines) <= 3, lines
    assert "requests refused with ERROR_CODE_GRANT_NOT_FOUND" in lines[0]
    (over,) = _recovery(chain, 1)
    assert f"{REFUSED} requests refused in all" in over
