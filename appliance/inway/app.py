"""The inway as a gunicorn component: ``sluis serve inway`` (port 443 by default).

Every path is the proxy endpoint (Core "Inway" > "Interfaces"). Per request, in this order:
the peer's mutual-TLS identity (``PeerIdentityMiddleware``), the method (CONNECT cannot be
proxied), the access token bound to the connection's certificate, the ``Fsc-Transaction-Id``,
the request path, a place in the service's share (``appliance.forwarding.limits``; 503
``ERROR_CODE_SERVICE_BUSY`` when it is full), the transaction log record (written before
anything is forwarded; no record, no request; a transaction id already logged is the caller's
``INVALID_LOG_RECORD_ID``), then the request is streamed to the Service's backend and its
response streamed back, both under the gateways' forwarding policy
(``appliance.forwarding.headers``). The log write and the wait for the service end before the
outway's ``Sluis-Timeout`` would (``appliance.forwarding.deadline``), so that the outway hears
which of the two failed.

``create_app`` runs in each gunicorn worker after fork; the worker's connection pool is made
on the first request, in the worker's event loop, and closed at shutdown (ASGI lifespan).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi

from appliance.config import load_config
from appliance.forwarding.asgi import (
    ForwarderLifecycle,
    GatewayRequest,
    body_of,
    client_gone,
    pass_on,
    raw_headers,
    raw_path,
)
from appliance.forwarding.deadline import TIMEOUT_HEADER, answer_deadline
from appliance.forwarding.headers import AUTHORIZATION_HEADER, request_headers
from appliance.forwarding.limits import Shares
from appliance.forwarding.observe import (
    ObserveMiddleware,
    request_log_enabled,
    routed,
    upstream,
)
from appliance.forwarding.proxy import ClientDisconnected
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
from appliance.inway.proxy import InwayForwarder
from appliance.inway.settings import Backend, InwayRuntime, inway_settings, resolve_runtime
from appliance.inway.tokens import TokenVerifier
from appliance.metrics import mount_metrics
from appliance.metrics.collectors import gateway_collectors
from appliance.metrics.health import Readiness, gateway_checks
from appliance.metrics.registry import enabled as metrics_enabled
from appliance.serving.app import PeerIdentityMiddleware
from appliance.serving.fsc_errors import ErrorDomain, serialize_error
from appliance.serving.worker import CONFIG_ENV
from appliance.statelog import FailureState, FailureStates
from appliance.tls.peer import PeerIdentity
from appliance.txlog.errors import DuplicateTransactionError

log = logging.getLogger("sluis.inway")

# One per worker process. A locked or read-only log store refuses every request: logged as a
# state (appliance.statelog) with counts, not a line per request (200 a second at 100 req/s).
_LOG_WRITES = FailureState(
    log, "transaction log writes failing", "requests refused", level=logging.ERROR
)
# A peer whose requests are refused (an expired token, a wrong grant) refuses them all, at
# its own rate: a line when that begins, counts, and one when its requests pass again.
_PEER_REFUSED = FailureStates(log, "requests of peer {} refused", "requests refused")


class InwayApp(falcon.asgi.App[GatewayRequest, falcon.asgi.Response]):
    """The Falcon app, holding the worker's :class:`InwayForwarder` (closed at shutdown)."""

    forwarder: InwayForwarder


class InwayProxy:
    """The sink behind every path."""

    def __init__(
        self,
        verifier: TokenVerifier,
        services: Mapping[str, Backend],
        writer: LogWriter,
        forwarder: InwayForwarder,
    ) -> None:
        self._verifier = verifier
        self._services = services
        self._writer = writer
        self._forwarder = forwarder

    async def __call__(
        self, req: GatewayRequest, resp: falcon.asgi.Response | None, **_: Any
    ) -> None:
        peer: PeerIdentity = req.context.peer
        routed(req, peer=peer.peer_id)
        now = asyncio.get_running_loop().time()
        deadline = answer_deadline(req.get_header(TIMEOUT_HEADER), now)
        try:
            if req.method == "CONNECT":
                raise InwayError(
                    InwayErrorCode.METHOD_UNSUPPORTED, "the inway does not support CONNECT"
                )
            authorization = req.get_header(AUTHORIZATION_HEADER)
            token = self._verifier.verify(authorization, peer)
            transaction = transaction_id(req.get_header(TRANSACTION_ID_HEADER))
            req.context.transaction_id = transaction
            backend = self._services[token.service]
            routed(req, peer=peer.peer_id, service=token.service)
            path = backend_path(backend.path, raw_path(req.scope))
        except InwayError as exc:
            _PEER_REFUSED.failed(
                peer.peer_id,
                f"{req.method} {exc.fsc_code} {exc.message} "
                f"(x5t#S256 {peer.certificate_thumbprint})",
            )
            raise
        _PEER_REFUSED.recovered(peer.peer_id)

        slot = self._forwarder.admit(backend.name, name=backend.name)
        try:
            await self._log(log_record(token, transaction), deadline)
            assert authorization is not None  # verified above
            answer = await self._forwarder.send(
                backend.origin,
                name=backend.name,
                method=req.method,
                path=path,
                query_string=req.scope.get("query_string") or b"",
                # Of Fsc-*, only what was verified and logged goes on (docs/inway.md).
                headers=request_headers(
                    raw_headers(req),
                    fsc=(
                        (AUTHORIZATION_HEADER, authorization),
                        (TRANSACTION_ID_HEADER, transaction),
                    ),
                    allow=backend.pass_headers,
                ),
                body=body_of(req),
                slot=slot,
                deadline=deadline,
            )
        except BaseException:
            slot.release()
            raise
        assert resp is not None  # Falcon always passes one to a sink
        pass_on(upstream(req, answer), resp)

    async def _log(self, record: dict[str, Any], deadline: float | None) -> None:
        """Write ``record`` before the outway's deadline, or refuse the request."""
        transaction = record["transaction_id"]
        try:
            if deadline is None:
                await self._writer.write(record)
            else:
                async with asyncio.timeout_at(deadline):
                    await self._writer.write(record)
        except DuplicateTransactionError:
            # The Outway reused a transaction id: the id is not valid, the log is fine.
            log.warning("transaction %s: already logged, request refused", transaction)
            raise InwayError(
                InwayErrorCode.INVALID_LOG_RECORD_ID,
                "the Fsc-Transaction-Id header is not valid: this transaction id was already used",
            ) from None
        except Exception as exc:
            reason = str(exc)
            if isinstance(exc, TimeoutError) and not reason:  # asyncio.timeout_at's
                reason = "not confirmed before the outway's deadline (Sluis-Timeout)"
            _LOG_WRITES.failed(f"transaction {transaction}: log record not written: {reason}")
            raise InwayError(
                InwayErrorCode.TRANSACTION_LOG_WRITE_ERROR,
                "the transaction log record could not be written; the request was not forwarded",
            ) from None
        else:
            _LOG_WRITES.recovered()


def create_inway_app(
    runtime: InwayRuntime,
    certificates: SigningCertificates,
    writer: LogWriter,
    *,
    verifier: TokenVerifier | None = None,
) -> InwayApp:
    """The inway app for ``runtime``; tokens must be signed by one of ``certificates``."""
    forwarder = InwayForwarder(
        connect_timeout=runtime.connect_timeout,
        read_timeout=runtime.read_timeout,
        connections=runtime.backend_connections,
        write_timeout=runtime.write_timeout,
        shares=Shares(runtime.service_limit, runtime.service_limits),
    )
    verifier = verifier or TokenVerifier(
        certificates,
        address=runtime.address,
        group_id=runtime.group_id,
        services=runtime.services.keys(),
        clock_skew=runtime.clock_skew,
    )
    observe = ObserveMiddleware("inway", metrics=metrics_enabled(), lines=request_log_enabled())
    app = InwayApp(
        request_type=GatewayRequest,
        middleware=[
            observe,  # first: it sees every answer, the peer middleware's refusals too
            PeerIdentityMiddleware(ErrorDomain.INWAY),
            ForwarderLifecycle(forwarder),
        ],
    )
    app.set_error_serializer(serialize_error)
    app.add_error_handler(ClientDisconnected, client_gone)
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
    checks = gateway_checks(
        config, log_spec=settings.transaction_log, failing=lambda: _LOG_WRITES.failing
    )
    mount_metrics(app, config.tls, Readiness(checks), gateway_collectors(config, writer, app))
    return app
