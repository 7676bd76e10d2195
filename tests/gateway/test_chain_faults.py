"""The data path under faults, with real processes: a Manager that is down or hung, an
application that gives up, an inway worker that dies with a request in hand.

A Group of three appliances (directory, A, B) with SoftHSM tokens and Managers under gunicorn;
B's inway (durable SQLite log) in front of a backend in this process, A's outway. B's Manager
issues tokens for LIFETIME seconds and A's outway refreshes them REFRESH seconds before they
expire, so that the refresh window and the expiry come within a test. The Manager is stopped
(SIGTERM) or hung (SIGSTOP on all its processes); the inway's worker is killed (SIGKILL) by
the backend the moment the request reaches it.

The tests run in file order; each that needs an empty token cache restarts the outway.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from gateway.chaintest import echo_group, group_plans, publish_and_connect
from inway.inwaytest import EchoBackend

from appliance.demo.gateways import rewrite_config
from appliance.demo.group import Member, start_managers, stop_managers, wait_for
from appliance.demo.processes import Component, start_component
from appliance.txlog.record import new_transaction_id
from appliance.txlog.store import TransactionLog

pytestmark = pytest.mark.slow

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000000700", "00000001000000000701", "00000001000000000702"
SERVICE = "basisregistratie"
PLANS = group_plans((OIN_DIRECTORY, OIN_A, OIN_B), "faults.test")
LIFETIME = 20  # B's Manager: token lifetime
REFRESH = 14  # A's outway: refresh window before exp (opens at half the life, 10 s in)
TIMEOUT = 4  # A's outway: token_timeout_seconds
PATH = f"/{OIN_B}/{SERVICE}/items/1"


@dataclass
class Chain:
    root: Path
    members: dict[str, Member]
    backend: EchoBackend
    inway: Component
    outway: Component
    logs: dict[str, TransactionLog]  # "a": the outway's, "b": the inway's

    def logged(self, member: str, transaction: str) -> bool:
        peer = OIN_A if member == "a" else OIN_B
        records, _ = self.logs[member].query(peer, transaction_ids=[transaction])
        return bool(records)

    def started(self) -> int:
        return self.backend.state.counts()[0]

    def restart_outway(self) -> None:
        """A new outway: an empty token cache, no outage known."""
        self.outway.stop()
        self.outway = start_component(
            "outway-a",
            self.members["a"].config_path,
            "outway",
            port=self.outway.port,
            workers=1,
            log_dir=self.root / "logs",
        )

    @property
    def manager(self) -> Component:
        manager = self.members["b"].manager
        assert manager is not None
        return manager


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain-faults")
    members, backend, gateways = echo_group(root, PLANS, "faults.test", SERVICE)
    urls = {name: f"sqlite:///{root / name / 'txlog.db'}" for name in ("a", "b")}
    rewrite_config(
        members["b"],
        f'\n[inway]\nservices = ["{SERVICE}={backend.url}/api"]\n'
        f'address = "{gateways.inway_address}"\n'
        'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
        f'\n[txlog]\ndatabase = "{urls["b"]}"\n',
        token_lifetime_seconds=LIFETIME,
    )
    rewrite_config(
        members["a"],
        f"\n[outway]\ntoken_refresh_seconds = {REFRESH}\ntoken_timeout_seconds = {TIMEOUT}\n"
        f'\n[txlog]\ndatabase = "{urls["a"]}"\n',
    )
    components: list[Component] = []
    logs: dict[str, TransactionLog] = {}
    chain: Chain | None = None
    try:
        start_managers(members, root / "logs", workers=1)
        publish_and_connect(members, SERVICE)
        a, b = members["a"], members["b"]
        logs_dir = root / "logs"
        inway = start_component(
            "inway-b", b.config_path, "inway", port=gateways.inway_port, workers=1, log_dir=logs_dir
        )
        components.append(inway)
        outway = start_component(
            "outway-a",
            a.config_path,
            "outway",
            port=gateways.outway_port,
            workers=1,
            log_dir=logs_dir,
        )
        components.append(outway)
        logs = {name: TransactionLog.open(url, migrate_schema=False) for name, url in urls.items()}
        chain = Chain(root, members, backend, inway, outway, logs)
        wait_for(lambda: _get(chain)[0] == 200, "the grant at the outway")
        yield chain
    finally:
        if chain is not None:
            components[-1] = chain.outway  # restarted by the tests
        for component in components:
            component.stop()
        stop_managers(members)
        for log in logs.values():
            log.close()
        backend.stop()


def _get(
    chain: Chain, transaction: str | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", chain.outway.port, timeout=timeout)
    try:
        conn.request("GET", PATH, headers={"Fsc-Transaction-Id": transaction or ""})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _code(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, headers, _ = answer
    return status, headers.get("fsc-error-code", "")


def _signal_tree(component: Component, signum: int) -> None:
    parent = psutil.Process(component.process.pid)
    for process in [parent, *parent.children(recursive=True)]:
        process.send_signal(signum)


@contextmanager
def _hung(component: Component) -> Iterator[None]:
    """The component's processes stopped (SIGSTOP): connections queue, nothing answers."""
    _signal_tree(component, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_tree(component, signal.SIGCONT)


# -- the inway's worker dies after logging and forwarding ---------------------------------------


def test_an_inway_worker_that_dies_with_the_request_is_an_unknown_outcome(chain: Chain) -> None:
    """The request reached the backend, and the connection closed before any answer. The
    outway sends the GET once more with the same transaction id (a cut kept-alive connection
    is more often an address that moved: docs/ha.md); the inway's new worker refuses the id as
    already used, so the backend got it once and the app is told the outcome is unknown, not
    the inway's 400."""
    doomed = new_transaction_id()
    inway = psutil.Process(chain.inway.process.pid)

    def kill_the_worker(transaction: str) -> bool:
        if transaction == doomed:
            for worker in inway.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.send_signal(signal.SIGKILL)
        return True

    assert _get(chain)[0] == 200  # the outway now holds a kept-alive connection to the inway
    started = chain.started()
    chain.backend.state.lookup = kill_the_worker
    try:
        status, headers, body = _get(chain, doomed)
    finally:
        chain.backend.state.lookup = None
    assert (status, headers.get("fsc-error-code")) == (502, "ERROR_CODE_INWAY_UNREACHABLE"), body
    time.sleep(1)  # the backend's handler goes on after the kill
    assert chain.started() == started + 1  # the backend got it, once
    message = json.loads(body)["message"]
    assert "outcome is unknown" in message
    assert "refused its transaction id as already used" in message  # it was sent again
    assert chain.logged("a", doomed)
    assert chain.logged("b", doomed)
    wait_for(lambda: _get(chain)[0] == 200, "the inway's new worker")
    assert chain.started() >= started + 2


# -- the application leaves while its request waits for a token -------------------------------


def test_a_request_whose_client_left_is_never_logged_or_forwarded(chain: Chain) -> None:
    """A GET and a POST with a small body wait for a token; their applications give up; then
    the Manager answers within the token timeout. Neither is logged nor forwarded later."""
    chain.restart_outway()  # no token in hand
    started = chain.started()
    gone = {"GET": new_transaction_id(), "POST": new_transaction_id()}
    with _hung(chain.manager):
        clients = []
        for method, transaction in gone.items():
            client = socket.create_connection(("127.0.0.1", chain.outway.port))
            body = "hello" if method == "POST" else ""
            client.sendall(
                f"{method} {PATH} HTTP/1.1\r\nHost: outway\r\nFsc-Transaction-Id: {transaction}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            clients.append(client)
        time.sleep(1)
        for client in clients:
            client.close()  # the application gives up
        time.sleep(0.5)
    # The Manager answers the fetch now, well within the token timeout: a token comes.
    wait_for(lambda: _get(chain)[0] == 200, "a token once the Manager answers", timeout=30)
    time.sleep(1)
    for transaction in gone.values():
        assert not chain.logged("a", transaction)
        assert not chain.logged("b", transaction)
    assert chain.started() == started + 1  # only the request above, not those that left


# -- a hung Manager -------------------------------------------------------------------------------


def test_a_hung_manager_fails_waiting_requests_within_the_token_timeout(chain: Chain) -> None:
    """No token in hand: waiting requests share one fetch and are answered within the token
    timeout (they queued for a fetch each: one answer per timeout); then back-off answers at
    once, without another connection to the Manager."""
    chain.restart_outway()

    def timed(_: int) -> tuple[float, tuple[int, str]]:
        began = time.monotonic()
        answer = _get(chain)
        return time.monotonic() - began, _code(answer)

    with _hung(chain.manager), ThreadPoolExecutor(8) as pool:
        waited = list(pool.map(timed, range(8)))
        backed_off = [timed(0) for _ in range(3)]
    assert {code for _, code in waited + backed_off} == {(502, "ERROR_CODE_TOKEN_UNAVAILABLE")}
    assert max(seconds for seconds, _ in waited) < TIMEOUT + 2, waited
    assert max(seconds for seconds, _ in backed_off) < 0.5, backed_off
    log = chain.outway.log()
    assert log.count("gives no access token since") == 1, log
    assert "ERROR_CODE_TOKEN_UNAVAILABLE" not in log  # counted in the outage lines instead


# -- a Manager that is down while the token is valid ---------------------------------------------


def test_a_manager_outage_costs_nothing_while_the_token_is_valid(chain: Chain) -> None:
    chain.restart_outway()
    assert _get(chain)[0] == 200  # a token, valid for LIFETIME s
    fetched = time.monotonic()
    chain.manager.stop()
    while time.monotonic() - fetched < REFRESH:
        time.sleep(0.1)  # ... until well into the refresh window
    answers: list[int] = []
    while time.monotonic() - fetched < LIFETIME - 1.5:
        answers.append(_get(chain)[0])
    assert answers
    assert set(answers) == {200}, f"{answers.count(502)} of {len(answers)} refused"
    while time.monotonic() - fetched < LIFETIME + 1:
        time.sleep(0.1)
    began = time.monotonic()
    assert _code(_get(chain)) == (502, "ERROR_CODE_TOKEN_UNAVAILABLE")  # expired: none left
    assert time.monotonic() - began < TIMEOUT + 2
    log = chain.outway.log()
    assert log.count("gives no access token since") == 1, log
    assert "ERROR_CODE_TOKEN_UNAVAILABLE" not in log

    b = chain.members["b"]
    b.manager = start_component(
        "manager-b", b.config_path, "manager", port=b.port, workers=1, log_dir=chain.root / "logs"
    )
    wait_for(lambda: _get(chain)[0] == 200, "a token from the restarted Manager", timeout=40)
    assert "gives access tokens again" in chain.outway.log()
