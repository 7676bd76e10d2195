"""The demo CA: hierarchy, certificate profile and what it refuses to issue."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pkitest import CRL_BASE, FQDN, OIN, ORGANISATION, build_csr, subject_name

from appliance.errors import SluisError
from appliance.pki.ca import CaError, DemoCA
from appliance.pki.identity import IdentityError, validate_oin

T = TypeVar("T", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


# -- hierarchy -------------------------------------------------------------------------------


def test_issued_certificate_verifies_as_client_and_server(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    store = Store([ca.root_certificate])
    intermediates = [ca.intermediate_certificate]

    client = PolicyBuilder().store(store).build_client_verifier().verify(leaf, intermediates)
    assert client.chain == [leaf, ca.intermediate_certificate, ca.root_certificate]

    server = PolicyBuilder().store(store).build_server_verifier(DNSName(FQDN))
    assert server.verify(leaf, intermediates)[-1] == ca.root_certificate


def test_server_verification_fails_for_another_name(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    verifier = (
        PolicyBuilder()
        .store(Store([ca.root_certificate]))
        .build_server_verifier(DNSName("other.example"))
    )
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(leaf, [ca.intermediate_certificate])


def test_ca_certificates_profile(ca: DemoCA) -> None:
    root, intermediate = ca.root_certificate, ca.intermediate_certificate
    assert root.subject.rfc4514_string() == "CN=Sluis Demo Root CA,O=Sluis Demo,C=NL"
    assert root.issuer == root.subject
    assert intermediate.subject.rfc4514_string() == (
        "CN=Sluis Demo Private Services CA,O=Sluis Demo,C=NL"
    )
    assert intermediate.issuer == root.subject
    root.verify_directly_issued_by(root)
    intermediate.verify_directly_issued_by(root)

    for cert, pathlen in ((root, 1), (intermediate, 0)):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp384r1"
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical
        assert bc.value.ca
        assert bc.value.path_length == pathlen
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical
        assert ku.value.key_cert_sign
        assert ku.value.crl_sign
        assert not ku.value.digital_signature

    root_ski = _ext(root, x509.SubjectKeyIdentifier).value
    aki = _ext(intermediate, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert _ext(intermediate, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(intermediate.public_key()).digest
    )
    (point,) = _ext(intermediate, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(f"{CRL_BASE}/root.crl")]
    assert intermediate.not_valid_after_utc <= root.not_valid_after_utc


def test_public_files_written(ca: DemoCA) -> None:
    assert ca.trust_anchor_path == ca.directory / "public" / "root.pem"
    assert ca.intermediate_path == ca.directory / "public" / "intermediate.pem"
    assert x509.load_pem_x509_certificate(ca.trust_anchor_path.read_bytes()) == (
        ca.root_certificate
    )
    assert x509.load_pem_x509_certificate(ca.intermediate_path.read_bytes()) == (
        ca.intermediate_certificate
    )


def test_ca_key_files_are_private(ca: DemoCA) -> None:
    private = ca.directory / "private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    keys = sorted(private.iterdir())
    assert [k.name for k in keys] == ["intermediate.key.pem", "root.key.pem"]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_open_refuses_a_readable_key(ca: DemoCA) -> None:
    os.chmod(ca.directory / "private" / "root.key.pem", 0o644)
    with pytest.raises(CaError, match="accessible to others"):
        DemoCA.open(ca.directory)


def test_open_round_trip(ca: DemoCA) -> None:
    reopened = DemoCA.open(ca.directory)
    assert reopened.root_certificate == ca.root_certificate
    assert reopened.intermediate_certificate == ca.intermediate_certificate
    leaf = reopened.issue(build_csr())
    leaf.verify_directly_issued_by(ca.intermediate_certificate)


def test_open_without_ca(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="holds no demo CA"):
        DemoCA.open(tmp_path)


def test_create_refuses_existing_ca(ca: DemoCA) -> None:
    before = (ca.directory / "private" / "root.key.pem").read_bytes()
    with pytest.raises(CaError, match="already holds a CA"):
        DemoCA.create(ca.directory, crl_base_url=CRL_BASE)
    assert (ca.directory / "private" / "root.key.pem").read_bytes() == before


@pytest.mark.parametrize("url", ["ftp://crl.example/pki", "crl.example/pki", "http://"])
def test_create_refuses_bad_crl_base_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(CaError, match="CRL base URL"):
        DemoCA.create(tmp_path / "ca", crl_base_url=url)
    assert not (tmp_path / "ca").exists()


def test_create_refuses_intermediate_outliving_root(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="must not exceed the root"):
        DemoCA.create(tmp_path / "ca", crl_base_url=CRL_BASE, root_days=10, intermediate_days=20)


def test_custom_name_and_trailing_slash(tmp_path: Path) -> None:
    ca = DemoCA.create(tmp_path / "ca", name="Proef", crl_base_url=CRL_BASE + "/")
    assert ca.root_certificate.subject.rfc4514_string() == "CN=Proef Root CA,O=Proef,C=NL"
    leaf = ca.issue(build_csr())
    (point,) = _ext(leaf, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(f"{CRL_BASE}/intermediate.crl")]


# -- organisation certificate profile --------------------------------------------------------


def test_leaf_profile(ca: DemoCA) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    leaf = ca.issue(build_csr(sans=[x509.DNSName(FQDN), x509.DNSName("api.demo.example")]))
    after = datetime.now(UTC)

    assert leaf.subject == subject_name()
    assert leaf.subject.rfc4514_string() == (f"CN={FQDN},2.5.4.5={OIN},O={ORGANISATION},C=NL")
    assert leaf.issuer == ca.intermediate_certificate.subject
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA384)
    leaf.verify_directly_issued_by(ca.intermediate_certificate)
    assert 0 < leaf.serial_number < 2**159

    skew = timedelta(minutes=5)
    assert before - skew - timedelta(seconds=1) <= leaf.not_valid_before_utc <= after - skew
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=365) + skew

    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = _ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [FQDN, "api.demo.example"]
    assert _ext(leaf, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
    )
    assert _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(ca.intermediate_certificate, x509.SubjectKeyIdentifier).value.digest
    )
    (point,) = _ext(leaf, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(f"{CRL_BASE}/intermediate.crl")]


def test_rsa_leaf_gets_key_encipherment(ca: DemoCA, rsa3072_key: rsa.RSAPrivateKey) -> None:
    leaf = ca.issue(build_csr(rsa3072_key))
    ku = _ext(leaf, x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment


def test_p384_leaf_accepted(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr(ec.generate_private_key(ec.SECP384R1())))
    assert not _ext(leaf, x509.KeyUsage).value.key_encipherment


def test_san_taken_from_cn_when_csr_has_none(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr(sans=None))
    san = _ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [FQDN]


def test_subject_is_normalised_to_pkioverheid_order(ca: DemoCA) -> None:
    reordered = x509.Name(list(reversed(list(subject_name()))))
    leaf = ca.issue(build_csr(subject=reordered))
    assert leaf.subject == subject_name()


def test_chain_pem_is_leaf_then_intermediate(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    chain = x509.load_pem_x509_certificates(ca.chain_pem(leaf))
    assert chain == [leaf, ca.intermediate_certificate]


def test_chain_pem_refuses_foreign_certificate(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="not issued by this CA"):
        ca.chain_pem(ca.root_certificate)


def test_issue_records_index_and_file(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    serial_hex = format(leaf.serial_number, "x")
    stored = ca.directory / "issued" / f"{serial_hex}.pem"
    assert x509.load_pem_x509_certificate(stored.read_bytes()) == leaf

    index = json.loads((ca.directory / "index.json").read_text())
    assert index["certificates"] == [
        {
            "serial": serial_hex,
            "subject": leaf.subject.rfc4514_string(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "revoked_at": None,
            "reason": None,
        }
    ]
    (record,) = ca.issued()
    assert record.serial == leaf.serial_number
    assert record.subject == leaf.subject.rfc4514_string()
    assert record.not_after == leaf.not_valid_after_utc
    assert not record.revoked
    assert not list((ca.directory / "issued").glob(".*"))


def test_serials_differ(ca: DemoCA) -> None:
    serials = {ca.issue(build_csr()).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert len(ca.issued()) == 5


# -- refusals --------------------------------------------------------------------------------


def _weak_keys() -> list[object]:
    keys: list[object] = [
        pytest.param(rsa.generate_private_key(65537, 2048), "RSA-2048", id="rsa2048"),
        pytest.param(ec.generate_private_key(ec.SECP521R1()), "secp521r1", id="p521"),
        pytest.param(ed25519.Ed25519PrivateKey.generate(), "Ed25519", id="ed25519"),
    ]
    try:
        keys.append(pytest.param(ec.generate_private_key(ec.SECP192R1()), "secp192r1", id="p192"))
    except Exception:  # the OpenSSL build may lack P-192
        keys.append(pytest.param(None, "", id="p192", marks=pytest.mark.skip("no P-192")))
    return keys


@pytest.mark.parametrize(("key", "named"), _weak_keys())
def test_weak_keys_refused(ca: DemoCA, key: object, named: str) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_name())
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(FQDN)]), critical=False
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    with pytest.raises(CaError, match=re.escape(named)):
        ca.issue(csr.public_bytes(serialization.Encoding.PEM))
    assert ca.issued() == []


@pytest.mark.parametrize(
    "oin",
    [
        "0000000123456789000",  # 19 digits
        "000000012345678900000",  # 21 digits
        "0000000123456789000A",
        "NL.0000001234567890",
        "",
    ],
)
def test_bad_oin_refused(ca: DemoCA, oin: str) -> None:
    with pytest.raises(CaError, match="OIN must be exactly 20 digits"):
        ca.issue(build_csr(subject=subject_name(oin=oin)))


def test_tampered_csr_refused(ca: DemoCA) -> None:
    pem = build_csr()
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    tampered_der = der.replace(FQDN.encode(), b"gx.demo.example")
    assert tampered_der != der
    tampered = x509.load_der_x509_csr(tampered_der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CaError, match="signature does not verify"):
        ca.issue(tampered)


def test_garbage_csr_refused(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="not a PEM certificate signing request"):
        ca.issue(b"not a csr")


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        (subject_name(country="BE"), "C must be NL"),
        (subject_name(cn="not_a_name"), "not a fully qualified domain name"),
        (subject_name(cn="localhost"), "not a fully qualified domain name"),
        (
            x509.Name(list(subject_name())[1:]),
            "lacks C",
        ),
        (
            x509.Name(
                [*subject_name(), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IT")]
            ),
            "only C, O, serialNumber",
        ),
        (
            x509.Name([*subject_name(), x509.NameAttribute(NameOID.COMMON_NAME, "b.example")]),
            "CN more than once",
        ),
        (
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [
                            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                        ]
                    ),
                    x509.RelativeDistinguishedName(
                        [x509.NameAttribute(NameOID.SERIAL_NUMBER, OIN)]
                    ),
                    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)]),
                ]
            ),
            "multi-valued RDN",
        ),
    ],
)
def test_bad_subject_refused(ca: DemoCA, subject: x509.Name, message: str) -> None:
    with pytest.raises(CaError, match=message):
        ca.issue(build_csr(subject=subject))


def test_cn_must_be_among_sans(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="not among its subjectAltName"):
        ca.issue(build_csr(sans=[x509.DNSName("other.demo.example")]))


def test_non_dns_san_refused(ca: DemoCA) -> None:
    sans = [x509.DNSName(FQDN), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    with pytest.raises(CaError, match="only DNS names"):
        ca.issue(build_csr(sans=sans))


def test_wildcard_san_refused(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="not a fully qualified domain name"):
        ca.issue(build_csr(sans=[x509.DNSName(FQDN), x509.DNSName("*.demo.example")]))


def test_lifetime_beyond_intermediate_refused(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="outlive the intermediate"):
        ca.issue(build_csr(), days=1826)
    with pytest.raises(CaError, match="at least one day"):
        ca.issue(build_csr(), days=0)


def test_errors_are_sluis_errors() -> None:
    assert issubclass(CaError, SluisError)


# -- OIN properties --------------------------------------------------------------------------

_TWENTY_DIGITS = st.from_regex(r"[0-9]{20}", fullmatch=True)


@given(_TWENTY_DIGITS)
def test_validate_oin_accepts_twenty_digits(oin: str) -> None:
    assert validate_oin(oin) == oin


@given(st.text(max_size=30).filter(lambda s: not re.fullmatch(r"[0-9]{20}", s)))
def test_validate_oin_refuses_everything_else(text: str) -> None:
    with pytest.raises(IdentityError):
        validate_oin(text)


def test_validate_oin_refuses_trailing_newline() -> None:
    with pytest.raises(IdentityError):
        validate_oin(OIN + "\n")


@pytest.fixture(scope="module")
def shared_ca(tmp_path_factory: pytest.TempPathFactory) -> DemoCA:
    return DemoCA.create(tmp_path_factory.mktemp("shared") / "ca", crl_base_url=CRL_BASE)


@pytest.fixture(scope="module")
def shared_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(oin=_TWENTY_DIGITS)
def test_ca_accepts_any_twenty_digit_oin(
    shared_ca: DemoCA, shared_key: ec.EllipticCurvePrivateKey, oin: str
) -> None:
    leaf = shared_ca.issue(build_csr(shared_key, subject=subject_name(oin=oin)))
    assert leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == oin


@settings(max_examples=50, deadline=None)
@given(
    oin=st.text(alphabet="0123456789 -.A\n", min_size=1, max_size=24).filter(
        lambda s: not re.fullmatch(r"[0-9]{20}", s)
    )
)
@example(oin=OIN + "\n")
def test_ca_refuses_any_other_oin(
    shared_ca: DemoCA, shared_key: ec.EllipticCurvePrivateKey, oin: str
) -> None:
    attributes = list(subject_name())
    attributes[2] = x509.NameAttribute(NameOID.SERIAL_NUMBER, oin, x509.name._ASN1Type.UTF8String)
    before = len(shared_ca.issued())
    with pytest.raises(CaError, match="OIN must be exactly 20 digits"):
        shared_ca.issue(build_csr(shared_key, subject=x509.Name(attributes)))
    assert len(shared_ca.issued()) == before
