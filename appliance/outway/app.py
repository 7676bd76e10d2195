"""The outway as a gunicorn component: ``sluis serve outway`` (internal network, port 8080).

Local applications call it as if the remote Service were local. Per request, in this order:

1. CONNECT is refused (405 ``ERROR_CODE_METHOD_UNSUPPORTED``, Core);
2. the ``Fsc-Transaction-Id``: the app's (a UUIDv7, else 400 ``INVALID_LOG_RECORD_ID``) or a new
   UUIDv7; every answer, errors included, carries it back to the app;
3. the grant: the ``Fsc-Grant-Hash`` header (the whole path is forwarded), or the NLX-style
   path ``/{peer-id}/{service}/{path}`` (``/{path}`` is forwarded); only valid connection
   grants in the local Manager store whose outway is this peer (:mod:`.grants`);
4. the path, checked as the inway checks it (400 ``ERROR_CODE_INVALID_PATH``);
5. the purpose-binding headers (:mod:`.logging`);
6. the access token, cached per grant (:mod:`.tokens`; 502 ``ERROR_CODE_TOKEN_UNAVAILABLE``);
7. the OUTGOING transaction log record, written before anything is sent (500
   ``TRANSACTION_LOG_WRITE_ERROR`` and nothing forwarded when it is not stored);
8. the request, streamed to the inway in the token's ``aud`` over mutual TLS with
   ``Fsc-Authorization`` and ``Sluis-Timeout`` (how long the outway waits:
   ``appliance.forwarding.deadline``); the answer streamed back unaltered (:mod:`.proxy`).
   Before its log record, the request takes a place in its inway and service's share
   (``appliance.forwarding.limits``; 503 ``ERROR_CODE_SERVICE_BUSY`` when it is full).

The listener is plain HTTP on the internal network (``create_base_app(require_peer=False)``:
apps have no FSC certificate). ``create_app`` runs in each gunicorn worker after fork.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
)
from appliance.forwarding.asgi import raw_path as request_raw_path
from appliance.forwarding.deadline import timeout_header
from appliance.forwarding.headers import AUTHORIZATION_HEADER, request_headers
from appliance.forwarding.limits import Shares, Slot
from appliance.forwarding.observe import (
    ObserveMiddleware,
    request_log_enabled,
    routed,
    upstream,
)
from appliance.forwarding.paths import PathRefused, checked_path
from appliance.forwarding.proxy import ClientDisconnected, ForwardedResponse
from appliance.forwarding.settings import SERVICE_NAME
from appliance.metrics import mount_metrics
from appliance.metrics.collectors import gateway_collectors
from appliance.metrics.datapath import TOKEN_FETCHES, TOKEN_LOOKUPS
from appliance.metrics.health import Readiness, gateway_checks, reachable_check
from appliance.metrics.registry import enabled as metrics_enabled
from appliance.outway.departure import departure
from appliance.outway.errors import OutwayError, OutwayErrorCode
from appliance.outway.grants import GrantSource, Route, by_grant_hash, by_service
from appliance.outway.logging import (
    PURPOSE_HEADERS,
    LogWriter,
    load_log_writer,
    load_pseudonymiser,
    purpose_binding,
)
from appliance.outway.proxy import GRANT_HASH_HEADER, OutwayForwarder
from appliance.outway.settings import PEER_ID, OutwayRuntime, outway_settings, resolve_runtime
from appliance.outway.tokens import AccessToken, TokenCache, TokenFetcher
from appliance.serving.fsc_errors import ErrorDomain, serialize_error
from appliance.serving.worker import CONFIG_ENV
from appliance.statelog import FailureState, FailureStates
from appliance.txlog.errors import (
    TRANSACTION_ID_HEADER,
    InvalidTransactionIdError,
    TransactionLogError,
    fsc_error_for,
    invalid_transaction_id,
    write_error,
)
from appliance.txlog.pseudonym import Pseudonymiser
from appliance.txlog.record import (
    Direction,
    LogRecord,
    PurposeBinding,
    new_transaction_id,
    parse_transaction_id,
)

log = logging.getLogger("sluis.outway")

# One per worker process. A locked or read-only log store refuses every request: logged as a
# state (appliance.statelog) with counts, not a line per request (200 a second at 100 req/s).
_LOG_WRITES = FailureState(
    log, "transaction log writes failing", "requests refused", level=logging.ERROR
)
# An application that asks for what it may not (no grant, a bad path) is refused at its own
# rate: per error code a line when that begins, counts, one when requests pass again.
_APP_REFUSED = FailureStates(log, "requests refused with {}", "requests refused")

# The inway refuses a token it finds invalid or expired with these: fetch a new one next time.
_TOKEN_REFUSED = frozenset(
    {
        "ERROR_CODE_ACCESS_TOKEN_INVALID",
        "ERROR_CODE_ACCESS_TOKEN_EXPIRED",
        "ERROR_CODE_WRONG_GROUP_ID_IN_TOKEN",
    }
)


class OutwayApp(falcon.asgi.App[GatewayRequest, falcon.asgi.Response]):
    """The Falcon app, holding the worker's forwarder and token cache."""

    forwarder: OutwayForwarder
    tokens: TokenCache


def _checked(raw_path: bytes) -> str:
    try:
        return checked_path(raw_path)
    except PathRefused as exc:
        raise OutwayError(
            OutwayErrorCode.INVALID_PATH, f"the request path is not forwarded: {exc}"
        ) from None


def nlx_route(raw_path: bytes) -> tuple[str, str, bytes]:
    """``/{peer-id}/{service}/{path}`` as (peer id, service, ``/{path}``)."""
    parts = raw_path.split(b"/", 3)
    peer = parts[1].decode("latin-1") if len(parts) > 1 else ""
    service = parts[2].decode("latin-1") if len(parts) > 2 else ""
    if not PEER_ID.fullmatch(peer) or not SERVICE_NAME.fullmatch(service):
        raise OutwayError(
            OutwayErrorCode.INVALID_PATH,
            f"no {GRANT_HASH_HEADER} header, and the path does not start with "
            "/{peer-id}/{service}",
        )
    rest = b"/" + parts[3] if len(parts) > 3 else b"/"
    return peer, service, rest


def request_transaction_id(value: str | None) -> str:
    if value is None or not value.strip():
        return new_transaction_id()
    try:
        return parse_transaction_id(value.strip())
    except InvalidTransactionIdError as exc:
        raise invalid_transaction_id(ErrorDomain.OUTWAY, str(exc)) from None


class TransactionIdMiddleware:
    """Every answer to the app carries the request's ``Fsc-Transaction-Id`` (errors too)."""

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        transaction = getattr(req.context, "transaction_id", None)
        if transaction:
            resp.set_header(TRANSACTION_ID_HEADER, transaction)


class OutwayProxy:
    """The sink behind every path."""

    def __init__(
        self,
        grants: GrantSource,
        tokens: TokenCache,
        writer: LogWriter,
        forwarder: OutwayForwarder,
        *,
        pseudonymiser: Pseudonymiser | None = None,
        forward_purpose_headers: bool = False,
        pass_headers: Mapping[str, frozenset[str]] | None = None,
        count_tokens: bool = False,
    ) -> None:
        self._grants = grants
        self._count_tokens = count_tokens
        self._tokens = tokens
        self._writer = writer
        self._forwarder = forwarder
        self._pseudonymiser = pseudonymiser
        # The purpose headers go on only once validated (purpose_binding), and when allowed.
        self._purpose: frozenset[str] = PURPOSE_HEADERS if forward_purpose_headers else frozenset()
        self._pass = pass_headers or {}

    def _allowed(self, route: Route) -> frozenset[str]:
        extra = self._pass.get(f"{route.service_peer_id}/{route.service_name}")
        return self._purpose if extra is None else self._purpose | extra

    def _route(self, req: GatewayRequest) -> tuple[Route, str]:
        raw_path = request_raw_path(req.scope)
        grant_hash = req.get_header(GRANT_HASH_HEADER)
        if grant_hash is not None and grant_hash.strip():
            return by_grant_hash(self._grants, grant_hash.strip()), _checked(raw_path)
        peer, service, rest = nlx_route(raw_path)
        return by_service(self._grants, peer, service), _checked(rest)

    async def __call__(
        self, req: GatewayRequest, resp: falcon.asgi.Response | None, **_: Any
    ) -> None:
        if req.method == "CONNECT":
            raise OutwayError(
                OutwayErrorCode.METHOD_UNSUPPORTED, "the outway does not support CONNECT"
            )
        transaction = request_transaction_id(req.get_header(TRANSACTION_ID_HEADER))
        req.context.transaction_id = transaction
        try:
            route, path = self._route(req)
            routed(req, peer=route.service_peer_id, service=route.service_name)
            purpose = purpose_binding(req.get_header, self._pseudonymiser)
            if self._count_tokens:
                TOKEN_LOOKUPS.inc()
            token = await self._tokens.token(route, departed=departure(req))
        except OutwayError as exc:
            if exc.log_level < logging.WARNING:  # counted elsewhere (e.g. a Manager's outage)
                log.log(
                    exc.log_level,
                    "transaction %s: refused %s: %s %s",
                    transaction,
                    req.method,
                    exc.fsc_code,
                    exc.message,
                )
            else:
                _APP_REFUSED.failed(
                    exc.fsc_code, f"transaction {transaction}: {req.method}: {exc.message}"
                )
            raise
        _APP_REFUSED.recovered_all()

        service = f"{route.service_peer_id}/{route.service_name}"
        slot = self._forwarder.admit(
            f"{token.inway} {service}", name=f"{service} at {token.inway}", config_key=service
        )
        try:
            answer = await self._forward(req, route, token, transaction, purpose, path, slot)
        except BaseException:
            slot.release()
            raise
        if answer.status == 401 or answer.status == 403:
            codes = {v for n, v in answer.headers if n.lower() == "fsc-error-code"}
            if codes & _TOKEN_REFUSED:
                self._tokens.forget(route.grant_hash)
        assert resp is not None  # Falcon always passes one to a sink
        pass_on(upstream(req, answer), resp)

    async def _forward(
        self,
        req: GatewayRequest,
        route: Route,
        token: AccessToken,
        transaction: str,
        purpose: PurposeBinding,
        path: str,
        slot: Slot,
    ) -> ForwardedResponse:
        """Log the request, then send it to the inway."""
        try:
            record = LogRecord.from_access_token(
                token.claims,
                direction=Direction.OUTGOING,
                transaction_id=transaction,
                purpose=purpose,
            )
            await self._writer.write(record)
        except TransactionLogError as exc:
            _LOG_WRITES.failed(f"transaction {transaction}: log record not written: {exc}")
            raise fsc_error_for(exc, ErrorDomain.OUTWAY) from None
        except Exception as exc:
            _LOG_WRITES.failed(f"transaction {transaction}: log record not written: {exc}")
            raise write_error(ErrorDomain.OUTWAY) from None
        else:
            _LOG_WRITES.recovered()

        return await self._forwarder.send(
            token.inway,
            name=token.inway,
            method=req.method,
            path=path,
            query_string=req.scope.get("query_string") or b"",
            headers=request_headers(
                raw_headers(req),
                fsc=(
                    (AUTHORIZATION_HEADER, token.raw),
                    (TRANSACTION_ID_HEADER, transaction),
                    # So that the inway's timeouts fire before ours and it says what failed.
                    timeout_header(self._forwarder.read_timeout),
                ),
                allow=self._allowed(route),
            ),
            body=body_of(req),
            slot=slot,
        )


class CountedFetcher:
    """The token fetcher, counted (``sluis_outway_token_fetches_total``)."""

    def __init__(self, fetcher: TokenFetcher) -> None:
        self._fetcher = fetcher

    async def fetch(self, route: Route) -> str:
        try:
            raw = await self._fetcher.fetch(route)
        except BaseException:
            TOKEN_FETCHES.labels("failed").inc()
            raise
        TOKEN_FETCHES.labels("ok").inc()
        return raw


class Closers:
    """Falcon lifespan middleware: close the worker's other clients (Manager calls, the log)."""

    def __init__(self, *closers: Callable[[], Awaitable[None]]) -> None:
        self._closers = closers

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception as exc:  # shutting down: log and go on with the rest
                log.warning("closing at shutdown failed: %s", exc)


def create_outway_app(
    runtime: OutwayRuntime,
    grants: GrantSource,
    tokens: TokenCache,
    writer: LogWriter,
    forwarder: OutwayForwarder,
    *,
    pseudonymiser: Pseudonymiser | None = None,
    closers: tuple[Callable[[], Awaitable[None]], ...] = (),
) -> OutwayApp:
    observe = metrics_enabled()
    app = OutwayApp(
        request_type=GatewayRequest,
        middleware=[
            ObserveMiddleware("outway", metrics=observe, lines=request_log_enabled()),
            TransactionIdMiddleware(),
            ForwarderLifecycle(forwarder),
            Closers(*closers),
        ],
    )
    app.set_error_serializer(serialize_error)
    app.add_error_handler(ClientDisconnected, client_gone)
    app.resp_options.default_media_type = None  # type: ignore[assignment]
    app.add_sink(
        OutwayProxy(
            grants,
            tokens,
            writer,
            forwarder,
            pseudonymiser=pseudonymiser,
            forward_purpose_headers=runtime.forward_purpose_headers,
            pass_headers=runtime.pass_headers,
            count_tokens=observe,
        ),
        prefix="",
    )
    app.forwarder = forwarder
    app.tokens = tokens
    return app


def create_app() -> OutwayApp:
    """gunicorn's app factory (``appliance.outway.app:create_app()``), run in each worker."""
    from appliance.manager.peer_client import PeerClient
    from appliance.manager.setup import build_service, manager_settings, parse_resolve
    from appliance.outway.grants import CachedGrants, StoreGrants
    from appliance.outway.tokens import ManagerTokenFetcher
    from appliance.tls.context import client_context

    config = load_config(Path(os.environ[CONFIG_ENV]))
    settings = outway_settings(config)
    runtime = resolve_runtime(config)
    manager = manager_settings(config)
    ssl_context = client_context(config.tls, config.hsm)
    resolve = parse_resolve(manager.resolve)
    client = PeerClient(
        ssl_context,
        own_address=manager.address,
        timeout_seconds=runtime.token_timeout,
        resolve=resolve or None,
    )
    service = build_service(config, client=client)
    fetcher: TokenFetcher = ManagerTokenFetcher(client, service, service.peer_id)
    tokens = TokenCache(
        CountedFetcher(fetcher) if metrics_enabled() else fetcher,
        group_id=runtime.group_id,
        refresh=runtime.token_refresh,
        timeout=runtime.token_timeout,
    )
    forwarder = OutwayForwarder(
        connect_timeout=runtime.connect_timeout,
        read_timeout=runtime.read_timeout,
        write_timeout=runtime.write_timeout,
        connections=runtime.inway_connections,
        ssl_context=ssl_context,
        resolve=resolve or None,
        shares=Shares(runtime.service_limit, runtime.service_limits),
    )
    writer = load_log_writer(settings.transaction_log, config)
    closers: list[Callable[[], Awaitable[None]]] = [client.close]
    aclose = getattr(writer, "aclose", None)
    if aclose is not None:
        closers.append(aclose)

    async def close_store() -> None:
        service.store.close()

    closers.append(close_store)
    log.info("outway of peer %s (Group %s)", service.peer_id, runtime.group_id)
    app = create_outway_app(
        runtime,
        CachedGrants(StoreGrants(service)),
        tokens,
        writer,
        forwarder,
        pseudonymiser=load_pseudonymiser(config),
        closers=tuple(closers),
    )
    checks = gateway_checks(
        config, log_spec=settings.transaction_log, failing=lambda: _LOG_WRITES.failing
    )
    own = urlsplit(manager.address)
    host, port = resolve.get(
        f"{own.hostname}:{own.port or 443}", (own.hostname or "", own.port or 443)
    )
    checks.append(reachable_check("manager", host, port))
    mount_metrics(app, config.tls, Readiness(checks), gateway_collectors(config, writer, app))
    return app
