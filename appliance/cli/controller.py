"""``sluis controller``: accounts and API tokens of the operators' controller.

Run on the appliance as root (it opens the controller's database from ``[controller]
database``). Passwords come from standard input (``--password-stdin``) or are generated and
printed once; API tokens are printed once. Nothing secret is stored: only hashes. Every command
that changes something writes an audit entry (actor ``cli:<login>``, from ``local``).

``sluis controller audit verify|checkpoint|export-bundle|export-jsonl``: the audit log's hash
chain, as ``sluis txlog verify|checkpoint|export-bundle|export-jsonl`` do it for the transaction
log (the same code, :mod:`appliance.cli.txlog`). The database is ``--database`` or ``[controller]
database`` of ``--config``. ``export-jsonl`` appends the entries and checkpoints not exported yet
to a JSON-lines file for the log shipper (``--interval``: as a service); ``verify --bundle``
checks that file, or the collector's copy of it. The audit log has its own commands because it
lives in the controller's database, which need not be the transaction log's, on a box that need
not log transactions.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from appliance.cli.groups import add_command, add_group
from appliance.config import ControllerSettings, load_config
from appliance.controller.auditlog import AUDIT
from appliance.controller.auth import TOKEN_DAYS, Authenticator
from appliance.controller.passwords import generate_password
from appliance.controller.roles import Role, parse_role
from appliance.controller.store import ControllerStore, StoreError
from appliance.errors import ConfigurationError


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "controller")
    sub = parser.add_subparsers(dest="controller_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return add_command(sub, name, help_text, config=True, json_output=True)

    roles = ", ".join(r.value for r in Role)
    user = command("create-user", "create a local account (password generated unless given)")
    user.add_argument("--username", required=True, help="the account's name")
    user.add_argument("--role", required=True, help=f"one of {roles}")
    user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (first line) instead of generating one",
    )
    user.set_defaults(func=_create_user)

    password = command("set-password", "set a new password (ends the user's sessions)")
    password.add_argument("--username", required=True, help="the account's name")
    password.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (first line) instead of generating one",
    )
    password.set_defaults(func=_set_password)

    unlock = command("unlock-user", "unlock an account locked after failed logins")
    unlock.add_argument("--username", required=True, help="the account's name")
    unlock.set_defaults(func=_unlock)

    for name, help_text in (
        ("disable-user", "disable an account (ends its sessions)"),
        ("enable-user", "enable a disabled account"),
    ):
        toggle = command(name, help_text)
        toggle.add_argument("--username", required=True, help="the account's name")
        toggle.set_defaults(func=_toggle, disabled=name == "disable-user")

    token = command("create-token", "create an API token with one role (printed once)")
    token.add_argument("--name", required=True, help="what the token is for")
    token.add_argument("--role", required=True, help=f"one of {roles}")
    token.add_argument(
        "--days",
        type=int,
        default=TOKEN_DAYS,
        help=f"expire after this many days (default: {TOKEN_DAYS}, as in the UI; 0: never)",
    )
    token.set_defaults(func=_create_token)

    revoke = command("revoke-token", "revoke an API token")
    revoke.add_argument("id", type=int, help="the token's id (see list-tokens)")
    revoke.set_defaults(func=_revoke_token)

    command("list-users", "list the accounts").set_defaults(func=_list_users)
    command("list-tokens", "list the API tokens (never the tokens themselves)").set_defaults(
        func=_list_tokens
    )
    _register_audit(sub)


def _register_audit(sub: Any) -> None:
    from appliance.cli import txlog

    audit = sub.add_parser(
        "audit",
        help="the audit log's hash chain: verify, checkpoint, export-bundle, export-jsonl",
        description="The audit log's hash chain and its checkpoints signed in the HSM "
        '(docs/txlog.md, "The controller\'s audit log").',
        allow_abbrev=False,
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    database = "the controller's database URL"
    commands_of: list[tuple[str, str, bool, Callable[[Any], None], Callable[..., int]]] = [
        (
            "verify",
            "check the audit log's chain and checkpoints (a store or a bundle); exit 1 if broken",
            False,
            lambda parser: txlog.verify_arguments(
                parser, database, "an audit bundle or export-jsonl file (the collector's copy)"
            ),
            txlog.verify_log,
        ),
        (
            "checkpoint",
            "sign the audit log's head in the HSM and store the checkpoint",
            True,
            lambda parser: txlog.checkpoint_arguments(parser, ("manual", "rotation")),
            txlog.checkpoint_log,
        ),
        (
            "export-bundle",
            "write an auditor's bundle: certificates, every audit entry and checkpoint",
            False,
            lambda parser: txlog.bundle_arguments(parser, database),
            txlog.bundle_log,
        ),
        (
            "export-jsonl",
            "append the entries and checkpoints not exported yet to a JSON-lines file",
            False,
            lambda parser: txlog.export_arguments(parser, database),
            txlog.export_log,
        ),
    ]
    for name, help_text, config, add, run in commands_of:
        parser = add_command(commands, name, help_text, config=config, json_output=True)
        add(parser)
        parser.set_defaults(func=functools.partial(run, log=AUDIT, database=_audit_database))


def _audit_database(args: argparse.Namespace) -> str:
    if getattr(args, "database", None):
        return str(args.database)
    config = load_config(args.config)
    if config.controller is None:  # not the default path: a box without a controller
        raise ConfigurationError(f"{config.source}: no [controller] section")
    return config.controller.database


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _authenticator(args: argparse.Namespace) -> Authenticator:
    config = load_config(args.config)
    settings = config.controller or ControllerSettings()
    return Authenticator(ControllerStore.open(settings.database), settings)


def _role(value: str) -> Role:
    try:
        return parse_role(value)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _read_password() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _create_user(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    role = _role(args.role)
    password = _read_password() if args.password_stdin else generate_password()
    try:
        user = auth.create_user(args.username, role, password, generated=not args.password_stdin)
    except (StoreError, ValueError) as exc:
        auth.audit(
            _actor(), None, "user.create", "failure", "local", target=args.username, detail=str(exc)
        )
        raise ConfigurationError(str(exc)) from None
    finally:
        auth.store.close()
    auth.audit(
        _actor(),
        None,
        "user.create",
        "success",
        "local",
        target=user.username,
        detail=f"role {role}",
    )
    shown = None if args.password_stdin else password
    text = f"created {user.username} ({role})"
    if shown:
        text += f"\npassword (shown once): {shown}"
    return _out(args, {"username": user.username, "role": role.value, "password": shown}, text)


def _set_password(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    password = _read_password() if args.password_stdin else generate_password()
    try:
        auth.set_password(args.username, password)
    except (StoreError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None
    auth.audit(_actor(), None, "user.password", "success", "local", target=args.username)
    shown = None if args.password_stdin else password
    text = f"new password set for {args.username}; their sessions ended"
    if shown:
        text += f"\npassword (shown once): {shown}"
    return _out(args, {"username": args.username, "password": shown}, text)


def _unlock(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    try:
        auth.store.unlock_user(args.username)
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from None
    auth.audit(_actor(), None, "user.unlock", "success", "local", target=args.username)
    return _out(args, {"username": args.username}, f"unlocked {args.username}")


def _toggle(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    try:
        auth.store.set_disabled(args.username, args.disabled)
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from None
    action = "user.disable" if args.disabled else "user.enable"
    auth.audit(_actor(), None, action, "success", "local", target=args.username)
    state = "disabled" if args.disabled else "enabled"
    return _out(args, {"username": args.username, "state": state}, f"{state} {args.username}")


def _create_token(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    role = _role(args.role)
    try:
        secret, record = auth.create_token(args.name, role, _actor(), days=args.days or None)
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from None
    auth.audit(
        _actor(),
        None,
        "token.create",
        "success",
        "local",
        target=f"{record.id} {record.name}",
        detail=f"role {role}",
    )
    return _out(
        args,
        {"token": secret, "record": record.as_api()},
        f"API token {record.id} ({record.name}, {role}); shown once:\n{secret}",
    )


def _revoke_token(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    try:
        record = auth.store.revoke_token(args.id, auth.clock())
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from None
    auth.audit(
        _actor(), None, "token.revoke", "success", "local", target=f"{record.id} {record.name}"
    )
    return _out(args, {"record": record.as_api()}, f"revoked API token {record.id}")


def _list_users(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    now = auth.clock()
    users = [u.as_api(now) for u in auth.store.list_users()]
    lines = [
        f"{u['username']:24s} {u['role']:17s} {'locked' if u['locked'] else 'active'}"
        for u in users
    ]
    return _out(args, {"users": users}, "\n".join(lines) or "no users")


def _list_tokens(args: argparse.Namespace) -> int:
    auth = _authenticator(args)
    tokens = [t.as_api() for t in auth.store.list_tokens()]
    lines = [
        f"{t['id']:4d} {t['name']:24s} {t['role']:17s} {'revoked' if t['revoked_at'] else 'active'}"
        for t in tokens
    ]
    return _out(args, {"tokens": tokens}, "\n".join(lines) or "no API tokens")
