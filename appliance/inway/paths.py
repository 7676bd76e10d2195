"""The backend path of a request: the request path appended to the Service's base path.

The check itself is shared with the outway (:mod:`appliance.forwarding.paths`, which lists
what is refused); here a refused path is the inway's 400 ``ERROR_CODE_INVALID_PATH``.
"""

from __future__ import annotations

from appliance.forwarding import paths
from appliance.inway.errors import InwayError, InwayErrorCode


def checked_path(raw_path: bytes) -> str:
    """``raw_path`` (ASGI, undecoded, without query) if it is safe to append to a base path."""
    try:
        return paths.checked_path(raw_path)
    except paths.PathRefused as exc:
        raise InwayError(
            InwayErrorCode.INVALID_PATH, f"the request path is not forwarded: {exc}"
        ) from None


def backend_path(base_path: str, raw_path: bytes) -> str:
    """The path for the backend: its base path (no trailing slash) + the checked request path."""
    return base_path + checked_path(raw_path)
