"""A small Group for TLS tests: one demo CA, organisations with keys in their own SoftHSM
tokens, an organisation of another CA, and one whose certificate is revoked.

Everything HSM-backed runs in separate processes (gunicorn via ``sluis serve``, clients via
``sluis tls probe``), each started with its appliance's OPENSSL_CONF, as in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.config import SluisConfig
from appliance.demo.processes import Component, run_with_identity, start_component
from appliance.demo.provision import Organisation, install_trust, provision_organisation
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

OIN_A = "00000001000000000001"
OIN_B = "00000001000000000002"
OIN_REVOKED = "00000001000000000003"
OIN_OUTSIDER = "00000009000000000009"


@dataclass(frozen=True)
class Appliance:
    name: str
    config: SluisConfig
    fqdn: str

    @property
    def config_path(self) -> Path:
        assert self.config.source is not None
        return self.config.source

    def probe(self, target: Component, server_name: str, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        result = run_with_identity(
            self.config_path,
            [
                "tls",
                "probe",
                "--connect",
                f"{target.host}:{target.port}",
                "--server-name",
                server_name,
                *extra,
            ],
        )
        try:
            return result.returncode, json.loads(result.stdout)
        except ValueError:
            raise AssertionError(
                f"probe printed no JSON:\n{result.stdout}\n{result.stderr}"
            ) from None


@dataclass(frozen=True)
class Group:
    ca: DemoCA
    a: Appliance
    b: Appliance
    revoked: Appliance
    outsider: Appliance
    root: Path


def _appliance(ca: DemoCA, root: Path, name: str, oin: str, token: str) -> Appliance:
    fqdn = f"{name}.sluis.test"
    identity = OrganisationIdentity(f"Organisation {name}", oin, (fqdn,))
    config = provision_organisation(ca, Organisation(identity, token), root / name)
    return Appliance(name, config, fqdn)


@pytest.fixture(scope="session")
def group(softhsm_env: object, tmp_path_factory: pytest.TempPathFactory) -> Group:
    root = tmp_path_factory.mktemp("group")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    other_ca = DemoCA.create(root / "other-ca", name="Other", crl_base_url="http://127.0.0.1:1/x")
    a = _appliance(ca, root, "a", OIN_A, "tls-a")
    b = _appliance(ca, root, "b", OIN_B, "tls-b")
    revoked = _appliance(ca, root, "revoked", OIN_REVOKED, "tls-revoked")
    outsider = _appliance(other_ca, root, "outsider", OIN_OUTSIDER, "tls-outsider")
    # Revoke after issuing, then give every appliance of the Group the new CRLs.
    (record,) = [r for r in ca.issued() if OIN_REVOKED in r.subject]
    ca.revoke(record.serial)
    # The outsider trusts the Group (so that only the Group can refuse it), not vice versa.
    for member in (a, b, revoked, outsider):
        install_trust(ca, member.config_path.parent)
    return Group(ca, a, b, revoked, outsider, root)


@pytest.fixture(scope="session")
def server_b(group: Group) -> Iterator[Component]:
    """Organisation B's listener: the whoami app under gunicorn, 3 workers."""
    component = start_component(
        "b-whoami", group.b.config_path, "whoami", workers=3, log_dir=group.root / "logs"
    )
    yield component
    component.stop()
