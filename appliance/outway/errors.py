"""The Outway's errors in the FSC format (domain ``ERROR_DOMAIN_OUTWAY``), all in one place.

Core "Outway" > "Error response" defines one code (``ERROR_CODE_METHOD_UNSUPPORTED``); the
logging extension adds three (as logging.yaml spells them, without the prefix). The others are
Sluis' own (READING.md item 10: the specification leaves them open):

======================================  ====  ==================================================
code                                    HTTP  when
======================================  ====  ==================================================
``ERROR_CODE_METHOD_UNSUPPORTED``        405  CONNECT (Core)
``TRANSACTION_LOG_WRITE_ERROR``          500  the OUTGOING record was not stored; nothing sent
``INVALID_LOG_RECORD_ID``                400  the app's ``Fsc-Transaction-Id`` is no UUIDv7
``MISSING_LOG_RECORD_ID``                400  (not used: the outway makes one when it is absent)
``ERROR_CODE_GRANT_NOT_FOUND``           404  no valid connection grant for this outway matches
                                              the ``Fsc-Grant-Hash`` or ``/{peer-id}/{service}``
``ERROR_CODE_GRANT_AMBIGUOUS``           409  ``/{peer-id}/{service}`` matches several valid
                                              grants: the app must send ``Fsc-Grant-Hash``
``ERROR_CODE_INVALID_PATH``              400  no route in the path, or a path the inway would
                                              refuse (dot segments, encoded slashes)
``ERROR_CODE_INVALID_PURPOSE``           400  a malformed purpose-binding header
``ERROR_CODE_TOKEN_UNAVAILABLE``         502  the service peer's Manager gave no (usable)
                                              access token, or could not be reached
``ERROR_CODE_INWAY_UNREACHABLE``         502  the inway named in the token's ``aud`` could not
                                              be reached (or did not answer in time)
``ERROR_CODE_SERVICE_BUSY``              503  this inway and service have as many requests in
                                              flight as ``service_limit`` allows (with
                                              ``Retry-After``; FSC has no 503 code)
``ERROR_CODE_HSM_UNAVAILABLE``           503  the outway's own key (HSM token) cannot be used
                                              now: nothing was sent (``Retry-After``; the
                                              Manager's code for the same cause)
======================================  ====  ==================================================

Errors of the inway or the service are never one of these: they are passed back unaltered.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import falcon

from appliance.forwarding.limits import RETRY_AFTER_SECONDS
from appliance.serving.fsc_errors import ErrorDomain, FscError
from appliance.serving.wire import WireErrors

# What the listener answers itself (bad or slow request heads: appliance.serving.wire).
WIRE_ERRORS = WireErrors(str(ErrorDomain.OUTWAY))


class OutwayErrorCode(StrEnum):
    # Core
    METHOD_UNSUPPORTED = "ERROR_CODE_METHOD_UNSUPPORTED"
    # FSC Logging extension
    TRANSACTION_LOG_WRITE_ERROR = "TRANSACTION_LOG_WRITE_ERROR"
    INVALID_LOG_RECORD_ID = "INVALID_LOG_RECORD_ID"
    MISSING_LOG_RECORD_ID = "MISSING_LOG_RECORD_ID"
    # Sluis
    GRANT_NOT_FOUND = "ERROR_CODE_GRANT_NOT_FOUND"
    GRANT_AMBIGUOUS = "ERROR_CODE_GRANT_AMBIGUOUS"
    INVALID_PATH = "ERROR_CODE_INVALID_PATH"
    INVALID_PURPOSE = "ERROR_CODE_INVALID_PURPOSE"
    TOKEN_UNAVAILABLE = "ERROR_CODE_TOKEN_UNAVAILABLE"  # noqa: S105 (a code, not a secret)
    INWAY_UNREACHABLE = "ERROR_CODE_INWAY_UNREACHABLE"
    SERVICE_BUSY = "ERROR_CODE_SERVICE_BUSY"
    HSM_UNAVAILABLE = "ERROR_CODE_HSM_UNAVAILABLE"


STATUS: dict[OutwayErrorCode, str] = {
    OutwayErrorCode.METHOD_UNSUPPORTED: falcon.HTTP_405,
    OutwayErrorCode.TRANSACTION_LOG_WRITE_ERROR: falcon.HTTP_500,
    OutwayErrorCode.INVALID_LOG_RECORD_ID: falcon.HTTP_400,
    OutwayErrorCode.MISSING_LOG_RECORD_ID: falcon.HTTP_400,
    OutwayErrorCode.GRANT_NOT_FOUND: falcon.HTTP_404,
    OutwayErrorCode.GRANT_AMBIGUOUS: falcon.HTTP_409,
    OutwayErrorCode.INVALID_PATH: falcon.HTTP_400,
    OutwayErrorCode.INVALID_PURPOSE: falcon.HTTP_400,
    OutwayErrorCode.TOKEN_UNAVAILABLE: falcon.HTTP_502,
    OutwayErrorCode.INWAY_UNREACHABLE: falcon.HTTP_502,
    OutwayErrorCode.SERVICE_BUSY: falcon.HTTP_503,
    OutwayErrorCode.HSM_UNAVAILABLE: falcon.HTTP_503,
}
# The token's return and the process's replacement take seconds (appliance.hsm.watch).
HSM_RETRY_AFTER_SECONDS = 5


class OutwayError(FscError):
    """An FSC error of the Outway, with the status :data:`STATUS` assigns to its code."""

    def __init__(self, code: OutwayErrorCode, message: str) -> None:
        headers = None
        if code is OutwayErrorCode.SERVICE_BUSY:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        elif code is OutwayErrorCode.HSM_UNAVAILABLE:
            headers = {"Retry-After": str(HSM_RETRY_AFTER_SECONDS)}
        super().__init__(STATUS[code], code.value, ErrorDomain.OUTWAY, message, headers=headers)
        self.outway_code = code
        # The level of the line the outway logs for the refusal: lower where one line for many
        # refusals says it instead (a Manager outage, :mod:`appliance.outway.tokens`).
        self.log_level = logging.WARNING

    def __str__(self) -> str:
        return f"{self.fsc_code}: {self.message}"
