"""Importing the organisation certificate: into the token and atomically onto disk."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, CertificateType, ObjectClass

from appliance.hsm.certs import import_certificate
from appliance.hsm.csr import make_csr
from appliance.hsm.errors import CertificateMismatchError
from appliance.hsm.keys import list_objects, public_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import open_session
from appliance.pki.identity import OrganisationIdentity

MakeToken = Callable[..., HsmSettings]
IssueChain = Callable[..., bytes]


def _token_certificates(settings: HsmSettings) -> list[dict[str, object]]:
    with open_session(settings) as session:
        found = []
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
            found.append(
                {
                    "label": obj[Attribute.LABEL],
                    "id": obj[Attribute.ID],
                    "type": obj[Attribute.CERTIFICATE_TYPE],
                    "value": obj[Attribute.VALUE],
                    "subject": obj[Attribute.SUBJECT],
                    "private": obj[Attribute.PRIVATE],
                }
            )
        key = session.get_key(ObjectClass.PRIVATE_KEY, label=settings.key_label)
        key_id = key[Attribute.ID]
    for cert in found:
        cert["key_id"] = key_id
    return found


def test_import_stores_in_token_and_links_live_chain(
    make_token: MakeToken,
    issue_chain: IssueChain,
    identity: OrganisationIdentity,
    tmp_path: Path,
) -> None:
    settings = make_token("import-cert")
    chain = issue_chain(make_csr(settings, identity), days=90)
    cert_dir = tmp_path / "certs"

    live = import_certificate(settings, chain, cert_dir)

    assert live == cert_dir / "organisation.pem"
    assert live.is_symlink()
    target = Path(str(live.readlink()))
    assert not target.is_absolute()
    assert target.parts[0] == "archive"
    assert live.read_bytes() == chain
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert live.resolve().name.startswith(
        f"organisation-{leaf.not_valid_after_utc:%Y%m%dT%H%M%SZ}-"
    )
    assert list(cert_dir.glob(".*")) == []  # no temporary files left

    [stored] = _token_certificates(settings)
    assert stored["label"] == settings.key_label
    assert stored["id"] == stored["key_id"]
    assert stored["type"] == CertificateType.X_509
    assert stored["value"] == leaf.public_bytes(Encoding.DER)
    assert stored["subject"] == identity.subject().public_bytes()
    assert stored["private"] is False

    [cert_info] = [o for o in list_objects(settings) if o.kind == "certificate"]
    assert cert_info.oin == identity.oin
    assert cert_info.days_to_expiry in (88, 89)
    assert cert_info.algorithm == "ec-p256"
    assert "CN=gateway.proefstad.example.nl" in (cert_info.subject or "")


def test_renewal_replaces_token_cert_and_swaps_link(
    make_token: MakeToken,
    issue_chain: IssueChain,
    identity: OrganisationIdentity,
    tmp_path: Path,
) -> None:
    settings = make_token("renew-cert")
    csr = make_csr(settings, identity)
    cert_dir = tmp_path / "certs"
    first = import_certificate(settings, issue_chain(csr, days=30), cert_dir)
    first_target = first.resolve()
    second_chain = issue_chain(csr, days=60)
    second = import_certificate(settings, second_chain, cert_dir)
    assert second == first
    assert second.read_bytes() == second_chain
    assert second.resolve() != first_target
    assert first_target.exists()  # the archive keeps the old chain
    assert len(list((cert_dir / "archive").iterdir())) == 2
    [stored] = _token_certificates(settings)
    second_leaf = x509.load_pem_x509_certificates(second_chain)[0]
    assert stored["value"] == second_leaf.public_bytes(Encoding.DER)
    # The token's public key is the one in the renewed certificate.
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert public_key(settings).public_bytes(*spki) == second_leaf.public_key().public_bytes(*spki)


def test_certificate_for_another_key_is_refused(
    make_token: MakeToken,
    issue_chain: IssueChain,
    identity: OrganisationIdentity,
    tmp_path: Path,
) -> None:
    settings = make_token("mismatch-cert")
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(identity.subject())
        .add_extension(identity.subject_alternative_name(), critical=False)
        .sign(other_key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )
    cert_dir = tmp_path / "certs"
    with pytest.raises(CertificateMismatchError, match=settings.key_label):
        import_certificate(settings, issue_chain(other_csr), cert_dir)
    assert not (cert_dir / "organisation.pem").exists()
    assert _token_certificates(settings) == []


def test_broken_chain_is_refused(
    make_token: MakeToken,
    issue_chain: IssueChain,
    identity: OrganisationIdentity,
    tmp_path: Path,
) -> None:
    settings = make_token("broken-chain")
    leaf = x509.load_pem_x509_certificates(issue_chain(make_csr(settings, identity)))[0]
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Unrelated CA")])
    now = dt.datetime.now(dt.UTC)
    stranger = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(stranger_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(stranger_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(Encoding.PEM) + stranger.public_bytes(Encoding.PEM)
    with pytest.raises(CertificateMismatchError, match="did not issue"):
        import_certificate(settings, chain, tmp_path / "certs")
    with pytest.raises(CertificateMismatchError, match="no readable PEM"):
        import_certificate(settings, b"garbage", tmp_path / "certs")
