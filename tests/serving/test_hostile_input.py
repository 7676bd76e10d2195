"""Every listener against hostile request heads, as real processes: a Manager, the inway and
the controller (TLS) and the outway (plain HTTP), each under gunicorn as ``sluis serve`` runs
it, with ``[http]`` timeouts shortened in the configuration file (limits at their defaults).

Covered: 431 for a head over the size, field-length and field-count limits, 414 for a long
request target, 400 for a request line without an HTTP version, 408 for a head not complete
within the head timeout, the close of an idle kept-alive connection, of a new one that sends
nothing, and of a TLS handshake that never completes; each answer in the component's own error
format. And normal requests served while hundreds of clients send their heads a byte a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from inway.raw_client import converse

from appliance.controller.demo import start_controller
from appliance.demo.gateways import configure_gateways
from appliance.demo.group import MemberPlan, provision_group, start_managers, stop_managers
from appliance.demo.processes import Component, start_component
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

pytestmark = pytest.mark.slow

RAW_CLIENT = Path(__file__).parent.parent / "inway" / "raw_client.py"
HEAD_TIMEOUT = 2
IDLE_TIMEOUT = 3
PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.hostile.test",)))
    for name, oin in (("a", "00000001000000000701"), ("b", "00000001000000000702"))
)


@dataclass(frozen=True)
class Listener:
    name: str
    component: Component
    server_name: str | None  # None: plain HTTP
    domain: str


class TlsClient:
    """raw_client.py as organisation A (its HSM key), one interpreter for the module."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RAW_CLIENT), str(config), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def ask(self, plan: dict[str, Any]) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(plan) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@dataclass
class Setup:
    listeners: dict[str, Listener]
    tls_client: TlsClient

    def converse(self, name: str, steps: list[dict[str, Any]], timeout: float = 10) -> Any:
        listener = self.listeners[name]
        component = listener.component
        conversation = {"steps": steps, "timeout": timeout, "until": "close"}
        plan = {
            "host": component.host,
            "port": component.port,
            "server_name": listener.server_name,
            "conversations": [conversation],
        }
        if listener.server_name is None:
            return converse(plan, conversation, None)
        return self.tls_client.ask(plan)["answers"][0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("hostile")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        PLANS,
        group_id="hostile.test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
        directory="a",
    )
    configure_gateways(
        members,
        provider="b",
        consumer="a",
        service="basisregistratie",
        backend_url="http://127.0.0.1:1/api",
        root=root,
    )
    for member in members.values():
        with member.config_path.open("a", encoding="utf-8") as config:
            config.write(
                f"\n[http]\nhead_timeout_seconds = {HEAD_TIMEOUT}\n"
                f"idle_timeout_seconds = {IDLE_TIMEOUT}\n"
            )
    logs = root / "logs"
    components: list[Component] = []
    try:
        start_managers({"b": members["b"]}, logs, workers=1)
        b, a = members["b"], members["a"]
        assert b.manager is not None
        inway = start_component("inway-b", b.config_path, "inway", workers=1, log_dir=logs)
        components.append(inway)
        outway = start_component("outway-a", a.config_path, "outway", workers=1, log_dir=logs)
        components.append(outway)
        controller = start_controller(a.config_path, logs, name="a").component
        components.append(controller)
        listeners = {
            "manager": Listener("manager", b.manager, b.fqdn, "ERROR_DOMAIN_MANAGER"),
            "inway": Listener("inway", inway, b.fqdn, "ERROR_DOMAIN_INWAY"),
            "outway": Listener("outway", outway, None, "ERROR_DOMAIN_OUTWAY"),
            "controller": Listener("controller", controller, a.fqdn, "ERROR_DOMAIN_CONTROLLER"),
        }
        env = {
            **os.environ,
            "OPENSSL_CONF": str(a.config.tls.openssl_conf),
            **a.config.hsm.environment(),
        }
        client = TlsClient(a.config_path, env)
        yield Setup(listeners, client)
        client.close()
        for listener in listeners.values():
            assert "Traceback" not in listener.component.log(), listener.name
    finally:
        for component in components:
            component.stop()
        stop_managers(members)


LISTENERS = ("manager", "inway", "outway", "controller")


def _error(received: str) -> tuple[int, str, dict[str, str]]:
    head, _, body = received.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = dict(line.split(": ", 1) for line in lines[1:])
    error = json.loads(body)
    assert fields["Fsc-Error-Code"] == error["code"]
    assert fields["Connection"] == "close"
    return status, fields["Fsc-Error-Code"], error


def _request(host: str, extra: str = "", target: str = "/") -> str:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


@pytest.mark.parametrize("name", LISTENERS)
@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("head", 431, "ERROR_CODE_REQUEST_HEADERS_TOO_LARGE"),
        ("field", 431, "ERROR_CODE_REQUEST_HEADERS_TOO_LARGE"),
        ("fields", 431, "ERROR_CODE_REQUEST_HEADERS_TOO_LARGE"),
        ("target", 414, "ERROR_CODE_REQUEST_TARGET_TOO_LONG"),
        ("no version", 400, "ERROR_CODE_REQUEST_MALFORMED"),
    ],
)
def test_refused_heads(setup: Setup, name: str, case: str, status: int, code: str) -> None:
    host = "x.hostile.test"
    send = {
        # 150 KB in fields of 1000 bytes: each field allowed, the head not.
        "head": _request(host, "".join(f"X-Filler-{i}: {'a' * 990}\r\n" for i in range(150))),
        "field": _request(host, f"X-Big: {'a' * 9000}\r\n"),
        "fields": _request(host, "X-Small: 1\r\n" * 101),
        "target": _request(host, target="/" + "a" * 9000),
        "no version": "GET /\r\n\r\n",
    }[case]
    started = time.monotonic()
    answer = setup.converse(name, [{"send": send}])
    assert time.monotonic() - started < 5
    assert answer["closed"], answer
    got_status, got_code, error = _error(answer["received"])
    listener = setup.listeners[name]
    if name == "controller" and status == 400:
        code = "ERROR_CODE_REQUEST_INVALID"  # the controller's own 400
    assert (got_status, got_code, error["domain"]) == (status, code, listener.domain), error


@pytest.mark.parametrize("name", LISTENERS)
def test_slow_head_gets_408(setup: Setup, name: str) -> None:
    steps: list[dict[str, Any]] = [
        {"send": "GET / HTTP/1.1\r\n"},
        {"sleep": 1},
        {"send": "Host: x\r\n"},  # still trickling: the clock runs from the connection
    ]
    started = time.monotonic()
    answer = setup.converse(name, steps, timeout=20)
    took = time.monotonic() - started
    assert answer["closed"], answer
    status, code, error = _error(answer["received"])
    assert (status, code) == (408, "ERROR_CODE_REQUEST_TIMEOUT"), error
    assert error["domain"] == setup.listeners[name].domain
    assert HEAD_TIMEOUT - 0.5 < took < HEAD_TIMEOUT + 5, took


@pytest.mark.parametrize("name", LISTENERS)
def test_idle_connections_are_closed(setup: Setup, name: str) -> None:
    host = "x.hostile.test"
    # A kept-alive connection after its answer: closed after the idle timeout, no error.
    started = time.monotonic()
    answer = setup.converse(name, [{"send": _request(host, target="/nothing-here")}], timeout=20)
    took = time.monotonic() - started
    assert answer["closed"], answer
    assert answer["received"].startswith("HTTP/1.1 4"), answer  # the request's own answer
    assert answer["received"].count("HTTP/1.1 ") == 1
    assert IDLE_TIMEOUT - 0.5 < took < IDLE_TIMEOUT + 5, took
    # A connection that never sends a request: closed after the head timeout, nothing said.
    started = time.monotonic()
    answer = setup.converse(name, [], timeout=20)
    took = time.monotonic() - started
    assert answer == {"received": "", "closed": True}
    assert HEAD_TIMEOUT - 0.5 < took < HEAD_TIMEOUT + 5, took


@pytest.mark.parametrize("name", ["manager", "inway", "controller"])
def test_unfinished_tls_handshake_is_closed(setup: Setup, name: str) -> None:
    component = setup.listeners[name].component
    started = time.monotonic()
    with socket.create_connection((component.host, component.port), timeout=20) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
    assert time.monotonic() - started < HEAD_TIMEOUT + 5


def test_normal_requests_served_during_slow_heads(setup: Setup) -> None:
    """500 clients sending their heads a byte a second; the outway still answers at once."""
    component = setup.listeners["outway"].component
    stop = threading.Event()
    slow: list[socket.socket] = []
    for _ in range(500):
        sock = socket.create_connection((component.host, component.port), timeout=5)
        sock.setblocking(False)
        slow.append(sock)
    head = b"GET / HTTP/1.1\r\nHost: x\r\n"

    def trickle() -> None:
        for index in range(len(head)):
            if stop.wait(1.0):
                return
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(head[index : index + 1])

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        time.sleep(1.0)
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            answer = setup.converse("outway", [{"send": _request("x", "Connection: close\r\n")}])
            latencies.append(time.monotonic() - started)
            assert answer["received"].startswith("HTTP/1.1 "), answer
        assert max(latencies) < 1.0, latencies
    finally:
        stop.set()
        thread.join()
        for sock in slow:
            sock.close()


def test_tls_client_sees_the_alert_not_a_reset(setup: Setup) -> None:
    """The inway refuses a client without certificate with certificate_required (TLS 1.3)."""
    listener = setup.listeners["inway"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    component = listener.component
    with (
        socket.create_connection((component.host, component.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=listener.server_name) as tls,
    ):
        tls.sendall(_request("x").encode())
        with pytest.raises(ssl.SSLError, match="certificate required"):
            tls.recv(100)
