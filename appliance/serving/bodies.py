"""Request bodies read with a size limit that holds while the body streams in.

Falcon's ``req.get_media()`` (and ``req.stream.read()`` without a size) reads a whole body
into memory before anything can look at its length: one 200 MB form took a worker from 142 MB
to 871 MB. :func:`read_body` refuses a declared ``Content-Length`` above the limit before
reading a byte, and a chunked body (no ``Content-Length``) as soon as more than the limit has
arrived; at most ``limit`` + one ASGI message is ever held.

The caller answers :class:`BodyTooLarge` with 413 in its own error format and should add
``Connection: close`` (:data:`CLOSE`): the rest of the body is never read, and closing is the
only way to stop the client sending it (uvicorn closes when the app's response says so).
"""

from __future__ import annotations

import falcon.asgi

# Response headers for a refused body: the connection is not reused (see the module doc).
CLOSE: dict[str, str] = {"Connection": "close"}


class BodyTooLarge(Exception):
    """The request body is (or declares to be) larger than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def read_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The whole body of ``req``, or :class:`BodyTooLarge` once it exceeds ``limit`` bytes."""
    if limit < 0:
        raise ValueError("limit must not be negative")
    declared = req.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    # The ASGI receive events one by one: a chunk is held only after the running total fits.
    async for chunk in req.stream:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


__all__ = ["CLOSE", "BodyTooLarge", "read_body"]
