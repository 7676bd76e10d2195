"""The controller's logins as series, from a real controller (``sluis serve controller``,
gunicorn with two workers, HTTPS with the key in SoftHSM): logins, failures by reason and the
locks they trip add up over both workers, on the controller's management listener only.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from controllertest import lone_member

from appliance.config import load_config
from appliance.controller.auth import SOURCE_ATTEMPTS
from appliance.controller.demo import ControllerAccess, start_controller
from appliance.demo.group import MemberPlan
from appliance.demo.processes import free_port
from appliance.pki.identity import OrganisationIdentity

pytestmark = pytest.mark.slow

PLAN = MemberPlan(
    "c", OrganisationIdentity("Dienst Metingen", "00000001000000000931", ("c.sluis.test",))
)


@dataclass
class Controller:
    access: ControllerAccess
    context: ssl.SSLContext
    management_port: int
    attempts: int  # failed logins that lock an (account, address)

    def https(self, method: str, path: str, body: bytes | None, source: str) -> int:
        url = urlsplit(self.access.url)
        conn = http.client.HTTPSConnection(
            url.hostname or "",
            url.port or 0,
            context=self.context,
            timeout=60,
            source_address=(source, 0),
        )
        try:
            conn.request(method, path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def login(self, username: str, password: str, source: str) -> int:
        body = json.dumps({"username": username, "password": password}).encode()
        return self.https("POST", "/api/v1/session", body, source)

    def live_pid(self) -> int:
        """The pid of the worker that answers ``/health/live`` on the management listener."""
        conn = http.client.HTTPConnection("127.0.0.1", self.management_port, timeout=30)
        try:
            conn.request("GET", "/health/live")
            return int(json.loads(conn.getresponse().read())["pid"])
        finally:
            conn.close()

    def scrape(self) -> tuple[dict[str, float], int]:
        conn = http.client.HTTPConnection("127.0.0.1", self.management_port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        found = {}
        for line in text.splitlines():
            match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
            if match:
                found[match[1]] = float(match[2])
        return found, response.status


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    root = tmp_path_factory.mktemp("controller-metrics")
    member = lone_member(root, PLAN, "sluis.controller-metrics")
    port = free_port()
    with member.config_path.open("a", encoding="utf-8") as file:
        file.write(f'\n[management]\naddress = "127.0.0.1"\ncontroller_port = {port}\n')
    access = start_controller(member.config_path, root / "logs", name="c", workers=2)
    config = load_config(member.config_path)
    assert config.controller is not None
    context = ssl.create_default_context(cafile=str(config.tls.trust_anchors))
    context.check_hostname = False  # the certificate names c.sluis.test
    try:
        yield Controller(access, context, port, config.controller.lockout_attempts)
    finally:
        access.stop()


def test_logins_failures_and_lockouts_add_up_over_both_workers(controller: Controller) -> None:
    password = controller.access.password
    # Every login is a new connection: the kernel spreads them over both workers.
    for _ in range(3):
        assert controller.login("admin", password, "127.0.0.2") == 201
    for n in range(2):
        assert controller.login(f"nobody{n}", "Winter2026!", "127.0.0.3") == 401
    for _ in range(controller.attempts):  # the last of these locks admin for this address
        assert controller.login("admin", "a wrong guess", "127.0.0.4") == 401
    assert controller.login("admin", password, "127.0.0.4") == 401  # locked
    for n in range(SOURCE_ATTEMPTS):  # a spray: the last of these blocks the address
        assert controller.login(f"user{n}", "Winter2026!", "127.0.0.5") == 401
    assert controller.login("admin", password, "127.0.0.5") == 401  # blocked

    expected = {
        'sluis_controller_logins_total{method="password"}': 3,
        'sluis_controller_login_failures_total{reason="unknown_user"}': 2 + SOURCE_ATTEMPTS,
        'sluis_controller_login_failures_total{reason="wrong_password"}': controller.attempts,
        'sluis_controller_login_failures_total{reason="locked"}': 1,
        'sluis_controller_login_failures_total{reason="blocked"}': 1,
        'sluis_controller_lockouts_total{scope="account"}': 1,
        'sluis_controller_lockouts_total{scope="address"}': 1,
    }
    # Whichever worker answers, the sum of both: scrape until both have answered (the kernel
    # hands each new connection to one of them; 200 tries miss one only if it does not serve).
    answered = set()
    for _ in range(200):
        scraped, status = controller.scrape()
        assert status == 200
        assert {key: scraped.get(key) for key in expected} == expected
        assert scraped["sluis_workers"] == 2
        assert scraped["sluis_ready"] in (0, 1)
        answered.add(controller.live_pid())
        if len(answered) == 2:
            break
    assert len(answered) == 2  # both workers serve the management listener
    # No name or address is a label.
    assert not [k for k in scraped if k.startswith("sluis_controller_") and "admin" in k]


def test_the_https_listener_does_not_serve_them(controller: Controller) -> None:
    for path in ("/metrics", "/health/ready"):
        assert controller.https("GET", path, None, "127.0.0.6") in (303, 401, 404)
