"""How ``sluis serve controller`` runs: gunicorn with the controller's worker class.

The common launcher (``appliance.serving.launch``) builds the command and the environment
(``OPENSSL_CONF``, the HSM's); the controller only swaps in its worker, which listens with
server TLS and asks no client certificate (operators log in with a password).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from appliance.serving.launch import ServeOptions, gunicorn_command

WORKER_CLASS = "appliance.controller.worker.ControllerWorker"
APP = "appliance.controller.app:create_app()"


def controller_command(
    options: ServeOptions, base_env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    argv, env = gunicorn_command(options, base_env)
    # Command-line settings override the shared configuration file's worker_class.
    return [*argv[:-1], "--worker-class", WORKER_CLASS, argv[-1]], env


def exec_controller(options: ServeOptions) -> None:  # pragma: no cover - replaces the process
    argv, env = controller_command(options, os.environ)
    os.execve(argv[0], argv, env)  # noqa: S606 (our own argv, no shell)
