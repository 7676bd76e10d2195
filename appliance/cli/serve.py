"""``sluis serve``: run a component (a Falcon ASGI app factory) under gunicorn with mutual TLS."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from appliance.serving.launch import ServeOptions, exec_gunicorn

COMPONENTS = {
    "whoami": "appliance.serving.whoami:create_app()",
    "manager": "appliance.manager.app:create_app()",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a component under gunicorn with mutual TLS and the key in the HSM",
        description="Run a Sluis component under gunicorn. The TLS context is built in each "
        "worker after fork, with the organisation key in the HSM.",
    )
    parser.add_argument("component", help=f"one of {', '.join(COMPONENTS)}, or module:factory()")
    parser.add_argument("--config", type=Path, required=True, help="appliance configuration (TOML)")
    parser.add_argument("--bind", default="127.0.0.1:8443", help="host:port (default %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)"
    )
    parser.add_argument("--pidfile", type=Path, help="write the gunicorn master's PID here")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    app = COMPONENTS.get(args.component, args.component)
    exec_gunicorn(
        ServeOptions(
            config=args.config,
            app=app,
            bind=args.bind,
            workers=args.workers,
            proc_name=f"sluis-{args.component}",
            pidfile=args.pidfile,
        )
    )
    return 0  # pragma: no cover
