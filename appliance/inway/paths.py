"""The backend path of a request: the request path appended to the Service's base path.

The request path is forwarded as the client sent it (percent-escapes untouched), so the
backend sees the same resource the Outway asked for. What could make a backend resolve a path
*outside* its base is refused instead (400 ``ERROR_CODE_INVALID_PATH``), never "repaired":

- dot segments, literal or encoded (``..``, ``.``, ``%2e%2e``, ``.%2E``), also with
  ``;parameters`` (``..;``, which some servers treat as ``..``);
- encoded separators in a segment: ``%2f`` (``/``), ``%5c`` (``\\``), and a backslash;
- ``%00`` and other encoded control characters, malformed escapes (``%zz``), characters that
  RFC 3986 does not allow in a path;
- double encoding of the above (``%252e``, ``%252f``, ``%255c``): a backend that decodes twice
  would otherwise see them.
"""

from __future__ import annotations

import re

from appliance.inway.errors import InwayError, InwayErrorCode

# RFC 3986 path characters: unreserved / sub-delims / ":" / "@" / "/" and "%" escapes.
_PATH_CHARS = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DOUBLE_ENCODED = re.compile(rb"%25(2e|2f|5c|00)", re.IGNORECASE)
_DOT_SEGMENTS = (b".", b"..")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _refuse(why: str) -> InwayError:
    return InwayError(InwayErrorCode.INVALID_PATH, f"the request path is not forwarded: {why}")


def _decode(segment: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), segment)


def checked_path(raw_path: bytes) -> str:
    """``raw_path`` (ASGI, undecoded, without query) if it is safe to append to a base path."""
    if not raw_path.startswith(b"/"):
        raise _refuse("it does not start with '/'")
    if not _PATH_CHARS.fullmatch(raw_path):
        raise _refuse("it contains characters that must be percent-encoded")
    if b"%" not in raw_path:
        # Nothing encoded (the common case): only literal dot segments can be wrong.
        if b"." in raw_path:
            for segment in raw_path.split(b"/")[1:]:
                if segment.split(b";", 1)[0] in _DOT_SEGMENTS:
                    raise _refuse("it contains a dot segment ('.' or '..', perhaps encoded)")
        return raw_path.decode("ascii")
    if _BAD_ESCAPE.search(raw_path):
        raise _refuse("it contains a malformed percent-escape")
    if _DOUBLE_ENCODED.search(raw_path):
        raise _refuse("it contains a double-encoded dot, slash, backslash or NUL")
    for segment in raw_path.split(b"/")[1:]:
        decoded = _decode(segment)
        if decoded.split(b";", 1)[0] in _DOT_SEGMENTS:
            raise _refuse("it contains a dot segment ('.' or '..', perhaps encoded)")
        if b"/" in decoded or b"\\" in decoded:
            raise _refuse("it contains an encoded '/' or '\\' in a segment")
        if _CONTROL.search(decoded):
            raise _refuse("it contains an encoded control character")
    return raw_path.decode("ascii")


def backend_path(base_path: str, raw_path: bytes) -> str:
    """The path for the backend: its base path (no trailing slash) + the checked request path."""
    return base_path + checked_path(raw_path)
