"""``sluis demo``: set up and run the demo Group on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.cli.groups import add_group
from appliance.demo.group import run_demo
from appliance.demo.signals import run_until_stopped


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "demo")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("var/demo"),
        help="working directory, recreated on every run (default %(default)s)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the listeners running until Ctrl-C (SIGINT) or SIGTERM",
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f"[demo] {line}", flush=True)

    return run_until_stopped(
        lambda: run_demo(args.dir.resolve(), say, keep_running=args.keep_running), say
    )
