"""gunicorn settings for Sluis components (``gunicorn -c python:appliance.serving.gunicorn_conf``).

Values come from the environment that ``sluis serve`` (or the systemd unit) sets, so that one
file serves every component. One more is read by Sluis' master on each HUP, not here (gunicorn
ignores settings it does not know): ``SLUIS_RELOAD_READY_TIMEOUT``, how long the old workers
serve at most while the new ones start (seconds, default 60; ``appliance.serving.arbiter``).
"""

from __future__ import annotations

import os
from typing import Any

from appliance.metrics import registry as _metrics

bind = os.environ.get("SLUIS_BIND", "127.0.0.1:8443").split(",")
workers = int(os.environ.get("SLUIS_WORKERS", str(os.cpu_count() or 1)))
worker_class = "appliance.serving.worker.SluisWorker"
# Never preload: the app and its HSM-backed contexts must be created in each worker.
preload_app = False
# No keepalive here: the idle time of kept-alive connections is [http] idle_timeout_seconds
# in the appliance's configuration file (appliance.serving.worker), like the head limits.
graceful_timeout = 30
timeout = 30
proc_name = os.environ.get("SLUIS_PROC_NAME", "sluis")
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SLUIS_LOG_LEVEL", "info")
control_socket_disable = True  # systemd signals the master; no extra socket per instance


# prometheus-client's multiprocess mode (appliance.metrics.registry): one sample directory per
# master, ready before the first fork; an exited worker's live gauges dropped.
def on_starting(server: Any) -> None:
    _metrics.prepare_directory(proc_name)


def child_exit(server: Any, worker: Any) -> None:
    _metrics.worker_exited(worker.pid)


def on_exit(server: Any) -> None:
    _metrics.master_exiting()
