"""Verifying a whole log offline: the records' chain and the signed checkpoints together.

The one place that reads a store (:func:`verify_engine`) or an export (:func:`verify_jsonl`,
the lines of ``sluis txlog export-jsonl`` and of an auditor's bundle) and hands both to
:func:`appliance.txlog.chain.verify`. Every checkpoint's signature is checked against the
organisation's certificates (:mod:`appliance.txlog.checkpoint`); a checkpoint that does not
verify is reported (where it is and why) and vouches for nothing; each valid one must match
the record at its seq, and a stream shorter than its last checkpoint had its tail cut.
Checkpoints without certificates to check them with are reported too: an auditor who forgot
the certificates must not read "OK".

The same for every chained log (``log``: :data:`appliance.txlog.chain.TXLOG` by default, or
the controller's audit log).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.engine import Engine

from appliance.txlog import chain
from appliance.txlog.chain import TXLOG, Anchor, Break, Log, Verification
from appliance.txlog.checkpoint import (
    Certificates,
    Checkpoint,
    CheckpointError,
    stored,
    verify_checkpoint,
)
from appliance.txlog.database import reading

_Head = tuple[int, str]


class BundleError(ValueError):
    """A line of a bundle is neither an exported record nor a checkpoint."""


def check_checkpoints(
    checkpoints: Iterable[Checkpoint], certificates: Certificates | None, log: Log = TXLOG
) -> tuple[list[Anchor], list[Break]]:
    """The anchors of the checkpoints that verify, and a problem for each one that does not."""
    anchors: list[Anchor] = []
    problems: list[Break] = []
    unchecked: list[Checkpoint] = []
    for checkpoint in checkpoints:
        if certificates is None:
            unchecked.append(checkpoint)
            continue
        try:
            verify_checkpoint(checkpoint, certificates, log)
        except CheckpointError as exc:
            problems.append(
                Break(checkpoint.stream, checkpoint.seq, None, None, str(exc), checkpoint.id)
            )
            continue
        anchors.append(
            Anchor(
                checkpoint.stream,
                checkpoint.seq,
                checkpoint.head,
                checkpoint.describe(),
                checkpoint.id,
                signed=True,
            )
        )
    if unchecked:
        first = unchecked[0]
        problems.append(
            Break(
                first.stream,
                first.seq,
                None,
                None,
                f"{len(unchecked)} signed checkpoint(s) not checked: give the organisation's "
                "certificates (--certificates, or --config)",
                first.id,
            )
        )
    return anchors, problems


def _combine(
    rows: Iterable[Mapping[Any, Any]],
    checkpoints: list[Checkpoint],
    certificates: Certificates | None,
    *,
    heads: Mapping[str, _Head] | None,
    starts: Mapping[str, _Head] | None,
    unchained: list[int],
    log: Log,
) -> Verification:
    anchors, problems = check_checkpoints(checkpoints, certificates, log)
    result = chain.verify(
        rows, heads=heads, starts=starts, unchained_ids=unchained, anchors=anchors, log=log
    )
    result.problems[:0] = problems  # the checkpoints first: they decide what the rest means
    result.checkpoints = len(checkpoints)
    if certificates is not None:
        result.roots = certificates.describe_roots()
        result.roots_from = "given"
    return result


def verify_engine(
    engine: Engine,
    *,
    heads: Mapping[str, _Head] | None = None,
    starts: Mapping[str, _Head] | None = None,
    certificates: Certificates | None = None,
    log: Log = TXLOG,
) -> Verification:
    """Verify ``log`` in the store behind ``engine`` (read only; one pass over the records)."""
    c = log.records.c
    checkpoints = stored(engine, log)
    order = (c[log.stream_column], c.chain_seq) if log.stream_column else (c.chain_seq,)
    with reading(engine).connect() as connection:
        unchained = [
            int(log_id)
            for (log_id,) in connection.execute(
                sa.select(c.id).where(c.chain_seq.is_(None)).order_by(c.id)
            )
        ]
        rows = connection.execution_options(yield_per=2000).execute(
            sa.select(log.records).where(c.chain_seq.is_not(None)).order_by(*order)
        )
        return _combine(
            (row._mapping for row in rows),
            checkpoints,
            certificates,
            heads=heads,
            starts=starts,
            unchained=unchained,
            log=log,
        )


@dataclass
class Bundle:
    """What an export or an auditor's bundle holds."""

    chained: list[dict[str, Any]] = field(default_factory=list)  # sorted per stream by seq
    unchained: list[int] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    certificates: Certificates | None = None  # an auditor's bundle carries them
    repeated: int = 0  # record or checkpoint lines that repeat an earlier line exactly


def read_jsonl(path: Path, log: Log = TXLOG) -> Bundle:
    """Read an export (``export-jsonl``'s lines) or an auditor's bundle (``export-bundle``).

    A record or checkpoint line equal to one read before is counted and skipped: the log
    shipper (RELP) may deliver a line again after a broken connection, and a copy adds nothing.
    A second line for the same place that differs in anything is kept and reported."""
    required = (
        *log.fields,
        log.moment,
        "chain_prev",
        *(("purpose_digest",) if log.purpose else ()),
    )
    chained: list[dict[str, Any]] = []
    unchained: list[int] = []
    checkpoints: list[Checkpoint] = []
    pems: list[x509.Certificate] = []
    seen: dict[tuple[str, int], dict[str, Any]] = {}  # (stream or "checkpoint", seq or id)
    repeated = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
                if not isinstance(document, dict):
                    raise TypeError("not an object")
                if "checkpoint_id" in document:
                    key = ("checkpoint", int(document["checkpoint_id"]))
                    if seen.get(key) == document:
                        repeated += 1
                        continue
                    seen.setdefault(key, document)
                    checkpoints.append(Checkpoint.from_json(document))
                    continue
                if "certificates" in document:
                    for pem in document["certificates"]:
                        pems.extend(x509.load_pem_x509_certificates(str(pem).encode("ascii")))
                    continue
                if document.get("chain_seq") is None:
                    unchained.append(int(document["log_id"]))
                    continue
                document["chain_seq"] = int(document["chain_seq"])
                for name in required:
                    if name not in document:
                        raise KeyError(name)
                key = (log.stream_of(document), document["chain_seq"])
            except (ValueError, TypeError, KeyError) as exc:
                raise BundleError(
                    f"{path} line {number}: not an exported record or checkpoint ({exc})"
                ) from None
            if seen.get(key) == document:
                repeated += 1
                continue
            seen.setdefault(key, document)
            chained.append(document)
    chained.sort(key=lambda document: (log.stream_of(document), document["chain_seq"]))
    checkpoints.sort(key=lambda cp: (cp.stream, cp.seq))
    return Bundle(
        chained,
        sorted(unchained),
        checkpoints,
        Certificates(pems) if pems else None,
        repeated,
    )


def verify_jsonl(
    path: Path,
    *,
    heads: Mapping[str, _Head] | None = None,
    starts: Mapping[str, _Head] | None = None,
    certificates: Certificates | None = None,
    log: Log = TXLOG,
) -> Verification:
    """Verify the records and checkpoints of an export, offline: held to the roots among
    ``certificates`` when given, else to those the bundle carries (reported, for the auditor to
    compare with one known from elsewhere)."""
    bundle = read_jsonl(path, log)
    if certificates is not None and bundle.certificates is not None:
        # The auditor's roots decide; the bundle's own certificates below a root may help to
        # reach them (they count only when they chain to a root given).
        certificates = Certificates([*certificates.all, *bundle.certificates.others])
    result = _combine(
        bundle.chained,
        bundle.checkpoints,
        certificates or bundle.certificates,
        heads=heads,
        starts=starts,
        unchained=bundle.unchained,
        log=log,
    )
    if certificates is None and bundle.certificates is not None:
        result.roots_from = "the bundle"
    result.repeated = bundle.repeated
    return result
