"""The request path check: a path that could make a backend leave its base path is refused.

The path is forwarded as the client sent it (percent-escapes untouched), so the backend sees
the resource that was asked for and logged. What could resolve *outside* the base path on a
backend that decodes it, once or more, leniently or not, is refused, never "repaired":

- dot segments, literal or encoded (``..``, ``.``, ``%2e%2e``, ``.%2E``), also with
  ``;parameters`` (``..;``, which some servers treat as ``..``);
- encoded separators in a segment: ``%2f`` (``/``), ``%5c`` (``\\``), and a backslash;
- ``%00`` and other encoded control characters, malformed escapes (``%zz``, ``%u002e``),
  characters that RFC 3986 does not allow in a path;
- escapes that do not decode to UTF-8 (RFC 3986 2.5, RFC 3987): overlong forms such as
  ``%c0%ae`` (a dot to a lenient decoder), ``%c0%af`` (a slash), lone continuation bytes;
- characters that Unicode compatibility normalisation (NFKC, done by some frameworks) turns
  into a dot segment or a separator (fullwidth full stop, solidus and reverse solidus,
  the two dot leader U+2025);
- double encoding of anything: an escape whose decoding is again an escape (``%252e``,
  ``%25%32%65``, ``%25u002e``). ``%25`` on its own (a literal ``%``) passes.
"""

from __future__ import annotations

import re
import unicodedata

# RFC 3986 path characters: unreserved / sub-delims / ":" / "@" / "/" and "%" escapes.
_PATH_CHARS = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# After one decoding: what a second decoding (hex, or IIS-style %uXXXX) would turn into more.
_STILL_ENCODED = re.compile(rb"%([0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
_DOT_SEGMENTS = (".", "..")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class PathRefused(ValueError):
    """The path is not forwarded; the message says why (never the path: it can be personal)."""


def _decode(segment: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), segment)


def _is_dot_segment(segment: str) -> bool:
    return segment.split(";", 1)[0] in _DOT_SEGMENTS


def _check_segment(raw: bytes) -> None:
    decoded = _decode(raw)
    if _STILL_ENCODED.search(decoded):
        raise PathRefused("it is encoded twice (an escape that decodes to another escape)")
    try:
        text = decoded.decode("utf-8")  # strict: overlong forms and surrogates are errors
    except UnicodeDecodeError:
        raise PathRefused("it contains escapes that are not UTF-8 (such as %c0%ae)") from None
    if _CONTROL.search(text):
        raise PathRefused("it contains an encoded control character")
    for form in (text, unicodedata.normalize("NFKC", text)) if not text.isascii() else (text,):
        if _is_dot_segment(form):
            raise PathRefused("it contains a dot segment ('.' or '..', perhaps encoded)")
        if "/" in form or "\\" in form:
            raise PathRefused("it contains an encoded '/' or '\\' in a segment")


def checked_path(raw_path: bytes) -> str:
    """``raw_path`` (ASGI, undecoded, without query) if it is safe to append to a base path;
    :class:`PathRefused` otherwise."""
    if not raw_path.startswith(b"/"):
        raise PathRefused("it does not start with '/'")
    if not _PATH_CHARS.fullmatch(raw_path):
        raise PathRefused("it contains characters that must be percent-encoded")
    if b"%" not in raw_path:
        # Nothing encoded (the common case): only literal dot segments can be wrong.
        if b"." in raw_path:
            for segment in raw_path.split(b"/")[1:]:
                if segment.split(b";", 1)[0] in (b".", b".."):
                    raise PathRefused("it contains a dot segment ('.' or '..', perhaps encoded)")
        return raw_path.decode("ascii")
    if _BAD_ESCAPE.search(raw_path):
        raise PathRefused("it contains a malformed percent-escape")
    for segment in raw_path.split(b"/")[1:]:
        _check_segment(segment)
    return raw_path.decode("ascii")
