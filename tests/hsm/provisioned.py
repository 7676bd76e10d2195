"""An appliance provisioned through any PKCS#11 module whose token exists already (the TPM, a
network HSM): key, CSR, certificate from a demo CA, key reference and OpenSSL configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import SluisConfig
from appliance.demo.provision import Organisation, provision_with_token
from appliance.hsm.pin import write_pin_file
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity


def provision_on_module(
    root: Path, *, module: Path, token_label: str, user_pin: str, login_lock: Path, oin: str
) -> SluisConfig:
    """Provision ``root/appliance`` with the token ``token_label`` of ``module``."""
    appliance = root / "appliance"
    appliance.mkdir()
    write_pin_file(appliance / "hsm.pin", user_pin)
    identity = OrganisationIdentity(
        name=f"Organisation {token_label}", oin=oin, fqdns=(f"{token_label}.sluis.test",)
    )
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    config = provision_with_token(
        ca,
        Organisation(identity, token_label),
        appliance,
        module=module,
        login_lock=login_lock,
        init_token=False,
    )
    assert config.source is not None
    return config


def p11kit_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one p11-kit server socket of the test session: p11-kit-client.so reads
    P11_KIT_SERVER_ADDRESS once, when the process loads it, so every server of the session
    listens at the same address (as a key box does)."""
    return tmp_path_factory.getbasetemp() / "p11-kit.sock"
