"""uvicorn's httptools protocol, extended: the verified peer certificate for the app, and
strict HTTP/1.1 framing.

uvicorn does not expose the client certificate. The handshake has completed (and OpenSSL has
verified the chain and CRLs) by the time ``connection_made`` runs, so the certificate is read
once per connection and put into every request's scope in the shape of the ASGI TLS extension
(``scope["extensions"]["tls"]``), plus the parsed identity under ``"sluis.peer"``.

Framing. llhttp (httptools) already refuses, with 400 and a closed connection: Content-Length
together with Transfer-Encoding, a repeated or malformed Content-Length, bare LF or CR line
ends, obs-fold, malformed chunk sizes (not hex, too large, spaces) and chunk data without its
CRLF. Two gaps are closed here, because both gateways are proxies and a request they pass on
must mean to the backend exactly what it meant to them (RFC 9112 6.1, 6.3; request smuggling):

- uvicorn schedules the app as soon as the headers are in. When the same packet also held a
  good chunk and then a malformed one, uvicorn answered 400 on the wire, yet the app still ran
  with the good chunk as its first body event: the inway logged the request and sent its head
  and that chunk to the backend. Now a request refused in the bytes that made it never
  reaches the app; one whose app is already running sees the client disconnect at once (the
  gateways then abort the backend request instead of completing it).
- llhttp lets through what RFC 9112 says a server must not process: a Transfer-Encoding other
  than exactly ``chunked`` (``gzip, chunked`` would reach the backend decoded of its chunking
  but still gzip-coded, under no header saying so), Transfer-Encoding in an HTTP/1.0 request,
  and an HTTP/1.1 request without exactly one Host header. They get the same 400.

CONNECT (``CONNECT host:port``) reaches the app, which refuses it (the gateways proxy
requests, never tunnels); the connection is closed after the answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

import httptools
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.tls.peer import PeerIdentity, PeerIdentityError

# ssl.TLSVersion numbers as the ASGI TLS extension wants them (the wire version).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# Put into the scope of a request refused on the wire: its app is never started.
_REFUSED = "sluis.refused"


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


class MalformedRequest(Exception):
    """A request head that RFC 9112 says a server must not process (raised in a parser
    callback; httptools turns it into an ``HttpParserCallbackError``, uvicorn into a 400)."""


def framing_problem(headers: list[tuple[bytes, bytes]], http_version: str) -> str | None:
    """Why a request head with these (lower-case) header names must be refused, if it must."""
    codings: list[bytes] = []
    hosts = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(b","))
        elif name == b"host":
            hosts += 1
    if codings:
        if http_version != "1.1":
            return "Transfer-Encoding in a request that is not HTTP/1.1"
        if codings != [b"chunked"]:
            return "a Transfer-Encoding other than chunked"
    if http_version == "1.1" and hosts != 1:
        return "an HTTP/1.1 request without exactly one Host header"
    return None


class _GuardedParser:
    """httptools' parser, telling the protocol about a framing error before uvicorn answers."""

    def __init__(self, parser: Any, on_error: Callable[[], None]) -> None:
        self._parser = parser
        self._on_error = on_error

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._on_error()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


# Seconds a connection that has not sent a request yet gets when its worker stops (below).
SHUTDOWN_GRACE = 1.0


class PeerCertificateProtocol(HttpToolsProtocol):
    _sluis_extensions: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sluis_last_request = False
        # Duck-typed: uvicorn calls feed_data and a few getters, which the wrapper passes on.
        self.parser = cast(Any, _GuardedParser(self.parser, self._refuse_unfinished_request))
        app = self.app

        async def unless_refused(scope: Any, receive: Any, send: Any) -> None:
            # The app's task starts after the bytes that made it were parsed: one whose
            # request broke the framing in those same bytes is never run.
            if not scope.get("extensions", {}).get(_REFUSED):
                await app(scope, receive, send)

        self.app = unless_refused

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._sluis_extensions = tls_extension(transport.get_extra_info("ssl_object"))
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A fresh dict per request so an app cannot leak state into the next request.
        self.scope["extensions"] = dict(self._sluis_extensions)

    def on_headers_complete(self) -> None:
        problem = framing_problem(self.headers, self.parser.get_http_version())
        if problem is not None:
            self.logger.warning("request refused: %s", problem)
            raise MalformedRequest(problem)  # before a request cycle or app task exists
        connect = self.parser.get_method() == b"CONNECT"
        if connect:
            # CONNECT's target is host:port, which uvicorn cannot parse as a URL (it would
            # answer a bare 400): let the app refuse the method in its own words (the outway's
            # 405 ERROR_CODE_METHOD_UNSUPPORTED). The app sees the path "/".
            self.url = b"/"
        super().on_headers_complete()
        if (connect or self._sluis_last_request) and self.cycle is not None:
            # What follows a CONNECT would be tunnel bytes; after a shutdown, one request only.
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """A graceful stop of the worker (reload, rotation): uvicorn closes a connection that
        has not sent a request yet at once. One accepted just before may have its request on
        the way, and closing it with those bytes unread resets it under the client, a failed
        request. It gets :data:`SHUTDOWN_GRACE` seconds: a request that arrives is answered
        (``Connection: close``), then the connection closes."""
        cycle: Any = self.cycle  # None until a request's head arrived (uvicorn types it not)
        if cycle is None and not self.transport.is_closing():
            self._sluis_last_request = True
            self.loop.call_later(SHUTDOWN_GRACE, self._shutdown_after_grace)
            return
        super().shutdown()

    def _shutdown_after_grace(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()  # idle: closed; a request under way: closed after its answer

    def _refuse_unfinished_request(self) -> None:
        """The parser refused bytes of the request being received: its app must not go on."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return  # no request, or a complete one: the bad bytes begin the next request
        extensions = cast(dict[str, Any], cycle.scope["extensions"])  # on_message_begin's
        extensions[_REFUSED] = True
        cycle.disconnected = True  # receive() says http.disconnect; nothing more is sent
        cycle.message_event.set()
