"""uvicorn's httptools protocol, extended to hand the verified peer certificate to the app.

uvicorn does not expose the client certificate. The handshake has completed (and OpenSSL has
verified the chain and CRLs) by the time ``connection_made`` runs, so the certificate is read
once per connection and put into every request's scope in the shape of the ASGI TLS extension
(``scope["extensions"]["tls"]``), plus the parsed identity under ``"sluis.peer"``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.tls.peer import PeerIdentity, PeerIdentityError

# ssl.TLSVersion numbers as the ASGI TLS extension wants them (the wire version).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject | None) -> dict[str, Any]:
    """Build the ASGI TLS extension and the Sluis peer entry for one connection."""
    if ssl_object is None:
        return {}
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    tls: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "sluis.cipher_name": cipher[0] if cipher else None,
    }
    extensions: dict[str, Any] = {"tls": tls}
    if der:
        certificate = x509.load_der_x509_certificate(der)
        tls["client_cert_chain"] = [
            certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        ]
        tls["client_cert_name"] = certificate.subject.rfc4514_string()
        try:
            extensions["sluis.peer"] = PeerIdentity.from_der(der)
        except PeerIdentityError as exc:
            tls["client_cert_error"] = str(exc)
    return extensions


class PeerCertificateProtocol(HttpToolsProtocol):
    _sluis_extensions: dict[str, Any]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._sluis_extensions = tls_extension(transport.get_extra_info("ssl_object"))
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A fresh dict per request so an app cannot leak state into the next request.
        self.scope["extensions"] = dict(self._sluis_extensions)
