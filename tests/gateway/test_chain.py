"""The whole data path with real processes: app -> outway (A) -> inway (B) -> backend.

Three appliances (directory, A, B), each with its own SoftHSM token, Managers, B's inway and
A's outway under gunicorn; contracts made and signed through the CLI; both transaction logs
checked for the request's record.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.config import SluisConfig
from appliance.demo.gateways import configure_gateways, start_sample_api
from appliance.demo.group import (
    MemberPlan,
    provision_group,
    start_managers,
    state_of,
    stop_managers,
    wait_for,
)
from appliance.demo.processes import Component, start_component
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.txlog.store import TransactionLog

pytestmark = pytest.mark.slow

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000000200", "00000001000000000201", "00000001000000000202"
SERVICE = "basisregistratie"
PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.chain.test",)))
    for name, oin in (("directory", OIN_DIRECTORY), ("a", OIN_A), ("b", OIN_B))
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("chain")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        PLANS,
        group_id="chain.test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    a, b = members["a"], members["b"]
    backend = start_sample_api()
    gateways = configure_gateways(
        members,
        provider="b",
        consumer="a",
        service=SERVICE,
        backend_url=f"http://127.0.0.1:{backend.server_address[1]}/api",
        root=root,
    )
    inway_port, outway_port = gateways.inway_port, gateways.outway_port
    components: list[Component] = []
    try:
        start_managers(members, root / "logs", workers=1)
        published = b.sluis("contract", "propose-publication", "--service", SERVICE)
        wait_for(lambda: state_of(members["directory"], published["hash"]) == "proposed", "dir")
        members["directory"].sluis("contract", "accept", published["hash"])
        wait_for(lambda: state_of(b, published["hash"]) == "valid", "publication valid at b")
        asked = a.sluis(
            "contract", "propose-connection", "--service-peer", OIN_B, "--service", SERVICE
        )
        wait_for(lambda: state_of(b, asked["hash"]) == "proposed", "b to receive the request")
        b.sluis("contract", "accept", asked["hash"])
        wait_for(lambda: state_of(a, asked["hash"]) == "valid", "connection valid at a")
        grant = a.sluis("contract", "show", asked["hash"])["grant_hashes"][0]
        components.append(
            start_component(
                "inway-b", b.config_path, "inway", port=inway_port, workers=1, log_dir=root / "logs"
            )
        )
        components.append(
            start_component(
                "outway-a",
                a.config_path,
                "outway",
                port=outway_port,
                workers=1,
                log_dir=root / "logs",
            )
        )
        yield {"a": a, "b": b, "grant": grant, "outway_port": outway_port, "root": root}
    finally:
        for component in components:
            component.stop()
        stop_managers(members)
        backend.shutdown()


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    # HTTP header names are case-insensitive; uvicorn sends them in lower case.
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _records(config: SluisConfig, peer_id: str) -> list[dict[str, Any]]:
    assert config.txlog is not None
    with TransactionLog.open(config.txlog.database) as log:
        records, _ = log.query(peer_id, limit=100)
    return [r.to_api() for r in records]


def test_request_by_grant_hash_reaches_the_service_and_both_logs(chain: dict[str, Any]) -> None:
    status, headers, body = _get(
        chain["outway_port"], "/items/42?x=1", {"Fsc-Grant-Hash": chain["grant"]}
    )
    assert status == 200, body
    seen = json.loads(body)
    transaction = headers["fsc-transaction-id"]
    assert seen == {
        "service": "sample register",
        "path": "/api/items/42?x=1",
        "transaction_id": transaction,
        "authorization": True,
    }
    outgoing = [r for r in _records(chain["a"].config, OIN_A) if r["transaction_id"] == transaction]
    incoming = [r for r in _records(chain["b"].config, OIN_B) if r["transaction_id"] == transaction]
    assert [r["direction"] for r in outgoing] == ["DIRECTION_OUTGOING"]
    assert [r["direction"] for r in incoming] == ["DIRECTION_INCOMING"]
    for record in outgoing + incoming:
        assert record["grant_hash"] == chain["grant"]
        assert record["service_name"] == SERVICE
        assert record["source"]["outway_peer_id"] == OIN_A
        assert record["destination"]["service_peer_id"] == OIN_B


def test_nlx_style_address_finds_the_grant(chain: dict[str, Any]) -> None:
    status, headers, body = _get(chain["outway_port"], f"/{OIN_B}/{SERVICE}/items/7", {})
    assert status == 200, body
    assert json.loads(body)["path"] == "/api/items/7"
    assert headers["fsc-transaction-id"]


def test_unknown_service_is_a_clear_outway_error(chain: dict[str, Any]) -> None:
    status, headers, body = _get(chain["outway_port"], f"/{OIN_B}/nothing-here/x", {})
    assert status == 404
    assert headers["fsc-error-code"] == "ERROR_CODE_GRANT_NOT_FOUND"
    assert json.loads(body)["domain"] == "ERROR_DOMAIN_OUTWAY"
