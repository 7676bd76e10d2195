"""The Manager's HTTP errors, all in the FSC format (core "Error response", manager.yaml).

Every answer other than 2xx carries ``Fsc-Error-Code`` and ``{message, domain, code}`` with
domain ``ERROR_DOMAIN_MANAGER`` (``/token`` answers its OAuth errors in RFC 6749's format
itself), including what Falcon answers on its own: unknown paths (404), methods (405), bodies
of a type a resource does not take, and any unexpected exception (500). manager.yaml has codes
only for contract problems; the others are Sluis's own, listed in docs/manager.md.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from appliance.hsm import watch
from appliance.hsm.errors import HsmError
from appliance.serving.bodies import CLOSE
from appliance.serving.fsc_errors import ErrorDomain, FscError, serialize_error
from appliance.serving.wire import WireErrors

# A request malformed before any contract is looked at: a body that is not JSON, a missing or
# unusable Fsc-Manager-Address, a bad query parameter.
REQUEST_INVALID = "ERROR_CODE_REQUEST_INVALID"
REQUEST_TOO_LARGE = "ERROR_CODE_REQUEST_TOO_LARGE"
NOT_FOUND = "ERROR_CODE_NOT_FOUND"
METHOD_NOT_ALLOWED = "ERROR_CODE_METHOD_NOT_ALLOWED"
INTERNAL = "ERROR_CODE_INTERNAL"
# The organisation key cannot sign now (the HSM token went away): a 503 the caller retries.
HSM_UNAVAILABLE = "ERROR_CODE_HSM_UNAVAILABLE"
HSM_RETRY_AFTER_SECONDS = 5

_CODES = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: REQUEST_TOO_LARGE}


# What the listener answers itself (bad or slow request heads: appliance.serving.wire).
WIRE_ERRORS = WireErrors(str(ErrorDomain.MANAGER))


def bad_request(message: str) -> FscError:
    return FscError(falcon.HTTP_400, REQUEST_INVALID, ErrorDomain.MANAGER, message)


def too_large(message: str) -> FscError:
    # The rest of the body is never read; closing stops the client sending it.
    return FscError(
        falcon.HTTP_413, REQUEST_TOO_LARGE, ErrorDomain.MANAGER, message, headers=dict(CLOSE)
    )


def as_fsc_error(error: falcon.HTTPError) -> FscError:
    """Falcon's own errors (routing, media, 500) under the code their status stands for."""
    if isinstance(error, FscError):
        return error
    status = error.status_code
    code = INTERNAL if status >= 500 else _CODES.get(status, REQUEST_INVALID)
    # A 5xx says nothing of its cause (the log has it); a 4xx says what Falcon found.
    message = error.title if status >= 500 else (error.description or error.title)
    return FscError(error.status, code, ErrorDomain.MANAGER, message or str(status))


def _serialize(req: falcon.Request, resp: falcon.Response, exception: falcon.HTTPError) -> None:
    serialize_error(req, resp, as_fsc_error(exception))


async def _hsm_unavailable(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: Any
) -> None:
    # One log line per outage comes from the key watch, which also brings the worker back
    # once the token is; not a traceback per request, as an unexpected error would be.
    watch.report("signature", str(error))
    raise FscError(
        falcon.HTTP_503,
        HSM_UNAVAILABLE,
        ErrorDomain.MANAGER,
        "the organisation key cannot sign now (its HSM token is not usable); try again later",
        headers={"Retry-After": str(HSM_RETRY_AFTER_SECONDS)},
    )


def install_error_format(app: falcon.asgi.App[Any, Any]) -> None:
    """Serialise every error ``app`` answers in the FSC format of the Manager domain; a
    request that needs a signature while the token is gone gets 503 ``HSM_UNAVAILABLE``."""
    app.set_error_serializer(_serialize)
    app.add_error_handler(HsmError, _hsm_unavailable)
