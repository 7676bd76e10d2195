"""RFC 8785 JSON Canonicalization Scheme (JCS): what FSC hashes, and the txlog chains.

Content and grant hashes are taken over the JCS form, so Peers whose JSON libraries order,
escape and format differently still agree on every hash. JCS serialises like ECMAScript's
``JSON.stringify``: object members sorted by their UTF-16 code units, strings with only the
mandatory escapes, numbers as ECMAScript ``Number.prototype.toString`` writes IEEE doubles.

The specification demands I-JSON (RFC 7493), so anything outside it is refused rather than
guessed: NaN and infinities, lone surrogates, duplicate member names (in :func:`loads`) and
numbers beyond the range of a double. Integers of 2**53 and more are written as the double
nearest to them, as every JCS implementation that parses numbers as doubles does.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeAlias

from appliance.errors import SluisError
from appliance.strictjson import unique_members

JsonValue: TypeAlias = (
    bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)

# Deeper nesting is no contract anyone writes; the limit keeps recursion far from Python's.
MAX_DEPTH = 100

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


class JcsError(SluisError):
    """A value that is not I-JSON and so has no canonical form."""


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JcsError("string holds a lone surrogate, which I-JSON forbids") from None
    return f'"{_NEEDS_ESCAPE.sub(_escape, text)}"'


def _double(value: float) -> str:
    """ECMAScript Number::toString for a finite double (ECMA-262, section 7.1.12.1)."""
    if not math.isfinite(value):
        raise JcsError(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"  # also for -0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, nearest to the value on a tie: the same
    # digits ECMAScript chooses. Only the layout around them differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    n = len(digit_tuple) + exponent  # value = 0.digits * 10**n
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{sign}{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return f"{sign}0.{'0' * -n}{digits}"
    e = n - 1
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"


def _integer(value: int) -> str:
    # JSON numbers are IEEE doubles to JCS (RFC 8785 section 3.2.2.3): a larger integer is the
    # double nearest to it, exactly as a JavaScript or Go Peer reads the same text.
    if abs(value) < 2**53:
        return str(value)
    try:
        return _double(float(value))
    except OverflowError:
        raise JcsError(f"integer {value} is too large for a JSON number") from None


def _serialise(value: object, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise JcsError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(_integer(value))
    elif isinstance(value, float):
        out.append(_double(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        items = []
        for key, member in value.items():
            if not isinstance(key, str):
                raise JcsError(f"object member name {key!r} is not a string")
            items.append((key, _string(key), member))
        # UTF-16BE bytes compare exactly like the UTF-16 code units RFC 8785 sorts by.
        items.sort(key=lambda item: item[0].encode("utf-16-be", "surrogatepass"))
        out.append("{")
        for index, (_, encoded_key, member) in enumerate(items):
            if index:
                out.append(",")
            out.append(encoded_key)
            out.append(":")
            _serialise(member, out, depth + 1)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for index, element in enumerate(value):
            if index:
                out.append(",")
            _serialise(element, out, depth + 1)
        out.append("]")
    else:
        raise JcsError(f"{type(value).__name__} is not a JSON value")


_FLAT_SCALARS = frozenset((str, bool, type(None)))
_FLAT_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _flat(value: object) -> bool:
    """A mapping of ASCII names to strings, booleans, nulls and safe integers only (a hash
    chain's record): for it Python's json gives JCS's bytes, several times faster."""
    if type(value) is not dict:
        return False
    try:
        names = "".join(value)  # TypeError: a name that is not a string
    except TypeError:
        return False
    if not names.isascii():
        return False
    for member in value.values():
        kind = type(member)
        if kind is int:
            if abs(member) >= 2**53:
                return False
        elif kind not in _FLAT_SCALARS:
            return False
    return True


def canonicalize(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (dicts, lists/tuples, scalars)."""
    if _flat(value):
        # ASCII names sort by code point as by UTF-16 unit; json escapes exactly JCS's set
        # (", \, the control characters; \b \f \n \r \t short, others as lowercase
        # \u00xx) and writes small integers as ECMAScript does. A lone surrogate passes json
        # unescaped and fails the UTF-8 encoding, as I-JSON requires.
        text = _FLAT_ENCODER.encode(value)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise JcsError("string holds a lone surrogate, which I-JSON forbids") from None
    out: list[str] = []
    _serialise(value, out, 0)
    return "".join(out).encode("utf-8")


class Members:
    """The canonical form of objects that all have one fixed set of ASCII member names (the
    records of a hash chain): the names are sorted and laid out once, so that each object
    costs only its values. :meth:`canonicalize` gives exactly :func:`canonicalize`'s bytes
    (an object with other names takes the general path; a value that is not a string, null,
    boolean or integer of a double's range is serialised by it); a transaction log record in
    about half the time (bench/record_path.py)."""

    __slots__ = ("_layout", "names")

    def __init__(self, names: Sequence[str]) -> None:
        if not names or len(set(names)) != len(names) or not all(n.isascii() for n in names):
            raise ValueError("member names must be distinct, ASCII and at least one")
        # ASCII names sort by code point exactly as RFC 8785 sorts by UTF-16 unit.
        self.names = tuple(sorted(names))
        members = (_string(name).replace("%", "%%") + ":%s" for name in self.names)
        self._layout = "{" + ",".join(members) + "}"

    def canonicalize(self, document: Mapping[str, object]) -> bytes:
        """The RFC 8785 canonical UTF-8 bytes of ``document``."""
        if len(document) != len(self.names):
            return canonicalize(document)
        try:
            values = [document[name] for name in self.names]
        except KeyError:  # other names, as many
            return canonicalize(document)
        # json's escaping is JCS's (see canonicalize's shortcut)
        text = self._layout % tuple(
            [_encode_string(v) if type(v) is str else _member(v) for v in values]
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise JcsError("string holds a lone surrogate, which I-JSON forbids") from None


def _member(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is int and -(2**53) < value < 2**53:
        return str(value)
    out: list[str] = []
    _serialise(value, out, 1)
    return "".join(out)


# json's own escaper (C): exactly JCS's escapes, see canonicalize's shortcut.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring

_no_duplicates = unique_members(lambda name: JcsError(f"duplicate object member {name!r}"))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JcsError(f"number {text} is outside the range of a JSON number")
    return value


def _constant(name: str) -> None:
    raise JcsError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse I-JSON strictly: UTF-8, no duplicate members, only values JCS can canonicalise."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_finite,
            parse_constant=_constant,
        )
    except UnicodeDecodeError:
        raise JcsError("JSON text is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise JcsError(f"not JSON: {exc}") from None
    except RecursionError:
        raise JcsError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    canonicalize(value)  # refuses lone surrogates, huge integers and deep nesting
    return value
