"""Certificate and key status for security officers: what is configured, when it expires.

From the configured files (``[tls]`` certificate chain, trust anchors, CRL bundle, and the
controller's own server certificate when it has one) and from the HSM token's object listing.
Public data only: subjects, OINs, issuers, validity, thumbprints, key attributes. No private
key ever leaves the token, and the listing shows none of its material.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from appliance.config import SluisConfig
from appliance.hsm.keys import ObjectInfo
from appliance.tls.peer import public_key_thumbprint

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
WARN_DAYS = 30  # the pages highlight certificates and CRLs closer to their end than this

TokenListing = Callable[[], list[ObjectInfo]]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def _name(name: x509.Name) -> str:
    return name.rfc4514_string(_NAMES)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _key_description(certificate: x509.Certificate) -> str:
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def describe_certificate(certificate: x509.Certificate, now: datetime) -> dict[str, Any]:
    der = certificate.public_bytes(serialization.Encoding.DER)
    oins = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    not_after = certificate.not_valid_after_utc
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = names.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    return {
        "subject": _name(certificate.subject),
        "oin": str(oins[0].value) if oins else None,
        "issuer": _name(certificate.issuer),
        "serial_number": format(certificate.serial_number, "x"),
        "not_before": _iso(certificate.not_valid_before_utc),
        "not_after": _iso(not_after),
        "days_to_expiry": (not_after - now).days,
        "expired": not_after <= now,
        "key": _key_description(certificate),
        "dns_names": dns_names,
        "thumbprint_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
        "x5t#S256": _b64url(hashlib.sha256(der).digest()),
        "public_key_thumbprint": public_key_thumbprint(certificate),
    }


def describe_crl(crl: x509.CertificateRevocationList, now: datetime) -> dict[str, Any]:
    next_update = crl.next_update_utc
    return {
        "issuer": _name(crl.issuer),
        "last_update": _iso(crl.last_update_utc),
        "next_update": _iso(next_update),
        "days_to_next_update": (next_update - now).days if next_update else None,
        "stale": next_update is None or next_update < now,
        "revoked_certificates": sum(1 for _ in crl),
    }


def describe_object(info: ObjectInfo) -> dict[str, Any]:
    return {
        "kind": info.kind,
        "label": info.label,
        "id": info.id_hex,
        "algorithm": info.algorithm,
        "sensitive": info.sensitive,
        "extractable": info.extractable,
        "subject": info.subject,
        "oin": info.oin,
        "not_after": _iso(info.not_after),
        "days_to_expiry": info.days_to_expiry,
    }


@dataclass(frozen=True)
class FileSet:
    name: str
    path: Path | None
    items: list[dict[str, Any]]
    error: str | None = None

    def as_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "items": self.items,
            "error": self.error,
        }


def _certificates(name: str, path: Path, now: datetime) -> FileSet:
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        return FileSet(name, path, [], f"cannot read {path}: {exc}")
    return FileSet(name, path, [describe_certificate(c, now) for c in chain])


def _crls(path: Path, now: datetime) -> FileSet:
    try:
        crls = [x509.load_pem_x509_crl(block) for block in _PEM_CRL.findall(path.read_bytes())]
    except (OSError, ValueError) as exc:
        return FileSet("crls", path, [], f"cannot read {path}: {exc}")
    return FileSet("crls", path, [describe_crl(crl, now) for crl in crls])


class CertificateStatus:
    def __init__(self, config: SluisConfig, token_listing: TokenListing | None) -> None:
        self._config = config
        self._token_listing = token_listing

    def report(self, now: datetime) -> dict[str, Any]:
        tls = self._config.tls
        sets = [
            _certificates("organisation", tls.certificate_chain, now),
            _certificates("trust_anchors", tls.trust_anchors, now),
            _crls(tls.crls, now),
        ]
        controller = self._config.controller
        if controller is not None and controller.certificate_chain:
            sets.append(_certificates("controller_server", Path(controller.certificate_chain), now))
        token: dict[str, Any] = {
            "token_label": self._config.hsm.token_label,
            "key_label": self._config.hsm.key_label,
            "module": str(self._config.hsm.module),
            "objects": [],
            "error": None,
        }
        if self._token_listing is None:
            token["error"] = "the token listing is not available here"
        else:
            try:
                token["objects"] = [describe_object(o) for o in self._token_listing()]
            except Exception as exc:  # an HSM that is away must not break the page
                token["error"] = f"{type(exc).__name__}: {exc}"
        report: dict[str, Any] = {s.name: s.as_api() for s in sets}
        report.setdefault("controller_server", None)
        report["token"] = token
        report["warn_days"] = WARN_DAYS
        return report
