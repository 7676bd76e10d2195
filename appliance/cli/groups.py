"""The ``sluis`` command groups: name, one-line help, description and examples.

Kept apart from the groups' modules, which import what their commands need (cryptography,
SQLAlchemy, aiohttp, python-pkcs11): ``sluis --help`` reads this table and imports none of
them, and ``sluis pki ...`` imports the ``pki`` module only.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Group:
    help: str
    description: str
    examples: tuple[str, ...]


GROUPS = {
    "pki": Group(
        "demo CA and CRL handling",
        "The demo PKI shaped like PKIoverheid Private Services (root, intermediate, "
        "organisation certificates issued from CSRs), CRL fetching, and the organisation "
        "certificate's installation, rollback and expiry report.",
        (
            "sluis pki init --ca-dir var/ca --crl-base-url http://ca.example:8088/crl",
            "sluis pki issue --ca-dir var/ca --csr org.csr --out org-chain.pem",
            "sluis pki expiry --config /etc/sluis/sluis.toml",
        ),
    ),
    "hsm": Group(
        "organisation key in the HSM: token, key, CSR, certificate",
        "Every sub-command finds the token through --config FILE (its [hsm] section) or "
        "--module, --token, --key-label, --pin-file, --login-lock. Precedence: an option "
        "given on the command line, then the configuration file, then the environment "
        "(SLUIS_HSM_MODULE, SLUIS_HSM_TOKEN, SLUIS_HSM_KEY_LABEL, SLUIS_HSM_PIN_FILE), then "
        "the built-in defaults. The user PIN comes from SLUIS_HSM_PIN or the PIN file, the SO "
        "PIN (init-token only) from SLUIS_HSM_SO_PIN or --so-pin-file: never from the command "
        "line.\n\n"
        "After a re-key, retire-key --retire-label OLD retires the old key (signing disabled, "
        "objects relabelled OLD.retired-<UTC time>) and destroy-retired --grace-days N later "
        "destroys keys retired at least N days ago. The key label the settings name is the "
        "live key: neither command touches it, nor any key holding its public key.",
        (
            "sluis hsm generate-key --config /etc/sluis/sluis.toml --algorithm ec-p256",
            "sluis hsm csr --config /etc/sluis/sluis.toml --organisation 'Gemeente Demo' "
            "--oin 00000001001234567001 --fqdn gw.gemeente.example --out org.csr",
            "sluis hsm list --config /etc/sluis/sluis.toml --json",
        ),
    ),
    "tls": Group(
        "OpenSSL configuration and TLS self-check",
        "Writes the OpenSSL configuration that loads pkcs11-provider with the NCSC policy, "
        "builds the server and client contexts with the key in the HSM, and probes a "
        "listener with this appliance's identity.",
        (
            "sluis tls openssl-config --config /etc/sluis/sluis.toml",
            "sluis tls check --config /etc/sluis/sluis.toml",
            "sluis tls probe --config /etc/sluis/sluis.toml --connect 127.0.0.1:8443 "
            "--server-name inway.gemeente.example",
        ),
    ),
    "serve": Group(
        "run a component under gunicorn with mutual TLS and the key in the HSM",
        "Run a Sluis component under gunicorn. The TLS context is built in each worker "
        "after fork, with the organisation key in the HSM.",
        (
            "sluis serve manager --config /etc/sluis/sluis.toml",
            "sluis serve inway --config /etc/sluis/sluis.toml --workers 2",
        ),
    ),
    "contract": Group(
        "propose and sign FSC contracts",
        "FSC contracts through this appliance's Manager store: publish a service, ask "
        "another peer for a connection, accept, reject or revoke (each signature made in "
        "the HSM and queued for the other peers), list and show contracts, fetch an access "
        "token, and replace the contracts of a re-keyed outway.",
        (
            "sluis contract list --config /etc/sluis/sluis.toml",
            "sluis contract accept --config /etc/sluis/sluis.toml '$1$1$...'",
            "sluis contract propose-connection --config /etc/sluis/sluis.toml "
            "--service-peer 00000001001234567002 --service basisregistratie",
        ),
    ),
    "txlog": Group(
        "the transaction log: export, signed checkpoints, verification, retention",
        "The transaction log outside the Manager's API. export-jsonl appends the records "
        "and checkpoints not exported yet to a JSON-lines file, for a log shipper (the logship "
        "role's rsyslog) to send to the collector; run it from a timer, or with --interval as "
        "a service (the sluis role's).\n\n"
        "Evidence (docs/txlog.md): checkpoint signs each stream's head in the HSM (with "
        "--interval as a service, a last one at shutdown); status checks the last checkpoints "
        "and the records after them, for monitoring; verify checks every record, link and "
        "checkpoint of a store or an export offline; export-bundle writes what an auditor "
        "takes away; purge deletes old records behind a signed cut. The database comes from "
        "--database or the [txlog] section of --config.",
        (
            "sluis txlog export-jsonl --config /etc/sluis/sluis.toml "
            "--output /var/log/sluis/txlog.jsonl --state /var/lib/sluis/txlog.cursor",
            "sluis txlog checkpoint --config /etc/sluis/sluis.toml --interval 300",
            "sluis txlog verify --config /etc/sluis/sluis.toml",
        ),
    ),
    "controller": Group(
        "accounts and API tokens of the operators' controller",
        "Accounts and API tokens of the controller (the operators' web UI and API), "
        "written straight into its store: for the first administrator, and when nobody can "
        "log in.",
        (
            "sluis controller create-user --config /etc/sluis/sluis.toml --username admin "
            "--role administrator",
            "sluis controller list-users --config /etc/sluis/sluis.toml --json",
        ),
    ),
    "demo": Group(
        "set up and run a demo Group (CA, organisations with SoftHSM keys, listeners)",
        "Provision a demo Group on this machine (a demo CA, a directory and two "
        "organisations whose keys are generated in their own SoftHSM2 tokens), run the "
        "contract flow and a request app -> outway -> inway -> API, and print where "
        "everything is.",
        ("sluis demo", "sluis demo --dir var/demo --keep-running"),
    ),
}

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """A docstring as help text: reST roles and ``literals`` as plain words."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def add_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """The parser of command group ``name``, with its help, description and examples."""
    group = GROUPS[name]
    examples = "\n".join(f"  {line}" for line in group.examples)
    return subparsers.add_parser(
        name,
        help=group.help,
        description=group.description,
        epilog=f"examples:\n{examples}",
        formatter_class=Formatter,
        allow_abbrev=False,
        **kwargs,
    )


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    *,
    description: str | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
    config: bool = False,
    json_output: bool = False,
) -> argparse.ArgumentParser:
    """Sub-command ``name`` of a group. No abbreviated options (a script's ``--user`` must not
    start meaning ``--username-file`` after an upgrade); ``config`` adds ``--config FILE``,
    ``json_output`` adds ``--json``."""
    parser = commands.add_parser(
        name,
        help=help_text,
        description=description,
        parents=list(parents),
        allow_abbrev=False,
    )
    if config:
        add_config(parser)
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def add_config(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--config FILE`` option every command that reads the appliance's settings has."""
    parser.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="appliance configuration (TOML)"
    )


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Paragraphs wrapped to the terminal, the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return super()._fill_text(text, width, indent)
        return "\n\n".join(
            argparse.HelpFormatter._fill_text(self, paragraph, width, indent)
            for paragraph in text.split("\n\n")
        )
