"""Server and client SSL contexts for every Sluis listener and outbound connection.

Both sides require and verify a certificate (mutual TLS), check CRLs for the whole chain
(fail closed: a missing or expired CRL fails the handshake; a changed CRL bundle is loaded
again within a second, see ``appliance.tls.revocation``), log every refused peer certificate
(``appliance.tls.verifylog``), and follow the NCSC policy in
``appliance.tls.policy``. The private key is an HSM key named by a PEM URI file.

HSM-backed contexts must be built in the process that uses them: PKCS#11 sessions do not
survive fork, so gunicorn workers build theirs after fork (``appliance.serving.worker``).
"""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

from appliance.config import TlsSettings
from appliance.errors import ConfigurationError, SluisError
from appliance.hsm.lock import login_lock
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import load_module
from appliance.tls import alerts, policy, revocation, verifylog


class TlsSetupError(SluisError):
    """A context could not be built from the configured files."""


_BUILD_LOCK = threading.Lock()


def require_openssl_conf(tls: TlsSettings) -> None:
    """Refuse to build contexts when the process runs without Sluis' OpenSSL configuration.

    Groups and signature algorithms are only restricted there; without it the process would
    silently accept ffdhe2048 and SHA-224 signatures, and could not reach the HSM key.
    """
    active = os.environ.get("OPENSSL_CONF")
    if active is None or Path(active).resolve() != tls.openssl_conf.resolve():
        raise ConfigurationError(
            f"OPENSSL_CONF must be {tls.openssl_conf} before the process starts "
            f"(it is {active!r}); start components with `sluis serve` or the systemd unit"
        )


def _check_files(tls: TlsSettings) -> None:
    for what, path in (
        ("certificate chain", tls.certificate_chain),
        ("key reference", tls.key_reference),
        ("trust anchors", tls.trust_anchors),
        ("CRL bundle", tls.crls),
    ):
        if not path.is_file():
            raise ConfigurationError(f"{what} file {path} does not exist")


def _base_context(*, server: bool, tls: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(policy.TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_TICKET
    )
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Check every certificate of the chain against its issuer's CRL; strict X.509 parsing.
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN | ssl.VERIFY_X509_STRICT
    ctx.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        ctx.load_verify_locations(cafile=str(tls.trust_anchors))
        ctx.load_verify_locations(cafile=str(tls.crls))
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"cannot load trust anchors or CRLs: {exc}") from None
    # Re-read the CRL bundle when it changes, in this long-running process (revocation.py).
    revocation.install(ctx, tls.crls)
    return ctx


def _load_identity(ctx: ssl.SSLContext, tls: TlsSettings, hsm: HsmSettings) -> None:
    # The provider logs in to the token while loading the key: serialise with other logins.
    with _BUILD_LOCK, login_lock(hsm.login_lock):
        # python-pkcs11 (JWS signing) cannot initialise a module that the provider already
        # initialised in this process, while the provider accepts the reverse order: so
        # python-pkcs11 always goes first.
        load_module(hsm.module)
        try:
            ctx.load_cert_chain(str(tls.certificate_chain), str(tls.key_reference))
        except (ssl.SSLError, OSError) as exc:
            # OSError: a module that cannot reach its token (a network HSM's client library
            # without its server) leaves the socket's errno for Python to raise.
            reason = exc.reason if isinstance(exc, ssl.SSLError) else None
            raise TlsSetupError(
                f"cannot use HSM key {hsm.pkcs11_uri()} with certificate "
                f"{tls.certificate_chain}: {reason or exc} (is the token present, the PIN "
                "file right, and the certificate issued for this key?)"
            ) from None


def server_context(tls: TlsSettings, hsm: HsmSettings) -> ssl.SSLContext:
    """Context for a listener: requires a client certificate chained to the trust anchors."""
    require_openssl_conf(tls)
    _check_files(tls)
    ctx = _base_context(server=True, tls=tls)
    # Python clients do not resume TLS 1.3 sessions; tickets only cost handshake time.
    ctx.num_tickets = 0
    _load_identity(ctx, tls, hsm)
    verifylog.install(ctx)
    # A refused client reads the alert saying why, not an EOF (appliance.tls.alerts).
    ctx.sslobject_class = alerts.AlertingSSLObject
    return ctx


def client_context(tls: TlsSettings, hsm: HsmSettings) -> ssl.SSLContext:
    """Context for outbound mutual TLS; the server name is checked against its SAN."""
    require_openssl_conf(tls)
    _check_files(tls)
    ctx = _base_context(server=False, tls=tls)
    ctx.check_hostname = True
    _load_identity(ctx, tls, hsm)
    verifylog.install(ctx)
    return ctx
