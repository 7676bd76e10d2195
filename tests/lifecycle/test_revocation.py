"""Revocation with real processes: B's inway and Manager run under gunicorn; the demo CA revokes
A's certificate and B gets the new CRL bundle. Without a restart, B then refuses A: on a
connection opened before, in the FSC error format; on a new connection, in the handshake; and
B's logs name A's certificate in one line per refusal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from lifecycletest import OIN_A, Client, live_serial, publish_crls, wait_for_log

from appliance.demo.gateways import configure_gateways
from appliance.demo.group import Member
from appliance.demo.processes import Component, start_component
from appliance.pki.ca import DemoCA

Group = tuple[DemoCA, dict[str, Member]]
REFUSED = "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"


@dataclass
class Gateways:
    inway: Component
    manager: Component


@pytest.fixture(scope="module")
def b_gateways(group: Group, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    _, members = group
    b = members["b"]
    root = b.config_path.parent.parent  # the Group's directory: b/ holds B's files
    ports = configure_gateways(
        members,
        provider="b",
        consumer="a",
        service="echo",
        backend_url="http://127.0.0.1:9/",
        root=root,
    )
    logs = tmp_path_factory.mktemp("logs")
    manager = start_component("b-manager", b.config_path, "manager", port=b.port, log_dir=logs)
    try:
        inway = start_component(
            "b-inway", b.config_path, "inway", port=ports.inway_port, log_dir=logs
        )
    except BaseException:
        manager.stop()
        raise
    yield Gateways(inway, manager)
    inway.stop()
    manager.stop()


def _refused_in_fsc_format(answer: dict[str, object], domain: str) -> None:
    assert answer["ok"], answer
    assert answer["status"] == 400, answer
    headers = answer["headers"]
    assert isinstance(headers, dict)
    assert headers["fsc-error-code"] == REFUSED
    body = json.loads(str(answer["body"]))
    assert body["code"] == REFUSED
    assert body["domain"] == domain
    assert "revoked" in body["message"]


def _handshake_refused(client: Client, name: str, target: Component, server_name: str) -> str:
    """A new connection fails: in the handshake, or (TLS 1.3: the server verifies the client
    after the client finished) at the first read."""
    opened = client.connect(name, target, server_name)
    if not opened["ok"]:
        return str(opened["error"])
    answer = client.call(op="request", name=name, path="/v1/peer")
    assert not answer["ok"], answer
    return str(answer["error"])


def test_revoked_peer_is_refused_after_the_crl_reload(group: Group, b_gateways: Gateways) -> None:
    ca, members = group
    a, b = members["a"], members["b"]
    inway, manager = b_gateways.inway, b_gateways.manager
    client = Client(a)
    try:
        # Before: A gets through the certificate check of both (the inway then wants a token).
        opened = client.connect("inway", inway, b.fqdn)
        assert opened["ok"], opened
        before = client.call(op="request", name="inway", path="/anything")
        assert before["status"] == 401, before
        assert before["headers"]["fsc-error-code"] == "ERROR_CODE_ACCESS_TOKEN_MISSING"
        assert client.connect("manager", manager, b.fqdn)["ok"]
        peer = client.call(op="request", name="manager", path="/v1/peer")
        assert peer["status"] == 200, peer
        metrics = client.call(op="request", name="manager", path="/metrics")
        assert metrics["status"] == 200, metrics
        assert 'sluis_crl_stale{issuer="CN=Sluis Demo Private Services CA' in metrics["body"]

        # CRLs carry thisUpdate in whole seconds: the new one must be newer than the loaded one.
        time.sleep(1.1)
        serial_a = live_serial(a)
        ca.revoke(serial_a, x509.ReasonFlags.key_compromise)
        publish_crls(ca, b)
        time.sleep(2.5)  # the workers look at the bundle at most every second

        # The connections opened before: an HTTP answer is possible, in the FSC error format.
        _refused_in_fsc_format(
            client.call(op="request", name="inway", path="/anything"), "ERROR_DOMAIN_INWAY"
        )
        _refused_in_fsc_format(
            client.call(op="request", name="manager", path="/v1/peer"), "ERROR_DOMAIN_MANAGER"
        )
        # New connections: refused in the TLS handshake (the client sees the alert or just the
        # closed connection, depending on timing; B's log below says why).
        for name, target in (("inway-new", inway), ("manager-new", manager)):
            error = _handshake_refused(client, name, target, b.fqdn)
            assert "revoked" in error or "RemoteDisconnected" in error, error
    finally:
        client.close()

    # One line per refusal, naming A's certificate (never content).
    for component in (inway, manager):
        wait_for_log(component, f"request refused: peer {OIN_A}", 1, timeout=10)
        wait_for_log(component, "certificate revoked (certificate 0 of its chain: ", 1, timeout=10)
        log = component.log()
        assert f"serial={serial_a:x}" in log
        assert f"serial {serial_a:x}" in log
        assert "reloaded" in log
