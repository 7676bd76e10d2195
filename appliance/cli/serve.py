"""``sluis serve``: run a component (a Falcon ASGI app factory) under gunicorn with mutual TLS."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from appliance.cli.groups import add_config, add_group
from appliance.config import ControllerSettings, InwaySettings, OutwaySettings, load_config
from appliance.serving.launch import ServeOptions, exec_gunicorn

COMPONENTS = {
    "whoami": "appliance.serving.whoami:create_app()",
    "manager": "appliance.manager.app:create_app()",
    "inway": "appliance.inway.app:create_app()",
    "outway": "appliance.outway.app:create_app()",
    "controller": "appliance.controller.app:create_app()",
}
DEFAULT_BIND = "127.0.0.1:8443"


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "serve")
    parser.add_argument("component", help=f"one of {', '.join(COMPONENTS)}, or module:factory()")
    add_config(parser)
    parser.add_argument(
        "--bind",
        help="host:port (default: the [inway]/[outway]/[controller] bind for those, otherwise "
        f"{DEFAULT_BIND})",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)"
    )
    parser.add_argument("--pidfile", type=Path, help="write the gunicorn master's PID here")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    app = COMPONENTS.get(args.component, args.component)
    options = ServeOptions(
        config=args.config,
        app=app,
        bind=args.bind or _default_bind(args.component, args.config),
        workers=args.workers,
        proc_name=f"sluis-{args.component}",
        pidfile=args.pidfile,
        # The outway serves the organisation's own applications on the internal network
        # (the hardening role's firewall keeps it there); the others are TLS, mutual except
        # for the controller (people log in there).
        plain_http=args.component == "outway",
    )
    if args.component == "controller":
        # HTTPS for people: server TLS without a client certificate (its own worker class).
        from appliance.controller.serving import exec_controller

        exec_controller(options)
    exec_gunicorn(options)
    return 0  # pragma: no cover


def _default_bind(component: str, config: Path) -> str:
    if component == "inway":
        return (load_config(config).inway or InwaySettings()).bind
    if component == "outway":
        return (load_config(config).outway or OutwaySettings()).bind
    if component == "controller":
        return (load_config(config).controller or ControllerSettings()).bind
    return DEFAULT_BIND
