"""The ``sluis`` command: one sub-command group per concern (``pki``, ``hsm``, ``serve``, ...).

Each group lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from appliance.errors import SluisError

# Module names under appliance.cli that contribute sub-commands, in help order.
COMMAND_MODULES = ("pki", "hsm", "tls", "serve", "contract", "txlog", "controller", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluis",
        description="Sluis FSC gateway appliance: PKI, HSM keys, gateways.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"appliance.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SluisError as exc:
        print(f"sluis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
