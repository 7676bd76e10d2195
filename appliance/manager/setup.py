"""Build a ManagerService from the appliance configuration (used by the app and the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.config import ManagerSettings, SluisConfig
from appliance.errors import ConfigurationError
from appliance.hsm.signer import Pkcs11Signer
from appliance.manager.peer_client import PeerClient
from appliance.manager.service import ManagerService, load_certificates, load_crls
from appliance.manager.storage import ManagerStore


def manager_settings(config: SluisConfig) -> ManagerSettings:
    if config.manager is None:
        raise ConfigurationError(f"{config.source}: no [manager] section; this box runs no Manager")
    return config.manager


def parse_resolve(entries: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """``host:port=ip:port`` entries (the [manager] resolve setting) as a lookup table."""
    table: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        ip, _, port = target.rpartition(":")
        if not sep or not ip or not port.isdigit() or ":" not in name:
            raise ConfigurationError(f"[manager] resolve entry {entry!r} is not host:port=ip:port")
        table[name] = (ip, int(port))
    return table


class CachedCrls:
    """The CRL bundle, read again whenever the file changes (CRLs are refreshed by a timer)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: float | None = None
        self._crls: list[x509.CertificateRevocationList] = []

    def __call__(self) -> list[x509.CertificateRevocationList]:
        stamp = self._path.stat().st_mtime
        if stamp != self._stamp:
            self._crls, self._stamp = load_crls(self._path), stamp
        return self._crls


def build_service(config: SluisConfig, *, client: PeerClient | None = None) -> ManagerService:
    settings = manager_settings(config)
    # A SoftHSM appliance names its own token store; the module reads it when first loaded.
    os.environ.update(config.hsm.environment())
    own_chain = load_certificates(config.tls.certificate_chain)
    # FSC allows RS256-512 and ES256-512 for JWS; never the signer's PSS default for RSA.
    algorithm = "RS256" if isinstance(own_chain[0].public_key(), rsa.RSAPublicKey) else None
    return ManagerService(
        settings=settings,
        store=ManagerStore.open(settings.database),
        own_chain=own_chain,
        trust_anchors=load_certificates(config.tls.trust_anchors),
        crls=CachedCrls(config.tls.crls),
        signer=Pkcs11Signer(config.hsm, algorithm=algorithm),
        client=client,
    )
