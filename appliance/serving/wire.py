"""Errors a listener writes itself, before any app runs, in its component's error format.

A request head that is malformed, too large or too slow is answered by the HTTP protocol
(``appliance.serving.protocol``), not by the app: the app never sees it. The answer is still in
the component's own format: ``{"message", "domain", "code"}`` plus the code in the
``Fsc-Error-Code`` header, with the FSC domain of the gateway or Manager
(``appliance.serving.fsc_errors``) or the controller's domain and codes. Each component
declares its :class:`WireErrors` in its own ``errors`` module; the worker finds it by the
module of the app it serves (:func:`wire_errors_for`) and hands it to the protocol.

The codes are Sluis' own: the FSC specification has none for HTTP framing (its codes start
once a request is understood).
"""

from __future__ import annotations

import http
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.serving.fsc_errors import ErrorDomain

WIRE_CODES: Mapping[int, str] = {
    400: "ERROR_CODE_REQUEST_MALFORMED",
    408: "ERROR_CODE_REQUEST_TIMEOUT",
    414: "ERROR_CODE_REQUEST_TARGET_TOO_LONG",
    431: "ERROR_CODE_REQUEST_HEADERS_TOO_LARGE",
}


@dataclass(frozen=True)
class WireErrors:
    """One component's error format for answers written on the wire."""

    domain: str
    codes: Mapping[int, str] = field(default_factory=lambda: dict(WIRE_CODES))

    def response(self, status: int, message: str) -> bytes:
        """A whole HTTP/1.1 response that closes the connection."""
        code = self.codes[status]
        body = json.dumps({"message": message, "domain": self.domain, "code": code}).encode()
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Fsc-Error-Code: {code}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("ascii") + body


# The inway's, and the diagnostic apps' in front of peers (whoami).
DEFAULT_WIRE_ERRORS = WireErrors(str(ErrorDomain.INWAY))


def wire_errors_for(app_uri: str) -> WireErrors:
    """The format of the component whose app gunicorn loads from ``app_uri`` (module:factory).

    Each component declares its own as ``WIRE_ERRORS`` in its package's ``errors`` module
    (``appliance.outway.errors`` for ``appliance.outway.app``): serving is the plumbing below
    the components and names none of them."""
    package = app_uri.partition(":")[0].rpartition(".")[0]
    if not package:
        return DEFAULT_WIRE_ERRORS
    try:
        errors = importlib.import_module(f"{package}.errors")
    except ModuleNotFoundError:
        return DEFAULT_WIRE_ERRORS
    declared = getattr(errors, "WIRE_ERRORS", DEFAULT_WIRE_ERRORS)
    return declared if isinstance(declared, WireErrors) else DEFAULT_WIRE_ERRORS
