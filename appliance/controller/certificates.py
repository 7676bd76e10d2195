"""Certificate and key status for security officers: what is configured, when it expires.

From the configured files (``[tls]`` certificate chain, the previous chain that ``sluis pki
install-cert`` keeps behind ``<certificate_chain>.previous``, trust anchors, CRL bundle, and the
controller's own server certificate when it has one) and from the HSM token's object listing.
Public data only: subjects, OINs, issuers, validity, thumbprints, key attributes. No private
key ever leaves the token, and the listing shows none of its material.

What is *due* (a certificate expiring within :data:`WARN_DAYS` days, a CRL stale or passing its
nextUpdate within :data:`CRL_WARN_HOURS` hours, a file that cannot be read) is decided by
:func:`appliance.pki.expiry.expiring` on the reading of :func:`appliance.pki.expiry.collect`,
the same one ``sluis pki expiry`` and ``/metrics`` use. The previous chain is shown but never
due: it is not in use, only kept for a rollback.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import os
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
from appliance.hsm.certs import previous_link
from appliance.hsm.keys import ObjectInfo
from appliance.pki.expiry import ExpiryItem, ExpiryReport, collect, expiring
from appliance.tls.peer import public_key_thumbprint
from appliance.tls.revocation import parse_bundle

# A certificate is due when it expires within this many days (sluis pki expiry --within-days).
WARN_DAYS = 30
# A CRL is due when it is stale or passes its nextUpdate within this many hours
# (sluis pki expiry --crl-within-hours): the CRL timer should have replaced it long before.
CRL_WARN_HOURS = 24

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


def _crl_number(crl: x509.CertificateRevocationList) -> str:
    # As appliance.pki.expiry names it (hex), so that the due items match.
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return ""
    return f"{number:x}"


def describe_crl(crl: x509.CertificateRevocationList, now: datetime) -> dict[str, Any]:
    next_update = crl.next_update_utc
    left = (next_update - now).total_seconds() if next_update else None
    return {
        "issuer": _name(crl.issuer),
        "crl_number": _crl_number(crl),
        "this_update": _iso(crl.last_update_utc),
        "last_update": _iso(crl.last_update_utc),  # the same as this_update (kept for clients)
        "next_update": _iso(next_update),
        "days_to_next_update": (next_update - now).days if next_update else None,
        "hours_to_next_update": math.floor(left / 3600) if left is not None else None,
        "stale": next_update is None or next_update < now,
        "revoked_certificates": sum(1 for _ in crl),
        "due": False,
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


def describe_due(item: ExpiryItem, now: datetime) -> dict[str, Any]:
    """One entry of the report's ``due`` list."""
    days = item.days_left(now)
    seconds = item.seconds_left(now)
    return {
        "kind": item.kind,
        "role": item.role,
        "name": item.name,
        "serial": item.serial,
        "expires": _iso(item.expires),
        "days_left": math.floor(days) if days is not None else None,
        "hours_left": math.floor(seconds / 3600) if seconds is not None else None,
        "expired": seconds is None or seconds <= 0,
        "source": str(item.source),
    }


@dataclass(frozen=True)
class Due:
    """What needs attention now: the items and the files that could not be read."""

    items: list[ExpiryItem]
    problems: list[str]

    def __bool__(self) -> bool:
        return bool(self.items or self.problems)

    warn_days = WARN_DAYS
    crl_warn_hours = CRL_WARN_HOURS

    def count(self, kind: str) -> int:
        return sum(1 for i in self.items if i.kind == kind)

    def has(self, kind: str, source: Path, serial: str, name: str) -> bool:
        return any(
            i.kind == kind and i.source == source and i.serial == serial and i.name == name
            for i in self.items
        )


@dataclass(frozen=True)
class FileSet:
    name: str
    path: Path | None
    items: list[dict[str, Any]]
    error: str | None = None
    target: str | None = None  # where the link ``path`` points, when it is one

    def as_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "target": self.target,
            "items": self.items,
            "error": self.error,
        }


def _link_target(path: Path) -> str | None:
    try:
        return os.readlink(path) if path.is_symlink() else None
    except OSError:
        return None


def _certificates(name: str, path: Path, now: datetime, due: Due | None) -> FileSet:
    target = _link_target(path)
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        return FileSet(name, path, [], f"cannot read {path}: {exc}", target)
    items = []
    for certificate in chain:
        item = describe_certificate(certificate, now)
        item["due"] = due is not None and due.has(
            "certificate", path, item["serial_number"], item["subject"]
        )
        items.append(item)
    return FileSet(name, path, items, None, target)


def _crls(path: Path, now: datetime, due: Due) -> FileSet:
    try:
        crls = parse_bundle(path.read_bytes())
    except (OSError, ValueError) as exc:
        return FileSet("crls", path, [], f"cannot read {path}: {exc}")
    items = []
    for crl in crls:
        item = describe_crl(crl, now)
        item["due"] = due.has("crl", path, item["crl_number"], item["issuer"])
        items.append(item)
    return FileSet("crls", path, items)


class CertificateStatus:
    def __init__(self, config: SluisConfig, token_listing: TokenListing | None) -> None:
        self._config = config
        self._token_listing = token_listing

    def _controller_chain(self) -> Path | None:
        controller = self._config.controller
        if controller is not None and controller.certificate_chain:
            return Path(controller.certificate_chain)
        return None

    def due(self, now: datetime) -> Due:
        """The certificates and CRLs that are due (files only: the HSM is not asked)."""
        tls = self._config.tls
        report = collect(tls)
        items, problems = list(report.items), list(report.problems)
        server = self._controller_chain()
        if server is not None and server != tls.certificate_chain:
            # The same reading of the controller's own server chain (leaf and CAs).
            extra = collect(dataclasses.replace(tls, certificate_chain=server))
            items += [
                dataclasses.replace(i, role=f"controller-{i.role}")
                for i in extra.items
                if i.kind == "certificate" and i.source == server
            ]
            problems += [
                p.replace("organisation chain", "controller server chain", 1)
                for p in extra.problems
                if p.startswith("organisation chain")
            ]
        found = expiring(ExpiryReport(items, []), WARN_DAYS, now, crl_days=CRL_WARN_HOURS / 24)
        return Due(found, problems)

    def report(self, now: datetime) -> dict[str, Any]:
        tls = self._config.tls
        due = self.due(now)
        sets = [
            _certificates("organisation", tls.certificate_chain, now, due),
            _certificates("trust_anchors", tls.trust_anchors, now, due),
            _crls(tls.crls, now, due),
        ]
        server = self._controller_chain()
        if server is not None:
            sets.append(_certificates("controller_server", server, now, due))
        previous = previous_link(tls.certificate_chain)
        if previous.is_symlink() or previous.exists():
            # Kept by sluis pki install-cert for a rollback; not in use, so never due.
            sets.append(_certificates("previous_organisation", previous, now, None))
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
        report.setdefault("previous_organisation", None)
        report["token"] = token
        report["warn_days"] = WARN_DAYS
        report["crl_warn_hours"] = CRL_WARN_HOURS
        report["due"] = [describe_due(item, now) for item in due.items]
        report["problems"] = due.problems
        return report
