"""Shared helpers for the contract tests: a software Signer, an in-memory CA and contract builders.

Tests only: in production the organisation key lives in the HSM. Every key here stays in
memory; nothing is written to disk.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.manager.contracts.model import Contract
from appliance.tls.peer import certificate_thumbprint, public_key_thumbprint

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
DAY = 86_400
GROUP_ID = "fsc-test-group"
SHA3 = "HASH_ALGORITHM_SHA3_512"
IV = "06338364-8305-7b74-8000-de4963503139"

OIN_A = "00000001000000000001"  # consumer (outway)
OIN_B = "00000001000000000002"  # provider (service)
OIN_C = "00000001000000000003"  # directory
OIN_D = "00000001000000000004"  # delegator
OIN_E = "00000001000000000005"  # delegator of a publication
OIN_OUTSIDER = "00000009000000000009"  # on no contract

THUMBPRINT = "3a56f2e9269ac63f0d4394c46b96539da1625b6a985d38029ff89f34e490960c"

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class SoftwareSigner:
    """The appliance.hsm.signer.Signer protocol with a key in memory (tests only)."""

    def __init__(self, key: SigningKey, algorithm: str | None = None) -> None:
        self._key = key
        if algorithm is None and isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = _EC_ALGORITHMS[key.curve.name]
        self.algorithm = algorithm or "RS256"

    def sign(self, data: bytes) -> bytes:
        digest = _HASHES[self.algorithm[2:]]()
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(digest)))
            size = (self._key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if self.algorithm.startswith("PS"):
            pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
        return self._key.sign(data, pad, digest)

    def public_key(self) -> Any:
        return self._key.public_key()


@dataclass
class PeerCredentials:
    oin: str
    key: SigningKey
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    signer: SoftwareSigner

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def thumbprint(self) -> str:
        return certificate_thumbprint(self.der)

    @property
    def public_key_thumbprint(self) -> str:
        return public_key_thumbprint(self.certificate)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
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


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def peer_subject(oin: str | None, organisation: str = "Gemeente Test") -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
    ]
    if oin is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, oin))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, "gw.test.example"))
    return x509.Name(attributes)


def dns_names(oin: str | None) -> list[x509.GeneralName]:
    """The gateway's name and the Manager's (``apitest.address_of``): a peer's Manager
    address must be a name its certificate carries."""
    names = ["gw.test.example"] + ([f"manager-{oin[-2:]}.test.example"] if oin else [])
    return [x509.DNSName(name) for name in names]


class InMemoryCA:
    """Root -> intermediate -> peer certificates, shaped like the demo PKI, all in memory."""

    def __init__(self, name: str = "Test") -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        root_name, intermediate_name = _name(f"{name} Root CA"), _name(f"{name} Issuing CA")
        root_ski = x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key())
        self.root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=3650))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(self.root_key, hashes.SHA256())
        )
        self.intermediate = (
            x509.CertificateBuilder()
            .subject_name(intermediate_name)
            .issuer_name(root_name)
            .public_key(self.intermediate_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1000))
            .not_valid_after(NOW + timedelta(days=1000))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .sign(self.root_key, hashes.SHA256())
        )

    @property
    def anchors(self) -> list[x509.Certificate]:
        return [self.root]

    def issue(
        self,
        oin: str | None,
        *,
        key: SigningKey | None = None,
        algorithm: str | None = None,
        not_before: datetime = NOW - timedelta(days=30),
        not_after: datetime = NOW + timedelta(days=365),
        subject: x509.Name | None = None,
    ) -> PeerCredentials:
        key = key or ec.generate_private_key(ec.SECP256R1())
        issuer_ski = x509.SubjectKeyIdentifier.from_public_key(self.intermediate_key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject or peer_subject(oin))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(dns_names(oin)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA256())
        )
        return PeerCredentials(
            oin=oin or "",
            key=key,
            certificate=certificate,
            chain=[certificate, self.intermediate],
            signer=SoftwareSigner(key, algorithm),
        )

    def crls(
        self,
        *,
        revoked: Iterable[x509.Certificate] = (),
        revoke_intermediate: bool = False,
        this_update: datetime = NOW - timedelta(hours=1),
        next_update: datetime = NOW + timedelta(days=7),
    ) -> list[x509.CertificateRevocationList]:
        """The intermediate's CRL (peer certificates) and the root's (the intermediate)."""
        return [
            _crl(
                self.intermediate,
                self.intermediate_key,
                [c.serial_number for c in revoked],
                this_update,
                next_update,
            ),
            _crl(
                self.root,
                self.root_key,
                [self.intermediate.serial_number] if revoke_intermediate else [],
                this_update,
                next_update,
            ),
        ]


def _crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    serials: Sequence[int],
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(key, hashes.SHA256())


@dataclass
class CertificateDirectory:
    """What a Manager would fetch from other Peers: x5t#S256 -> certificate chain."""

    chains: dict[str, list[x509.Certificate]] = field(default_factory=dict)

    def add(self, *peers: PeerCredentials) -> CertificateDirectory:
        for peer in peers:
            self.chains[peer.thumbprint] = list(peer.chain)
        return self

    def __call__(self, thumbprint: str) -> list[x509.Certificate] | None:
        return self.chains.get(thumbprint)


# -- contract builders ---------------------------------------------------------------------


def connection_data(
    *,
    outway: str = OIN_A,
    service_peer: str = OIN_B,
    name: str = "basisregistratie",
    thumbprint: str = THUMBPRINT,
    delegator: str | None = None,
    service_delegator: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "type": "SERVICE_TYPE_SERVICE",
        "peer_id": service_peer,
        "name": name,
    }
    if service_delegator is not None:
        service["type"] = "SERVICE_TYPE_DELEGATED_SERVICE"
        service["delegator"] = {"peer_id": service_delegator}
    data: dict[str, Any] = {
        "type": "GRANT_TYPE_SERVICE_CONNECTION",
        "outway": {"peer_id": outway, "public_key_thumbprint": thumbprint},
        "service": service,
    }
    if delegator is not None:
        data["type"] = "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION"
        data["delegator"] = {"peer_id": delegator}
    if properties is not None:
        data["properties"] = properties
    return {"data": data}


def publication_data(
    *,
    directory: str = OIN_C,
    service_peer: str = OIN_B,
    name: str = "basisregistratie",
    protocol: str = "PROTOCOL_TCP_HTTP_1.1",
    delegator: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "GRANT_TYPE_SERVICE_PUBLICATION",
        "directory": {"peer_id": directory},
        "service": {"peer_id": service_peer, "name": name, "protocol": protocol},
    }
    if delegator is not None:
        data["type"] = "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION"
        data["delegator"] = {"peer_id": delegator}
    if properties is not None:
        data["properties"] = properties
    return {"data": data}


def content(
    *grants: dict[str, Any],
    iv: str = IV,
    group_id: str = GROUP_ID,
    not_before: int = T - DAY,
    not_after: int = T + 365 * DAY,
    created_at: int = T - 60,
    hash_algorithm: str = SHA3,
) -> dict[str, Any]:
    return {
        "iv": iv,
        "group_id": group_id,
        "validity": {"not_before": not_before, "not_after": not_after},
        "grants": list(grants) or [connection_data()],
        "hash_algorithm": hash_algorithm,
        "created_at": created_at,
    }


def contract(*grants: dict[str, Any], **kwargs: Any) -> Contract:
    return Contract.from_json(content(*grants, **kwargs))


def sha3_b64(data: bytes) -> str:
    """Independent of the implementation: base64url without padding of SHA3-512."""
    return base64.urlsafe_b64encode(hashlib.sha3_512(data).digest()).rstrip(b"=").decode()


@dataclass
class Group:
    """One Group: its CA and Peers A to E, an outsider and a Peer of another CA."""

    ca: InMemoryCA
    other_ca: InMemoryCA
    peers: dict[str, PeerCredentials]
    foreign: PeerCredentials  # OIN_A, but issued by a CA the Group does not trust

    def __getitem__(self, oin: str) -> PeerCredentials:
        return self.peers[oin]

    def directory(self) -> CertificateDirectory:
        return CertificateDirectory().add(*self.peers.values(), self.foreign)


def make_group() -> Group:
    ca, other_ca = InMemoryCA("Group"), InMemoryCA("Other")
    oins = (OIN_A, OIN_B, OIN_C, OIN_D, OIN_E, OIN_OUTSIDER)
    return Group(
        ca=ca,
        other_ca=other_ca,
        peers={oin: ca.issue(oin) for oin in oins},
        foreign=other_ca.issue(OIN_A),
    )
