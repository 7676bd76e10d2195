"""The two organisations the benchmarks use: one demo CA, A and B, each with its key in SoftHSM.

B (``b.bench.test``) serves, A is the client; everything lives under ``root`` (a temporary
directory the caller removes).
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import SluisConfig
from appliance.demo.provision import Organisation, provision_organisation
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

SERVER_NAME = "b.bench.test"


def two_organisations(root: Path) -> tuple[DemoCA, dict[str, SluisConfig]]:
    """The demo CA and the provisioned configurations of "a" and "b"."""
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    orgs = {}
    for name, oin in (("a", "00000001000000000001"), ("b", "00000001000000000002")):
        identity = OrganisationIdentity(f"Bench {name}", oin, (f"{name}.bench.test",))
        orgs[name] = provision_organisation(
            ca, Organisation(identity, f"bench-{name}"), root / name
        )
    return ca, orgs
