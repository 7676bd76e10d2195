"""Fetching, checking and bundling certificate revocation lists.

The TLS stack reads one PEM bundle holding the CRL of every CA in the trusted chains and fails
closed when a CRL is missing or past its nextUpdate, so a refresh either replaces the whole
bundle with verified, fresh CRLs or leaves the previous bundle alone.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from appliance.errors import SluisError

# A CRL of a private demo CA is a few kilobytes; a cap keeps a misbehaving server from
# exhausting memory.
MAX_CRL_BYTES = 16 * 1024 * 1024

# thisUpdate may be slightly ahead of our clock; more than this means a clock problem.
CLOCK_SKEW = timedelta(minutes=5)


class CrlError(SluisError):
    """A CRL that cannot be fetched, parsed, verified or written."""


class CrlStaleError(CrlError):
    """A CRL whose nextUpdate has passed: relying on it would hide newer revocations."""


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` so readers see either the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a power cut too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _describe(crl: x509.CertificateRevocationList) -> str:
    return f"CRL of {crl.issuer.rfc4514_string()}"


def check_fresh(crl: x509.CertificateRevocationList, *, now: datetime | None = None) -> None:
    """Refuse a CRL past its nextUpdate, without one, or issued in the future."""
    now = now or datetime.now(UTC)
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlError(f"{_describe(crl)} has no nextUpdate, so its freshness cannot be judged")
    if next_update < now:
        raise CrlStaleError(
            f"{_describe(crl)} is stale: it expired at {next_update.isoformat()} (nextUpdate)"
        )
    if crl.last_update_utc > now + CLOCK_SKEW:
        raise CrlError(
            f"{_describe(crl)} was issued in the future ({crl.last_update_utc.isoformat()}); "
            "check the clock"
        )


def _opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    # Only HTTP(S) handlers: the default opener would also follow redirects to ftp: and
    # accept file: and data: URLs.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=context),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CrlError(f"{url}: a CRL URL must be an http:// or https:// URL")


def _download(url: str, timeout: float) -> bytes:
    _check_url(url)
    # Scheme checked above, and the opener has no handlers for other schemes.
    request = urllib.request.Request(url, headers={"User-Agent": "sluis-crl-fetch"})  # noqa: S310
    try:
        with _opener(ssl.create_default_context()).open(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_CRL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise CrlError(f"{url}: server answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise CrlError(f"{url}: cannot download CRL: {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise CrlError(f"{url}: cannot download CRL: {exc}") from exc
    if len(data) > MAX_CRL_BYTES:
        raise CrlError(f"{url}: CRL is larger than {MAX_CRL_BYTES} bytes")
    return data


def _parse(url: str, data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"{url}: response is not a DER or PEM CRL: {exc}") from exc


def verify_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    *,
    source: str,
    now: datetime | None = None,
) -> None:
    """Check issuer name, signature and freshness; errors are prefixed with ``source``."""
    if crl.issuer != issuer.subject:
        raise CrlError(
            f"{source}: CRL issuer {crl.issuer.rfc4514_string()} is not the expected issuer "
            f"{issuer.subject.rfc4514_string()}"
        )
    key = issuer.public_key()
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise CrlError(f"{source}: issuer certificate has a key that cannot sign CRLs")
    if not crl.is_signature_valid(key):
        raise CrlError(
            f"{source}: CRL signature does not verify against {issuer.subject.rfc4514_string()}"
        )
    try:
        check_fresh(crl, now=now)
    except CrlStaleError as exc:
        raise CrlStaleError(f"{source}: {exc}") from exc
    except CrlError as exc:
        raise CrlError(f"{source}: {exc}") from exc


def fetch_crl(
    url: str,
    issuer: x509.Certificate,
    *,
    timeout: float = 10.0,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """Download a CRL and return it only if it is signed by ``issuer`` and still fresh."""
    crl = _parse(url, _download(url, timeout))
    verify_crl(crl, issuer, source=url, now=now)
    return crl


def write_crl_bundle(crls: Sequence[x509.CertificateRevocationList], dest: Path) -> None:
    """Write the CRLs as one PEM bundle, the form ``ssl`` ``load_verify_locations`` reads."""
    if not crls:
        raise CrlError(f"{dest}: refusing to write an empty CRL bundle")
    data = b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, data, 0o644)


def refresh_crls(
    urls_and_issuers: Sequence[tuple[str, x509.Certificate]],
    dest: Path,
    *,
    timeout: float = 10.0,
    now: datetime | None = None,
) -> None:
    """Fetch every CRL and write the bundle only if all of them are good."""
    if not urls_and_issuers:
        raise CrlError(f"{dest}: no CRL URLs given")
    crls: list[x509.CertificateRevocationList] = []
    failures: list[CrlError] = []
    for url, issuer in urls_and_issuers:
        try:
            crls.append(fetch_crl(url, issuer, timeout=timeout, now=now))
        except CrlError as exc:
            failures.append(exc)
    if failures:
        # Report every failing URL at once so the operator can fix them in one go.
        message = (
            f"not updating {dest}: {len(failures)} of {len(urls_and_issuers)} CRLs failed: "
            + "; ".join(str(exc) for exc in failures)
        )
        if all(isinstance(exc, CrlStaleError) for exc in failures):
            raise CrlStaleError(message)
        raise CrlError(message)
    write_crl_bundle(crls, dest)
