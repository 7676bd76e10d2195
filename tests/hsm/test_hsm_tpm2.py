"""``hsm_provider: tpm2``: the organisation key in a TPM 2.0 through tpm2-pkcs11, against swtpm.

The appliance is provisioned through the TPM's module like any other (key generated in the
TPM, CSR signed there, certificate stored in the token), then the manager's signer signs and
``sluis tls check`` completes a mutual TLS handshake with pkcs11-provider loading the key from
the TPM. appliance/hsm/swtpm.py starts the software TPM, its resource manager and the token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hosttools import require
from provisioned import provision_on_module
from test_hsm_token_status import assert_recovered, report, run_outage

from appliance.config import SluisConfig
from appliance.demo.processes import run_with_identity
from appliance.hsm.keys import generate_key, list_objects, require_protected_key
from appliance.hsm.signer import Pkcs11Signer, raw_to_der
from appliance.hsm.swtpm import TOOLS, TPM2_PKCS11_MODULE, SoftwareTpm, start_software_tpm
from appliance.hsm.token import mechanisms

TOKEN = "tpm-org"


@dataclass
class TpmAppliance:
    tpm: SoftwareTpm
    config: SluisConfig
    config_path: Path


@pytest.fixture(scope="module")
def tpm_appliance(
    softhsm_env: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TpmAppliance]:
    for tool in TOOLS:
        require(tool)
    require(str(TPM2_PKCS11_MODULE))
    root = tmp_path_factory.mktemp("tpm2")
    user_pin = secrets.token_hex(8)
    tpm = start_software_tpm(root / "tpm", TOKEN, user_pin, secrets.token_hex(8))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in tpm.environment.items():
                mp.setenv(name, value)
            config = provision_on_module(
                root,
                module=TPM2_PKCS11_MODULE,
                token_label=TOKEN,
                user_pin=user_pin,
                login_lock=root / "hsm.lock",
                oin="00000001000000000924",
            )
            yield TpmAppliance(tpm, config, config.source or Path())
    finally:
        tpm.stop()


def test_the_key_was_generated_in_the_tpm(tpm_appliance: TpmAppliance) -> None:
    hsm = tpm_appliance.config.hsm
    [private] = [o for o in list_objects(hsm) if o.kind == "private-key"]
    assert private.algorithm == "ec-p256"
    assert private.unprotected == []  # sensitive, never extractable, local: made in the TPM
    require_protected_key(hsm)
    assert {"CKM_ECDSA", "CKM_EC_KEY_PAIR_GEN"} <= mechanisms(hsm)


def test_contract_signature_from_the_tpm(tpm_appliance: TpmAppliance) -> None:
    data = b"contract content hash " + secrets.token_bytes(16)
    with Pkcs11Signer(tpm_appliance.config.hsm) as signer:
        assert signer.algorithm == "ES256"
        signature = signer.sign(data)
        public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(raw_to_der(signature), data, ec.ECDSA(hashes.SHA256()))


def test_mutual_tls_handshake_with_the_key_in_the_tpm(tpm_appliance: TpmAppliance) -> None:
    done = run_with_identity(tpm_appliance.config_path, ["tls", "check"], timeout=120)
    assert done.returncode == 0, done.stderr


def test_p384_in_the_tpm(tpm_appliance: TpmAppliance) -> None:
    hsm = replace(tpm_appliance.config.hsm, key_label="sluis-organisation-p384")
    generate_key(hsm, "ec-p384")
    with Pkcs11Signer(hsm) as signer:
        assert signer.algorithm == "ES384"
        public = signer.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(raw_to_der(signer.sign(b"x")), b"x", ec.ECDSA(hashes.SHA384()))


def test_the_tpm_goes_away_and_comes_back(
    tpm_appliance: TpmAppliance, caplog: pytest.LogCaptureFixture
) -> None:
    # swtpm and its resource manager stopped for a second, then started on the same state.
    settings = tpm_appliance.config.hsm
    caplog.set_level(logging.INFO, logger="appliance.hsm.status")
    outage = run_outage(settings, tpm_appliance.tpm.stop_tpm, tpm_appliance.tpm.start_tpm)
    report("swtpm stopped", outage)
    assert_recovered(settings, outage, caplog)
