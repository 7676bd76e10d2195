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

A request line without an HTTP version (HTTP/0.9 to llhttp), or of a version other than 1.0
and 1.1, gets the same 400: no app ever runs for it.

Hostile heads. llhttp has no size limit and uvicorn no time limit for a request head, so a head
of megabytes was buffered (and forwarded by the outway) and a head sent a byte a second held its
connection for as long as the client liked. Every listener now enforces
(:class:`HeadLimits`, ``[http]`` in the configuration file): at most ``max_head_bytes`` for the
request line and header fields together, ``max_line_bytes`` for one header field (431) or the
request target (414), ``max_headers`` fields (431); the head complete within
``head_timeout_seconds`` of the connection (for its first request) or of its first byte (for a
kept-alive connection's next one), else 408; a kept-alive connection silent for
``idle_timeout_seconds`` is closed (so is a new one that sends nothing within the head timeout:
there is nothing to answer). Each check costs a few integer operations per callback, and a
slow client costs a timer, not a task, so thousands of them do not slow the others.

Errors written here (400, 408, 414, 431) are in the component's own format
(``appliance.serving.wire``), with ``Connection: close``. A refusal while the app still answers
an earlier request of the connection (pipelining) writes nothing in between: the connection
closes after that answer.

CONNECT (``CONNECT host:port``) reaches the app, which refuses it (the gateways proxy
requests, never tunnels); the connection is closed after the answer.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.config import HttpSettings
from appliance.serving.wire import DEFAULT_WIRE_ERRORS, WireErrors
from appliance.tls.peer import PeerIdentity, PeerIdentityError

# ssl.TLSVersion numbers as the ASGI TLS extension wants them (the wire version).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# Put into the scope of a request refused on the wire: its app is never started.
_REFUSED = "sluis.refused"


class _Uncounted:
    def inc(self) -> None:
        pass

    def dec(self) -> None:
        pass


@functools.cache
def _connections() -> Any:
    """``sluis_open_connections``, imported in the worker at its first connection: the master
    imports this module before it names the metrics directory (appliance.metrics.registry),
    and prometheus-client picks its mode once, when first imported."""
    from appliance.metrics.registry import enabled

    if not enabled():
        return _Uncounted()
    from appliance.metrics.datapath import CONNECTIONS

    return CONNECTIONS


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
    """A request head that RFC 9112 says a server must not process, or one over a limit
    (raised in a parser callback; httptools turns it into an ``HttpParserCallbackError``, the
    protocol into the refusal's status)."""


@dataclass(frozen=True)
class HeadLimits:
    """What a listener accepts of a request head (``[http]``, see the module docstring)."""

    max_head_bytes: int = HttpSettings.max_head_bytes
    max_line_bytes: int = HttpSettings.max_line_bytes
    max_headers: int = HttpSettings.max_headers
    head_timeout: float = HttpSettings.head_timeout_seconds
    idle_timeout: float = HttpSettings.idle_timeout_seconds

    @classmethod
    def from_settings(cls, http: HttpSettings) -> HeadLimits:
        return cls(
            http.max_head_bytes,
            http.max_line_bytes,
            http.max_headers,
            http.head_timeout_seconds,
            http.idle_timeout_seconds,
        )


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
    if http_version not in ("1.0", "1.1"):
        # llhttp takes a request line without a version for HTTP/0.9, which has no headers.
        return f"HTTP version {http_version} (a request line needs HTTP/1.0 or HTTP/1.1)"
    if http_version == "1.1" and hosts != 1:
        return "an HTTP/1.1 request without exactly one Host header"
    return None


class _GuardedParser:
    """httptools' parser, telling the protocol about a framing error before uvicorn answers."""

    def __init__(self, parser: Any, on_error: Callable[[Exception], None]) -> None:
        self._parser = parser
        self._on_error = on_error

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._on_error(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


# Seconds a refused client's further bytes are read and dropped before the connection closes.
LINGER = 2.0
# Seconds a connection that has not sent a request yet gets when its worker stops (below).
SHUTDOWN_GRACE = 1.0


class PeerCertificateProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits()
    wire_errors: ClassVar[WireErrors] = DEFAULT_WIRE_ERRORS
    _sluis_extensions: dict[str, Any]

    @classmethod
    def configured(cls, limits: HeadLimits, wire_errors: WireErrors) -> type[HttpToolsProtocol]:
        """This protocol with a listener's limits and its component's error format."""
        return type(cls.__name__, (cls,), {"limits": limits, "wire_errors": wire_errors})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sluis_last_request = False
        # Duck-typed: uvicorn calls feed_data and a few getters, which the wrapper passes on.
        self.parser = cast(Any, _GuardedParser(self.parser, self._on_parser_error))
        app = self.app

        async def unless_refused(scope: Any, receive: Any, send: Any) -> None:
            # The app's task starts after the bytes that made it were parsed: one whose
            # request broke the framing in those same bytes is never run.
            if not scope.get("extensions", {}).get(_REFUSED):
                await app(scope, receive, send)

        self.app = unless_refused
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None  # set in a callback that then raises
        self._parser_error = "malformed request"
        self._answered = False  # an error was written; the connection closes soon
        self._start_head(begun=False)

    def _start_head(self, *, begun: bool) -> None:
        """Expect a request head (the connection's first, or the next after a request)."""
        self._head_open = True  # until the head is complete
        self._head_begun = begun  # a byte of it arrived
        self._head_bytes = 0  # bytes received while the head is open
        self._head_size = 0  # request target and header fields as parsed
        self._head_fields = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._sluis_extensions = tls_extension(transport.get_extra_info("ssl_object"))
        _connections().inc()
        super().connection_made(transport)
        # The first head is due within the timeout from here (after the TLS handshake).
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        _connections().dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._answered:
            return  # refused: what the client still sends is read and dropped until the close
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._refuse(*(self._refusal or (400, self._parser_error)))
            return
        except httptools.HttpParserUpgrade:  # as uvicorn's data_received
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        # The callbacks check a complete head; this, one still arriving (httptools buffers a
        # header field until it is complete).
        if self._head_open and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431, f"request head larger than {self.limits.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A fresh dict per request so an app cannot leak state into the next request.
        self.scope["extensions"] = dict(self._sluis_extensions)
        self._head_begun = True
        if self.cycle is None or self.cycle.response_complete:
            # A kept-alive connection's next head: due within the timeout of its first byte.
            # (A pipelined head's clock starts when the answer before it is complete.)
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_line_bytes:
            self._over(414, f"request target longer than {self.limits.max_line_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailer fields of a chunked body are counted alike (from zero, after the head).
        limits = self.limits
        self._head_fields += 1
        if self._head_fields > limits.max_headers:
            self._over(431, f"more than {limits.max_headers} header fields")
        line = len(name) + len(value) + 2  # "name: value"
        if line > limits.max_line_bytes:
            self._over(431, f"a header field longer than {limits.max_line_bytes} bytes")
        self._head_size += line + 2  # CRLF
        if self._head_size > limits.max_head_bytes:
            self._over(431, f"request head larger than {limits.max_head_bytes} bytes")
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_head(begun=False)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_open and self._head_begun and not self.transport.is_closing():
            # A pipelined head began while this answer was sent: its clock starts now.
            self._unset_keepalive_if_required()
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._head_open = False
        self._head_size = self._head_fields = 0
        problem = framing_problem(self.headers, self.parser.get_http_version())
        if problem is not None:
            self._over(400, problem)  # before a request cycle or app task exists
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

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._answered or self.transport.is_closing() or not self._head_open:
            return
        if self._head_begun:
            self._refuse(408, f"request head not complete within {self.limits.head_timeout:g} s")
        else:
            self.transport.close()  # a connection that never sent a request: nothing to answer

    def _over(self, status: int, problem: str) -> None:
        """Refuse the request being parsed (in a parser callback: raises)."""
        self._refusal = (status, problem)
        raise MalformedRequest(problem)

    def _on_parser_error(self, exc: Exception) -> None:
        self._parser_error = str(exc)
        self._refuse_unfinished_request()

    def _refuse(self, status: int, problem: str) -> None:
        """Answer a refused request in the component's format, and close the connection."""
        if self._answered or self.transport.is_closing():
            return
        self._disarm_head_timer()
        self.logger.warning("request refused (%d): %s", status, problem)
        cycle: Any = self.cycle  # None before the first head (uvicorn types it not)
        if cycle is not None and not cycle.response_complete:
            if not cycle.disconnected:
                # The app still answers the request before: close after that answer.
                cycle.keep_alive = False
                return
            if cycle.response_started:
                self.transport.close()  # no error in the middle of a response
                return
        self.transport.write(self.wire_errors.response(status, problem))
        # Closing with unread bytes would reset the connection, and a client still sending
        # (a large head) could lose the answer: read and drop for a moment, close on EOF.
        self._answered = True
        self.loop.call_later(LINGER, self._close_if_open)

    def _close_if_open(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_unfinished_request(self) -> None:
        """The parser refused bytes of the request being received: its app must not go on."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return  # no request, or a complete one: the bad bytes begin the next request
        extensions = cast(dict[str, Any], cycle.scope["extensions"])  # on_message_begin's
        extensions[_REFUSED] = True
        cycle.disconnected = True  # receive() says http.disconnect; nothing more is sent
        cycle.message_event.set()
