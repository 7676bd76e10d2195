"""A test component: whoami plus ``/slow?seconds=N``, a request that stays in flight.

Served by ``sluis serve slowapp:create_app()`` (real gunicorn, Sluis' worker, mutual TLS with
the HSM key), it lets a test keep a request open across a graceful reload.
"""

from __future__ import annotations

import asyncio
import os

import falcon
import falcon.asgi

from appliance.serving.app import AsgiApp, create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.serving.whoami import WhoAmI


class Slow:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await asyncio.sleep(min(float(req.get_param("seconds") or "1"), 30.0))
        resp.media = {"worker_pid": os.getpid(), "peer_id": req.context.peer.peer_id}


def create_app() -> AsgiApp:
    app = create_base_app(ErrorDomain.INWAY)
    app.add_route("/whoami", WhoAmI())
    app.add_route("/slow", Slow())
    return app
