"""Fixtures: a small Group for TLS tests and organisation B's listener (see tlsgroup.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tlsgroup import OIN_A, OIN_B, OIN_OUTSIDER, OIN_REVOKED, Group, appliance

from appliance.demo.processes import Component, start_component
from appliance.demo.provision import install_trust
from appliance.pki.ca import DemoCA


@pytest.fixture(scope="session")
def group(softhsm_env: object, tmp_path_factory: pytest.TempPathFactory) -> Group:
    root = tmp_path_factory.mktemp("group")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    other_ca = DemoCA.create(root / "other-ca", name="Other", crl_base_url="http://127.0.0.1:1/x")
    a = appliance(ca, root, "a", OIN_A, "tls-a")
    b = appliance(ca, root, "b", OIN_B, "tls-b")
    revoked = appliance(ca, root, "revoked", OIN_REVOKED, "tls-revoked")
    outsider = appliance(other_ca, root, "outsider", OIN_OUTSIDER, "tls-outsider")
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
