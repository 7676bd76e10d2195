"""The controller as a gunicorn component: ``sluis serve controller`` (HTTPS, internal network).

:func:`create_app` runs in each worker after fork and builds everything there: the
controller's store, the Manager service with its HSM signer (python-pkcs11 before the TLS
context loads the key through the OpenSSL provider), the transaction log reader, the
certificate report and the health probes. :func:`build_app` wires a :class:`Controller` into
the Falcon app; the tests build one with their own collaborators.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import falcon
import falcon.asgi

from appliance.config import ControllerSettings, SluisConfig, load_config
from appliance.controller import web
from appliance.controller.access import AccessControl, audit, is_api
from appliance.controller.api import add_api_routes, contract_error, describe
from appliance.controller.auth import SESSION_COOKIE, Authenticator, clear_cookie
from appliance.controller.certificates import CertificateStatus, Due, TokenListing
from appliance.controller.errors import ControllerError, ErrorCode
from appliance.controller.health import HealthProber, targets_from
from appliance.controller.integrity import IntegrityStatus, add_integrity_route
from appliance.controller.oidc import OidcClient
from appliance.controller.store import ControllerStore
from appliance.controller.transactions import TransactionReader
from appliance.controller.views import Contract, ManagerViews
from appliance.errors import ConfigurationError, SluisError
from appliance.manager.contracts.errors import ContractError
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.service import ManagerError, ManagerService
from appliance.serving.app import AsgiApp
from appliance.serving.fsc_errors import FscError, serialize_error
from appliance.serving.worker import CONFIG_ENV

log = logging.getLogger("sluis.controller")
T = TypeVar("T")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it Chromium sends "Origin: null" on form posts, which the CSRF
    # check refuses; same-origin keeps the referrer inside the controller.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATUS_CODES = {
    400: ErrorCode.REQUEST_INVALID,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


@dataclass
class Controller:
    """Everything the API and the pages work with."""

    config: SluisConfig
    settings: ControllerSettings
    auth: Authenticator
    manager: ManagerViews
    transactions: TransactionReader
    certificates: CertificateStatus
    health: HealthProber
    oidc: OidcClient | None = None  # login with the organisation's OpenID Connect provider
    integrity: IntegrityStatus | None = None  # the /integrity page's check, once mounted

    # -- cookies ------------------------------------------------------------------------------

    def set_session_cookie(self, resp: falcon.asgi.Response, session_id: str) -> None:
        # A browser-session cookie (no Max-Age): the server ends it at the idle or absolute
        # timeout anyway, and closing the browser drops it.
        resp.set_cookie(
            SESSION_COOKIE,
            session_id,
            secure=True,
            http_only=True,
            same_site="Strict",
            path="/",
        )

    def clear_session_cookie(self, resp: falcon.asgi.Response) -> None:
        clear_cookie(resp, SESSION_COOKIE)

    # -- reports ------------------------------------------------------------------------------

    async def certificate_report(self) -> dict[str, Any]:
        # The token listing talks to the HSM: not on the event loop.
        return await asyncio.to_thread(self.certificates.report, self.auth.clock())

    async def certificates_due(self) -> Due:
        # Files only (no HSM): cheap enough for the overview page.
        return await asyncio.to_thread(self.certificates.due, self.auth.clock())

    # -- changes, each audited with the operator's reason -------------------------------------

    def _change(
        self,
        req: falcon.asgi.Request,
        action: str,
        target: str,
        reason: str | None,
        change: Callable[[], T],
        summary: Callable[[T], str],
    ) -> T:
        try:
            result = change()
        except (ManagerError, ContractError, ValueError) as exc:
            audit(self, req, action, "failure", target=target, detail=describe(reason, str(exc)))
            raise contract_error(exc) from None
        except SluisError as exc:  # the HSM or a database
            audit(self, req, action, "failure", target=target, detail=describe(reason, str(exc)))
            log.error("%s of %s failed: %s", action, target, exc)
            raise ControllerError(
                falcon.HTTP_503, ErrorCode.UNAVAILABLE, f"{action} failed: {exc}"
            ) from None
        audit(self, req, action, "success", target=target, detail=describe(reason, summary(result)))
        return result

    def publish(
        self, req: falcon.asgi.Request, name: str, protocol: str, days: int, reason: str | None
    ) -> Contract:
        return self._change(
            req,
            "service.publish",
            name,
            reason,
            lambda: self.manager.publish(name, protocol, days),
            lambda c: f"contract {c.hash} ({c.state})",
        )

    def withdraw(self, req: falcon.asgi.Request, name: str, reason: str | None) -> list[Contract]:
        return self._change(
            req,
            "service.withdraw",
            name,
            reason,
            lambda: self.manager.withdraw(name),
            lambda cs: "revoked " + ", ".join(c.hash for c in cs),
        )

    def propose_connection(
        self,
        req: falcon.asgi.Request,
        peer_id: str,
        service_name: str,
        days: int,
        reason: str | None,
    ) -> Contract:
        return self._change(
            req,
            "contract.propose",
            f"{peer_id}/{service_name}",
            reason,
            lambda: self.manager.propose_connection(peer_id, service_name, days),
            lambda c: f"contract {c.hash} ({c.state})",
        )

    def sign(
        self,
        req: falcon.asgi.Request,
        content_hash: str,
        kind: SignatureType,
        reason: str | None,
    ) -> Contract:
        return self._change(
            req,
            f"contract.{kind.value}",
            content_hash,
            reason,
            lambda: self.manager.sign(content_hash, kind),
            lambda c: f"state now {c.state}",
        )

    def close(self) -> None:
        self.auth.store.close()
        self.transactions.close()
        if self.integrity is not None:
            self.integrity.close()


# -- the Falcon app -------------------------------------------------------------------------


class SecurityHeaders:
    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        if not req.path.startswith("/static/"):
            resp.set_header("Cache-Control", "no-store")


class Lifecycle:
    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        self._controller.close()


def _api_error(ex: falcon.HTTPError) -> FscError:
    if isinstance(ex, FscError):
        return ex
    status = ex.status_code
    code = STATUS_CODES.get(
        status, ErrorCode.INTERNAL if status >= 500 else ErrorCode.REQUEST_INVALID
    )
    message = ex.description or ex.title or "request refused"
    return ControllerError(ex.status, code, message, headers=dict(ex.headers or {}))


async def handle_http_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    ex: falcon.HTTPError,
    params: dict[str, Any],
) -> None:
    if is_api(req):
        error = _api_error(ex)
        resp.status = error.status
        for name, value in dict(error.headers or {}).items():
            resp.set_header(name, value)
        serialize_error(req, resp, error)
        return
    await web.render_error(req, resp, ex)


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.exception("unexpected error on %s %s", req.method, req.path)
    await handle_http_error(
        req,
        resp,
        ControllerError(falcon.HTTP_500, ErrorCode.INTERNAL, "internal error (logged)"),
        params,
    )


def build_app(controller: Controller) -> AsgiApp:
    app: AsgiApp = falcon.asgi.App(
        middleware=[
            web.Organisation(controller),
            SecurityHeaders(),
            AccessControl(controller),
            Lifecycle(controller),
        ]
    )
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    add_api_routes(app, controller)
    web.add_web_routes(app, controller)
    controller.integrity = add_integrity_route(app, controller)
    return app


# -- gunicorn ----------------------------------------------------------------------------


def build_controller(
    config: SluisConfig,
    *,
    service: ManagerService | None = None,
    token_listing: TokenListing | None = None,
    probe_tls: bool = True,
) -> Controller:
    """A controller for ``config``; ``service`` defaults to the Manager service of the
    configuration, with its signer in the HSM."""
    from appliance.hsm.keys import list_objects
    from appliance.manager.setup import build_service, parse_resolve
    from appliance.tls.context import client_context

    if config.manager is None:
        raise ConfigurationError(
            f"{config.source}: no [manager] section; the controller works on this appliance's "
            "Manager"
        )
    settings = config.controller or ControllerSettings()
    store = ControllerStore.open(settings.database)
    service = service or build_service(config)
    return Controller(
        config=config,
        settings=settings,
        auth=Authenticator(store, settings),
        manager=ManagerViews(service, config.inway.services if config.inway else ()),
        transactions=TransactionReader.open(config.txlog.database if config.txlog else None),
        certificates=CertificateStatus(config, token_listing or (lambda: list_objects(config.hsm))),
        health=HealthProber(
            targets_from(config),
            tls_context=(lambda: client_context(config.tls, config.hsm)) if probe_tls else None,
            resolve=parse_resolve(config.manager.resolve),
        ),
        oidc=OidcClient.from_settings(settings.oidc) if settings.oidc else None,
    )


def create_app() -> AsgiApp:
    config = load_config(Path(os.environ[CONFIG_ENV]))
    app = build_app(build_controller(config))
    serve_metrics(config)
    return app


def serve_metrics(config: SluisConfig) -> None:
    """``/metrics`` and ``/health/*`` on the management listener only (docs/monitoring.md)."""
    from appliance.metrics import serve_on_management_only
    from appliance.metrics.collectors import HostCollector
    from appliance.metrics.health import Readiness, component_checks

    serve_on_management_only(config.tls, Readiness(component_checks(config)), [HostCollector([])])
