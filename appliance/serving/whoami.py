"""A diagnostic app: tells a peer who the listener thinks it is.

Operators use it to check a new certificate end to end (``curl --cert ... /whoami``), and the
tests use it to prove that the peer's OIN reaches the application through gunicorn.
"""

from __future__ import annotations

import os

import falcon
import falcon.asgi

from appliance.serving.app import AsgiApp, create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.tls.peer import PeerIdentity


class WhoAmI:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer: PeerIdentity = req.context.peer
        tls = (req.scope.get("extensions") or {}).get("tls") or {}
        resp.media = {
            "peer_id": peer.peer_id,
            "organisation": peer.organisation,
            "common_name": peer.common_name,
            "x5t#S256": peer.certificate_thumbprint,
            "public_key_thumbprint": peer.public_key_thumbprint,
            "certificate_not_after": peer.not_after.isoformat(),
            "tls_version": tls.get("tls_version"),
            "cipher": tls.get("sluis.cipher_name"),
            "worker_pid": os.getpid(),
        }


def create_app() -> AsgiApp:
    app = create_base_app(ErrorDomain.INWAY)
    app.add_route("/whoami", WhoAmI())
    return app
