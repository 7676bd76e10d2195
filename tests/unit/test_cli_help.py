"""Every ``sluis`` command's --help: a description, plain text (no reST markup), help for
every option, one metavar for --config; ``sluis --help`` imports no command group."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from appliance.cli.main import build_parser

MARKUP = re.compile(r"``|:mod:|:func:|:class:|:meth:|:attr:|:data:")


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("sluis",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))


def test_every_group_and_command_is_walked() -> None:
    assert {"sluis pki", "sluis hsm list", "sluis controller create-user"} <= set(COMMANDS)
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help(name: str) -> None:
    parser = COMMANDS[name]
    text = parser.format_help()
    assert parser.description, f"{name}: no description"
    assert not MARKUP.search(text), f"{name}: reST markup in --help: {MARKUP.search(text)}"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"{name}: {label} has no help"
        if "--config" in action.option_strings:
            assert action.metavar == "FILE", f"{name}: --config metavar {action.metavar!r}"


def test_every_group_has_examples() -> None:
    for name, parser in COMMANDS.items():
        if name.count(" ") == 1:
            assert "examples:" in parser.format_help(), name


def test_sluis_help_imports_no_command_group() -> None:
    code = (
        "import sys\n"
        "from appliance.cli import main\n"
        "try:\n"
        "    main.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('cryptography', 'sqlalchemy', 'aiohttp', 'pkcs11', "
        "'appliance.cli.pki', 'appliance.cli.hsm') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "COMMAND" in result.stdout
    assert result.stderr.strip() == "[]"
