"""The transaction log as the inway sees it: the record, the writer protocol, the request id.

FSC Logging, "Inway": a record for each request for a Service, written *before* the request is
forwarded, with the ``Fsc-Transaction-Id`` the Outway chose; if the record cannot be written
the request is denied (``TRANSACTION_LOG_WRITE_ERROR``). The durable transaction log lives in
``appliance.txlog``; the inway only needs something with ``async write(record)`` that raises
when the record is not stored.

``[inway] transaction_log`` chooses the writer:

- ``"package.module:factory"``: ``factory(config: SluisConfig) -> LogWriter``, called once per
  worker (the durable txlog plugs in here);
- ``"jsonl:/path/file.jsonl"``: :class:`JsonLinesLogWriter`, FOR TESTS ONLY (no fsync, no
  tamper evidence, no retention);
- empty: the inway refuses to start, since it could not log a single request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from appliance.config import SluisConfig
from appliance.errors import ConfigurationError
from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.inway.tokens import AccessToken
from appliance.txlog.writers import JsonLinesFile, writer_from_spec

log = logging.getLogger("sluis.inway")

TRANSACTION_ID_HEADER = "Fsc-Transaction-Id"
# The FSC Profile decides the format; Sluis accepts an RFC 9562 UUID (versions 1 to 8, the
# RFC variant; so not the nil or max UUID) in its 8-4-4-4-12 text form, since other outways
# may send v4, and generates UUIDv7 itself (READING.md item 10). appliance.txlog's
# parse_transaction_id(any_version=True) accepts the same set.
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
)


@runtime_checkable
class LogWriter(Protocol):
    """Stores one transaction log record durably, or raises."""

    async def write(self, record: dict[str, Any]) -> None: ...


LogWriterFactory = Callable[[SluisConfig], LogWriter]


def transaction_id(value: str | None) -> str:
    """The request's transaction id, unchanged, or the logging extension's 400 error."""
    if value is None or not value.strip():
        raise InwayError(
            InwayErrorCode.MISSING_LOG_RECORD_ID, "the Fsc-Transaction-Id header is missing"
        )
    if not _UUID.fullmatch(value):
        raise InwayError(
            InwayErrorCode.INVALID_LOG_RECORD_ID,
            "the Fsc-Transaction-Id header is not an RFC 9562 UUID (like a UUIDv7)",
        )
    return value


def log_record(token: AccessToken, transaction: str, *, now: float | None = None) -> dict[str, Any]:
    """The record of logging.yaml ``logRecord`` for an incoming request (Logging "Log record").

    ``created_at`` is Unix seconds with their fraction: the durable log keeps the microseconds,
    as it does for the outway's records (the API shows whole seconds).
    """
    source: dict[str, Any] = {"type": "SOURCE_TYPE_SOURCE", "outway_peer_id": token.subject}
    if token.delegator is not None:
        # READING.md item 5: the delegator is act.sub (the extension's cdi is not in Core).
        source = {
            "type": "SOURCE_TYPE_DELEGATED_SOURCE",
            "outway_peer_id": token.subject,
            "delegator_peer_id": token.delegator,
        }
    destination: dict[str, Any] = {
        "type": "DESTINATION_TYPE_DESTINATION",
        "service_peer_id": token.issuer,
    }
    if token.service_delegator is not None:
        destination = {
            "type": "DESTINATION_TYPE_DELEGATED_DESTINATION",
            "service_peer_id": token.issuer,
            "delegator_peer_id": token.service_delegator,
        }
    return {
        "transaction_id": transaction,
        "direction": "DIRECTION_INCOMING",
        "grant_hash": token.grant_hash,
        "source": source,
        "destination": destination,
        "service_name": token.service,
        "created_at": time.time() if now is None else now,
    }


class MemoryLogWriter:
    """Keeps records in a list. Tests only."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))


# The inway hands its writer the record as a dict: the plain JSON lines file fits as it is.
JsonLinesLogWriter = JsonLinesFile


def load_log_writer(spec: str, config: SluisConfig) -> LogWriter:
    """The writer ``[inway] transaction_log`` names (see the module docstring)."""
    spec = spec.strip()
    if not spec:
        raise ConfigurationError(
            "[inway] transaction_log is not set: the inway must write a transaction log record "
            "before it forwards a request, so it does not start without one"
        )
    writer: LogWriter = writer_from_spec(
        spec, config, section="inway", json_lines=JsonLinesLogWriter, protocol=LogWriter
    )
    return writer
