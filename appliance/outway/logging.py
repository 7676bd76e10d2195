"""The outway's transaction log: the OUTGOING record, its writer, the purpose-binding headers.

FSC Logging, "Outway": a record for each request, written *before* the request is forwarded;
no record, no request (``TRANSACTION_LOG_WRITE_ERROR``). The outway chooses the
``Fsc-Transaction-Id`` (a UUIDv7), or checks the one the app sent, and returns it to the app.

``[outway] transaction_log`` chooses the writer (something with ``async write(LogRecord)``
that raises when the record is not stored):

- empty: the durable log of ``[txlog]`` (``appliance.txlog.gateway.open_log``);
- ``"package.module:factory"``: ``factory(config: SluisConfig) -> LogWriter``, once per worker;
- ``"jsonl:/path/file.jsonl"``: :class:`JsonLinesLogWriter`, FOR TESTS ONLY.

Purpose binding (AVG), Sluis' own request headers (the FSC specification names none, and the
Logboek dataverwerkingen standard names attributes of its log, not HTTP headers for them):

- ``traceparent`` (W3C Trace Context): its trace id goes into the record; an invalid one is
  ignored, as W3C says. It is forwarded (trace context is meant to propagate);
- ``Sluis-Processing-Activity``: the id of the processing activity in the organisation's
  register (an identifier: A-Z a-z 0-9 . _ ~ : / # @ + = -, at most 200);
- ``Sluis-Data-Subject``: the data subject's identifier (a BSN, a KvK number), stored only as
  a keyed pseudonym (``[txlog] pseudonym_key_file``), never as sent;
  ``Sluis-Data-Subject-Type`` (optional, ``bsn``, ``kvk``) keeps registers apart.

The last three are removed from the request to the other organisation unless
``[outway] forward_purpose_headers = true``. A malformed one is refused (400
``ERROR_CODE_INVALID_PURPOSE``); a data subject without a pseudonymisation key cannot be
logged as required, so that request is refused too (500 ``TRANSACTION_LOG_WRITE_ERROR``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from appliance.config import SluisConfig
from appliance.errors import ConfigurationError
from appliance.outway.errors import OutwayError, OutwayErrorCode
from appliance.statelog import FailureState
from appliance.txlog.errors import InvalidLogRecordError
from appliance.txlog.pseudonym import Pseudonymiser
from appliance.txlog.record import LogRecord, PurposeBinding, trace_id_from_traceparent
from appliance.txlog.writers import JsonLinesFile, writer_from_spec

log = logging.getLogger("sluis.outway")
# A missing key refuses every request that names a data subject: a configuration state, logged
# when it is first met and then counted once a minute (appliance.statelog), not per request.
_NO_PSEUDONYM_KEY = FailureState(
    log, "no pseudonymisation key", "requests refused", level=logging.ERROR
)

TRACEPARENT_HEADER = "traceparent"
PROCESSING_ACTIVITY_HEADER = "Sluis-Processing-Activity"
DATA_SUBJECT_HEADER = "Sluis-Data-Subject"
DATA_SUBJECT_TYPE_HEADER = "Sluis-Data-Subject-Type"
PURPOSE_HEADERS = frozenset(
    {
        PROCESSING_ACTIVITY_HEADER.lower(),
        DATA_SUBJECT_HEADER.lower(),
        DATA_SUBJECT_TYPE_HEADER.lower(),
    }
)
_KIND_MAX = 40


@runtime_checkable
class LogWriter(Protocol):
    """Stores one record durably, or raises (``appliance.txlog.TransactionLog`` is one)."""

    async def write(self, record: LogRecord) -> None: ...


LogWriterFactory = Callable[[SluisConfig], LogWriter]


def purpose_binding(
    get_header: Callable[[str], str | None], pseudonymiser: Pseudonymiser | None
) -> PurposeBinding:
    """The record's purpose fields from the request headers (see the module docstring)."""
    activity = get_header(PROCESSING_ACTIVITY_HEADER)
    subject = get_header(DATA_SUBJECT_HEADER)
    kind = (get_header(DATA_SUBJECT_TYPE_HEADER) or "").strip().lower()
    if kind and (len(kind) > _KIND_MAX or not kind.isascii() or not kind.isalnum()):
        raise OutwayError(
            OutwayErrorCode.INVALID_PURPOSE,
            f"{DATA_SUBJECT_TYPE_HEADER} must be a short name of letters and digits (bsn, kvk)",
        )
    pseudonym = None
    if subject is not None and subject.strip():
        if pseudonymiser is None:
            _NO_PSEUDONYM_KEY.failed("requests name a data subject, but no key is set")
            error = OutwayError(
                OutwayErrorCode.TRANSACTION_LOG_WRITE_ERROR,
                "the data subject cannot be logged (no pseudonymisation key configured); "
                "the request was not forwarded",
            )
            error.log_level = logging.DEBUG  # counted in the state's lines above
            raise error
        pseudonym = pseudonymiser.pseudonymise(subject, kind=kind)
    try:
        return PurposeBinding(
            processing_activity_id=activity.strip() if activity else None,
            trace_id=trace_id_from_traceparent(get_header(TRACEPARENT_HEADER)),
            data_subject_pseudonym=pseudonym,
        )
    except InvalidLogRecordError as exc:
        raise OutwayError(
            OutwayErrorCode.INVALID_PURPOSE, f"{PROCESSING_ACTIVITY_HEADER}: {exc}"
        ) from None


def load_pseudonymiser(config: SluisConfig) -> Pseudonymiser | None:
    if config.txlog is None or not config.txlog.pseudonym_key_file:
        return None
    return Pseudonymiser.from_key_file(config.txlog.pseudonym_key_file)


class MemoryLogWriter:
    """Keeps records in a list. Tests only."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    async def write(self, record: LogRecord) -> None:
        self.records.append(record)


class JsonLinesLogWriter:
    """One JSON line per record (the API form plus the purpose fields). Tests only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines = JsonLinesFile(path)

    async def write(self, record: LogRecord) -> None:
        data: dict[str, Any] = record.to_api()
        data["purpose"] = {
            "processing_activity_id": record.purpose.processing_activity_id,
            "trace_id": record.purpose.trace_id,
            "data_subject_pseudonym": record.purpose.data_subject_pseudonym,
        }
        await self._lines.write(data)

    def records(self) -> list[dict[str, Any]]:
        return self._lines.records()


def load_log_writer(spec: str, config: SluisConfig) -> LogWriter:
    """The writer ``[outway] transaction_log`` names (see the module docstring)."""
    spec = spec.strip()
    if not spec:
        if config.txlog is None:
            raise ConfigurationError(
                "[outway] transaction_log is not set and there is no [txlog] section: the "
                "outway must log every request before it forwards it, so it does not start"
            )
        from appliance.txlog.gateway import open_log

        return open_log(config)
    writer: LogWriter = writer_from_spec(
        spec, config, section="outway", json_lines=JsonLinesLogWriter, protocol=LogWriter
    )
    return writer
