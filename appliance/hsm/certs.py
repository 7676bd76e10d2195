"""Install the organisation certificate: in the token next to its key, and on disk for TLS.

On disk the layout follows certbot: every chain ever imported stays in
``<cert_dir>/archive/organisation-<notAfter>-<serial>.pem`` and ``<cert_dir>/organisation.pem``
is a relative symlink to the current one, swapped atomically (new link under a temporary name,
then ``os.replace``), so a reader sees either the old or the new chain, never half of one.
``organisation.pem.previous`` points at the chain that was live before, for a rollback
(``sluis pki install-cert`` and ``rollback-cert``, ``appliance.pki.install``).
"""

from __future__ import annotations

import itertools
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, CertificateType, ObjectClass

from appliance.hsm.errors import CertificateMismatchError, HsmError, translated
from appliance.hsm.keys import find_private_key, read_public_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import open_session

LIVE_NAME = "organisation.pem"
PREVIOUS_SUFFIX = ".previous"
ARCHIVE_DIR = "archive"


def load_chain(chain_pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM chain, leaf first, each issued by the next."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateMismatchError("the chain holds no readable PEM certificate") from None
    for position, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateMismatchError(
                f"certificate {position + 1} of the chain ({parent.subject.rfc4514_string()}) "
                f"did not issue certificate {position} ({child.subject.rfc4514_string()}); "
                "give the chain leaf first, then each issuer"
            ) from None
    return chain


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def store_in_token(settings: HsmSettings, leaf: x509.Certificate) -> None:
    """Store ``leaf`` in the token next to its key (CKA_ID of the key), replacing older ones."""
    der = leaf.public_bytes(Encoding.DER)
    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    label = settings.key_label
    with (
        open_session(settings, rw=True) as session,
        translated(settings, "storing the certificate in the token"),
    ):
        key = find_private_key(session, settings)
        key_id = bytes(key.id)
        token_public = read_public_key(session, settings)
        if _spki(leaf.public_key()) != _spki(token_public):
            raise CertificateMismatchError(
                f"the certificate ({leaf.subject.rfc4514_string()}) holds another public key "
                f"than key {label!r} in token {settings.token_label!r}"
            )
        older = list(
            session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
        )
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.LABEL: label,
                Attribute.ID: key_id,
                Attribute.SUBJECT: tbs["subject"].dump(),
                Attribute.ISSUER: tbs["issuer"].dump(),
                Attribute.SERIAL_NUMBER: tbs["serial_number"].dump(),
                Attribute.VALUE: der,
            }
        )
        # Only after the new one exists: never leave the key without a certificate.
        for obj in older:
            obj.destroy()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_archive(archive: Path, name: str, data: bytes) -> Path:
    """Write ``archive/name`` durably (temporary file, fsync, rename); 0644, not secret."""
    archive.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = archive / name
    tmp = archive / f".{name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(archive)
    return target


def replace_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one step: a new link under a temporary name, renamed."""
    tmp = link.with_name(f".{link.name}.tmp-{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def previous_link(live: Path) -> Path:
    """The link to the chain that was live before the last swap (kept for rollback)."""
    return live.with_name(live.name + PREVIOUS_SUFFIX)


def swap_link(live: Path, relative_target: str) -> Path:
    """Make ``live`` point at ``relative_target``; the former target becomes the previous one."""
    former = os.readlink(live) if live.is_symlink() else None
    if former is not None and former != relative_target:
        replace_link(previous_link(live), former)
    replace_link(live, relative_target)
    return live


def archive_name(leaf: x509.Certificate) -> str:
    """``organisation-<notAfter UTC>-<serial hex>.pem``: sorts by expiry, unique per cert."""
    return f"organisation-{leaf.not_valid_after_utc:%Y%m%dT%H%M%SZ}-{leaf.serial_number:x}.pem"


def import_certificate(settings: HsmSettings, chain_pem: bytes, cert_dir: Path) -> Path:
    """Import the organisation certificate chain; return ``cert_dir/organisation.pem``.

    The first certificate must hold the token key's public key (else
    :class:`CertificateMismatchError`). It is stored in the token as an X.509 certificate object
    with the key's label and CKA_ID (replacing an older one), and the whole chain is written to
    the certificate directory.
    """
    chain = load_chain(chain_pem)
    leaf = chain[0]
    if leaf.not_valid_after_utc <= datetime.now(UTC):
        raise HsmError(
            f"the certificate ({leaf.subject.rfc4514_string()}) expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    store_in_token(settings, leaf)
    name = archive_name(leaf)
    data = b"".join(cert.public_bytes(Encoding.PEM) for cert in chain)
    try:
        cert_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_archive(cert_dir / ARCHIVE_DIR, name, data)
        return swap_link(cert_dir / LIVE_NAME, f"{ARCHIVE_DIR}/{name}")
    except OSError as exc:
        raise HsmError(
            f"the certificate is in token {settings.token_label!r}, but writing it to "
            f"{cert_dir} failed: {exc.strerror}"
        ) from exc
