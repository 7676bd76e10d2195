"""A small Group for TLS tests (the fixtures are in conftest.py): one demo CA, organisations
with keys in their own SoftHSM tokens, one of another CA, and one whose certificate is revoked.

Everything HSM-backed runs in separate processes (gunicorn via ``sluis serve``, clients via
``sluis tls probe``), each started with its appliance's OPENSSL_CONF, as in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from appliance.config import SluisConfig
from appliance.demo.processes import Component, run_with_identity
from appliance.demo.provision import Organisation, provision_organisation
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


def appliance(ca: DemoCA, root: Path, name: str, oin: str, token: str) -> Appliance:
    fqdn = f"{name}.sluis.test"
    identity = OrganisationIdentity(f"Organisation {name}", oin, (fqdn,))
    config = provision_organisation(ca, Organisation(identity, token), root / name)
    return Appliance(name, config, fqdn)
