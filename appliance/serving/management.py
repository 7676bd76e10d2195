"""The management listener: ``/metrics`` and ``/health/*`` on the management network, plain HTTP.

Why: on the Manager and the inway the endpoints sit on the Group's mutual-TLS listener, so a
Prometheus or a load balancer would need a client certificate of the Group (a key of the
organisation outside its HSM, or a second identity in the Group) just to read counts. With
``[management]`` in ``sluis.toml`` each of manager, inway and outway also listens on
``address:<component>_port`` and answers there only ``GET``/``HEAD`` of ``/metrics``,
``/health/live`` and ``/health/ready``; every other request gets a 404, so nothing of the
data path or the Manager API is reachable there.

Plain HTTP, not TLS, by choice: what is served is counts, certificate subjects (public
anyway) and readiness booleans, never a path, a query or a token; a TLS listener would need a
server key on disk (the organisation's key stays in the HSM, and one per box to rotate is more
that can expire unnoticed). The address is bound to the management network and the
monitoring role's nftables rule lets only that network's sources in (docs/monitoring.md).

The FSC listeners keep answering the endpoints as before: the controller's Health page reads
them there with the organisation's own certificate.

``SLUIS_MANAGEMENT_ADDRESS`` in the component's environment has the same effect with the
default ports (the monitoring role sets it in a systemd drop-in, so that the role which opens
the port in the firewall also chooses the address).

How: ``sluis serve`` (``appliance.serving.launch``) adds the management address to gunicorn's
binds, names it in ``SLUIS_MANAGEMENT_BIND`` and selects :class:`ManagementWorker`. The master
binds it like the others (a reload keeps it); each worker serves it beside the FSC listener,
with the component's own request-head limits, without TLS, with :func:`management_app`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import falcon
import falcon.asgi
from uvicorn.config import Config
from uvicorn.server import ServerState

from appliance.config import ManagementSettings, SluisConfig
from appliance.serving.worker import SluisWorker

MANAGEMENT_ENV = "SLUIS_MANAGEMENT_BIND"
ADDRESS_ENV = "SLUIS_MANAGEMENT_ADDRESS"
WORKER_CLASS = "appliance.serving.management.ManagementWorker"


def management_bind(config: SluisConfig, proc_name: str, env: Mapping[str, str]) -> str | None:
    """``host:port`` of the management listener of the component ``sluis serve`` runs as
    ``proc_name`` (``sluis-<component>``), or None: neither ``[management]`` nor
    ``SLUIS_MANAGEMENT_ADDRESS``, or a component without one. The controller has one; its
    worker (``appliance.controller.worker``) serves it.

    ``SLUIS_MANAGEMENT_ADDRESS`` in the environment (the monitoring role's systemd drop-in)
    sets the address, with the section's ports or the default ones."""
    settings = config.management
    address = env.get(ADDRESS_ENV, "").strip()
    if address:
        settings = replace(settings or ManagementSettings(), address=address)
    if settings is None or not proc_name.startswith("sluis-"):
        return None
    return settings.bind(proc_name.removeprefix("sluis-"))


class _Endpoints:
    """Lets the worker's ``/metrics`` and health endpoints answer; anything else is a 404."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # Imported here, in the worker: gunicorn's master imports this module (the worker
        # class) before it names PROMETHEUS_MULTIPROC_DIR, and prometheus-client imported
        # then keeps every count in the process, so no scrape would add the workers' up.
        from appliance.metrics import mounted

        endpoints = mounted()
        if endpoints is not None:
            await endpoints.process_request(req, resp)
        if not resp.complete:
            raise falcon.HTTPNotFound(
                description="the management listener serves /metrics and /health/* only"
            )


def management_app() -> Any:
    """The ASGI app of the management listener: the endpoints of the component's app
    (``appliance.metrics.mount_metrics``), the same readiness and collectors, nothing else."""
    return falcon.asgi.App(middleware=[_Endpoints()])


def _address(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def _is(sock: Any, address: tuple[str, int]) -> bool:
    name = sock.getsockname()
    return sock.family in (socket.AF_INET, socket.AF_INET6) and (name[0], name[1]) == address


class ManagementWorker(SluisWorker):
    """The Sluis worker that serves the management address (``SLUIS_MANAGEMENT_BIND``) apart:
    plain HTTP, :func:`management_app`; the other sockets as always."""

    async def _serve(self) -> None:
        bind = os.environ.get(MANAGEMENT_ENV)
        if not bind:
            return await super()._serve()
        address = _address(bind)
        every: list[Any] = getattr(self, "sockets")  # noqa: B009 (gunicorn sets it untyped)
        ours = [s for s in every if _is(s, address)]
        self.sockets = [s for s in every if not _is(s, address)]
        config = Config(
            app=management_app(),
            log_config=None,
            lifespan="off",
            http=self.config.http,  # the component's head limits and error format
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=self.config.timeout_keep_alive,
        )
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}
            )

        servers = [await loop.create_server(protocol, sock=sock) for sock in ours]
        try:
            await super()._serve()
        finally:
            for server in servers:
                server.close()
            for connection in list(state.connections):
                connection.shutdown()
