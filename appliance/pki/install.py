"""Install a renewed or re-keyed organisation certificate without downtime, with rollback.

The components read the organisation chain through the live link ``[tls] certificate_chain``
(``certs/organisation.pem -> archive/organisation-<notAfter>-<serial>.pem``). A gunicorn
graceful reload (HUP) starts new workers, which build their TLS contexts from whatever the link
names at that moment; old workers finish their open connections with the chain they loaded.

:func:`install_certificate` changes the link only for a chain that will work:

1. before anything changes: the chain is complete and each certificate issued by the next, the
   top one by a trust anchor of ``[tls] trust_anchors``; every certificate is within its
   validity period and not revoked according to a fresh CRL of the bundle ``[tls] crls``; the
   leaf carries the same PeerID (OIN) as the live certificate and holds the public key of the
   key in the token;
2. ``before_swap`` runs (the CLI's: a checkpoint of each log's streams signed with the key and
   certificate still live, reason ``rotation``); if it fails nothing changes. Then the chain
   is archived and the link swapped in one rename; the former target stays behind
   ``organisation.pem.previous``;
3. a TLS self-check in a fresh process (``sluis tls check``) builds the server and client
   contexts with the HSM key and the new chain and completes a mutual handshake between them,
   so OpenSSL itself verifies the chain, CRLs and key under the TLS policy; if it fails, the
   link is swapped back before the command returns;
4. only then the certificate object in the token is replaced (it is informational: ``sluis hsm
   list`` shows it; TLS and JWS use the live link).

:func:`rollback_certificate` swaps the live and the previous link (so a second rollback undoes
the first) after the same checks of the chain it brings back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.config import SluisConfig
from appliance.errors import SluisError
from appliance.hsm.certs import (
    ARCHIVE_DIR,
    archive_name,
    load_chain,
    previous_link,
    replace_link,
    store_in_token,
    write_archive,
)
from appliance.hsm.errors import CertificateMismatchError
from appliance.hsm.keys import public_key
from appliance.hsm.settings import HsmSettings
from appliance.pki.crl import CrlError, verify_crl
from appliance.tls.peer import PeerIdentity, PeerIdentityError
from appliance.tls.revocation import parse_bundle


class InstallError(SluisError):
    """The certificate was not installed (or not rolled back); the live link is unchanged."""


# Runs the TLS self-check against the live link; raises InstallError when it fails.
SelfCheck = Callable[[], None]
# Runs right before the swap (under the lock); raises InstallError to stop it.
BeforeSwap = Callable[[], None]


@dataclass(frozen=True)
class InstallResult:
    live: Path
    target: Path
    previous: Path | None
    leaf: x509.Certificate
    changed: bool = True  # False: this chain was live already (install-cert run again)


def _load_pem_certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read {what} {path}: {exc}") from None


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_chain(
    chain: list[x509.Certificate],
    *,
    anchors: list[x509.Certificate],
    crls_path: Path,
    now: datetime | None = None,
) -> None:
    """Refuse a chain that TLS peers would refuse: trust, validity, revocation, identity."""
    now = now or datetime.now(UTC)
    if not chain:
        raise InstallError("the chain holds no certificate")
    for cert in chain:
        name = cert.subject.rfc4514_string()
        if cert.not_valid_before_utc > now:
            raise InstallError(f"{name} is not valid before {cert.not_valid_before_utc}")
        if cert.not_valid_after_utc <= now:
            raise InstallError(f"{name} expired at {cert.not_valid_after_utc}")
    top = chain[-1]
    if not any(_issued_by(top, anchor) or top == anchor for anchor in anchors):
        raise InstallError(
            f"the chain ends at {top.subject.rfc4514_string()}, which no trust anchor of the "
            "Group issued (wrong CA, or the intermediate is missing)"
        )
    try:
        PeerIdentity.from_der(chain[0].public_bytes(Encoding.DER))
    except PeerIdentityError as exc:
        raise InstallError(str(exc)) from None
    _check_revocation(chain, anchors, crls_path, now)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_revocation(
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    crls_path: Path,
    now: datetime,
) -> None:
    try:
        crls = parse_bundle(crls_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read the CRL bundle {crls_path}: {exc}") from None
    issuers = [*chain[1:], *anchors]
    for cert in chain:
        if cert in anchors:
            continue
        issuer = next((i for i in issuers if _issued_by(cert, i)), None)
        if issuer is None:
            raise InstallError(f"no issuer of {cert.subject.rfc4514_string()} in the chain")
        candidates = [crl for crl in crls if crl.issuer == cert.issuer]
        if not candidates:
            raise InstallError(
                f"{crls_path} holds no CRL of {cert.issuer.rfc4514_string()}: fetch the CRLs "
                "first (sluis pki fetch-crl)"
            )
        crl = max(candidates, key=lambda c: c.last_update_utc)
        try:
            verify_crl(crl, issuer, source=str(crls_path), now=now)
        except CrlError as exc:
            raise InstallError(str(exc)) from None
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            raise InstallError(
                f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) was revoked "
                f"on {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC"
            )


def _check_key(settings: HsmSettings, leaf: x509.Certificate) -> None:
    token_key = public_key(settings)
    spki = token_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if spki != _spki(leaf):
        raise CertificateMismatchError(
            f"the certificate ({leaf.subject.rfc4514_string()}) holds another public key than "
            f"key {settings.key_label!r} in token {settings.token_label!r}; for a new key give "
            "its label with --key-label (re-keying, docs/lifecycle.md)"
        )


def _same_peer(live: Path, leaf: x509.Certificate) -> None:
    if not live.exists():
        return
    current = _load_pem_certificates(live, "the live chain")
    if not current:
        return
    old = PeerIdentity.from_der(current[0].public_bytes(Encoding.DER)).peer_id
    new = PeerIdentity.from_der(leaf.public_bytes(Encoding.DER)).peer_id
    if old != new:
        raise InstallError(
            f"the certificate names peer {new}, the live one peer {old}: a renewal keeps the "
            "PeerID (OIN); a different organisation is a new appliance"
        )


@contextlib.contextmanager
def _locked(cert_dir: Path) -> Iterator[None]:
    cert_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(cert_dir / ".install.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"another install or rollback is running in {cert_dir}") from None
        yield
    finally:
        os.close(fd)


def _adopt_plain_file(live: Path) -> None:
    """A live chain that is a plain file (older installs) moves into the archive first."""
    if live.is_symlink() or not live.exists():
        return
    chain = load_chain(live.read_bytes())
    name = archive_name(chain[0])
    write_archive(live.parent / ARCHIVE_DIR, name, live.read_bytes())
    replace_link(live, f"{ARCHIVE_DIR}/{name}")


def _swap(live: Path, target: str) -> str | None:
    """Point ``live`` at ``target``; return the former target (now behind ``.previous``)."""
    former = os.readlink(live) if live.is_symlink() else None
    if former is not None and former != target:
        replace_link(previous_link(live), former)
    replace_link(live, target)
    return former


def _restore(live: Path, former: str | None, previous_before: str | None) -> None:
    if former is not None:
        replace_link(live, former)
    prev = previous_link(live)
    if previous_before is not None:
        replace_link(prev, previous_before)
    elif prev.is_symlink():
        prev.unlink()


def _readlink(path: Path) -> str | None:
    return os.readlink(path) if path.is_symlink() else None


def _previous_or_none(live: Path) -> Path | None:
    previous = previous_link(live)
    return previous if previous.is_symlink() else None


def install_certificate(
    config: SluisConfig,
    chain_pem: bytes,
    *,
    self_check: SelfCheck | None,
    key_label: str | None = None,
    now: datetime | None = None,
    before_swap: BeforeSwap | None = None,
) -> InstallResult:
    """Check, archive and make ``chain_pem`` the live chain; see the module documentation."""
    tls = config.tls
    settings = replace(config.hsm, key_label=key_label) if key_label else config.hsm
    live = tls.certificate_chain
    try:
        chain = load_chain(chain_pem)
    except CertificateMismatchError as exc:
        raise InstallError(str(exc)) from None
    leaf = chain[0]
    anchors = _load_pem_certificates(tls.trust_anchors, "the trust anchors")
    check_chain(chain, anchors=anchors, crls_path=tls.crls, now=now)
    _check_key(settings, leaf)
    with _locked(live.parent):
        _same_peer(live, leaf)
        _adopt_plain_file(live)
        name = archive_name(leaf)
        data = b"".join(cert.public_bytes(Encoding.PEM) for cert in chain)
        if _readlink(live) == f"{ARCHIVE_DIR}/{name}" and live.read_bytes() == data:
            # Installed already (a playbook run again): swapping would make the live chain
            # its own previous one and lose the way back.
            return InstallResult(
                live=live,
                target=live.parent / ARCHIVE_DIR / name,
                previous=_previous_or_none(live),
                leaf=leaf,
                changed=False,
            )
        if before_swap is not None:
            before_swap()
        target = write_archive(live.parent / ARCHIVE_DIR, name, data)
        previous_before = _readlink(previous_link(live))
        former = _swap(live, f"{ARCHIVE_DIR}/{name}")
        if self_check is not None:
            try:
                self_check()
            except BaseException:
                _restore(live, former, previous_before)
                raise
    with contextlib.suppress(CertificateMismatchError):  # checked above; informational copy
        store_in_token(settings, leaf)
    return InstallResult(live=live, target=target, previous=_previous_or_none(live), leaf=leaf)


def rollback_certificate(
    config: SluisConfig,
    *,
    self_check: SelfCheck | None,
    now: datetime | None = None,
) -> InstallResult:
    """Make the previous chain live again (and the current one the previous)."""
    tls = config.tls
    live = tls.certificate_chain
    previous = previous_link(live)
    with _locked(live.parent):
        target = _readlink(previous)
        if target is None:
            raise InstallError(f"no previous certificate to roll back to ({previous} is missing)")
        chain = load_chain((live.parent / target).read_bytes())
        anchors = _load_pem_certificates(tls.trust_anchors, "the trust anchors")
        check_chain(chain, anchors=anchors, crls_path=tls.crls, now=now)
        former = _swap(live, target)
        if self_check is not None:
            try:
                self_check()
            except BaseException:
                _restore(live, former, target)
                raise
    with contextlib.suppress(CertificateMismatchError):
        store_in_token(config.hsm, chain[0])
    return InstallResult(live=live, target=live.parent / target, previous=previous, leaf=chain[0])


def subprocess_self_check(config_path: Path, config: SluisConfig) -> SelfCheck:
    """The TLS self-check as a fresh ``sluis tls check`` (OpenSSL reads OPENSSL_CONF at start)."""

    def check() -> None:
        env = {
            **os.environ,
            "OPENSSL_CONF": str(config.tls.openssl_conf),
            **config.hsm.environment(),
        }
        argv = [sys.executable, "-m", "appliance", "tls", "check", "--config", str(config_path)]
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired:
            raise InstallError("the TLS self-check did not finish within 120 s") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise InstallError(
                "the TLS self-check with the new chain failed, the previous chain is live "
                f"again: {detail[-1] if detail else f'exit code {done.returncode}'}"
            )

    return check
