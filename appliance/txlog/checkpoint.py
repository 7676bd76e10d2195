"""Signed checkpoints: the head of each stream, signed in the HSM with the organisation key.

For every chained log alike (:class:`appliance.txlog.chain.Log`: the transaction log, the
controller's audit log); each log has its own checkpoint table and ``type``
(``sluis-txlog-checkpoint``, ``sluis-audit-checkpoint``).

The hash chain alone cannot show that the last records of a stream were deleted, or that the
whole chain was recomputed after a change: whoever owns the database can do both. A
checkpoint is the head of one stream (its last ``chain_seq`` and that record's hash) signed
with the organisation key, which never leaves the HSM, so nobody can make one afterwards for
a chain that was changed. :func:`verify` (``chain.py``) then holds every later state of the
store to every valid checkpoint: the record at its seq must hash to its head, and a stream
that ends before a checkpoint's seq had its tail cut.

A checkpoint is a compact JWS (RFC 7515, :mod:`appliance.hsm.jws`, the contracts' signing)
with the protected header ``{"alg", "x5t#S256"}`` (the thumbprint of the organisation
certificate) over the JCS (RFC 8785) of::

    {"v": 1, "type": "sluis-txlog-checkpoint", "stream": "DIRECTION_OUTGOING",
     "seq": 1042, "head": "<64 hex digits>", "signed_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",
     "reason": "interval" | "shutdown" | "rotation" | "purge" | "manual"}

Before it signs, :class:`Checkpointer` verifies the records added since the stream's last
checkpoint (from that checkpoint's head), so the appliance never vouches for a chain that is
already broken. A stream without a record is not checkpointed; a head already checkpointed
is not signed again.

Verification (:func:`verify_checkpoint`) needs the organisation's certificates only: the
certificate named by ``x5t#S256`` must be among them, chain to a root among them, be valid at
``signed_at``, and its key must verify the signature. Nothing is fetched (no CRL: a
checkpoint proves what the key signed then, and a revoked certificate is a question for the
auditor, who sees which certificate signed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from sqlalchemy.engine import Engine

from appliance.errors import SluisError
from appliance.hsm.jws import SUPPORTED_ALGORITHMS, JwsError, parse_compact, sign_compact
from appliance.hsm.jws import verify_signature as verify_jws
from appliance.hsm.signer import Signer
from appliance.jcs import JcsError, canonicalize, loads
from appliance.tls.peer import certificate_thumbprint
from appliance.txlog import chain
from appliance.txlog.chain import TXLOG, Log
from appliance.txlog.database import reading

log = logging.getLogger("sluis.txlog")

FORMAT = 1
TYPE = TXLOG.checkpoint_type
REASONS = ("interval", "shutdown", "rotation", "purge", "manual")


class CheckpointError(SluisError):
    """A checkpoint that does not verify, or one that cannot be made."""


class KeyMismatchError(CheckpointError):
    """The signing key is not the key of the organisation certificate given."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed head. ``id``: the row (None before it is stored)."""

    stream: str
    seq: int
    head: str
    signed_at: datetime
    reason: str
    jws: str
    id: int | None = None

    def describe(self) -> str:
        number = f" {self.id}" if self.id is not None else ""
        return f"checkpoint{number} (signed {chain.timestamp(self.signed_at)}, {self.reason})"

    def to_json(self) -> dict[str, Any]:
        """The export's line (``checkpoint_id`` marks it apart from a record's ``log_id``)."""
        return {
            "checkpoint_id": self.id,
            "stream": self.stream,
            "seq": self.seq,
            "head": self.head,
            "signed_at": chain.timestamp(self.signed_at),
            "reason": self.reason,
            "jws": self.jws,
        }

    def line(self) -> str:
        """The export's line, without the newline."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint:
        """From an export's line; KeyError, TypeError or ValueError when it is not one."""
        return cls(
            stream=str(document["stream"]),
            seq=int(document["seq"]),
            head=str(document["head"]),
            signed_at=datetime.fromisoformat(str(document["signed_at"]).replace("Z", "+00:00")),
            reason=str(document["reason"]),
            jws=str(document["jws"]),
            id=int(document["checkpoint_id"]) if document["checkpoint_id"] is not None else None,
        )


def payload(
    stream: str, seq: int, head: str, signed_at: datetime, reason: str, kind: str = TYPE
) -> bytes:
    return canonicalize(
        {
            "v": FORMAT,
            "type": kind,
            "stream": stream,
            "seq": seq,
            "head": head,
            "signed_at": chain.timestamp(signed_at),
            "reason": reason,
        }
    )


def sign(
    signer: Signer,
    certificate: x509.Certificate,
    stream: str,
    seq: int,
    head: str,
    reason: str,
    signed_at: datetime | None = None,
    log: Log = TXLOG,
) -> Checkpoint:
    """A checkpoint of ``stream`` of ``log`` at ``seq`` with ``head``, signed by ``signer``
    (in the HSM)."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    if certificate.public_key() != signer.public_key():
        raise KeyMismatchError("the organisation certificate does not belong to the signing key")
    moment = (signed_at or datetime.now(UTC)).astimezone(UTC)
    header = {"x5t#S256": certificate_thumbprint(certificate.public_bytes(Encoding.DER))}
    signed = payload(stream, seq, head, moment, reason, log.checkpoint_type)
    jws = sign_compact(signer, signed, header)
    return Checkpoint(stream, seq, head, moment, reason, jws)


# --- the organisation's certificates --------------------------------------------------------------


class Certificates:
    """The certificates an auditor trusts: organisation certificates (every one that signed,
    after rotations), their intermediates and the root(s). Self-signed ones are the roots."""

    def __init__(self, certificates: Iterable[x509.Certificate]) -> None:
        self.all: list[x509.Certificate] = []
        seen: set[str] = set()
        for certificate in certificates:
            thumbprint = certificate_thumbprint(certificate.public_bytes(Encoding.DER))
            if thumbprint not in seen:
                seen.add(thumbprint)
                self.all.append(certificate)
        self._by_thumbprint = {
            certificate_thumbprint(c.public_bytes(Encoding.DER)): c for c in self.all
        }
        self.roots = [c for c in self.all if c.issuer == c.subject]
        self.others = [c for c in self.all if c.issuer != c.subject]

    @classmethod
    def from_pem_files(cls, paths: Sequence[Path]) -> Certificates:
        found: list[x509.Certificate] = []
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as exc:  # a wrong path is the caller's mistake, said, not a traceback
                raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
            try:
                found.extend(x509.load_pem_x509_certificates(data))
            except ValueError:
                raise CheckpointError(f"{path}: no readable PEM certificate") from None
        return cls(found)

    def by_thumbprint(self, thumbprint: str) -> x509.Certificate | None:
        return self._by_thumbprint.get(thumbprint)

    def pems(self) -> list[bytes]:
        return [c.public_bytes(Encoding.PEM) for c in self.all]

    def pem(self) -> bytes:
        return b"".join(self.pems())

    def describe_roots(self) -> list[str]:
        """Each root as an auditor compares it with one known from elsewhere."""
        return [
            f"{root.subject.rfc4514_string()} (SHA-256 "
            f"{root.fingerprint(hashes.SHA256()).hex(':').upper()})"
            for root in self.roots
        ]


def organisation_certificates(chain_file: Path, trust_anchors: Path | None) -> Certificates:
    """The appliance's own: the live chain (its leaf first), every chain imported before it
    (``archive/`` beside the live link, see :mod:`appliance.hsm.certs`) and the trust anchors."""
    archive = sorted((chain_file.parent / "archive").glob("*.pem"))
    files = [chain_file, *archive, *([trust_anchors] if trust_anchors is not None else [])]
    return Certificates.from_pem_files(files)


def verify_checkpoint(
    checkpoint: Checkpoint, certificates: Certificates, log: Log = TXLOG
) -> x509.Certificate:
    """Check ``checkpoint``'s signature and that its stored fields are what was signed (a
    checkpoint of ``log``); the certificate that signed it, or :class:`CheckpointError`
    saying what is wrong."""
    try:
        parsed = parse_compact(checkpoint.jws, algorithms=SUPPORTED_ALGORITHMS)
    except JwsError as exc:
        raise CheckpointError(f"not a signed checkpoint: {exc}") from None
    thumbprint = parsed.header.get("x5t#S256")
    leaf = certificates.by_thumbprint(thumbprint) if isinstance(thumbprint, str) else None
    if leaf is None:
        raise CheckpointError(
            f"signed with a certificate that is not among the organisation's (x5t#S256 "
            f"{thumbprint!r}): replaced, or signed with another key"
        )
    subject = leaf.subject.rfc4514_string()
    try:
        verify_jws(parsed, leaf.public_key())
    except JwsError as exc:
        raise CheckpointError(
            f"the signature does not verify with certificate {subject} ({exc}): signed with "
            "another key, or changed"
        ) from None
    try:
        document = loads(parsed.payload)
    except JcsError as exc:
        raise CheckpointError(f"the signed payload is not JSON: {exc}") from None
    signed = (
        document.get("v"),
        document.get("type"),
        document.get("stream"),
        document.get("seq"),
        document.get("head"),
        document.get("signed_at"),
    )
    stored = (
        FORMAT,
        log.checkpoint_type,
        checkpoint.stream,
        checkpoint.seq,
        checkpoint.head,
        chain.timestamp(checkpoint.signed_at),
    )
    if signed != stored:
        raise CheckpointError(
            f"the stored checkpoint is not what was signed (signed: {document.get('stream')} "
            f"seq {document.get('seq')} head {str(document.get('head'))[:16]}..., at "
            f"{document.get('signed_at')}): changed"
        )
    if not certificates.roots:
        raise CheckpointError("no root certificate among the organisation's certificates")
    verifier = (
        PolicyBuilder()
        .store(Store(certificates.roots))
        .time(checkpoint.signed_at.astimezone(UTC))
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, certificates.others)
    except VerificationError as exc:
        raise CheckpointError(
            f"certificate {subject} does not chain to the organisation's root, or was not "
            f"valid at {chain.timestamp(checkpoint.signed_at)}: {exc}"
        ) from None
    return leaf


# --- the store ----------------------------------------------------------------------------------


def stored(engine: Engine, log: Log = TXLOG, *, after: int = 0) -> list[Checkpoint]:
    """Every checkpoint of ``log`` in the store with an id above ``after``, per stream in seq
    order (the export asks only for those after its cursor, not the whole table every run)."""
    c = log.checkpoints.c
    query = sa.select(log.checkpoints).where(c.id > after).order_by(c.stream, c.seq, c.id)
    with reading(engine).connect() as connection:
        rows = connection.execute(query).all()
    return [
        Checkpoint(
            stream=row.stream,
            seq=int(row.seq),
            head=row.head,
            signed_at=row.signed_at,
            reason=row.reason,
            jws=row.jws,
            id=int(row.id),
        )
        for row in rows
    ]


def _records(
    engine: Engine, log: Log, stream: str, after: int, upto: int | None
) -> list[dict[str, Any]]:
    c = log.records.c
    query = sa.select(log.records).where(c.chain_seq > after)
    if log.stream_column is not None:
        query = query.where(c[log.stream_column] == stream)
    if upto is not None:
        query = query.where(c.chain_seq <= upto)
    with reading(engine).connect() as connection:
        rows = connection.execute(query.order_by(c.chain_seq))
        return [dict(row._mapping) for row in rows]


class Checkpointer:
    """Signs the heads of a store's streams of ``log`` with the organisation key (``sluis
    txlog checkpoint``, its service mode, the purge; ``sluis controller audit checkpoint``).

    ``certificates``: the organisation's (with every earlier certificate that signed, and the
    root), to check the last checkpoint before building on it.
    """

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        certificate: x509.Certificate,
        certificates: Certificates,
        log: Log = TXLOG,
    ) -> None:
        if certificate.public_key() != signer.public_key():
            raise KeyMismatchError(
                "the organisation certificate does not belong to the signing key"
            )
        self._engine = engine
        self.log = log
        self._signer = signer
        self._certificate = certificate
        self._certificates = Certificates([certificate, *certificates.all])

    def _base(self, stream: str, seq: int) -> Checkpoint | None:
        """The stream's last checkpoint at or below ``seq``, checked (CheckpointError if bad)."""
        c = self.log.checkpoints.c
        with reading(self._engine).connect() as connection:
            row = connection.execute(
                sa.select(self.log.checkpoints)
                .where(c.stream == stream, c.seq <= seq)
                .order_by(c.seq.desc(), c.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        base = Checkpoint(
            row.stream, int(row.seq), row.head, row.signed_at, row.reason, row.jws, int(row.id)
        )
        try:
            verify_checkpoint(base, self._certificates, self.log)
        except CheckpointError as exc:
            raise CheckpointError(
                f"not signed: the last {base.describe()} of {stream} does not verify: {exc}"
            ) from None
        return base

    def heads(self) -> dict[str, int]:
        """Each stream's last ``chain_seq`` (streams without a record left out)."""
        c = self.log.records.c
        stream = (
            c[self.log.stream_column]
            if self.log.stream_column
            else sa.literal(self.log.streams[0], sa.String())
        )
        with reading(self._engine).connect() as connection:
            rows = connection.execute(
                sa.select(stream, sa.func.max(c.chain_seq))
                .where(c.chain_seq.is_not(None))
                .group_by(stream)
            )
            return {str(name): int(seq) for name, seq in rows if seq is not None}

    def sign_at(
        self, stream: str, seq: int, reason: str, *, now: datetime | None = None
    ) -> Checkpoint | None:
        """Sign (and store) the record at ``seq`` of ``stream`` as a checkpoint, after checking
        the records up to it from the last checkpoint below; None when one stands there
        already. :class:`CheckpointError` when they do not verify (nothing is signed)."""
        base = self._base(stream, seq)
        if base is not None and base.seq == seq:
            return None
        start = (base.seq, base.head) if base is not None else None
        rows = _records(self._engine, self.log, stream, start[0] if start else 0, seq)
        result = chain.verify(rows, starts={stream: start} if start else None, log=self.log)
        state = result.streams[stream]
        if state.broken is not None:
            raise CheckpointError(
                f"not signed, the chain is broken since the last checkpoint: "
                f"{state.broken.describe()}"
            )
        if state.last_seq != seq:
            raise CheckpointError(f"not signed: {stream} has no record at seq {seq}")
        made = sign(
            self._signer, self._certificate, stream, seq, state.last_hash, reason, now, self.log
        )
        (stored_checkpoint,) = self._store([made])
        log.info(
            "%s checkpoint (%s): %s=%d:%s",
            self.log.name,
            reason,
            stream,
            seq,
            stored_checkpoint.head,
        )
        return stored_checkpoint

    def checkpoint(self, reason: str, *, now: datetime | None = None) -> list[Checkpoint]:
        """Sign each stream's head, when it moved since its last checkpoint.

        :class:`CheckpointError`, after signing the other streams, when the records of one since
        its last checkpoint do not verify (that stream is not signed).
        """
        made: list[Checkpoint] = []
        problems: list[str] = []
        for stream, seq in sorted(self.heads().items()):
            try:
                signed = self.sign_at(stream, seq, reason, now=now)
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            if signed is not None:
                made.append(signed)
        if problems:
            raise CheckpointError("; ".join(problems))
        return made

    def _store(self, made: list[Checkpoint]) -> list[Checkpoint]:
        result = []
        with self._engine.begin() as connection:
            for checkpoint in made:
                row_id = connection.execute(
                    sa.insert(self.log.checkpoints)
                    .values(
                        stream=checkpoint.stream,
                        seq=checkpoint.seq,
                        head=checkpoint.head,
                        signed_at=checkpoint.signed_at,
                        reason=checkpoint.reason,
                        jws=checkpoint.jws,
                    )
                    .returning(self.log.checkpoints.c.id)
                ).scalar_one()
                result.append(
                    Checkpoint(
                        checkpoint.stream,
                        checkpoint.seq,
                        checkpoint.head,
                        checkpoint.signed_at,
                        checkpoint.reason,
                        checkpoint.jws,
                        int(row_id),
                    )
                )
        return result
