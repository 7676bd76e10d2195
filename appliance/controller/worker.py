"""The gunicorn worker of the controller: the Sluis worker with a server-TLS-only context.

``sluis serve controller`` selects it (``appliance.controller.serving``). Like every Sluis
listener, the context is built in the worker after fork, with the key in the HSM. It serves
the management listener too, when there is one (``appliance.serving.management``): the
controller's ``/metrics`` and ``/health/*`` are there only.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path

from uvicorn.config import Config

from appliance.config import load_config
from appliance.controller.tls import controller_server_context
from appliance.serving.management import ManagementWorker
from appliance.serving.worker import CONFIG_ENV


class ControllerWorker(ManagementWorker):
    def _build_ssl_context(
        self, config: Config, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        sluis = load_config(Path(os.environ[CONFIG_ENV]))
        ctx = controller_server_context(sluis)
        self.log.info(
            "worker %s: controller TLS context ready (no client certificates)", os.getpid()
        )
        return ctx
