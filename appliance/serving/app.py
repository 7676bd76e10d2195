"""Pieces every Sluis Falcon (ASGI) app shares: the FSC error format and the peer identity.

``PeerIdentityMiddleware`` puts the verified peer (``appliance.tls.peer.PeerIdentity``) on
``req.context.peer``. A request without one cannot reach a resource: behind mutual TLS that
means the certificate lacks an FSC identity (no single serialNumber/OIN). A peer whose
certificate was revoked or expired after its connection was opened is refused too
(``appliance.tls.revocation``).
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi

from appliance.serving.fsc_errors import ErrorDomain, FscError, serialize_error
from appliance.tls import revocation
from appliance.tls.peer import PeerIdentity

log = logging.getLogger("sluis.tls.refused")

AsgiApp = falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]


class PeerIdentityMiddleware:
    def __init__(self, domain: ErrorDomain) -> None:
        self._domain = domain

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        extensions: dict[str, Any] = req.scope.get("extensions") or {}
        peer = extensions.get("sluis.peer")
        if not isinstance(peer, PeerIdentity):
            tls = extensions.get("tls") or {}
            reason = tls.get("client_cert_error") or "no verified client certificate"
            raise FscError(
                falcon.HTTP_400,
                "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED",
                self._domain,
                f"peer certificate not usable: {reason}",
            )
        # A kept-alive connection outlives revocations and expiry: check every request.
        refusal = revocation.peer_refusal(peer)
        if refusal is not None:
            log.warning("request refused: %s: %s", revocation.describe(peer), refusal)
            raise FscError(
                falcon.HTTP_400,
                "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED",
                self._domain,
                f"peer certificate not usable: {refusal}",
            )
        req.context.peer = peer


def create_base_app(domain: ErrorDomain, *, require_peer: bool = True) -> AsgiApp:
    middleware = [PeerIdentityMiddleware(domain)] if require_peer else []
    app = falcon.asgi.App(middleware=middleware)
    app.set_error_serializer(serialize_error)
    return app
