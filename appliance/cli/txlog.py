"""``sluis txlog``: the transaction log outside the Manager's API.

``sluis txlog export-jsonl`` appends the records not exported yet to a JSON-lines file, for a
log shipper (the logship role's rsyslog) to send to the collector; run it from a timer, or
with ``--interval`` as a service that exports every few seconds (the sluis role's). The
database comes from ``--database`` or the ``[txlog]`` section of ``--config``. See
:mod:`appliance.txlog.export` for what is written and why nothing is lost or written twice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from appliance.cli.groups import add_group, plain
from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.txlog.export import DEFAULT_BATCH, export_jsonl


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "txlog")
    commands = parser.add_subparsers(dest="txlog_command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export-jsonl",
        help="append the records not exported yet to a JSON-lines file",
        description=plain((__doc__ or "").split("\n\n")[1]),
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE", help="appliance configuration")
    source.add_argument("--database", metavar="URL", help="the transaction log's database URL")
    export.add_argument("--output", type=Path, required=True, metavar="FILE", help="JSON lines")
    export.add_argument(
        "--state",
        type=Path,
        required=True,
        metavar="FILE",
        help="the cursor file (the id of the last record exported)",
    )
    export.add_argument(
        "--purpose",
        action="store_true",
        help="also the processing activity, trace id and data-subject pseudonym",
    )
    export.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    export.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        metavar="S",
        help="export only records older than this (default: 0 on SQLite, 120 on PostgreSQL)",
    )
    export.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="keep running: export again every S seconds (a service instead of a timer)",
    )
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.database:
        database: str = args.database
    else:
        config = load_config(args.config)
        if config.txlog is None:
            raise ConfigurationError(f"{args.config}: no [txlog] section")
        database = config.txlog.database
    while True:
        result = export_jsonl(
            database,
            args.output,
            args.state,
            purpose=args.purpose,
            batch=args.batch,
            settle_seconds=args.settle_seconds,
        )
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
