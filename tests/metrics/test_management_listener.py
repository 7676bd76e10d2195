"""The management listener under real gunicorn: a Manager (mutual TLS on its FSC port, key in
SoftHSM) with ``[management]`` answers /metrics and /health/* over plain HTTP on the
management port, from either worker, and nothing else there; without the section there is
no such listener."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway.chaintest import group_plans

from appliance.config import load_config
from appliance.controller.worker import ControllerWorker
from appliance.demo.group import provision_group
from appliance.demo.processes import Component, free_port, start_component
from appliance.pki.ca import DemoCA
from appliance.serving.launch import ServeOptions, gunicorn_command
from appliance.serving.management import ManagementWorker

pytestmark = pytest.mark.slow

OINS = ("00000001000000000921", "00000001000000000922", "00000001000000000923")


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("management")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        group_plans(OINS, "management.test"),
        group_id="management.test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    member = members["a"]
    port = free_port()
    with member.config_path.open("a", encoding="utf-8") as config:
        config.write(f'\n[management]\naddress = "127.0.0.1"\nmanager_port = {port}\n')
    component: Component = start_component(
        "manager-a", member.config_path, "manager", port=member.port, workers=2, log_dir=root
    )
    try:
        yield {"port": port, "fsc_port": member.port, "config": member.config_path}
    finally:
        component.stop()


def _ask(port: int, method: str, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def test_metrics_and_health_answer_in_plain_http(manager: dict[str, Any]) -> None:
    port = manager["port"]
    pids = set()
    for _ in range(12):  # the kernel spreads the connections over both workers
        status, kind, body = _ask(port, "GET", "/metrics")
        assert status == 200
        assert kind.startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "\nsluis_ready " in text
        # The workers' multiprocess samples (files), not only what is read at the scrape.
        assert "\nsluis_txlog_records_total " in text
        assert 'sluis_certificate_expiry_days{role="' in text
        status, _, body = _ask(port, "GET", "/health/live")
        assert status == 200
        pids.add(json.loads(body)["pid"])
    assert len(pids) == 2
    status, _, body = _ask(port, "GET", "/health/ready")
    assert status in (200, 503)
    assert {"certificate", "crls", "hsm"} <= set(json.loads(body)["checks"])


def test_nothing_else_is_reachable_there(manager: dict[str, Any]) -> None:
    port = manager["port"]
    for method, path in (
        ("GET", "/v1/contracts"),
        ("GET", "/v1/peer"),
        ("POST", "/metrics"),
        ("GET", "/"),
    ):
        status, _, body = _ask(port, method, path)
        assert status == 404, (method, path, body)
        assert b"sluis_" not in body


def test_the_fsc_listener_still_wants_mutual_tls(manager: dict[str, Any]) -> None:
    # Plain HTTP to the FSC port: no answer, the handshake fails and the connection closes.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _ask(manager["fsc_port"], "GET", "/metrics")


def test_launch_adds_the_bind_only_with_the_section(manager: dict[str, Any]) -> None:
    with_section = manager["config"]
    without = with_section.with_name("no-management.toml")
    text = with_section.read_text(encoding="utf-8")
    without.write_text(text[: text.index("\n[management]")], encoding="utf-8")
    assert load_config(without).management is None

    def command(config: Path, component: str) -> tuple[list[str], dict[str, str]]:
        options = ServeOptions(config, "x:y()", "127.0.0.1:8443", 1, proc_name=f"sluis-{component}")
        return gunicorn_command(options, {})

    argv, env = command(with_section, "manager")
    assert env["SLUIS_BIND"] == f"127.0.0.1:8443,127.0.0.1:{manager['port']}"
    assert argv[argv.index("--worker-class") + 1] == "appliance.serving.management.ManagementWorker"
    argv, env = command(without, "manager")
    assert env["SLUIS_BIND"] == "127.0.0.1:8443"
    assert "--worker-class" not in argv
    assert "SLUIS_MANAGEMENT_BIND" not in env
    # The controller has one too, at its own default port (its worker serves it).
    argv, env = command(with_section, "controller")
    assert env["SLUIS_BIND"] == "127.0.0.1:8443,127.0.0.1:9184"
    assert env["SLUIS_MANAGEMENT_BIND"] == "127.0.0.1:9184"
    assert issubclass(ControllerWorker, ManagementWorker)
    # The monitoring role's drop-in: the address from the environment, the default port.
    options = ServeOptions(without, "x:y()", "0.0.0.0:443", 1, proc_name="sluis-inway")
    argv, env = gunicorn_command(options, {"SLUIS_MANAGEMENT_ADDRESS": "10.9.8.7"})
    assert env["SLUIS_BIND"] == "0.0.0.0:443,10.9.8.7:9182"
    assert env["SLUIS_MANAGEMENT_BIND"] == "10.9.8.7:9182"


def test_the_worker_class_leaves_prometheus_client_to_the_workers() -> None:
    """gunicorn's master imports the worker class before it sets PROMETHEUS_MULTIPROC_DIR:
    prometheus-client imported there would count in each process, never in the files."""
    code = (
        "import sys, appliance.serving.gunicorn_conf, appliance.serving.management\n"
        "import appliance.controller.worker\n"
        "assert 'prometheus_client' not in sys.modules, 'imported in the master'\n"
        "import appliance.metrics as m, appliance.metrics.health as h\n"
        "assert (m.LIVE_PATH, m.READY_PATH) == (h.LIVE_PATH, h.READY_PATH)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
