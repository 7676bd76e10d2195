"""The inway for real: `sluis serve inway` under gunicorn, called over mutual TLS.

Two organisations of one Group, each with its key in its own SoftHSM token: A runs the inway
in front of a backend; B calls it as an outway would, with its own identity. A's access token
is made the way A's Manager makes them (the contract's claims, signed in A's token).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from inwaytest import EchoBackend, EchoState

from appliance.config import SluisConfig, load_config
from appliance.demo.processes import Component, start_component
from appliance.demo.provision import Organisation, provision_organisation
from appliance.inway.certificates import cluster_dir
from appliance.inway.logging import JsonLinesLogWriter
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.tls.peer import certificate_thumbprint, public_key_thumbprint

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
GROUP_ID = "sluis.inway.test"
OIN_A = "00000001000000000201"
OIN_B = "00000001000000000202"
SERVICE = "basisregistratie"
INWAY_ADDRESS = "https://a.sluis.test:443"
MIB = 1024 * 1024


@dataclass
class Setup:
    root: Path
    a: SluisConfig
    b: SluisConfig
    backend: EchoBackend
    inway: Component
    log_file: Path

    def environment(self, config: SluisConfig) -> dict[str, str]:
        return {
            **os.environ,
            "OPENSSL_CONF": str(config.tls.openssl_conf),
            **config.hsm.environment(),
        }

    def run(self, script: str, config: SluisConfig, request: dict[str, Any]) -> str:
        assert config.source is not None
        result = subprocess.run(
            [sys.executable, str(HERE / script), str(config.source)],
            input=json.dumps(request),
            env=self.environment(config),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def token(self, bound_to: str) -> str:
        leaf = _leaf(self.b)
        return self.run(
            "issue_token.py",
            self.a,
            {
                "outway_peer_id": OIN_B,
                "outway_public_key_thumbprint": public_key_thumbprint(leaf),
                "service": SERVICE,
                "inway_address": INWAY_ADDRESS,
                "client_certificate_thumbprint": bound_to,
            },
        ).strip()

    def call(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        plan = {
            "url": f"https://127.0.0.1:{self.inway.port}",
            "server_name": "a.sluis.test",
            "requests": requests,
        }
        return dict(json.loads(self.run("peer_client.py", self.b, plan)))

    def worker_rss(self) -> int:
        workers = psutil.Process(self.inway.process.pid).children(recursive=True)
        return sum(w.memory_info().rss for w in workers)


def _leaf(config: SluisConfig) -> x509.Certificate:
    return x509.load_pem_x509_certificates(config.tls.certificate_chain.read_bytes())[0]


def _thumbprint(config: SluisConfig) -> str:
    return certificate_thumbprint(_leaf(config).public_bytes(Encoding.DER))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("inway")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    configs = {}
    for name, oin in (("a", OIN_A), ("b", OIN_B)):
        identity = OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.sluis.test",))
        configs[name] = provision_organisation(
            ca, Organisation(identity, f"inway-{name}"), root / name
        )
    log_file = root / "a" / "txlog.jsonl"
    backend = EchoBackend(EchoState(log_file=log_file))
    backend.release_last.set()  # /stream/ answers without waiting for the client here
    a_path = configs["a"].source
    assert a_path is not None
    with a_path.open("a", encoding="utf-8") as toml:
        toml.write(
            "\n[inway]\n"
            f'services = ["{SERVICE}={backend.url}/api"]\n'
            f'address = "{INWAY_ADDRESS}"\n'
            f'group_id = "{GROUP_ID}"\n'
            f'transaction_log = "jsonl:{log_file}"\n'
            "read_timeout_seconds = 5\n"
        )
    a = load_config(a_path)
    inway = start_component("inway-a", a_path, "inway", workers=2, log_dir=root / "logs")
    try:
        yield Setup(root, a, configs["b"], backend, inway, log_file)
    finally:
        inway.stop()
        backend.stop()


def test_a_peer_calls_a_service_through_the_inway(setup: Setup) -> None:
    access = setup.token(bound_to=_thumbprint(setup.b))
    foreign = setup.token(bound_to=_thumbprint(setup.a))  # bound to another certificate
    transaction = str(uuid.uuid4())
    fsc = {"Fsc-Authorization": access, "Fsc-Transaction-Id": transaction}
    rss_before = setup.worker_rss()
    started = time.monotonic()
    outcome = setup.call(
        [
            {
                "method": "GET",
                "path": "/persons/1?x=%2F",
                "headers": {**fsc, "Connection": "keep-alive, X-Private", "X-Private": "1"},
            },
            {"method": "GET", "path": "/x", "headers": {**fsc, "Fsc-Authorization": foreign}},
            {"method": "GET", "path": "/x", "headers": {"Fsc-Transaction-Id": transaction}},
            {"method": "GET", "path": "/x", "headers": {"Fsc-Authorization": access}},
            {"method": "GET", "path": "/a/%2e%2e/b", "headers": fsc},
            {
                "method": "POST",
                "path": "/upload",
                "headers": {**fsc, "Fsc-Transaction-Id": str(uuid.uuid4())},
                "upload_mib": 50,
            },
            {
                "method": "GET",
                "path": "/stream/50",
                "headers": {**fsc, "Fsc-Transaction-Id": str(uuid.uuid4())},
            },
        ]
    )
    elapsed = time.monotonic() - started
    ok, foreign_result, no_token, no_transaction, escape, upload, download = outcome["results"]

    assert ok["status"] == 200, (ok, setup.inway.log())
    echoed = json.loads(ok["body"])
    assert echoed["raw_path"] == "/api/persons/1?x=%2F"
    assert echoed["logged"] is True  # the record was written before the backend saw it
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["fsc-authorization"] == access
    assert headers["fsc-transaction-id"] == transaction
    assert "x-private" not in headers

    for result, status, code in (
        (foreign_result, 401, "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        (no_token, 401, "ERROR_CODE_ACCESS_TOKEN_MISSING"),
        (no_transaction, 400, "MISSING_LOG_RECORD_ID"),
        (escape, 400, "ERROR_CODE_INVALID_PATH"),
    ):
        assert result["status"] == status, result
        error = json.loads(result["body"])
        assert error["code"] == code
        assert error["domain"] == "ERROR_DOMAIN_INWAY"
        assert {k.lower(): v for k, v in result["headers"]}["fsc-error-code"] == code

    assert upload["status"] == 200
    uploaded = json.loads(upload["body"])
    assert uploaded["body_size"] == 50 * MIB
    assert uploaded["chunks"] > 50
    assert download["status"] == 200
    assert download["size"] == 50 * MIB
    # 100 MiB went through two gunicorn workers without them holding it.
    growth = setup.worker_rss() - rss_before
    assert growth < 30 * MIB, f"inway workers grew by {growth / MIB:.0f} MiB"
    # Every request over one kept-alive mutual-TLS connection.
    assert outcome["connections"] == 1
    assert elapsed < 120

    records = JsonLinesLogWriter(setup.log_file).records()
    assert records[0]["transaction_id"] == transaction
    assert len(records) == 3  # the refused requests were not logged, nor forwarded
    assert records[0]["source"] == {"type": "SOURCE_TYPE_SOURCE", "outway_peer_id": OIN_B}
    assert records[0]["destination"] == {
        "type": "DESTINATION_TYPE_DESTINATION",
        "service_peer_id": OIN_A,
    }
    assert records[0]["service_name"] == SERVICE
    assert records[0]["grant_hash"].startswith("$1$3$")
    assert len(setup.backend.state.seen()) == 3
    assert "Traceback" not in setup.inway.log()


def test_a_token_from_another_node_of_the_organisation_is_accepted_while_it_is_a_node(
    setup: Setup,
) -> None:
    """Two gateway nodes of A (docs/ha.md): each its own key in its own token, never copied.
    A token signed by node 2's Manager reaches node 1's inway (behind one virtual address):
    accepted once node 2's chain is in node 1's cluster folder, without a restart."""
    identity = OrganisationIdentity("Organisation a", OIN_A, ("a.sluis.test",))
    node2 = provision_organisation(
        DemoCA.open(setup.root / "ca"), Organisation(identity, "inway-a-node2"), setup.root / "a2"
    )
    assert _thumbprint(node2) != _thumbprint(setup.a)  # another key, the same peer
    leaf = _leaf(setup.b)
    access = setup.run(
        "issue_token.py",
        node2,
        {
            "outway_peer_id": OIN_B,
            "outway_public_key_thumbprint": public_key_thumbprint(leaf),
            "service": SERVICE,
            "inway_address": INWAY_ADDRESS,
            "client_certificate_thumbprint": _thumbprint(setup.b),
            "group_id": GROUP_ID,  # node 2 runs no [inway] here
        },
    ).strip()

    def status() -> int:
        fsc = {"Fsc-Authorization": access, "Fsc-Transaction-Id": str(uuid.uuid4())}
        result = setup.call([{"method": "GET", "path": "/node2", "headers": fsc}])["results"][0]
        return int(result["status"])

    assert status() == 401  # node 2 is not (yet) a node of this inway's organisation
    cluster = cluster_dir(setup.a.tls.certificate_chain)
    cluster.mkdir(exist_ok=True)
    try:
        (cluster / "node2.pem").write_bytes(node2.tls.certificate_chain.read_bytes())
        assert status() == 200, setup.inway.log()
    finally:
        (cluster / "node2.pem").unlink()
