"""The ``sluis`` command: one sub-command group per concern (``pki``, ``hsm``, ``serve``, ...).

Each group lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
Only the group a command line names is imported (its module pulls in cryptography, SQLAlchemy
or aiohttp); the others are listed from :mod:`appliance.cli.groups` (``sluis --help`` took
1.1 s importing all of them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from appliance.cli.groups import GROUPS, Formatter, add_group
from appliance.errors import SluisError

# Module names under appliance.cli that contribute sub-commands, in help order.
COMMAND_MODULES = tuple(GROUPS)


def _named_group(argv: Sequence[str]) -> str | None:
    """The group the command line names (its first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in GROUPS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the group it names is complete (the others are
    listed), without it every group is."""
    parser = argparse.ArgumentParser(
        prog="sluis",
        description="Sluis FSC gateway appliance: PKI, HSM keys, gateways, contracts, the "
        "transaction log and the operators' controller.",
        epilog="examples:\n  sluis demo\n  sluis hsm list --config /etc/sluis/sluis.toml\n"
        "  sluis COMMAND --help",
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = _named_group(argv) if argv is not None else None
    for name in COMMAND_MODULES:
        if argv is None or name == wanted:
            module = importlib.import_module(f"appliance.cli.{name}")
            module.register(subparsers)
        else:
            add_group(subparsers, name)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """A sub-command without a description of its own gets its one-line help as one."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            text = helps.get(name)
            if sub.description is None and text:
                sub.description = f"{text[0].upper()}{text[1:]}."
            _describe(sub)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    args.argv = words  # a command that must run itself again (tls check, probe)
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
