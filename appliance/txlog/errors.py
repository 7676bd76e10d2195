"""Errors of the transaction log, and the FSC error responses the gateways answer with.

The logging extension adds three codes for the Inway and the Outway. logging.yaml and the
specification's tables spell them without the ``ERROR_CODE_`` prefix Core uses; Sluis follows
them as written (READING.md item 6):

==============================  ====  ==============================================
code                            HTTP  when
==============================  ====  ==============================================
``TRANSACTION_LOG_WRITE_ERROR``  500  the record could not be written (fail closed)
``INVALID_LOG_RECORD_ID``        400  the ``Fsc-Transaction-Id`` header is no UUIDv7
``MISSING_LOG_RECORD_ID``        400  the ``Fsc-Transaction-Id`` header is missing
==============================  ====  ==============================================

A gateway that catches :class:`TransactionLogError` and answers with :func:`fsc_error_for`
refuses every request whose record is not durably stored.
"""

from __future__ import annotations

from enum import StrEnum

import falcon

from appliance.errors import SluisError
from appliance.serving.fsc_errors import ErrorDomain, FscError

TRANSACTION_ID_HEADER = "Fsc-Transaction-Id"


class LogErrorCode(StrEnum):
    TRANSACTION_LOG_WRITE_ERROR = "TRANSACTION_LOG_WRITE_ERROR"
    INVALID_LOG_RECORD_ID = "INVALID_LOG_RECORD_ID"
    MISSING_LOG_RECORD_ID = "MISSING_LOG_RECORD_ID"


HTTP_STATUS: dict[LogErrorCode, str] = {
    LogErrorCode.TRANSACTION_LOG_WRITE_ERROR: falcon.HTTP_500,
    LogErrorCode.INVALID_LOG_RECORD_ID: falcon.HTTP_400,
    LogErrorCode.MISSING_LOG_RECORD_ID: falcon.HTTP_400,
}

_GATEWAY_DOMAINS = (ErrorDomain.INWAY, ErrorDomain.OUTWAY)


# --- exceptions -------------------------------------------------------------------------------


class TransactionLogError(SluisError):
    """Base of every transaction log error."""


class TransactionLogWriteError(TransactionLogError):
    """The record is not durably stored: the gateway must refuse the request."""


class DuplicateTransactionError(TransactionLogWriteError):
    """A record with this transaction id and direction is already stored."""

    def __init__(self, transaction_id: str, direction: str) -> None:
        super().__init__(
            f"a {direction} record with transaction id {transaction_id} is already logged"
        )
        self.transaction_id = transaction_id
        self.direction = direction


class TransactionLogClosedError(TransactionLogWriteError):
    """The transaction log was closed (or opened in another process before a fork)."""


class InvalidLogRecordError(TransactionLogError, ValueError):
    """A field of a log record is missing or not in the format logging.yaml requires."""


class InvalidTransactionIdError(InvalidLogRecordError):
    """An ``Fsc-Transaction-Id`` that is not a UUIDv7."""


class UnknownCursorError(TransactionLogError, ValueError):
    """A pagination cursor that this log did not hand out (the API answers 400)."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"unknown pagination cursor {cursor!r}")
        self.cursor = cursor


class PseudonymKeyError(SluisError):
    """The pseudonymisation key file is missing, unsafe or malformed."""


# --- FSC error responses for the gateways ----------------------------------------------------


def log_error(code: LogErrorCode, domain: ErrorDomain, message: str) -> FscError:
    """An FSC error for one of the logging extension's codes, with its HTTP status."""
    if domain not in _GATEWAY_DOMAINS:
        raise ValueError(f"the logging extension's codes belong to the gateways, not {domain}")
    return FscError(HTTP_STATUS[code], code.value, domain, message)


def write_error(domain: ErrorDomain, message: str | None = None) -> FscError:
    """500 ``TRANSACTION_LOG_WRITE_ERROR``: the record could not be written, nothing was sent."""
    return log_error(
        LogErrorCode.TRANSACTION_LOG_WRITE_ERROR,
        domain,
        message or "the transaction log record could not be written; the request was not sent",
    )


def missing_transaction_id(domain: ErrorDomain) -> FscError:
    """400 ``MISSING_LOG_RECORD_ID``: no ``Fsc-Transaction-Id`` header."""
    return log_error(
        LogErrorCode.MISSING_LOG_RECORD_ID,
        domain,
        f"the {TRANSACTION_ID_HEADER} header is missing",
    )


def invalid_transaction_id(domain: ErrorDomain, reason: str) -> FscError:
    """400 ``INVALID_LOG_RECORD_ID``: the ``Fsc-Transaction-Id`` header is not valid."""
    return log_error(
        LogErrorCode.INVALID_LOG_RECORD_ID,
        domain,
        f"the {TRANSACTION_ID_HEADER} header is not valid: {reason}",
    )


def fsc_error_for(exc: TransactionLogError, domain: ErrorDomain) -> FscError:
    """The answer to a request whose record could not be stored.

    A reused transaction id (:class:`DuplicateTransactionError`) and a malformed one are the
    caller's fault (400 ``INVALID_LOG_RECORD_ID``); every other failure is a 500
    ``TRANSACTION_LOG_WRITE_ERROR``. The message names no database detail.
    """
    if isinstance(exc, DuplicateTransactionError):
        return invalid_transaction_id(domain, "this transaction id was already used")
    if isinstance(exc, InvalidTransactionIdError):
        return invalid_transaction_id(domain, str(exc))
    return write_error(domain)
