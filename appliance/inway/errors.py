"""The Inway's errors in the FSC format (domain ``ERROR_DOMAIN_INWAY``).

Core "Inway" > "Error response" assigns the status of each code; the logging extension adds
three codes without the ``ERROR_CODE_`` prefix (READING.md item 6: as the extension spells
them). ``ERROR_CODE_INVALID_PATH``, ``ERROR_CODE_SERVICE_BUSY`` and the inway's
``ERROR_CODE_METHOD_UNSUPPORTED`` are Sluis' own: the specification has no code for a request
path the Inway refuses to forward (dot segments, encoded slashes), for a service with as many
requests in flight as its share allows (503 with ``Retry-After``; FSC has no 503 code), nor
for CONNECT, which a reverse proxy cannot forward (the code is the one Core gives the Outway
for CONNECT).
"""

from __future__ import annotations

from enum import StrEnum

import falcon

from appliance.forwarding.limits import RETRY_AFTER_SECONDS
from appliance.serving.fsc_errors import ErrorDomain, FscError
from appliance.serving.wire import WireErrors

# What the listener answers itself (bad or slow request heads: appliance.serving.wire).
WIRE_ERRORS = WireErrors(str(ErrorDomain.INWAY))


class InwayErrorCode(StrEnum):
    # S105: error codes that mention tokens, not secrets.
    ACCESS_TOKEN_MISSING = "ERROR_CODE_ACCESS_TOKEN_MISSING"  # noqa: S105
    ACCESS_TOKEN_INVALID = "ERROR_CODE_ACCESS_TOKEN_INVALID"  # noqa: S105
    ACCESS_TOKEN_EXPIRED = "ERROR_CODE_ACCESS_TOKEN_EXPIRED"  # noqa: S105
    WRONG_GROUP_ID_IN_TOKEN = "ERROR_CODE_WRONG_GROUP_ID_IN_TOKEN"  # noqa: S105
    SERVICE_NOT_FOUND = "ERROR_CODE_SERVICE_NOT_FOUND"
    SERVICE_UNREACHABLE = "ERROR_CODE_SERVICE_UNREACHABLE"
    # FSC Logging extension
    TRANSACTION_LOG_WRITE_ERROR = "TRANSACTION_LOG_WRITE_ERROR"
    INVALID_LOG_RECORD_ID = "INVALID_LOG_RECORD_ID"
    MISSING_LOG_RECORD_ID = "MISSING_LOG_RECORD_ID"
    # Sluis
    INVALID_PATH = "ERROR_CODE_INVALID_PATH"
    METHOD_UNSUPPORTED = "ERROR_CODE_METHOD_UNSUPPORTED"
    SERVICE_BUSY = "ERROR_CODE_SERVICE_BUSY"


STATUS: dict[InwayErrorCode, str] = {
    InwayErrorCode.ACCESS_TOKEN_MISSING: falcon.HTTP_401,
    InwayErrorCode.ACCESS_TOKEN_INVALID: falcon.HTTP_401,
    InwayErrorCode.ACCESS_TOKEN_EXPIRED: falcon.HTTP_401,
    InwayErrorCode.WRONG_GROUP_ID_IN_TOKEN: falcon.HTTP_403,
    InwayErrorCode.SERVICE_NOT_FOUND: falcon.HTTP_404,
    InwayErrorCode.SERVICE_UNREACHABLE: falcon.HTTP_502,
    InwayErrorCode.TRANSACTION_LOG_WRITE_ERROR: falcon.HTTP_500,
    InwayErrorCode.INVALID_LOG_RECORD_ID: falcon.HTTP_400,
    InwayErrorCode.MISSING_LOG_RECORD_ID: falcon.HTTP_400,
    InwayErrorCode.INVALID_PATH: falcon.HTTP_400,
    InwayErrorCode.METHOD_UNSUPPORTED: falcon.HTTP_405,
    InwayErrorCode.SERVICE_BUSY: falcon.HTTP_503,
}

# "In this scenario the HTTP header WWW-Authenticate MUST be set to Bearer".
_BEARER = frozenset(
    {
        InwayErrorCode.ACCESS_TOKEN_MISSING,
        InwayErrorCode.ACCESS_TOKEN_INVALID,
        InwayErrorCode.ACCESS_TOKEN_EXPIRED,
    }
)


class InwayError(FscError):
    """An FSC error of the Inway, with the status the specification assigns to its code."""

    def __init__(self, code: InwayErrorCode, message: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if code in _BEARER else None
        if code is InwayErrorCode.SERVICE_BUSY:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        super().__init__(STATUS[code], code.value, ErrorDomain.INWAY, message, headers=headers)
        self.inway_code = code

    def __str__(self) -> str:
        return f"{self.fsc_code}: {self.message}"
