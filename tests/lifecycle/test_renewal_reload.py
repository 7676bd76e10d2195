"""Renewal without downtime, with real processes: install the renewed certificate of the same
HSM key, reload gunicorn gracefully (HUP), and see the new certificate in a fresh handshake
while a request on a connection opened before the reload completes on the old one."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from lifecycletest import HERE, OIN_A, Client, hup, live_serial, renew, sluis, wait_for_log

from appliance.demo.group import Member
from appliance.demo.processes import Component, start_component
from appliance.pki.ca import DemoCA

Group = tuple[DemoCA, dict[str, Member]]


@pytest.fixture(scope="module")
def server_b(group: Group, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Component]:
    _, members = group
    component = start_component(
        "b-slowapp",
        members["b"].config_path,
        "slowapp:create_app()",
        workers=2,
        log_dir=tmp_path_factory.mktemp("logs"),
        env={"PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])},
    )
    yield component
    component.stop()


def test_hup_serves_the_renewed_certificate_and_finishes_open_requests(
    group: Group, server_b: Component, tmp_path: Path
) -> None:
    ca, members = group
    a, b = members["a"], members["b"]
    old_serial = f"{live_serial(b):x}"
    wait_for_log(server_b, "TLS context ready", 2)

    # Two client processes: one holds a request in flight, the other opens fresh connections.
    client, fresh_client = Client(a), Client(a)
    try:
        opened = client.connect("before", server_b, b.fqdn)
        assert opened == {"ok": True, "server_serial": old_serial}, opened
        # A request that stays in flight across the reload, on the connection opened before.
        client.send(op="request", name="before", path="/slow?seconds=8")
        time.sleep(0.5)

        renewed = renew(ca, b, tmp_path / "b-renewed.pem")
        installed = sluis(b, "pki", "install-cert", "--chain", str(tmp_path / "b-renewed.pem"))
        assert installed.returncode == 0, installed.stderr
        assert live_serial(b) == renewed.serial_number
        assert f"{renewed.serial_number:x}" != old_serial

        hup(server_b)
        wait_for_log(server_b, "TLS context ready", 4)

        new_serial = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            fresh = fresh_client.connect("after", server_b, b.fqdn)
            assert fresh["ok"], fresh
            new_serial = fresh["server_serial"]
            if new_serial != old_serial:
                break
            time.sleep(0.5)  # an old worker may still accept until it has stopped listening
        assert new_serial == f"{renewed.serial_number:x}"
        answer = fresh_client.call(op="request", name="after", path="/whoami")
        assert answer["status"] == 200, answer

        # The request sent before the reload completes, answered by an old worker.
        finished = client.receive()
        assert finished["ok"], finished
        assert finished["status"] == 200, finished
        body = json.loads(finished["body"])
        assert body["peer_id"] == OIN_A
        # ... by a worker of before the reload, which then stopped.
        # (It exits once its last request is answered: give it a moment on a busy machine.)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = {p.pid for p in psutil.Process(server_b.process.pid).children()}
            if body["worker_pid"] not in current:
                break
            time.sleep(0.2)
        assert body["worker_pid"] not in current
    finally:
        client.close()
        fresh_client.close()


def test_a_connection_accepted_just_before_a_reload_still_gets_its_answer(
    group: Group, server_b: Component
) -> None:
    # uvicorn closes a connection without a request at once when its worker stops; the client
    # that sends its request just then would see a reset. Sluis gives it a second.
    _, members = group
    a, b = members["a"], members["b"]
    client = Client(a)
    try:
        opened = client.connect("idle", server_b, b.fqdn)
        assert opened["ok"], opened
        stops = server_b.log().count("Shutting down")
        hup(server_b)
        wait_for_log(server_b, "Shutting down", stops + 2)  # both old workers are stopping
        answer = client.call(op="request", name="idle", path="/whoami")
        assert answer["ok"], answer
        assert answer["status"] == 200, answer
        assert answer["headers"].get("connection") == "close"
    finally:
        client.close()
    assert ": serving" in server_b.log()  # the line a rolling replacement waits for
