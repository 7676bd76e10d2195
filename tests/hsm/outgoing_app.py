"""The outway's outgoing side alone, for test_hsm_outgoing_outage: ``GET /through`` sends
``GET /`` to ``$SLUIS_TEST_UPSTREAM`` (https://name:port, reached on 127.0.0.1) through the
outway's own forwarder, with its client context (key in the token), and passes the answer on.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import falcon
import falcon.asgi

from appliance.config import load_config
from appliance.outway.proxy import OutwayForwarder
from appliance.serving.app import AsgiApp, create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.serving.worker import CONFIG_ENV
from appliance.tls.context import client_context


def create_app() -> AsgiApp:
    config = load_config(Path(os.environ[CONFIG_ENV]))
    origin = os.environ["SLUIS_TEST_UPSTREAM"]
    parts = urlsplit(origin)
    assert parts.hostname is not None
    assert parts.port is not None
    forwarder = OutwayForwarder(
        connect_timeout=5,
        read_timeout=5,
        connections=16,
        ssl_context=client_context(config.tls, config.hsm),
        resolve={f"{parts.hostname}:{parts.port}": ("127.0.0.1", parts.port)},
    )

    class Through:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            answer = await forwarder.send(
                origin,
                name=origin,
                method="GET",
                path="/",
                query_string=b"",
                headers=[("host", parts.netloc)],
                body=None,
            )
            data = answer.data or b""
            if answer.body is not None:
                async for chunk in answer.body:
                    data += chunk
            resp.status = falcon.code_to_http_status(answer.status)
            resp.data = data

    app = create_base_app(ErrorDomain.OUTWAY, require_peer=False)
    app.add_route("/through", Through())
    return app
