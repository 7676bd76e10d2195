"""FSC error responses: the ``Fsc-Error-Code`` header plus the JSON error object.

manager.yaml ``components.schemas.error``: ``{"message": ..., "domain": ..., "code": ...}``;
every FSC error response carries the code in the ``Fsc-Error-Code`` header too.
"""

from __future__ import annotations

import json
from enum import StrEnum

import falcon
import falcon.asgi


class ErrorDomain(StrEnum):
    INWAY = "ERROR_DOMAIN_INWAY"
    OUTWAY = "ERROR_DOMAIN_OUTWAY"
    MANAGER = "ERROR_DOMAIN_MANAGER"


class FscError(falcon.HTTPError):
    """An error in the FSC format; ``status`` as the specification assigns it to ``code``."""

    def __init__(
        self,
        status: str | int,
        code: str,
        domain: ErrorDomain,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, title=code, description=message, headers=headers)
        self.fsc_code = code
        self.domain = domain
        self.message = message

    def body(self) -> bytes:
        return json.dumps(
            {"message": self.message, "domain": str(self.domain), "code": self.fsc_code}
        ).encode("utf-8")


def serialize_error(
    req: falcon.Request, resp: falcon.Response, exception: falcon.HTTPError
) -> None:
    """Falcon error serializer: FSC errors in FSC form, other HTTP errors as plain JSON."""
    resp.content_type = falcon.MEDIA_JSON
    if isinstance(exception, FscError):
        resp.set_header("Fsc-Error-Code", exception.fsc_code)
        resp.data = exception.body()
    else:
        resp.data = json.dumps(exception.to_dict()).encode("utf-8")
