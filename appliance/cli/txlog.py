"""``sluis txlog``: the transaction log outside the Manager's API.

``sluis txlog export-jsonl`` appends the records not exported yet to a JSON-lines file, for a
log shipper (the logship role's rsyslog) to send to the collector; run it from a timer, or
with ``--interval`` as a service that exports every few seconds (the sluis role's). The
database comes from ``--database`` or the ``[txlog]`` section of ``--config``. See
:mod:`appliance.txlog.export` for what is written and why nothing is lost or written twice.

``sluis txlog verify`` checks the hash chain of a store (``--database``, ``--config``) or of an
exported JSON-lines file (``--bundle``), offline: every record and every link of both streams.
It prints each stream's head, reports the first broken place of each stream (which record,
what is wrong) and exits 1 when there is one. ``--head STREAM=SEQ:HASH`` (from an earlier run
or the collector's copy) also finds a cut tail or a recomputed chain; ``--start
STREAM=SEQ:HASH`` accepts a purge of the records up to that head. Signed checkpoints are
checked against the organisation's certificates (``--certificates``, or those of ``--config``):
a bad checkpoint, a record that is not what a checkpoint signed and a tail cut below the last
checkpoint are each reported.

``sluis txlog checkpoint`` signs each stream's head in the HSM with the organisation key and
stores the checkpoint with the records, after verifying the records since the last checkpoint.
``--interval`` keeps it running (a service): a checkpoint every S seconds, and one when it is
stopped (SIGTERM, reason ``shutdown``).

``sluis txlog export-bundle`` writes an auditor's bundle: one JSON-lines file with the
organisation's certificates (first line), every record and every checkpoint, which ``sluis txlog
verify --bundle`` checks with nothing else (it prints the root it held the checkpoints to).

``sluis txlog purge --before DATE`` deletes the records created before DATE (run it as the
database's owner): per stream it first signs a checkpoint at the cut (the last record deleted),
so that the rest still verifies; the newest record of a stream is always kept.

``sluis txlog status`` checks, per stream, the last signed checkpoint (its signature, the record
it signed) and the records after it (they link on, and are not older than
``--max-unsigned-minutes``), without reading the whole log: for monitoring and the controller.
Exit status 1 when something is wrong.

The controller's audit log is chained, checkpointed and shipped the same way: ``sluis
controller audit verify``, ``checkpoint``, ``export-bundle`` and ``export-jsonl`` are these
commands (the functions below, given the audit log's :class:`appliance.txlog.chain.Log` and the
controller's database).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from appliance.cli.groups import add_command, add_group, plain
from appliance.config import SluisConfig, load_config
from appliance.errors import ConfigurationError
from appliance.txlog.audit import BundleError, verify_engine, verify_jsonl
from appliance.txlog.chain import TXLOG, Log, Verification
from appliance.txlog.checkpoint import (
    REASONS,
    Certificates,
    Checkpointer,
    CheckpointError,
    KeyMismatchError,
    organisation_certificates,
)
from appliance.txlog.database import create_engine
from appliance.txlog.export import DEFAULT_BATCH, export_bundle, export_jsonl
from appliance.txlog.integrity import DEFAULT_MAX_UNSIGNED_AGE, integrity
from appliance.txlog.retention import purge

_HEAD = re.compile(r"([A-Z_]{1,32})=([0-9]{1,19}):([0-9a-f]{64})")
Database = Callable[[argparse.Namespace], str]


def _command(
    commands: Any, name: str, help_text: str, paragraph: int, func: Any, *, config: bool = False
) -> argparse.ArgumentParser:
    """A ``sluis txlog`` command (``add_command``: ``--json``, and ``--config`` when asked)
    described by paragraph ``paragraph`` of this module's text."""
    description = plain((__doc__ or "").split("\n\n")[paragraph])
    parser = add_command(
        commands, name, help_text, description=description, config=config, json_output=True
    )
    parser.set_defaults(func=func)
    return parser


def _purpose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--purpose",
        action="store_true",
        help="also the processing activity, trace id and data-subject pseudonym",
    )


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "txlog")
    commands = parser.add_subparsers(dest="txlog_command", required=True, metavar="COMMAND")
    export = _command(
        commands,
        "export-jsonl",
        "append the records not exported yet to a JSON-lines file",
        1,
        _export,
    )
    export_arguments(export, "the transaction log's database URL")
    _purpose_argument(export)
    export.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="after each run, write the export's lag here (node-exporter's textfile collector)",
    )

    verify = _command(
        commands, "verify", "check the hash chain of a store or an exported file", 2, _verify
    )
    verify_arguments(verify, "the transaction log's database URL", "an export-jsonl file")

    bundle = _command(
        commands,
        "export-bundle",
        "write an auditor's bundle: certificates, every record and checkpoint",
        4,
        _export_bundle,
    )
    bundle_arguments(bundle, "the transaction log's database URL")
    _purpose_argument(bundle)

    status = _command(
        commands,
        "status",
        "the last signed checkpoint of each stream, checked, and what follows it",
        6,
        _status,
        config=True,
    )
    status.add_argument(
        "--max-unsigned-minutes",
        type=float,
        default=DEFAULT_MAX_UNSIGNED_AGE.total_seconds() / 60,
        metavar="M",
        help="records older than this without a checkpoint are a problem (default 15)",
    )

    checkpoint = _command(
        commands,
        "checkpoint",
        "sign each stream's head in the HSM and store the checkpoint",
        3,
        _checkpoint,
        config=True,
    )
    checkpoint_arguments(checkpoint, [r for r in REASONS if r != "shutdown"])

    purging = _command(
        commands,
        "purge",
        "delete records older than a date, with a signed checkpoint at each cut",
        5,
        _purge,
        config=True,
    )
    purging.add_argument(
        "--before",
        required=True,
        type=_moment,
        metavar="DATE",
        help="ISO 8601, e.g. 2026-06-01 or 2026-06-01T00:00:00+02:00 (UTC when no zone)",
    )


def export_arguments(parser: argparse.ArgumentParser, database: str) -> None:
    """``export-jsonl``'s options: the store, the output and its cursor, how often."""
    _database_arguments(parser, database)
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="JSON lines")
    parser.add_argument(
        "--state",
        type=Path,
        required=True,
        metavar="FILE",
        help="the cursor file (the id of the last record exported)",
    )
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        metavar="S",
        help="export only records older than this (default: 0 on SQLite, 120 on PostgreSQL)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="keep running: export again every S seconds (a service instead of a timer)",
    )


def verify_arguments(parser: argparse.ArgumentParser, database: str, bundle: str) -> None:
    """``verify``'s options: what to check, known heads and starts, the certificates."""
    what = _database_arguments(parser, database)
    what.add_argument("--bundle", type=Path, metavar="FILE", help=bundle)
    parser.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="STREAM=SEQ:HASH",
        help="a head known from elsewhere, which the stream must contain (repeatable)",
    )
    parser.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="STREAM=SEQ:HASH",
        help="where records were purged: the last deleted seq and its hash (repeatable)",
    )
    _certificates_argument(parser)


def checkpoint_arguments(parser: argparse.ArgumentParser, reasons: Sequence[str]) -> None:
    """``checkpoint``'s options: the reason a single checkpoint records, or a service."""
    parser.add_argument(
        "--reason",
        choices=list(reasons),
        default="manual",
        help="why, as the checkpoint records it (rotation: before the certificate is replaced)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="keep running: a checkpoint every S seconds, and one at shutdown",
    )


def bundle_arguments(parser: argparse.ArgumentParser, database: str) -> None:
    """``export-bundle``'s options."""
    _database_arguments(parser, database)
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="JSON lines")
    _certificates_argument(parser)


def _certificates_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--certificates",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="PEM: the organisation's certificates (each that signed), intermediates and root "
        "(repeatable; default with --config: its chain, archive and trust anchors; with "
        "--bundle: those the bundle carries)",
    )


def _database_arguments(
    parser: argparse.ArgumentParser, database: str = "the transaction log's database URL"
) -> Any:
    """``--config`` or ``--database``, one of them required (the group, for more choices)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE", help="appliance configuration")
    source.add_argument("--database", metavar="URL", help=database)
    return source


def _database(args: argparse.Namespace) -> str:
    if args.database:
        database: str = args.database
        return database
    return _txlog_database(load_config(args.config))


def _txlog_database(config: SluisConfig) -> str:
    if config.txlog is None:
        raise ConfigurationError(f"{config.source}: no [txlog] section")
    return config.txlog.database


def _certificates(args: argparse.Namespace) -> Certificates | None:
    if args.certificates:
        return Certificates.from_pem_files(args.certificates)
    if getattr(args, "config", None):
        config = load_config(args.config)
        return organisation_certificates(config.tls.certificate_chain, config.tls.trust_anchors)
    return None


def _export(args: argparse.Namespace) -> int:
    return export_log(args, TXLOG, _database)


def export_log(args: argparse.Namespace, log: Log, database: Database) -> int:
    """``export-jsonl`` of ``log`` in ``database(args)``: once, or every ``--interval``."""
    url = database(args)
    while True:
        result = export_jsonl(
            url,
            args.output,
            args.state,
            purpose=getattr(args, "purpose", False),
            batch=args.batch,
            settle_seconds=args.settle_seconds,
            log=log,
        )
        if getattr(args, "metrics_file", None) is not None:
            from appliance.metrics.txlog import export_text, write_textfile

            write_textfile(args.metrics_file, export_text(result.lag_seconds, time.time()))
        if args.interval is None:
            break
        if result.exported:
            print(f"exported {result.exported} record(s), cursor {result.cursor}", flush=True)
        time.sleep(args.interval)
    if args.json:
        print(json.dumps({"exported": result.exported, "cursor": result.cursor}))
    else:
        print(f"exported {result.exported} record(s), cursor {result.cursor}")
    return 0


def _heads(option: str, values: list[str], log: Log) -> dict[str, tuple[int, str]]:
    heads: dict[str, tuple[int, str]] = {}
    for text in values:
        match = _HEAD.fullmatch(text)
        if match is None or match.group(1) not in log.streams:
            raise ConfigurationError(
                f"{option} {text!r}: give STREAM=SEQ:HASH (64 hex digits), STREAM one of "
                f"{', '.join(log.streams)}"
            )
        heads[match.group(1)] = (int(match.group(2)), match.group(3))
    return heads


def _verify(args: argparse.Namespace) -> int:
    return verify_log(args, TXLOG, _database)


def verify_log(args: argparse.Namespace, log: Log, database: Database) -> int:
    """``verify`` of ``log``: the store of ``database(args)`` or ``--bundle``; the exit status."""
    heads = _heads("--head", args.head, log)
    starts = _heads("--start", args.start, log)
    try:
        certificates = _certificates(args)
    except CheckpointError as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return 2
    if args.bundle is not None:
        try:
            result = verify_jsonl(
                args.bundle, heads=heads, starts=starts, certificates=certificates, log=log
            )
        except (OSError, BundleError) as exc:
            print(f"cannot verify: {exc}", file=sys.stderr)
            return 2
    else:
        engine = create_engine(database(args))
        try:
            result = verify_engine(
                engine, heads=heads, starts=starts, certificates=certificates, log=log
            )
        finally:
            engine.dispose()
    _report(result, log, as_json=args.json)
    return 0 if result.ok else 1


def _report(result: Verification, log: Log, *, as_json: bool) -> None:
    if as_json:
        document = {
            "ok": result.ok,
            "records": result.records,
            "unchained": result.unchained,
            "checkpoints": result.checkpoints,
            "roots": result.roots,
            "roots_from": result.roots_from,
            "streams": {
                stream: {
                    "records": state.records,
                    "head": {"seq": state.last_seq, "hash": state.last_hash}
                    if state.broken is None
                    else None,
                    "checkpoints": state.checkpoints,
                    "last_checkpoint": {
                        "seq": state.last_checkpoint.seq,
                        "checkpoint": state.last_checkpoint.checkpoint,
                        "label": state.last_checkpoint.label,
                    }
                    if state.last_checkpoint is not None
                    else None,
                }
                for stream, state in sorted(result.streams.items())
            },
            "problems": [problem.to_json() for problem in result.problems],
            "repeated": result.repeated,
        }
        print(json.dumps(document, indent=2))
        return
    for stream in log.streams:
        state = result.streams[stream]
        if state.broken is None:
            signed = (
                f", last signed checkpoint at seq {state.last_checkpoint.seq}"
                if state.last_checkpoint is not None
                else ", no signed checkpoint"
            )
            print(
                f"{stream}: {state.records} records, "
                f"head {stream}={state.last_seq}:{state.last_hash}{signed}"
            )
        else:
            print(f"{stream}: BROKEN at {state.broken.describe()}")
    for problem in result.problems:
        if (
            problem.stream not in log.streams
            or problem is not result.streams[problem.stream].broken
        ):
            print(f"BROKEN: {problem.describe()}")
    if result.unchained:
        print(f"{result.unchained} records from before the chain began (not vouched for)")
    if result.repeated:
        print(f"{result.repeated} line(s) repeating an earlier line exactly, read once")
    if result.checkpoints:
        source = "the certificates given" if result.roots_from == "given" else result.roots_from
        print(f"{result.checkpoints} checkpoint(s), held to the root(s) of {source}:")
        for root in result.roots:
            print(f"  {root}")
        if result.roots_from == "the bundle":
            print("  compare that root with one known from elsewhere: a bundle vouches for itself")
    print("OK: every record and every link verified" if result.ok else "FAILED")


@contextlib.contextmanager
def _checkpointer(
    config: SluisConfig, log: Log = TXLOG, database: str | None = None
) -> Iterator[tuple[Engine, Checkpointer]]:
    """The store of ``config`` (``database``: another than its transaction log's) and a
    checkpointer of ``log`` signing with its organisation key."""
    # A SoftHSM appliance names its own token store; the module reads it when first loaded.
    os.environ.update(config.hsm.environment())
    from appliance.hsm.signer import Pkcs11Signer  # loads the PKCS#11 module: only here

    certificates = organisation_certificates(config.tls.certificate_chain, config.tls.trust_anchors)
    engine = create_engine(database or _txlog_database(config))
    try:
        with Pkcs11Signer(config.hsm) as signer:
            yield engine, Checkpointer(engine, signer, certificates.all[0], certificates, log)
    finally:
        engine.dispose()


def rotation_checkpoints(config: SluisConfig) -> list[str]:
    """A checkpoint (reason ``rotation``) of each stream of each log ``config`` names (the
    transaction log of ``[txlog]``, the audit log of ``[controller]``), signed with the key and
    certificate still live, before ``sluis pki install-cert`` replaces them; a line for each,
    and for a log not there (no database or table yet: nothing to vouch for).
    :class:`CheckpointError` when one cannot be signed (also when its store cannot be read)."""
    from appliance.controller.auditlog import AUDIT

    logs: list[tuple[Log, str]] = []
    if config.txlog is not None:
        logs.append((TXLOG, config.txlog.database))
    if config.controller is not None:
        logs.append((AUDIT, config.controller.database))
    lines = []
    for log, database in logs:
        if not _present(log, database):
            lines.append(f"{log.name}: nothing to sign (no {log.records.name} table yet)")
            continue
        try:
            with _checkpointer(config, log, database) as (_, checkpointer):
                made = checkpointer.checkpoint("rotation")
        except KeyMismatchError:
            # A re-key switch names the new key in [hsm] before the new certificate is live:
            # the old key is not known here; the checkpoint service signs with it when the
            # role restarts it (reason shutdown).
            lines.append(
                f"{log.name}: not signed here: [hsm] key_label names another key than the "
                "live certificate's (a re-key switch)"
            )
            continue
        except CheckpointError:
            raise
        except Exception as exc:  # the store, the token: say which log and what
            raise CheckpointError(f"{log.name}: {type(exc).__name__}: {exc}") from None
        lines.extend(f"signed {log.name} {c.describe()}: {c.stream}={c.seq}:{c.head}" for c in made)
        if not made:
            lines.append(f"{log.name}: every head signed already")
    return lines


def _present(log: Log, database: str) -> bool:
    """Whether ``database`` holds ``log`` (an SQLite file is not made by asking)."""
    url = make_url(database)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return False
    engine = create_engine(database)
    try:
        inspector = sa.inspect(engine)
        return inspector.has_table(log.records.name) and inspector.has_table(log.checkpoints.name)
    finally:
        engine.dispose()


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    certificates = organisation_certificates(config.tls.certificate_chain, config.tls.trust_anchors)
    engine = create_engine(_txlog_database(config))
    try:
        found = integrity(
            engine, certificates, max_unsigned_age=timedelta(minutes=args.max_unsigned_minutes)
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([stream.to_json() for stream in found], indent=2))
    for stream in [] if args.json else found:
        signed = stream.checkpoint
        where = (
            f"last signed {signed.describe()} at seq {signed.seq}"
            if signed is not None
            else "no signed checkpoint"
        )
        state = "OK" if stream.ok else f"PROBLEM: {stream.problem}"
        print(
            f"{stream.stream}: head seq {stream.head_seq}, {where}, "
            f"{stream.unsigned} after it: {state}"
        )
    return 0 if all(stream.ok for stream in found) else 1


def _checkpoint(args: argparse.Namespace) -> int:
    return checkpoint_log(args, TXLOG, None)


def checkpoint_log(args: argparse.Namespace, log: Log, database: Database | None) -> int:
    """``checkpoint`` of ``log`` (in ``database(args)``, else the transaction log's store)."""
    stop = threading.Event()
    config = load_config(args.config)
    url = database(args) if database is not None else None
    with _checkpointer(config, log, url) as (_, checkpointer):
        if args.interval is None:
            return _sign(checkpointer, args.reason, as_json=args.json)

        def stopping(_signal: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, stopping)
        signal.signal(signal.SIGINT, stopping)
        print(f"checkpoint service: signing every {args.interval:g} s", flush=True)
        while not stop.wait(args.interval):
            _sign(checkpointer, "interval", as_json=args.json)
        return _sign(checkpointer, "shutdown", as_json=args.json)


def _export_bundle(args: argparse.Namespace) -> int:
    return bundle_log(args, TXLOG, _database)


def bundle_log(args: argparse.Namespace, log: Log, database: Database) -> int:
    """``export-bundle`` of ``log`` in ``database(args)``."""
    certificates = _certificates(args)
    if certificates is None:
        raise ConfigurationError("give --certificates (or --config): the bundle carries them")
    engine = create_engine(database(args))
    try:
        result = export_bundle(
            engine, args.output, certificates, purpose=getattr(args, "purpose", False), log=log
        )
    finally:
        engine.dispose()
    document = {"records": result.exported, "checkpoints": result.checkpoints}
    if args.json:
        print(json.dumps(document))
    else:
        print(
            f"wrote {args.output}: {result.exported} record(s), {result.checkpoints} "
            f"checkpoint(s), {len(certificates.all)} certificate(s)"
        )
    return 0


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _purge(args: argparse.Namespace) -> int:
    with _checkpointer(load_config(args.config)) as (engine, checkpointer):
        try:
            result = purge(engine, checkpointer, args.before)
        except CheckpointError as exc:
            print(f"nothing purged: {exc}", file=sys.stderr)
            return 1
    if args.json:
        document = {
            "deleted": result.deleted,
            "cuts": result.cuts,
            "checkpoints": [checkpoint.to_json() for checkpoint in result.checkpoints],
        }
        print(json.dumps(document))
    else:
        cut = ", ".join(f"{stream} up to seq {seq}" for stream, seq in sorted(result.cuts.items()))
        print(f"deleted {result.deleted} record(s){': ' + cut if cut else ''}")
    return 0


def _sign(checkpointer: Checkpointer, reason: str, *, as_json: bool) -> int:
    try:
        made = checkpointer.checkpoint(reason)
    except CheckpointError as exc:
        print(f"checkpoint FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    if as_json:
        print(json.dumps([checkpoint.to_json() for checkpoint in made]), flush=True)
    else:
        for checkpoint in made:
            print(
                f"signed {checkpoint.describe()}: "
                f"{checkpoint.stream}={checkpoint.seq}:{checkpoint.head}",
                flush=True,
            )
        if not made:
            print("nothing new to sign", flush=True)
    return 0
