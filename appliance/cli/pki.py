"""``sluis pki``: the demo CA (init, issue, revoke, crl, list, serve), CRL fetching, and the
certificate lifecycle on an appliance: install-cert, rollback-cert, expiry (docs/lifecycle.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.cli.groups import add_command, add_group
from appliance.config import SluisConfig as SluisConfigType
from appliance.config import load_config
from appliance.errors import ConfigurationError, SluisError
from appliance.pki.ca import DemoCA
from appliance.pki.crl import CrlError, atomic_write, refresh_crls
from appliance.pki.expiry import collect, expiring
from appliance.pki.install import (
    InstallError,
    InstallResult,
    install_certificate,
    rollback_certificate,
    subprocess_self_check,
)
from appliance.pki.publish import serve_public
from appliance.tls.peer import certificate_thumbprint, public_key_thumbprint

Command = Callable[[argparse.Namespace], int]

_REASONS = [reason.value for reason in x509.ReasonFlags]


def _os_errors(func: Command) -> Command:
    """Report file problems as operator errors instead of tracebacks."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise SluisError(f"{where}{exc.strerror or exc}") from exc

    return wrapper


def _serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a hexadecimal serial number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("serial number must be positive")
    return value


def _bind(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return host, port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


@_os_errors
def _cmd_init(args: argparse.Namespace) -> int:
    ca = DemoCA.create(
        args.ca_dir,
        name=args.name,
        crl_base_url=args.crl_base_url,
        root_days=args.root_days,
        intermediate_days=args.intermediate_days,
        crl_days=args.crl_days,
    )
    print(f"created demo CA in {ca.directory}")
    print(f"trust anchor: {ca.trust_anchor_path}")
    print(f"intermediate: {ca.intermediate_path}")
    print(f"CRL bundle:   {ca.crl_bundle_path}")
    return 0


@_os_errors
def _cmd_issue(args: argparse.Namespace) -> int:
    ca = DemoCA.open(args.ca_dir)
    csr = _read_input(args.csr, "CSR")
    certificate = ca.issue(csr, days=args.days)
    out: Path = args.out
    atomic_write(out, ca.chain_pem(certificate), 0o644)
    print(f"issued {certificate.serial_number:x} to {certificate.subject.rfc4514_string()}")
    print(f"valid until {certificate.not_valid_after_utc.isoformat()}; chain written to {out}")
    return 0


@_os_errors
def _cmd_revoke(args: argparse.Namespace) -> int:
    ca = DemoCA.open(args.ca_dir)
    ca.revoke(args.serial, x509.ReasonFlags(args.reason))
    print(f"revoked {args.serial:x} ({args.reason}); CRLs republished")
    return 0


@_os_errors
def _cmd_crl(args: argparse.Namespace) -> int:
    ca = DemoCA.open(args.ca_dir)
    for path in ca.publish_crls():
        print(path)
    return 0


@_os_errors
def _cmd_list(args: argparse.Namespace) -> int:
    ca = DemoCA.open(args.ca_dir)
    for record in ca.issued():
        status = f"revoked ({record.reason})" if record.revoked else "valid"
        print(
            f"{record.serial_hex}  {record.not_after.date().isoformat()}  {status:<24}  "
            f"{record.subject}"
        )
    return 0


@_os_errors
def _cmd_serve(args: argparse.Namespace) -> int:
    ca = DemoCA.open(args.ca_dir)
    host, port = args.bind
    server = serve_public(ca.directory, host, port)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {ca.directory / 'public'} on http://{shown_host}:{bound_port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _load_issuer(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read_input(path, "issuer certificate"))
    except ValueError as exc:
        raise CrlError(f"{path}: not a PEM certificate: {exc}") from exc


@_os_errors
def _cmd_fetch_crl(args: argparse.Namespace) -> int:
    urls: list[str] = args.url
    issuers: list[Path] = args.issuer
    if len(urls) != len(issuers):
        raise ConfigurationError(
            f"give one --issuer per --url ({len(urls)} URLs, {len(issuers)} issuers)"
        )
    pairs = [(url, _load_issuer(path)) for url, path in zip(urls, issuers, strict=True)]
    refresh_crls(pairs, args.out, timeout=args.timeout)
    print(f"wrote {len(pairs)} CRLs to {args.out}")
    return 0


def _add_config(args: argparse.Namespace) -> tuple[Path, SluisConfigType]:
    config_path: Path = args.config
    config = load_config(config_path)
    # The token store of [hsm] (SoftHSM2's SOFTHSM2_CONF), before the module is first loaded.
    os.environ.update(config.hsm.environment())
    return config_path, config


def _print_result(result: InstallResult) -> None:
    """What a playbook compares with the certificate a listener serves after the reload."""
    leaf = result.leaf
    der = leaf.public_bytes(Encoding.DER)
    print(
        json.dumps(
            {
                "changed": result.changed,
                "serial": f"{leaf.serial_number:x}",
                "x5t#S256": certificate_thumbprint(der),
                "public_key_thumbprint": public_key_thumbprint(leaf),
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "live": str(result.live),
                "target": str(result.target),
                "previous": str(result.previous) if result.previous else None,
            },
            indent=2,
        )
    )


@_os_errors
def _cmd_install_cert(args: argparse.Namespace) -> int:
    config_path, config = _add_config(args)
    chain = _read_input(args.chain, "certificate chain")
    check = None if args.no_tls_check else subprocess_self_check(config_path, config)
    signed: list[str] = []
    result = install_certificate(
        config,
        chain,
        self_check=check,
        key_label=args.key_label,
        before_swap=None if args.no_checkpoint else functools.partial(_rotation, config, signed),
    )
    leaf = result.leaf
    if args.json:
        _print_result(result)
        return 0
    if not result.changed:
        print(f"{leaf.serial_number:x} is live already; nothing changed")
        return 0
    for line in signed:
        print(line)
    print(f"installed {leaf.serial_number:x} ({leaf.subject.rfc4514_string()})")
    print(f"valid until {leaf.not_valid_after_utc.isoformat()}")
    print(f"live: {result.live} -> {result.target.relative_to(result.live.parent)}")
    if result.previous is not None:
        print(f"previous (sluis pki rollback-cert): {result.previous}")
    print("running components pick it up at their next graceful reload (HUP)")
    return 0


def _rotation(config: SluisConfigType, signed: list[str]) -> None:
    """Before the swap: each configured log's heads signed with the live key (``rotation``)."""
    from appliance.cli.txlog import rotation_checkpoints  # SQLAlchemy, PKCS#11: only here
    from appliance.txlog.checkpoint import CheckpointError

    try:
        signed.extend(rotation_checkpoints(config))
    except CheckpointError as exc:
        raise InstallError(
            f"nothing installed: no rotation checkpoint ({exc}); fix that, or install without "
            "one with --no-checkpoint"
        ) from None


@_os_errors
def _cmd_rollback_cert(args: argparse.Namespace) -> int:
    config_path, config = _add_config(args)
    check = None if args.no_tls_check else subprocess_self_check(config_path, config)
    result = rollback_certificate(config, self_check=check)
    leaf = result.leaf
    if args.json:
        _print_result(result)
        return 0
    print(f"rolled back to {leaf.serial_number:x} ({leaf.subject.rfc4514_string()})")
    print(f"live: {result.live} -> {result.target.relative_to(result.live.parent)}")
    print("running components pick it up at their next graceful reload (HUP)")
    return 0


@_os_errors
def _cmd_expiry(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    now = datetime.now(UTC)
    report = collect(config.tls)
    due = expiring(report, args.within_days, now, crl_days=args.crl_within_hours / 24)
    if args.json:
        print(
            json.dumps(
                {
                    "within_days": args.within_days,
                    "items": [
                        {
                            "kind": item.kind,
                            "role": item.role,
                            "name": item.name,
                            "serial": item.serial,
                            "expires": item.expires.isoformat() if item.expires else None,
                            "days_left": item.days_left(now),
                            "due": item in due,
                            "file": str(item.source),
                        }
                        for item in report.items
                    ],
                    "problems": report.problems,
                },
                indent=2,
            )
        )
    else:
        for item in report.items:
            left = item.days_left(now)
            state = "DUE" if item in due else "ok"
            shown = f"{left:8.1f}" if left is not None else "       -"
            print(f"{state:<4} {shown} days  {item.kind:<11} {item.role:<12} {item.name}")
        for problem in report.problems:
            print(f"DUE  unreadable: {problem}")
    if due or report.problems:
        print(
            f"sluis: {len(due) + len(report.problems)} item(s) expire within "
            f"{args.within_days} days (CRLs: {args.crl_within_hours} hours) or cannot be read",
            file=sys.stderr,
        )
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pki = add_group(subparsers, "pki")
    commands = pki.add_subparsers(dest="pki_command", required=True, metavar="PKI_COMMAND")

    def ca_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ca-dir", type=Path, required=True, help="demo CA directory")

    init = add_command(commands, "init", help_text="create the root and intermediate CA")
    ca_dir(init)
    init.add_argument("--name", default="Sluis Demo", help="CA name (O and CN prefix)")
    init.add_argument(
        "--crl-base-url",
        required=True,
        help="URL under which root.crl and intermediate.crl will be served",
    )
    init.add_argument(
        "--root-days", type=_positive, default=3650, help="root CA validity (default %(default)s)"
    )
    init.add_argument(
        "--intermediate-days",
        type=_positive,
        default=1825,
        help="intermediate CA validity (default %(default)s)",
    )
    init.add_argument(
        "--crl-days", type=_positive, default=7, help="CRL validity (default %(default)s)"
    )
    init.set_defaults(func=_cmd_init)

    issue = add_command(commands, "issue", help_text="issue an organisation certificate from a CSR")
    ca_dir(issue)
    issue.add_argument("--csr", type=Path, required=True, help="PEM CSR (made with the HSM key)")
    issue.add_argument("--out", type=Path, required=True, help="where to write the PEM chain")
    issue.add_argument(
        "--days", type=_positive, default=365, help="certificate validity (default %(default)s)"
    )
    issue.set_defaults(func=_cmd_issue)

    revoke = add_command(
        commands, "revoke", help_text="revoke a certificate and republish the CRLs"
    )
    ca_dir(revoke)
    revoke.add_argument("--serial", type=_serial, required=True, help="serial number in hex")
    revoke.add_argument(
        "--reason",
        choices=_REASONS,
        default=x509.ReasonFlags.unspecified.value,
        help="CRL reason code (default %(default)s)",
    )
    revoke.set_defaults(func=_cmd_revoke)

    crl = add_command(commands, "crl", help_text="republish fresh CRLs")
    ca_dir(crl)
    crl.set_defaults(func=_cmd_crl)

    listing = add_command(commands, "list", help_text="list issued certificates")
    ca_dir(listing)
    listing.set_defaults(func=_cmd_list)

    serve = add_command(commands, "serve", help_text="serve CA certificates and CRLs over HTTP")
    ca_dir(serve)
    serve.add_argument(
        "--bind",
        type=_bind,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8088)",
    )
    serve.set_defaults(func=_cmd_serve)

    fetch = add_command(
        commands, "fetch-crl", help_text="download and verify CRLs into one PEM bundle"
    )
    fetch.add_argument("--url", action="append", required=True, help="CRL URL (repeatable)")
    fetch.add_argument(
        "--issuer",
        type=Path,
        action="append",
        required=True,
        help="PEM certificate of the CRL issuer, one per --url in the same order",
    )
    fetch.add_argument("--out", type=Path, required=True, help="PEM CRL bundle to replace")
    fetch.add_argument("--timeout", type=float, default=10.0, help="seconds per download")
    fetch.set_defaults(func=_cmd_fetch_crl)

    install = add_command(
        commands,
        "install-cert",
        help_text="check a renewed certificate chain and make it live (keeps the previous one)",
        description="Checks the chain (trust anchors, validity, CRLs, PeerID, public key of the "
        "key in the token), archives it, swaps the [tls] certificate_chain link in one rename, "
        "runs a TLS self-check with the HSM key and swaps back if that fails. Components use "
        "it after a graceful reload (HUP). Before the swap it signs a checkpoint (reason "
        "rotation) of each stream of the transaction log ([txlog]) and the audit log "
        "([controller]) with the key and certificate still live; when that fails nothing is "
        "installed, unless --no-checkpoint.",
        config=True,
    )
    install.add_argument("--chain", type=Path, required=True, help="PEM chain, leaf first")
    install.add_argument(
        "--key-label",
        metavar="LABEL",
        help="the token key the certificate belongs to when it is not [hsm] key_label (re-key)",
    )
    install.add_argument(
        "--no-tls-check",
        action="store_true",
        help="skip the TLS self-check (only when the key reference changes after this step)",
    )
    install.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="install without first signing a rotation checkpoint of the transaction log and "
        "the audit log with the key still live (when that cannot be done: say why in the "
        "change record)",
    )
    install.add_argument("--json", action="store_true", help="machine-readable output")
    install.set_defaults(func=_cmd_install_cert)

    rollback = add_command(
        commands,
        "rollback-cert",
        help_text="make the previous certificate chain live again",
        description="Swaps the live and the previous link after checking the previous chain "
        "(trust, validity, CRLs) and runs the TLS self-check; a second rollback undoes the first.",
        config=True,
    )
    rollback.add_argument("--no-tls-check", action="store_true", help="skip the TLS self-check")
    rollback.add_argument("--json", action="store_true", help="machine-readable output")
    rollback.set_defaults(func=_cmd_rollback_cert)

    expiry = add_command(
        commands,
        "expiry",
        help_text="list certificates and CRLs; exit 1 when one expires within N days",
        description="Reads the live organisation chain, the trust anchors and the CRL bundle "
        "of [tls]. Exit status 0: nothing expires within N days; 1: something does (or a file "
        "cannot be read), listed as DUE; 2: configuration error.",
        config=True,
    )
    expiry.add_argument(
        "--within-days",
        type=_positive,
        default=30,
        metavar="N",
        help="renewal horizon in days (default %(default)s, as the controller's)",
    )
    expiry.add_argument(
        "--crl-within-hours",
        type=_positive,
        default=24,
        metavar="H",
        help="horizon for CRLs, which a timer refreshes (default %(default)s)",
    )
    expiry.add_argument("--json", action="store_true", help="machine-readable output")
    expiry.set_defaults(func=_cmd_expiry)
