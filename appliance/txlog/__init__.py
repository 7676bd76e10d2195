"""The FSC transaction log: what both gateways write before they forward, and ``GET /logs``.

- :mod:`~appliance.txlog.record`: the record (logging.yaml ``logRecord``), UUIDv7 transaction
  ids, the local purpose-binding fields;
- :mod:`~appliance.txlog.pseudonym`: keyed pseudonyms for data subjects;
- :mod:`~appliance.txlog.store`: :class:`TransactionLog`, durable writes with group commit;
- :mod:`~appliance.txlog.errors`: the logging extension's error codes and exceptions;
- :mod:`~appliance.txlog.api`: the Manager's ``/v1/logs`` resource (imported on its own, so
  the gateways need not load Falcon resources they do not serve).

A gateway, per request::

    record = LogRecord.from_access_token(claims, direction=Direction.OUTGOING, purpose=purpose)
    try:
        await log.write(record)           # returns after the commit, raises otherwise
    except TransactionLogError as exc:
        raise fsc_error_for(exc, ErrorDomain.OUTWAY) from exc
    # forward, with Fsc-Transaction-Id: record.transaction_id
"""

from appliance.txlog.errors import (
    TRANSACTION_ID_HEADER,
    DuplicateTransactionError,
    InvalidLogRecordError,
    InvalidTransactionIdError,
    LogErrorCode,
    PseudonymKeyError,
    TransactionLogClosedError,
    TransactionLogError,
    TransactionLogWriteError,
    UnknownCursorError,
    fsc_error_for,
    invalid_transaction_id,
    missing_transaction_id,
    write_error,
)
from appliance.txlog.pseudonym import Pseudonymiser
from appliance.txlog.record import (
    Destination,
    Direction,
    LogRecord,
    PurposeBinding,
    Source,
    new_transaction_id,
    parse_transaction_id,
    trace_id_from_traceparent,
)
from appliance.txlog.store import TransactionLog, WriterStats

__all__ = [
    "TRANSACTION_ID_HEADER",
    "Destination",
    "Direction",
    "DuplicateTransactionError",
    "InvalidLogRecordError",
    "InvalidTransactionIdError",
    "LogErrorCode",
    "LogRecord",
    "PseudonymKeyError",
    "Pseudonymiser",
    "PurposeBinding",
    "Source",
    "TransactionLog",
    "TransactionLogClosedError",
    "TransactionLogError",
    "TransactionLogWriteError",
    "UnknownCursorError",
    "WriterStats",
    "fsc_error_for",
    "invalid_transaction_id",
    "missing_transaction_id",
    "new_transaction_id",
    "parse_transaction_id",
    "trace_id_from_traceparent",
    "write_error",
]
