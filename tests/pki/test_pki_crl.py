"""Revocation, CRL publication, fetching and bundling."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkitest import FQDN, build_csr

from appliance.pki.ca import CaError, DemoCA
from appliance.pki.crl import (
    CrlError,
    CrlStaleError,
    check_fresh,
    fetch_crl,
    refresh_crls,
    write_crl_bundle,
)


def _crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(path.read_bytes())


def _pem_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    end = b"-----END X509 CRL-----"
    blocks = [b + end for b in data.split(end) if b.strip()]
    return [x509.load_pem_x509_crl(block) for block in blocks]


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _public(ca: DemoCA, name: str) -> Path:
    return ca.directory / "public" / name


# -- publication -----------------------------------------------------------------------------


def test_create_publishes_signed_crls(ca: DemoCA) -> None:
    root_crl = _crl(_public(ca, "root.crl"))
    intermediate_crl = _crl(_public(ca, "intermediate.crl"))

    assert root_crl.issuer == ca.root_certificate.subject
    assert root_crl.is_signature_valid(ca.root_certificate.public_key())  # type: ignore[arg-type]
    assert intermediate_crl.issuer == ca.intermediate_certificate.subject
    assert intermediate_crl.is_signature_valid(
        ca.intermediate_certificate.public_key()  # type: ignore[arg-type]
    )
    assert len(root_crl) == 0
    assert len(intermediate_crl) == 0

    for crl, issuer in (
        (root_crl, ca.root_certificate),
        (intermediate_crl, ca.intermediate_certificate),
    ):
        assert _number(crl) == 1
        assert crl.next_update_utc is not None
        assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
        assert abs(crl.last_update_utc - datetime.now(UTC)) < timedelta(minutes=1)
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest

    bundle = _public(ca, "crls.pem").read_bytes()
    assert bundle.count(b"-----BEGIN X509 CRL-----") == 2
    assert stat.S_IMODE(_public(ca, "crls.pem").stat().st_mode) == 0o644


def test_publish_crls_returns_paths_and_bumps_number(ca: DemoCA) -> None:
    paths = ca.publish_crls()
    assert paths == [_public(ca, n) for n in ("root.crl", "intermediate.crl", "crls.pem")]
    assert _number(_crl(paths[0])) == 2
    assert _number(_crl(paths[1])) == 2
    assert _number(_crl(DemoCA.open(ca.directory).publish_crls()[1])) == 3


def test_revocation_lists_serial_and_bumps_crl_number(ca: DemoCA) -> None:
    keep = ca.issue(build_csr())
    leaf = ca.issue(build_csr())
    before = _number(_crl(_public(ca, "intermediate.crl")))

    ca.revoke(leaf.serial_number, x509.ReasonFlags.key_compromise)

    crl = _crl(_public(ca, "intermediate.crl"))
    assert _number(crl) == before + 1
    assert crl.is_signature_valid(ca.intermediate_certificate.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(keep.serial_number) is None
    assert len(_crl(_public(ca, "root.crl"))) == 0

    revoked = {r.serial: r for r in ca.issued()}
    assert revoked[leaf.serial_number].revoked
    assert revoked[leaf.serial_number].reason == "keyCompromise"
    assert not revoked[keep.serial_number].revoked

    bundle = _pem_crls(_public(ca, "crls.pem").read_bytes())
    assert [c.issuer for c in bundle] == [
        ca.root_certificate.subject,
        ca.intermediate_certificate.subject,
    ]
    assert bundle[1].get_revoked_certificate_by_serial_number(leaf.serial_number) is not None


def test_unspecified_reason_is_left_out(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    ca.revoke(leaf.serial_number)
    entry = _crl(_public(ca, "intermediate.crl")).get_revoked_certificate_by_serial_number(
        leaf.serial_number
    )
    assert entry is not None
    assert len(entry.extensions) == 0


def test_revoking_twice_is_a_no_op(ca: DemoCA) -> None:
    leaf = ca.issue(build_csr())
    ca.revoke(leaf.serial_number, x509.ReasonFlags.superseded)
    crl_bytes = _public(ca, "intermediate.crl").read_bytes()
    (record,) = ca.issued()

    ca.revoke(leaf.serial_number, x509.ReasonFlags.key_compromise)

    assert _public(ca, "intermediate.crl").read_bytes() == crl_bytes
    assert ca.issued() == [record]


def test_revoke_unknown_serial(ca: DemoCA) -> None:
    with pytest.raises(CaError, match="no certificate with serial abc"):
        ca.revoke(0xABC)


@pytest.mark.parametrize(
    "reason", [x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl]
)
def test_revoke_refuses_non_final_reasons(ca: DemoCA, reason: x509.ReasonFlags) -> None:
    leaf = ca.issue(build_csr())
    with pytest.raises(CaError, match="not allowed"):
        ca.revoke(leaf.serial_number, reason)
    assert not ca.issued()[0].revoked


# -- fetching --------------------------------------------------------------------------------


def test_fetch_crl_verifies(ca: DemoCA, public_server: str) -> None:
    crl = fetch_crl(f"{public_server}/intermediate.crl", ca.intermediate_certificate)
    assert crl.issuer == ca.intermediate_certificate.subject
    root_crl = fetch_crl(f"{public_server}/root.crl", ca.root_certificate)
    assert root_crl.issuer == ca.root_certificate.subject


def test_fetch_crl_accepts_pem(ca: DemoCA, public_server: str) -> None:
    crl = _crl(_public(ca, "intermediate.crl"))
    _public(ca, "single.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    assert fetch_crl(f"{public_server}/single.pem", ca.intermediate_certificate) == crl


def test_fetch_crl_refuses_stale(ca: DemoCA, public_server: str) -> None:
    url = f"{public_server}/intermediate.crl"
    future = datetime.now(UTC) + timedelta(days=30)
    with pytest.raises(CrlStaleError, match="expired at") as info:
        fetch_crl(url, ca.intermediate_certificate, now=future)
    assert url in str(info.value)
    assert "Private Services CA" in str(info.value)


def test_fetch_crl_refuses_wrong_issuer(ca: DemoCA, public_server: str) -> None:
    url = f"{public_server}/intermediate.crl"
    with pytest.raises(CrlError, match="is not the expected issuer") as info:
        fetch_crl(url, ca.root_certificate)
    assert url in str(info.value)


def test_fetch_crl_refuses_bad_signature(ca: DemoCA, tmp_path: Path, public_server: str) -> None:
    # Another CA with the same names: issuer matches, signature does not.
    impostor = DemoCA.create(tmp_path / "impostor-ca", crl_base_url="http://127.0.0.1/x")
    with pytest.raises(CrlError, match="signature does not verify"):
        fetch_crl(f"{public_server}/intermediate.crl", impostor.intermediate_certificate)


def test_fetch_crl_refuses_garbage(ca: DemoCA, public_server: str) -> None:
    _public(ca, "junk.crl").write_bytes(b"\x30\x03junk")
    url = f"{public_server}/junk.crl"
    with pytest.raises(CrlError, match="not a DER or PEM CRL") as info:
        fetch_crl(url, ca.intermediate_certificate)
    assert url in str(info.value)


def test_fetch_crl_reports_http_error(ca: DemoCA, public_server: str) -> None:
    url = f"{public_server}/missing.crl"
    with pytest.raises(CrlError, match="HTTP 404") as info:
        fetch_crl(url, ca.intermediate_certificate)
    assert url in str(info.value)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x.crl", "data:,x", "/x.crl"]
)
def test_fetch_crl_refuses_other_schemes(ca: DemoCA, url: str) -> None:
    with pytest.raises(CrlError, match="http:// or https://") as info:
        fetch_crl(url, ca.intermediate_certificate)
    assert url in str(info.value)


def test_fetch_crl_reports_unreachable(ca: DemoCA) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/intermediate.crl"
    with pytest.raises(CrlError, match="cannot download") as info:
        fetch_crl(url, ca.intermediate_certificate, timeout=2)
    assert url in str(info.value)


def test_check_fresh(ca: DemoCA) -> None:
    crl = _crl(_public(ca, "root.crl"))
    check_fresh(crl)
    assert crl.next_update_utc is not None
    with pytest.raises(CrlStaleError):
        check_fresh(crl, now=crl.next_update_utc + timedelta(seconds=1))
    with pytest.raises(CrlError, match="in the future"):
        check_fresh(crl, now=crl.last_update_utc - timedelta(hours=1))


# -- bundles ---------------------------------------------------------------------------------


def test_refresh_crls_writes_bundle(ca: DemoCA, public_server: str, tmp_path: Path) -> None:
    dest = tmp_path / "trust" / "crls.pem"
    refresh_crls(
        [
            (f"{public_server}/root.crl", ca.root_certificate),
            (f"{public_server}/intermediate.crl", ca.intermediate_certificate),
        ],
        dest,
    )
    crls = _pem_crls(dest.read_bytes())
    assert [c.issuer for c in crls] == [
        ca.root_certificate.subject,
        ca.intermediate_certificate.subject,
    ]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert [p.name for p in dest.parent.iterdir()] == ["crls.pem"]


def test_refresh_crls_keeps_old_bundle_on_failure(
    ca: DemoCA, public_server: str, tmp_path: Path
) -> None:
    dest = tmp_path / "trust" / "crls.pem"
    dest.parent.mkdir()
    dest.write_bytes(b"previous good bundle\n")
    with pytest.raises(CrlError, match="1 of 2 CRLs failed") as info:
        refresh_crls(
            [
                (f"{public_server}/root.crl", ca.root_certificate),
                (f"{public_server}/gone.crl", ca.intermediate_certificate),
            ],
            dest,
        )
    assert f"{public_server}/gone.crl" in str(info.value)
    assert dest.read_bytes() == b"previous good bundle\n"
    assert [p.name for p in dest.parent.iterdir()] == ["crls.pem"]


def test_refresh_crls_stale_keeps_old_bundle(
    ca: DemoCA, public_server: str, tmp_path: Path
) -> None:
    dest = tmp_path / "crls.pem"
    dest.write_bytes(b"previous\n")
    with pytest.raises(CrlStaleError):
        refresh_crls(
            [(f"{public_server}/root.crl", ca.root_certificate)],
            dest,
            now=datetime.now(UTC) + timedelta(days=365),
        )
    assert dest.read_bytes() == b"previous\n"


def test_write_crl_bundle_refuses_empty(tmp_path: Path) -> None:
    with pytest.raises(CrlError, match="empty"):
        write_crl_bundle([], tmp_path / "crls.pem")
    assert not (tmp_path / "crls.pem").exists()


# -- the bundle works for Python's ssl module ------------------------------------------------


def _handshake(ca: DemoCA, tmp_path: Path, chain: Path, key: Path) -> None:
    """TLS handshake over a socket pair; the client checks CRLs along the whole chain."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(chain, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=ca.trust_anchor_path)
    client_ctx.load_verify_locations(cafile=ca.directory / "public" / "crls.pem")
    client_ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN

    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname=FQDN) as tls:
            tls.sendall(b"x")
    finally:
        thread.join(timeout=10)
        right.close()


def test_crl_bundle_drives_ssl_revocation_checks(ca: DemoCA, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue(build_csr(key))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ca.chain_pem(leaf))
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    try:
        _handshake(ca, tmp_path, chain, key_path)

        ca.revoke(leaf.serial_number, x509.ReasonFlags.key_compromise)
        with pytest.raises(ssl.SSLCertVerificationError, match="revoked"):
            _handshake(ca, tmp_path, chain, key_path)
    finally:
        # Only CA keys may outlive a test as files (tests/conftest.py checks).
        key_path.unlink()
