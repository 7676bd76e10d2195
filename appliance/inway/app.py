"""The inway as a gunicorn component: ``sluis serve inway`` (port 443 by default).

Every path is the proxy endpoint (Core "Inway" > "Interfaces"). Per request, in this order:
the peer's mutual-TLS identity (``PeerIdentityMiddleware``), the method (CONNECT cannot be
proxied), the access token bound to the connection's certificate, the ``Fsc-Transaction-Id``,
the request path, the transaction log record (written before anything is forwarded; no record,
no request; a transaction id already logged is the caller's ``INVALID_LOG_RECORD_ID``), then
the request is streamed to the Service's backend and its response streamed back unaltered
(hop-by-hop headers aside).

``create_app`` runs in each gunicorn worker after fork; the worker's connection pool is made
on the first request, in the worker's event loop, and closed at shutdown (ASGI lifespan).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
from falcon.asgi_spec import AsgiEvent

from appliance.config import load_config
from appliance.inway.certificates import SigningCertificates
from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.inway.logging import (
    TRANSACTION_ID_HEADER,
    LogWriter,
    load_log_writer,
    log_record,
    transaction_id,
)
from appliance.inway.paths import backend_path
from appliance.inway.proxy import (
    BackendResponse,
    BodyProgress,
    ClientDisconnected,
    Forwarder,
    request_body,
)
from appliance.inway.settings import Backend, InwayRuntime, inway_settings, resolve_runtime
from appliance.inway.tokens import TokenVerifier
from appliance.metrics import mount_metrics
from appliance.serving.app import PeerIdentityMiddleware
from appliance.serving.fsc_errors import ErrorDomain, serialize_error
from appliance.serving.worker import CONFIG_ENV
from appliance.tls.peer import PeerIdentity
from appliance.txlog.errors import DuplicateTransactionError

log = logging.getLogger("sluis.inway")

AUTHORIZATION_HEADER = "Fsc-Authorization"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_NO_CHUNKS: tuple[bytes, ...] = ()

AsgiReceive = Callable[[], Awaitable[AsgiEvent]]


class InwayRequest(falcon.asgi.Request):
    """A Falcon request that notes whether the body's last ASGI event has arrived.

    Falcon's body stream ends quietly when the client disconnects; the inway must know the
    difference, or a backend would get a cut-off body as if it were complete.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        receive: AsgiReceive,
        first_event: AsgiEvent | None = None,
        options: falcon.request.RequestOptions | None = None,
    ) -> None:
        # The raw header list is forwarded; make sure it can be read twice (ASGI allows any
        # iterable of pairs, and Falcon's test client hands over iterators).
        scope["headers"] = [(name, value) for name, value in scope.get("headers") or ()]
        self.body_progress = BodyProgress()
        progress = self.body_progress
        if first_event is None or not first_event.get("more_body", False):
            progress.complete = first_event is None or first_event.get("type") == "http.request"

        async def tracked_receive() -> AsgiEvent:
            event = await receive()
            if event.get("type") == "http.request" and not event.get("more_body", False):
                progress.complete = True
            return event

        super().__init__(scope, tracked_receive, first_event=first_event, options=options)


class InwayApp(falcon.asgi.App[InwayRequest, falcon.asgi.Response]):
    """The Falcon app, holding the worker's :class:`Forwarder` (closed at shutdown)."""

    forwarder: Forwarder


def raw_path(scope: Mapping[str, Any]) -> bytes:
    """The request path as sent (percent-encoding intact), for the path checks."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw
    return urllib.parse.quote(str(scope.get("path", "")), safe=_PATH_SAFE).encode("ascii")


def has_body(req: InwayRequest) -> bool:
    if req.get_header("Transfer-Encoding"):
        return True
    length = req.content_length
    return length is not None and length > 0


async def empty_body() -> AsyncIterator[bytes]:
    for chunk in _NO_CHUNKS:
        yield chunk


class InwayProxy:
    """The sink behind every path."""

    def __init__(
        self,
        verifier: TokenVerifier,
        services: Mapping[str, Backend],
        writer: LogWriter,
        forwarder: Forwarder,
    ) -> None:
        self._verifier = verifier
        self._services = services
        self._writer = writer
        self._forwarder = forwarder

    async def __call__(
        self, req: InwayRequest, resp: falcon.asgi.Response | None, **_: Any
    ) -> None:
        peer: PeerIdentity = req.context.peer
        try:
            if req.method == "CONNECT":
                raise InwayError(
                    InwayErrorCode.METHOD_UNSUPPORTED, "the inway does not support CONNECT"
                )
            token = self._verifier.verify(req.get_header(AUTHORIZATION_HEADER), peer)
            transaction = transaction_id(req.get_header(TRANSACTION_ID_HEADER))
            backend = self._services[token.service]
            path = backend_path(backend.path, raw_path(req.scope))
        except InwayError as exc:
            log.warning(
                "refused %s from peer %s (x5t#S256 %s): %s %s",
                req.method,
                peer.peer_id,
                peer.certificate_thumbprint,
                exc.fsc_code,
                exc.message,
            )
            raise

        record = log_record(token, transaction)
        try:
            await self._writer.write(record)
        except DuplicateTransactionError:
            # The Outway reused a transaction id: the id is not valid, the log is fine.
            log.warning("transaction %s: already logged, request refused", transaction)
            raise InwayError(
                InwayErrorCode.INVALID_LOG_RECORD_ID,
                "the Fsc-Transaction-Id header is not valid: this transaction id was already used",
            ) from None
        except Exception as exc:
            log.error(
                "transaction %s: log record not written, request refused: %s", transaction, exc
            )
            raise InwayError(
                InwayErrorCode.TRANSACTION_LOG_WRITE_ERROR,
                "the transaction log record could not be written; the request was not forwarded",
            ) from None

        body = None
        if has_body(req):
            body = request_body(
                req.stream.__aiter__(),
                content_length=req.content_length,
                progress=req.body_progress,
            )
        answer = await self._forwarder.forward(
            backend,
            method=req.method,
            path=path,
            query_string=req.scope.get("query_string") or b"",
            headers=req.scope.get("headers") or [],
            body=body,
        )
        assert resp is not None  # Falcon always passes one to a sink
        pass_on(answer, resp)


def pass_on(answer: BackendResponse, resp: falcon.asgi.Response) -> None:
    """The next hop's answer as the gateway's own: status, headers, body (whole or streamed)."""
    resp.status = answer.status
    for name, value in answer.headers:
        resp.append_header(name, value)
    if answer.data is not None:
        resp.data = answer.data  # one write; Falcon sets Content-Length to its length
    else:
        # HEAD: Falcon sends no body, and an empty stream keeps it from adding Content-Length.
        resp.stream = answer.body if answer.body is not None else empty_body()


async def _client_gone(
    req: InwayRequest, resp: falcon.asgi.Response, exc: BaseException, params: Any
) -> None:
    # Nobody reads this answer; the backend request was aborted, not completed.
    log.info("%s request aborted: %s", req.method, exc)
    resp.status = falcon.HTTP_400
    resp.data = b""


class ForwarderLifecycle:
    """Falcon lifespan middleware: close the worker's backend connections at shutdown."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        await self._forwarder.close()


def create_inway_app(
    runtime: InwayRuntime,
    certificates: SigningCertificates,
    writer: LogWriter,
    *,
    verifier: TokenVerifier | None = None,
) -> InwayApp:
    """The inway app for ``runtime``; tokens must be signed by one of ``certificates``."""
    forwarder = Forwarder(
        connect_timeout=runtime.connect_timeout,
        read_timeout=runtime.read_timeout,
        connections=runtime.backend_connections,
        write_timeout=runtime.write_timeout,
    )
    verifier = verifier or TokenVerifier(
        certificates,
        address=runtime.address,
        group_id=runtime.group_id,
        services=runtime.services.keys(),
        clock_skew=runtime.clock_skew,
    )
    app = InwayApp(
        request_type=InwayRequest,
        middleware=[PeerIdentityMiddleware(ErrorDomain.INWAY), ForwarderLifecycle(forwarder)],
    )
    app.set_error_serializer(serialize_error)
    app.add_error_handler(ClientDisconnected, _client_gone)
    # A backend response without Content-Type must not get Falcon's default one.
    app.resp_options.default_media_type = None  # type: ignore[assignment]
    # Every path, even one not starting with "/" (refused as an FSC error by the sink).
    app.add_sink(InwayProxy(verifier, runtime.services, writer, forwarder), prefix="")
    app.forwarder = forwarder
    return app


def create_app() -> InwayApp:
    """gunicorn's app factory (``appliance.inway.app:create_app()``), run in each worker."""
    config = load_config(Path(os.environ[CONFIG_ENV]))
    settings = inway_settings(config)
    runtime = resolve_runtime(config)
    certificates = SigningCertificates.from_file(config.tls.certificate_chain)
    writer = load_log_writer(settings.transaction_log, config)
    log.info(
        "inway %s (peer %s, Group %s): services %s",
        runtime.address,
        certificates.peer_id,
        runtime.group_id,
        ", ".join(f"{name} -> {b.url}" for name, b in runtime.services.items()) or "none",
    )
    app = create_inway_app(runtime, certificates, writer)
    mount_metrics(app, config.tls)
    return app
