"""Start a Sluis component under gunicorn with the environment it needs.

``OPENSSL_CONF`` has to be in the environment before the interpreter starts: OpenSSL reads its
configuration once, when Python first imports ``hashlib`` or ``ssl``. So ``sluis serve`` does
not run gunicorn in-process; it replaces itself with a fresh interpreter running gunicorn.

The interpreter runs ``appliance.serving.gunicorn_main`` (gunicorn's command line with Sluis'
master, whose HUP keeps the old workers serving until the new ones do), not ``-m gunicorn``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.config import load_config
from appliance.serving.gunicorn_main import MODULE as GUNICORN_MAIN
from appliance.serving.management import MANAGEMENT_ENV, management_bind
from appliance.serving.management import WORKER_CLASS as MANAGEMENT_WORKER
from appliance.serving.worker import CONFIG_ENV, LISTENER_ENV


@dataclass(frozen=True)
class ServeOptions:
    config: Path
    app: str
    bind: str
    workers: int
    proc_name: str = "sluis"
    pidfile: Path | None = None
    # Plain HTTP instead of mutual TLS: only for the outway on the internal network.
    plain_http: bool = False


def gunicorn_command(
    options: ServeOptions, base_env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``options.app`` under gunicorn."""
    sluis = load_config(options.config)
    env = dict(base_env)
    env.update(
        {
            "OPENSSL_CONF": str(sluis.tls.openssl_conf),
            CONFIG_ENV: str(options.config.resolve()),
            "SLUIS_BIND": options.bind,
            "SLUIS_WORKERS": str(options.workers),
            "SLUIS_PROC_NAME": options.proc_name,
            LISTENER_ENV: "plain" if options.plain_http else "mtls",
            **sluis.hsm.environment(),
        }
    )
    argv = [sys.executable, "-m", GUNICORN_MAIN, "-c", "python:appliance.serving.gunicorn_conf"]
    management = management_bind(sluis, options.proc_name, env)
    if management is not None:  # /metrics and /health/* there too, plain HTTP
        env["SLUIS_BIND"] = f"{options.bind},{management}"
        env[MANAGEMENT_ENV] = management
        argv += ["--worker-class", MANAGEMENT_WORKER]
    if options.pidfile is not None:
        argv += ["--pid", str(options.pidfile)]
    argv.append(options.app)
    return argv, env


def exec_gunicorn(options: ServeOptions) -> None:  # pragma: no cover - replaces the process
    argv, env = gunicorn_command(options, os.environ)
    os.execve(argv[0], argv, env)  # noqa: S606 (our own argv, no shell)
