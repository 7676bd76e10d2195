"""The controller's API errors, in the FSC error format used throughout Sluis.

``{"message": ..., "domain": "ERROR_DOMAIN_CONTROLLER", "code": ...}`` plus the code in the
``Fsc-Error-Code`` header (``appliance.serving.fsc_errors``). The codes are the controller's
own; the FSC specification defines none for an operators' API.
"""

from __future__ import annotations

import json
from enum import StrEnum

import falcon

from appliance.serving.fsc_errors import ErrorDomain, FscError
from appliance.serving.wire import WIRE_CODES, WireErrors

CONTROLLER_DOMAIN = "ERROR_DOMAIN_CONTROLLER"


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "ERROR_CODE_UNAUTHENTICATED"  # 401: no (live) session or token
    LOGIN_FAILED = "ERROR_CODE_LOGIN_FAILED"  # 401: wrong name/password, locked, disabled
    FORBIDDEN = "ERROR_CODE_FORBIDDEN"  # 403: the role does not allow it
    # 403: a state change without the session's CSRF token
    CSRF_TOKEN_INVALID = "ERROR_CODE_CSRF_TOKEN_INVALID"  # noqa: S105 (an error code)
    REQUEST_INVALID = "ERROR_CODE_REQUEST_INVALID"  # 400: malformed body or parameter
    NOT_FOUND = "ERROR_CODE_NOT_FOUND"  # 404
    METHOD_NOT_ALLOWED = "ERROR_CODE_METHOD_NOT_ALLOWED"  # 405
    CONFLICT = "ERROR_CODE_CONFLICT"  # 409: e.g. accepting a rejected contract
    CONTRACT_INVALID = "ERROR_CODE_CONTRACT_INVALID"  # 422: the Manager refused the contract
    REQUEST_TOO_LARGE = "ERROR_CODE_REQUEST_TOO_LARGE"  # 413: a body over the limit
    UNSUPPORTED_MEDIA_TYPE = "ERROR_CODE_UNSUPPORTED_MEDIA_TYPE"  # 415
    INTERNAL = "ERROR_CODE_INTERNAL"  # 500
    UNAVAILABLE = "ERROR_CODE_UNAVAILABLE"  # 503: the HSM or a database is not reachable


# What the listener answers itself (bad or slow request heads: appliance.serving.wire); the
# controller's clients know its 400 code, it has none of its own for the others.
WIRE_ERRORS = WireErrors(CONTROLLER_DOMAIN, {**WIRE_CODES, 400: str(ErrorCode.REQUEST_INVALID)})


class ControllerError(FscError):
    def __init__(
        self,
        status: str | int,
        code: ErrorCode | str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, str(code), ErrorDomain.MANAGER, message, headers)

    def body(self) -> bytes:
        return json.dumps(
            {"message": self.message, "domain": CONTROLLER_DOMAIN, "code": self.fsc_code}
        ).encode("utf-8")


def bad_request(message: str) -> ControllerError:
    return ControllerError(falcon.HTTP_400, ErrorCode.REQUEST_INVALID, message)


def too_large(message: str) -> ControllerError:
    # The rest of the body is not read: closing the connection spares the client sending it
    # (and the worker receiving it only to throw it away).
    return ControllerError(
        falcon.HTTP_413, ErrorCode.REQUEST_TOO_LARGE, message, headers={"Connection": "close"}
    )


def not_found(message: str) -> ControllerError:
    return ControllerError(falcon.HTTP_404, ErrorCode.NOT_FOUND, message)


def unauthenticated(message: str = "log in first, or send an API token") -> ControllerError:
    return ControllerError(
        falcon.HTTP_401,
        ErrorCode.UNAUTHENTICATED,
        message,
        headers={"WWW-Authenticate": 'Bearer realm="sluis-controller"'},
    )


def forbidden(message: str) -> ControllerError:
    return ControllerError(falcon.HTTP_403, ErrorCode.FORBIDDEN, message)
