"""Fixtures for the HSM tests: shared tokens per algorithm and a tiny throwaway test CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from appliance.hsm.settings import HsmSettings
from appliance.pki.identity import OrganisationIdentity

IssueChain = Callable[..., bytes]


@pytest.fixture(scope="session")
def p256_token(make_token: Callable[..., HsmSettings]) -> HsmSettings:
    """A token with a P-256 organisation key; tests must not change it."""
    return make_token("shared-ec-p256", "ec-p256")


@pytest.fixture(scope="session")
def p384_token(make_token: Callable[..., HsmSettings]) -> HsmSettings:
    return make_token("shared-ec-p384", "ec-p384")


@pytest.fixture(scope="session")
def rsa_token(make_token: Callable[..., HsmSettings]) -> HsmSettings:
    return make_token("shared-rsa-3072", "rsa-3072")


TOKEN_FIXTURES = {"ec-p256": "p256_token", "ec-p384": "p384_token", "rsa-3072": "rsa_token"}


@pytest.fixture
def token_for(request: pytest.FixtureRequest) -> Callable[[str], HsmSettings]:
    """``token_for("rsa-3072")``: the shared token of an algorithm (made on first use)."""

    def get(algorithm: str) -> HsmSettings:
        settings: HsmSettings = request.getfixturevalue(TOKEN_FIXTURES[algorithm])
        return settings

    return get


@pytest.fixture
def identity() -> OrganisationIdentity:
    return OrganisationIdentity(
        name="Gemeente Proefstad",
        oin="00000001234567890000",
        fqdns=("gateway.proefstad.example.nl", "inway.proefstad.example.nl"),
    )


@pytest.fixture(scope="session")
def issue_chain() -> IssueChain:
    """A tiny local test CA: ``issue_chain(csr_pem, days=90) -> leaf + CA PEM``.

    Test-only; the real demo CA lives in appliance/pki and is not used here.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluis HSM test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(csr_pem: bytes, days: int = 90) -> bytes:
        request = x509.load_pem_x509_csr(csr_pem)
        assert request.is_signature_valid
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(ca_cert.subject)
            .public_key(request.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return leaf.public_bytes(Encoding.PEM) + ca_cert.public_bytes(Encoding.PEM)

    return issue


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """An appliance configuration naming a token and key (for ``--config``); the [tls] files
    are placeholders the hsm commands do not read."""

    def write(*, token_label: str, key_label: str, pin_file: Path, login_lock: Path) -> Path:
        config = tmp_path / "sluis.toml"
        config.write_text(
            f"""
[hsm]
token_label = "{token_label}"
key_label = "{key_label}"
pin_file = "{pin_file}"
login_lock = "{login_lock}"

[tls]
certificate_chain = "{tmp_path}/certs/organisation.pem"
key_reference = "{tmp_path}/keys/organisation.key.pem"
trust_anchors = "{tmp_path}/trust.pem"
crls = "{tmp_path}/crls.pem"
openssl_conf = "{tmp_path}/openssl.cnf"
""",
            encoding="utf-8",
        )
        return config

    return write
