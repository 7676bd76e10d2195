"""What expires when: the organisation chain, the trust anchors and every CRL the appliance uses.

One reading of the files behind ``[tls]`` serves ``sluis pki expiry`` (a timer or CI renews
what expires within N days) and the ``/metrics`` endpoint (``appliance.metrics``). The live
link is followed, so after a renewal the new certificate is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.config import TlsSettings
from appliance.tls.revocation import parse_bundle

_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


@dataclass(frozen=True)
class ExpiryItem:
    """A certificate (``notAfter``) or a CRL (``nextUpdate``) and when it stops being usable."""

    kind: str  # "certificate" or "crl"
    role: str  # organisation, chain, trust-anchor; crl
    name: str  # subject, or the CRL's issuer
    serial: str  # certificate serial or CRL number (hex); "" when absent
    expires: datetime | None  # None: a CRL without nextUpdate (unusable)
    source: Path

    def seconds_left(self, now: datetime) -> float | None:
        return None if self.expires is None else (self.expires - now).total_seconds()

    def days_left(self, now: datetime) -> float | None:
        seconds = self.seconds_left(now)
        return None if seconds is None else seconds / 86400

    def within(self, days: float, now: datetime) -> bool:
        left = self.days_left(now)
        return left is None or left < days


@dataclass(frozen=True)
class ExpiryReport:
    items: list[ExpiryItem]
    problems: list[str]  # files that could not be read: treated as expiring


def _certificates(path: Path, first_role: str, role: str) -> list[ExpiryItem]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return [
        ExpiryItem(
            kind="certificate",
            role=first_role if index == 0 else role,
            name=cert.subject.rfc4514_string(_NAMES),
            serial=f"{cert.serial_number:x}",
            expires=cert.not_valid_after_utc,
            source=path,
        )
        for index, cert in enumerate(certs)
    ]


def _crls(path: Path) -> list[ExpiryItem]:
    items = []
    for crl in parse_bundle(path.read_bytes()):
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            serial = f"{number:x}"
        except x509.ExtensionNotFound:
            serial = ""
        items.append(
            ExpiryItem(
                kind="crl",
                role="crl",
                name=crl.issuer.rfc4514_string(_NAMES),
                serial=serial,
                expires=crl.next_update_utc,
                source=path,
            )
        )
    return items


def collect(tls: TlsSettings) -> ExpiryReport:
    """Read the live chain, the trust anchors and the CRL bundle."""
    items: list[ExpiryItem] = []
    problems: list[str] = []
    sources: list[tuple[str, Callable[[], list[ExpiryItem]]]] = [
        (
            "organisation chain",
            partial(_certificates, tls.certificate_chain, "organisation", "chain"),
        ),
        (
            "trust anchors",
            partial(_certificates, tls.trust_anchors, "trust-anchor", "trust-anchor"),
        ),
        ("CRL bundle", partial(_crls, tls.crls)),
    ]
    for what, read in sources:
        try:
            found = read()
        except (OSError, ValueError) as exc:
            problems.append(f"{what}: {exc}")
            continue
        if not found:
            problems.append(f"{what}: no certificate or CRL in the file")
        items.extend(found)
    return ExpiryReport(items, problems)


def expiring(
    report: ExpiryReport,
    days: float,
    now: datetime | None = None,
    *,
    crl_days: float | None = None,
) -> list[ExpiryItem]:
    """The items that are expired, unusable, or expire within ``days`` days.

    CRLs live for days and are refreshed by a timer, so they have their own horizon
    (``crl_days``, default ``days``).
    """
    now = now or datetime.now(UTC)
    horizon = {"crl": days if crl_days is None else crl_days}
    return [item for item in report.items if item.within(horizon.get(item.kind, days), now)]
