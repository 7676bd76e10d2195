"""``sluis hsm``: the organisation key in the token, its certificate request and certificate.

Every sub-command finds the token through ``--config FILE`` (its ``[hsm]`` section) or
``--module``, ``--token``, ``--key-label``, ``--pin-file``, ``--login-lock``. Precedence: an
option given on the command line, then the configuration file, then the environment
(``SLUIS_HSM_MODULE``, ``SLUIS_HSM_TOKEN``, ``SLUIS_HSM_KEY_LABEL``, ``SLUIS_HSM_PIN_FILE``), then
the built-in defaults. The user PIN comes from ``SLUIS_HSM_PIN`` or the PIN file, the SO PIN
(``init-token`` only) from ``SLUIS_HSM_SO_PIN`` or ``--so-pin-file``: never from the command line.

``change-pin`` changes the user PIN (C_SetPIN), the new PIN from ``SLUIS_HSM_NEW_PIN`` or
``--new-pin-file``. ``list`` shows each private key's protection attributes; the components
refuse a key that lacks one (see :data:`appliance.hsm.keys.PROTECTION`).

After a re-key, ``retire-key --retire-label OLD`` retires the old key (signing disabled, objects
relabelled ``OLD.retired-<UTC time>``) and ``destroy-retired --grace-days N`` later destroys
keys retired at least N days ago. The key label the settings name is the live key: neither
command touches it, nor any key holding its public key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.cli.groups import add_command, add_group
from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.hsm.certs import import_certificate
from appliance.hsm.csr import make_csr
from appliance.hsm.keyref import write_key_reference
from appliance.hsm.keys import KEY_ALGORITHMS, KeyAlgorithm, ObjectInfo, generate_key, list_objects
from appliance.hsm.pin import read_pin, read_pin_file
from appliance.hsm.retire import RetiredKey, destroy_retired, retire_key, sign_flags
from appliance.hsm.settings import DEFAULT_KEY_LABEL, SOFTHSM_MODULE, HsmSettings
from appliance.hsm.softhsm import init_softhsm_token
from appliance.pki.identity import OrganisationIdentity

ENV_MODULE = "SLUIS_HSM_MODULE"
ENV_TOKEN = "SLUIS_HSM_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_KEY_LABEL = "SLUIS_HSM_KEY_LABEL"
ENV_PIN_FILE = "SLUIS_HSM_PIN_FILE"
ENV_SO_PIN = "SLUIS_HSM_SO_PIN"
ENV_NEW_PIN = "SLUIS_HSM_NEW_PIN"


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = common.add_argument_group("token selection")
    group.add_argument("--config", type=Path, metavar="FILE", help="appliance configuration (TOML)")
    group.add_argument(
        "--module", type=Path, metavar="PATH", help=f"PKCS#11 module (env {ENV_MODULE})"
    )
    group.add_argument("--token", metavar="LABEL", help=f"token label (env {ENV_TOKEN})")
    group.add_argument(
        "--key-label", metavar="LABEL", help=f"label of the organisation key (env {ENV_KEY_LABEL})"
    )
    group.add_argument(
        "--pin-file",
        type=Path,
        metavar="FILE",
        help=f"root-only file with the user PIN (env {ENV_PIN_FILE}; SLUIS_HSM_PIN wins)",
    )
    group.add_argument(
        "--login-lock", type=Path, metavar="FILE", help="lock file serialising token logins"
    )
    return common


def settings_from_args(args: argparse.Namespace) -> HsmSettings:
    """The token settings: command line, then ``--config``, then environment, then defaults."""
    if args.config is not None:
        settings = load_config(args.config).hsm
    else:
        token = args.token or os.environ.get(ENV_TOKEN)
        if not token:
            raise ConfigurationError(
                f"which token? give --token LABEL, --config FILE or set {ENV_TOKEN}"
            )
        pin_file = os.environ.get(ENV_PIN_FILE)
        settings = HsmSettings(
            token_label=token,
            module=Path(os.environ.get(ENV_MODULE) or SOFTHSM_MODULE),
            key_label=os.environ.get(ENV_KEY_LABEL) or DEFAULT_KEY_LABEL,
            pin_file=Path(pin_file) if pin_file else None,
        )
    overrides: dict[str, Any] = {
        "token_label": args.token,
        "module": args.module,
        "key_label": args.key_label,
        "pin_file": args.pin_file,
        "login_lock": args.login_lock,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    # A SoftHSM appliance names its own token store; the module reads it at first use.
    os.environ.update(settings.environment())
    return settings


def _write_public_file(path: Path, data: bytes) -> None:
    """Write a non-secret file atomically (0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _other_pin(env: str, pin_file: Path | None, what: str, option: str) -> str:
    """The SO PIN or a new PIN: from ``env``, else from the root-only ``pin_file``."""
    pin = os.environ.get(env)
    if pin:
        return pin
    if pin_file is None:
        raise ConfigurationError(f"no {what}: set {env} or give {option} FILE")
    return read_pin_file(pin_file)


def _init_token(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    so_pin = _other_pin(ENV_SO_PIN, args.so_pin_file, "SO PIN", "--so-pin-file")
    init_softhsm_token(
        settings.token_label,
        so_pin,
        read_pin(settings),
        module=settings.module,
        login_lock=settings.login_lock,
    )
    print(f"initialised SoftHSM token {settings.token_label!r} ({settings.module})")
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from appliance.hsm.keys import public_key

    settings = settings_from_args(args)
    algorithm: KeyAlgorithm = args.algorithm
    info = generate_key(settings, algorithm)
    print(
        f"generated {info.algorithm} key {info.label!r} (id {info.id_hex}) in token "
        f"{info.token_label!r}; private key sensitive and not extractable"
    )
    pem = public_key(settings).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    sys.stdout.write(pem.decode("ascii"))
    return 0


def _csr(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    identity = OrganisationIdentity(name=args.organisation, oin=args.oin, fqdns=tuple(args.fqdn))
    pem = make_csr(settings, identity)
    try:
        _write_public_file(args.out, pem)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {args.out}: {exc.strerror}") from exc
    print(f"wrote certificate request for {identity.subject().rfc4514_string()} to {args.out}")
    return 0


def _import_cert(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        chain = args.chain.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read certificate chain {args.chain}: {exc.strerror}"
        ) from exc
    live = import_certificate(settings, chain, args.cert_dir)
    print(f"stored the certificate in token {settings.token_label!r}; live chain: {live}")
    return 0


def _flags(info: ObjectInfo, sign: dict[tuple[str, str], bool | None]) -> str:
    if info.kind != "private-key":
        return "-"
    flags = ["sensitive" if info.sensitive else "NOT-SENSITIVE"]
    flags.append("EXTRACTABLE" if info.extractable else "non-extractable")
    can_sign = sign.get((info.label, info.id_hex))
    if can_sign is not None:
        # A retired key shows no-sign; the live key must show sign.
        flags.append("sign" if can_sign else "no-sign")
    return ",".join(flags)


def _history(info: ObjectInfo) -> str:
    """How the key came to be: a lacking protection in capitals (Sluis refuses such a key)."""
    if info.kind != "private-key":
        return "-"
    names = ("always-sensitive", "never-extractable", "local")
    return ",".join(
        name if (info.protection or {}).get(name) else f"NOT-{name.upper()}" for name in names
    )


def format_table(
    infos: list[ObjectInfo], sign: dict[tuple[str, str], bool | None] | None = None
) -> str:
    """The ``list`` table: one row per object (``sign``: CKA_SIGN by label and id hex)."""
    header = (
        "CLASS", "LABEL", "ID", "ALGORITHM", "FLAGS", "HISTORY", "NOT AFTER", "DAYS", "SUBJECT"
    )  # fmt: skip
    rows = [header]
    for info in infos:
        rows.append(
            (
                info.kind,
                info.label or "-",
                info.id_hex or "-",
                info.algorithm or "-",
                _flags(info, sign or {}),
                _history(info),
                f"{info.not_after:%Y-%m-%d}" if info.not_after else "-",
                str(info.days_to_expiry) if info.days_to_expiry is not None else "-",
                info.subject or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    infos = list_objects(settings)
    if args.json:
        print(json.dumps(list_json(infos, sign_flags(settings) if infos else {}), indent=2))
        return 0
    if not infos:
        print(f"token {settings.token_label!r} holds no objects")
        return 0
    sys.stdout.write(format_table(infos, sign_flags(settings)))
    return 0


def list_json(
    infos: list[ObjectInfo], sign: dict[tuple[str, str], bool | None]
) -> list[dict[str, Any]]:
    """``list --json``: the table's facts per object (``sign``: CKA_SIGN of private keys)."""
    return [
        {
            "class": info.kind,
            "label": info.label,
            "id": info.id_hex,
            "algorithm": info.algorithm,
            "sensitive": info.sensitive,
            "extractable": info.extractable,
            "sign": sign.get((info.label, info.id_hex)) if info.kind == "private-key" else None,
            "always_sensitive": (info.protection or {}).get("always-sensitive"),
            "never_extractable": (info.protection or {}).get("never-extractable"),
            "local": (info.protection or {}).get("local"),
            "unprotected": info.unprotected,
            "subject": info.subject,
            "oin": info.oin,
            "not_after": info.not_after.isoformat() if info.not_after else None,
            "days_to_expiry": info.days_to_expiry,
        }
        for info in infos
    ]


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _retire_key(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    result = retire_key(settings, args.retire_label, datetime.now(UTC))
    if args.json:
        print(
            json.dumps(
                {
                    "label": result.label,
                    "retired_label": result.retired_label,
                    "retired_at": result.retired_at.isoformat(),
                    "changed": result.changed,
                }
            )
        )
    elif result.changed:
        print(
            f"retired key {result.label!r} (id {result.id_hex}) in token "
            f"{settings.token_label!r}: signing disabled, {', '.join(result.relabelled)} "
            f"relabelled {result.retired_label!r}"
        )
    else:
        print(
            f"key {result.label!r} was retired at {_stamp(result.retired_at)} (now "
            f"{result.retired_label!r}); nothing changed"
        )
    return 0


def _describe_retired(key: RetiredKey, dry_run: bool) -> str:
    age = f"retired {_stamp(key.retired_at)}"
    if key.destroyed:
        return f"destroyed {key.retired_label!r} ({age}): {', '.join(key.objects)}"
    if key.due and dry_run:
        return f"would destroy {key.retired_label!r} ({age}): {', '.join(key.objects)}"
    if key.kept_because is not None:
        return f"kept {key.retired_label!r} ({age}): {key.kept_because}"
    days = "1 day" if key.days_left == 1 else f"{key.days_left} days"
    return f"kept {key.retired_label!r} ({age}): {days} left"


def _destroy_retired(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    keys = destroy_retired(settings, args.grace_days, datetime.now(UTC), dry_run=args.dry_run)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "retired_label": key.retired_label,
                        "retired_at": key.retired_at.isoformat(),
                        "destroyed": key.destroyed,
                        "days_left": key.days_left,
                        "label": key.label,
                        "due": key.due,
                        "kept_because": key.kept_because,
                    }
                    for key in keys
                ],
                indent=2,
            )
        )
    elif not keys:
        print(f"token {settings.token_label!r} holds no retired keys")
    else:
        for key in keys:
            print(_describe_retired(key, args.dry_run))
    return 0


def _grace_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"the grace period cannot be negative: {days}")
    return days


def _change_pin(args: argparse.Namespace) -> int:
    from appliance.hsm.token import change_pin

    settings = settings_from_args(args)
    new_pin = _other_pin(ENV_NEW_PIN, args.new_pin_file, "new PIN", "--new-pin-file")
    change_pin(settings, new_pin)
    print(
        f"changed the user PIN of token {settings.token_label!r}; now replace the PIN file or "
        "credential the services read, then restart them (docs/keys.md)"
    )
    return 0


def _key_reference(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    uri = settings.pkcs11_uri()
    try:
        write_key_reference(args.out, uri)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {args.out}: {exc.strerror}") from exc
    print(f"wrote key reference {uri} to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hsm`` and its sub-commands to the ``sluis`` parser."""
    common = _common_options()
    parser = add_group(subparsers, "hsm")
    commands = parser.add_subparsers(dest="hsm_command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, description: str | None = None, json_output: bool = False
    ) -> argparse.ArgumentParser:
        return add_command(
            commands,
            name,
            help_text,
            description=description,
            parents=[common],
            json_output=json_output,
        )

    init = command(
        "init-token",
        "initialise a SoftHSM2 development token (never a real HSM)",
        description=(
            f"Initialise a free SoftHSM2 slot. SO PIN from {ENV_SO_PIN} or --so-pin-file, user "
            "PIN from SLUIS_HSM_PIN or --pin-file."
        ),
    )
    init.add_argument("--so-pin-file", type=Path, metavar="FILE", help="root-only SO PIN file")
    init.set_defaults(func=_init_token)

    gen = command(
        "generate-key",
        "generate the organisation key pair in the token",
    )
    gen.add_argument(
        "--algorithm", choices=KEY_ALGORITHMS, default="ec-p256", help="default %(default)s"
    )
    gen.set_defaults(func=_generate_key)

    csr = command(
        "csr",
        "write a certificate request signed in the token",
    )
    csr.add_argument("--organisation", required=True, metavar="NAME", help="organisation name")
    csr.add_argument("--oin", required=True, help="20-digit OIN (subject serialNumber)")
    csr.add_argument(
        "--fqdn",
        required=True,
        action="append",
        metavar="FQDN",
        help="DNS name; repeat for more (the first is the CN)",
    )
    csr.add_argument("--out", required=True, type=Path, metavar="FILE", help="PEM request file")
    csr.set_defaults(func=_csr)

    imp = command(
        "import-cert",
        "store the organisation certificate in the token and the certificate directory",
    )
    imp.add_argument("--chain", required=True, type=Path, metavar="FILE", help="PEM, leaf first")
    imp.add_argument(
        "--cert-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory receiving archive/ and the organisation.pem symlink",
    )
    imp.set_defaults(func=_import_cert)

    lst = command(
        "list",
        "list keys and certificates with protection flags and days to expiry",
        description=(
            "FLAGS of a private key: sensitive, non-extractable, sign; HISTORY: "
            "always-sensitive, never-extractable, local (generated in the token). A protection "
            "the key lacks is shown in capitals (EXTRACTABLE, NOT-LOCAL); Sluis refuses to use "
            "such a key."
        ),
        json_output=True,
    )
    lst.set_defaults(func=_list)

    retire = command(
        "retire-key",
        "retire an old organisation key after a re-key (signing off, relabelled)",
        description=(
            "Clear CKA_SIGN on the private key labelled OLD, then relabel its private key, "
            "public key and certificate OLD.retired-YYYYmmddTHHMMSSZ (UTC). Refuses the live "
            "key (the key label the settings name) and any key holding its public key. Running "
            "it again after a retirement changes nothing."
        ),
        json_output=True,
    )
    retire.add_argument(
        "--retire-label", required=True, metavar="OLD", help="label of the key to retire"
    )
    retire.set_defaults(func=_retire_key)

    destroy = command(
        "destroy-retired",
        "destroy keys retired at least --grace-days ago",
        description=(
            "Destroy the private key, public key and certificate of every key labelled "
            "LABEL.retired-<time> whose retirement is at least N days old. Never destroys the "
            "live key or anything holding its public key or CKA_ID."
        ),
        json_output=True,
    )
    destroy.add_argument(
        "--grace-days",
        required=True,
        type=_grace_days,
        metavar="N",
        help="destroy keys retired at least N days ago (0: all retired keys)",
    )
    destroy.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    destroy.set_defaults(func=_destroy_retired)

    pin = command(
        "change-pin",
        "change the user PIN of the token (C_SetPIN)",
        description=(
            f"The current PIN from SLUIS_HSM_PIN, the credential or the PIN file; the new one "
            f"from {ENV_NEW_PIN} or --new-pin-file, never from the command line."
        ),
    )
    pin.add_argument("--new-pin-file", type=Path, metavar="FILE", help="root-only new PIN file")
    pin.set_defaults(func=_change_pin)

    ref = command(
        "key-reference",
        "write the PEM URI file that lets OpenSSL use the key in the token",
    )
    ref.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="the key reference file to write"
    )
    ref.set_defaults(func=_key_reference)
