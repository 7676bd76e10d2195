"""The Manager as a gunicorn component: ``sluis serve manager`` (port 8443 by default).

``create_app`` runs in each worker after fork: the store, the HSM signer and the mutual-TLS
client for other Managers are created there, and the delivery loop runs in the worker's
event loop for as long as the worker lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.manager.api import add_routes
from appliance.manager.delivery import delivery_loop
from appliance.manager.peer_client import PeerClient
from appliance.manager.service import ManagerService
from appliance.manager.setup import build_service, manager_settings, parse_resolve
from appliance.metrics import mount_metrics
from appliance.metrics.collectors import ContractsCollector, HostCollector
from appliance.metrics.health import Readiness, component_checks
from appliance.serving.app import AsgiApp, create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.serving.worker import CONFIG_ENV
from appliance.tls.context import client_context
from appliance.txlog.api import ENABLED_EXTENSIONS, add_log_routes
from appliance.txlog.gateway import open_log
from appliance.txlog.store import TransactionLog


class DeliveryLifecycle:
    """Falcon lifespan middleware: start the outbox delivery loop, stop it cleanly."""

    def __init__(self, service: ManagerService, interval_seconds: float) -> None:
        self._service = service
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        self._task = asyncio.create_task(delivery_loop(self._service, self._interval))

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._service.client is not None:
            await self._service.client.close()


class CloseLog:
    """Flush and close the transaction log when the worker stops."""

    def __init__(self, log: TransactionLog) -> None:
        self._log = log

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        await self._log.aclose()


def create_app() -> AsgiApp:
    config = load_config(Path(os.environ[CONFIG_ENV]))
    settings = manager_settings(config)
    # appliance.tls.context creates the signer (python-pkcs11) before the TLS contexts load the
    # key through the OpenSSL provider, whichever is built first here.
    client = PeerClient(
        ssl_context=client_context(config.tls, config.hsm),
        own_address=settings.address,
        resolve=parse_resolve(settings.resolve) or None,
    )
    service = build_service(config, client=client)
    app = create_base_app(ErrorDomain.MANAGER)
    mount_metrics(
        app,
        config.tls,
        Readiness(component_checks(config)),
        [ContractsCollector(service.store.contract_counts_by_state), HostCollector([])],
    )
    app.add_middleware(DeliveryLifecycle(service, settings.delivery_interval_seconds))
    add_routes(app, service)
    if config.txlog is not None:
        # The logging extension: peers read the records that name them on /v1/logs.
        log = open_log(config)
        add_log_routes(app, log)
        app.add_middleware(CloseLog(log))
        service.enabled_extensions.update(ENABLED_EXTENSIONS)
    return app
