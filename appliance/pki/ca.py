"""A demo certificate authority shaped like PKIoverheid Private Services.

Hierarchy: a self-signed root, one intermediate ("Private Services CA") and organisation
certificates issued from CSRs. Organisation keys stay in an HSM; only their CSRs reach the CA.
This CA is the one place in Sluis where private keys live in files (PEM, mode 0600), which is
acceptable only because it is a demo and test CA.

Directory layout::

    ca.json                 name, CRL base URL, CRL lifetime
    crlnumber               last CRL number used
    index.json              every issued certificate and its revocation state
    private/                root.key.pem, intermediate.key.pem (0700 / 0600)
    public/                 root.pem, intermediate.pem, root.crl, intermediate.crl, crls.pem
    issued/<serial>.pem     every issued certificate
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.errors import SluisError
from appliance.pki.crl import atomic_write, write_crl_bundle
from appliance.pki.identity import (
    IdentityError,
    OrganisationIdentity,
    validate_fqdn,
    validate_oin,
)

CLOCK_SKEW = timedelta(minutes=5)
MIN_RSA_BITS = 3072
ALLOWED_CURVES = ("secp256r1", "secp384r1")
# X.520 upper bound for commonName and organizationName.
MAX_NAME_ATTRIBUTE = 64

# Re-checked with fullmatch: identity's patterns end in "$", which also accepts a trailing
# newline, and that must never reach a certificate.
_OIN_STRICT = re.compile(r"[0-9]{20}")
_DNS_STRICT = re.compile(r"[a-z0-9.-]{1,253}")

_CONFIG = "ca.json"
_CRL_NUMBER = "crlnumber"
_INDEX = "index.json"
_LOCK = ".lock"
_ROOT_KEY = "private/root.key.pem"
_INTERMEDIATE_KEY = "private/intermediate.key.pem"
_ROOT_CERT = "public/root.pem"
_INTERMEDIATE_CERT = "public/intermediate.pem"
_ROOT_CRL = "public/root.crl"
_INTERMEDIATE_CRL = "public/intermediate.crl"
_CRL_BUNDLE = "public/crls.pem"

# certificateHold cannot be undone here and removeFromCRL belongs in delta CRLs only.
_REFUSED_REASONS = (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)

_REQUIRED_SUBJECT = (
    NameOID.COUNTRY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.SERIAL_NUMBER,
    NameOID.COMMON_NAME,
)
_SUBJECT_LABELS = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.SERIAL_NUMBER: "serialNumber (OIN)",
    NameOID.COMMON_NAME: "CN",
}


class CaError(SluisError):
    """The demo CA refuses a request or cannot read or write its files."""


@dataclass(frozen=True)
class IssuedRecord:
    serial: int
    subject: str
    not_after: datetime
    revoked: bool
    revoked_at: datetime | None = None
    reason: str | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


def _now() -> datetime:
    return datetime.now(UTC)


def _check_base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise CaError(f"CRL base URL must be an http:// or https:// URL without query, got {url!r}")
    return url.rstrip("/")


def _write_pem_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, data, 0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CaError(f"{path}: CA private key is accessible to others (mode {mode:o}); chmod 600")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise CaError(f"{path}: not a readable PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{path}: CA key must be an EC key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise CaError(f"{path}: not a PEM certificate: {exc}") from exc


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _single_value(csr_subject: x509.Name) -> dict[x509.ObjectIdentifier, str]:
    """Map each subject attribute to its value, refusing anything but the four we expect."""
    values: dict[x509.ObjectIdentifier, str] = {}
    for rdn in csr_subject.rdns:
        if len(rdn) != 1:
            raise CaError("CSR subject has a multi-valued RDN; expected C, O, serialNumber, CN")
        (attribute,) = rdn
        name = attribute.rfc4514_attribute_name
        if attribute.oid not in _REQUIRED_SUBJECT:
            raise CaError(
                f"CSR subject has {name}; only C, O, serialNumber (OIN) and CN are allowed"
            )
        if attribute.oid in values:
            raise CaError(f"CSR subject has {name} more than once")
        if not isinstance(attribute.value, str):
            raise CaError(f"CSR subject {name} is not a string")
        values[attribute.oid] = attribute.value
    missing = [_SUBJECT_LABELS[oid] for oid in _REQUIRED_SUBJECT if oid not in values]
    if missing:
        raise CaError(f"CSR subject lacks {', '.join(missing)}")
    return values


def _oin(value: str) -> str:
    try:
        oin = validate_oin(value)
    except IdentityError as exc:
        raise CaError(f"CSR subject serialNumber: {exc}") from exc
    if not _OIN_STRICT.fullmatch(oin):
        raise CaError(f"CSR subject serialNumber: OIN must be exactly 20 digits, got {value!r}")
    return oin


def _fqdn(value: str, where: str) -> str:
    try:
        name = validate_fqdn(value)
    except IdentityError as exc:
        raise CaError(f"{where}: {exc}") from exc
    if not _DNS_STRICT.fullmatch(name) or not value.isascii():
        raise CaError(f"{where}: not a fully qualified domain name: {value!r}")
    return name


def _check_public_key(key: object) -> bool:
    """Refuse keys PKIoverheid would not certify; return whether the key is RSA."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise CaError(f"CSR key uses curve {key.curve.name}; only P-256 and P-384 are allowed")
        return False
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CaError(
                f"CSR key is RSA-{key.key_size}; RSA keys need at least {MIN_RSA_BITS} bits"
            )
        return True
    raise CaError(
        f"CSR key type {type(key).__name__} is not allowed; use EC P-256/P-384 or RSA >= 3072"
    )


class DemoCA:
    """A root and intermediate CA kept in one directory."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        crl_base_url: str,
        crl_days: int,
        root_certificate: x509.Certificate,
        intermediate_certificate: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        intermediate_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self._directory = directory
        self._name = name
        self._crl_base_url = crl_base_url
        self._crl_days = crl_days
        self._root_certificate = root_certificate
        self._intermediate_certificate = intermediate_certificate
        self._root_key = root_key
        self._intermediate_key = intermediate_key

    # -- creation and loading ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        name: str = "Sluis Demo",
        crl_base_url: str,
        root_days: int = 3650,
        intermediate_days: int = 1825,
        crl_days: int = 7,
    ) -> DemoCA:
        directory = Path(directory)
        base_url = _check_base_url(crl_base_url)
        root_cn = f"{name} Root CA"
        intermediate_cn = f"{name} Private Services CA"
        if not name.strip():
            raise CaError("CA name must not be empty")
        if len(intermediate_cn) > MAX_NAME_ATTRIBUTE:
            raise CaError(
                f"CA name {name!r} is too long: {intermediate_cn!r} exceeds "
                f"{MAX_NAME_ATTRIBUTE} characters"
            )
        if min(root_days, intermediate_days, crl_days) < 1:
            raise CaError("root, intermediate and CRL lifetimes must be at least one day")
        if intermediate_days > root_days:
            raise CaError(
                f"intermediate lifetime ({intermediate_days} days) must not exceed the root's "
                f"({root_days} days)"
            )
        if (directory / _CONFIG).exists():
            raise CaError(f"{directory} already holds a CA; refusing to overwrite it")
        if (directory / "private").exists():
            raise CaError(
                f"{directory} holds CA key files without {_CONFIG} (an interrupted init?); "
                "refusing to overwrite them"
            )

        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "private").mkdir(mode=0o700)
            (directory / "public").mkdir(exist_ok=True)
            (directory / "issued").mkdir(exist_ok=True)
        except OSError as exc:
            raise CaError(f"cannot create CA directories in {directory}: {exc}") from exc

        now = _now()
        not_before = now - CLOCK_SKEW
        root_key = ec.generate_private_key(ec.SECP384R1())
        intermediate_key = ec.generate_private_key(ec.SECP384R1())

        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, root_cn),
            ]
        )
        intermediate_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, intermediate_cn),
            ]
        )
        ca_key_usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(now + timedelta(days=root_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_key_usage, critical=True)
            .add_extension(root_ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .sign(root_key, hashes.SHA384())
        )
        intermediate = (
            x509.CertificateBuilder()
            .subject_name(intermediate_name)
            .issuer_name(root_name)
            .public_key(intermediate_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(now + timedelta(days=intermediate_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_key_usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .add_extension(_distribution_point(f"{base_url}/root.crl"), critical=False)
            .sign(root_key, hashes.SHA384())
        )

        ca = cls(
            directory,
            name=name,
            crl_base_url=base_url,
            crl_days=crl_days,
            root_certificate=root,
            intermediate_certificate=intermediate,
            root_key=root_key,
            intermediate_key=intermediate_key,
        )
        try:
            _write_pem_key(directory / _ROOT_KEY, root_key)
            _write_pem_key(directory / _INTERMEDIATE_KEY, intermediate_key)
            atomic_write(
                directory / _ROOT_CERT, root.public_bytes(serialization.Encoding.PEM), 0o644
            )
            atomic_write(
                directory / _INTERMEDIATE_CERT,
                intermediate.public_bytes(serialization.Encoding.PEM),
                0o644,
            )
            atomic_write(directory / _CRL_NUMBER, b"0\n", 0o644)
            ca._write_index([])
            with ca._locked():
                ca._publish_crls_locked()
            # Written last: its presence marks a complete CA for open().
            config = {
                "version": 1,
                "name": name,
                "crl_base_url": base_url,
                "crl_days": crl_days,
            }
            atomic_write(directory / _CONFIG, (json.dumps(config, indent=2) + "\n").encode(), 0o644)
        except OSError as exc:
            raise CaError(f"cannot write CA files in {directory}: {exc}") from exc
        return ca

    @classmethod
    def open(cls, directory: Path) -> DemoCA:
        directory = Path(directory)
        config_path = directory / _CONFIG
        if not config_path.is_file():
            raise CaError(f"{directory} holds no demo CA (no {_CONFIG}); run 'sluis pki init'")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            name = str(config["name"])
            base_url = _check_base_url(str(config["crl_base_url"]))
            crl_days = int(config["crl_days"])
            root = _load_cert(directory / _ROOT_CERT)
            intermediate = _load_cert(directory / _INTERMEDIATE_CERT)
            root_key = _load_key(directory / _ROOT_KEY)
            intermediate_key = _load_key(directory / _INTERMEDIATE_KEY)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CaError(f"cannot open the demo CA in {directory}: {exc}") from exc
        if root_key.public_key() != root.public_key():
            raise CaError(f"{directory}: root key does not match the root certificate")
        if intermediate_key.public_key() != intermediate.public_key():
            raise CaError(
                f"{directory}: intermediate key does not match the intermediate certificate"
            )
        return cls(
            directory,
            name=name,
            crl_base_url=base_url,
            crl_days=crl_days,
            root_certificate=root,
            intermediate_certificate=intermediate,
            root_key=root_key,
            intermediate_key=intermediate_key,
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def name(self) -> str:
        return self._name

    @property
    def crl_base_url(self) -> str:
        return self._crl_base_url

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root_certificate

    @property
    def intermediate_certificate(self) -> x509.Certificate:
        return self._intermediate_certificate

    @property
    def trust_anchor_path(self) -> Path:
        return self._directory / _ROOT_CERT

    @property
    def intermediate_path(self) -> Path:
        return self._directory / _INTERMEDIATE_CERT

    @property
    def crl_bundle_path(self) -> Path:
        return self._directory / _CRL_BUNDLE

    # -- issuing ----------------------------------------------------------------------------

    def issue(self, csr_pem: bytes, *, days: int = 365) -> x509.Certificate:
        """Issue an organisation certificate for a CSR whose key lives in an HSM."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CaError(f"not a PEM certificate signing request: {exc}") from exc
        if not csr.is_signature_valid:
            raise CaError("CSR signature does not verify: the request was altered or is broken")

        subject = _single_value(csr.subject)
        if subject[NameOID.COUNTRY_NAME] != "NL":
            raise CaError(f"CSR subject C must be NL, got {subject[NameOID.COUNTRY_NAME]!r}")
        organisation = subject[NameOID.ORGANIZATION_NAME]
        if not organisation.strip() or len(organisation) > MAX_NAME_ATTRIBUTE:
            raise CaError(f"CSR subject O must be 1 to {MAX_NAME_ATTRIBUTE} characters")
        oin = _oin(subject[NameOID.SERIAL_NUMBER])
        common_name = _fqdn(subject[NameOID.COMMON_NAME], "CSR subject CN")

        san_names = self._requested_dns_names(csr, common_name)
        if common_name not in san_names:
            raise CaError(
                f"CSR CN {common_name!r} is not among its subjectAltName DNS names {san_names}"
            )

        public_key = csr.public_key()
        is_rsa = _check_public_key(public_key)

        if days < 1:
            raise CaError("certificate lifetime must be at least one day")
        now = _now()
        not_after = now + timedelta(days=days)
        issuer_not_after = self._intermediate_certificate.not_valid_after_utc
        if not_after > issuer_not_after:
            raise CaError(
                f"a {days}-day certificate would outlive the intermediate CA, which expires "
                f"{issuer_not_after.isoformat()}"
            )

        # Normalised subject in the order PKIoverheid certificates carry it.
        other_names = tuple(n for n in san_names if n != common_name)
        cert_subject = OrganisationIdentity(
            organisation, oin, (common_name, *other_names)
        ).subject()
        key_usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=is_rsa,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )

        with self._locked():
            records = self._read_index()
            known = {int(r["serial"], 16) for r in records}
            serial = x509.random_serial_number()
            while serial in known:
                serial = x509.random_serial_number()
            certificate = (
                x509.CertificateBuilder()
                .subject_name(cert_subject)
                .issuer_name(self._intermediate_certificate.subject)
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(key_usage, critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
                .add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(n) for n in san_names]),
                    critical=False,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                        _ski(self._intermediate_certificate)
                    ),
                    critical=False,
                )
                .add_extension(
                    _distribution_point(f"{self._crl_base_url}/intermediate.crl"),
                    critical=False,
                )
                .sign(self._intermediate_key, hashes.SHA384())
            )
            serial_hex = format(serial, "x")
            try:
                atomic_write(
                    self._directory / "issued" / f"{serial_hex}.pem",
                    certificate.public_bytes(serialization.Encoding.PEM),
                    0o644,
                )
                records.append(
                    {
                        "serial": serial_hex,
                        "subject": cert_subject.rfc4514_string(),
                        "not_after": certificate.not_valid_after_utc.isoformat(),
                        "revoked_at": None,
                        "reason": None,
                    }
                )
                self._write_index(records)
            except OSError as exc:
                raise CaError(f"cannot record issued certificate {serial_hex}: {exc}") from exc
        return certificate

    @staticmethod
    def _requested_dns_names(csr: x509.CertificateSigningRequest, common_name: str) -> list[str]:
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return [common_name]
        names: list[str] = []
        for general_name in san:
            if not isinstance(general_name, x509.DNSName):
                raise CaError(
                    f"CSR subjectAltName holds {type(general_name).__name__}; "
                    "only DNS names are allowed"
                )
            name = _fqdn(general_name.value, "CSR subjectAltName")
            if name not in names:
                names.append(name)
        if not names:
            raise CaError("CSR subjectAltName is empty")
        return names

    def chain_pem(self, cert: x509.Certificate) -> bytes:
        """The certificate followed by the intermediate, as a TLS server presents them."""
        if cert.issuer != self._intermediate_certificate.subject:
            raise CaError(
                f"certificate {cert.serial_number:x} was not issued by this CA's intermediate"
            )
        return cert.public_bytes(serialization.Encoding.PEM) + (
            self._intermediate_certificate.public_bytes(serialization.Encoding.PEM)
        )

    # -- revocation and CRLs ----------------------------------------------------------------

    def revoke(self, serial: int, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified) -> None:
        if reason in _REFUSED_REASONS:
            raise CaError(f"revocation reason {reason.value} is not allowed; revocation is final")
        serial_hex = format(serial, "x")
        with self._locked():
            records = self._read_index()
            for record in records:
                if record["serial"] == serial_hex:
                    break
            else:
                raise CaError(f"no certificate with serial {serial_hex} was issued by this CA")
            if record["revoked_at"] is not None:
                return
            record["revoked_at"] = _now().isoformat()
            record["reason"] = reason.value
            try:
                self._write_index(records)
            except OSError as exc:
                raise CaError(f"cannot record revocation of {serial_hex}: {exc}") from exc
            self._publish_crls_locked()

    def publish_crls(self) -> list[Path]:
        """Sign fresh root and intermediate CRLs and write them to ``public/``."""
        with self._locked():
            return self._publish_crls_locked()

    def _publish_crls_locked(self) -> list[Path]:
        number = self._next_crl_number()
        now = _now()
        next_update = now + timedelta(days=self._crl_days)

        # No API revokes the intermediate, so the root CRL is empty but must exist and be
        # fresh for verifiers that check the whole chain.
        root_crl = self._build_crl(
            self._root_certificate, self._root_key, [], number, now, next_update
        )
        revoked: list[x509.RevokedCertificate] = []
        for record in self._read_index():
            if record["revoked_at"] is None:
                continue
            builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(record["serial"], 16))
                .revocation_date(datetime.fromisoformat(record["revoked_at"]))
            )
            reason = x509.ReasonFlags(record["reason"])
            # RFC 5280 5.3.1: leave the reason out rather than saying "unspecified".
            if reason is not x509.ReasonFlags.unspecified:
                builder = builder.add_extension(x509.CRLReason(reason), critical=False)
            revoked.append(builder.build())
        intermediate_crl = self._build_crl(
            self._intermediate_certificate,
            self._intermediate_key,
            revoked,
            number,
            now,
            next_update,
        )

        paths = [
            self._directory / _ROOT_CRL,
            self._directory / _INTERMEDIATE_CRL,
            self._directory / _CRL_BUNDLE,
        ]
        try:
            atomic_write(paths[0], root_crl.public_bytes(serialization.Encoding.DER), 0o644)
            atomic_write(paths[1], intermediate_crl.public_bytes(serialization.Encoding.DER), 0o644)
            write_crl_bundle([root_crl, intermediate_crl], paths[2])
        except OSError as exc:
            raise CaError(f"cannot publish CRLs in {self._directory / 'public'}: {exc}") from exc
        return paths

    @staticmethod
    def _build_crl(
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        revoked: list[x509.RevokedCertificate],
        number: int,
        now: datetime,
        next_update: datetime,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(now)
            .next_update(next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
                critical=False,
            )
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(key, hashes.SHA384())

    def _next_crl_number(self) -> int:
        path = self._directory / _CRL_NUMBER
        try:
            current = int(path.read_text(encoding="ascii").strip() or "0")
        except FileNotFoundError:
            current = 0
        except (OSError, ValueError) as exc:
            raise CaError(f"{path}: cannot read the CRL number: {exc}") from exc
        number = current + 1
        try:
            # Persist before signing so a crash can never reuse a number.
            atomic_write(path, f"{number}\n".encode("ascii"), 0o644)
        except OSError as exc:
            raise CaError(f"{path}: cannot store the CRL number: {exc}") from exc
        return number

    # -- index ------------------------------------------------------------------------------

    def issued(self) -> list[IssuedRecord]:
        return [
            IssuedRecord(
                serial=int(r["serial"], 16),
                subject=r["subject"],
                not_after=datetime.fromisoformat(r["not_after"]),
                revoked=r["revoked_at"] is not None,
                revoked_at=(
                    datetime.fromisoformat(r["revoked_at"]) if r["revoked_at"] is not None else None
                ),
                reason=r["reason"],
            )
            for r in self._read_index()
        ]

    def _read_index(self) -> list[dict[str, Any]]:
        path = self._directory / _INDEX
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records = data["certificates"]
            if not isinstance(records, list):
                raise TypeError("certificates is not a list")
            for record in records:
                for key in ("serial", "subject", "not_after", "revoked_at", "reason"):
                    if key not in record:
                        raise KeyError(key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CaError(f"{path}: cannot read the certificate index: {exc}") from exc
        return records

    def _write_index(self, records: list[dict[str, Any]]) -> None:
        data = json.dumps({"version": 1, "certificates": records}, indent=2) + "\n"
        atomic_write(self._directory / _INDEX, data.encode("utf-8"), 0o644)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise CLI runs that change the index or CRL number."""
        try:
            fd = os.open(self._directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CaError(f"cannot lock the demo CA in {self._directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _distribution_point(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )
