"""Reading and checking request input: query parameters, JSON bodies, form fields.

Everything the API and the pages accept is checked here, with a message that says what is
wrong; the resources get typed values. Times are ISO 8601; a time without a zone is UTC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi

from appliance.controller.errors import ControllerError, ErrorCode, bad_request, too_large
from appliance.controller.roles import Role
from appliance.controller.transactions import DIRECTIONS, TransactionFilter
from appliance.serving.bodies import BodyTooLarge, read_body

MAX_BODY = 64 * 1024  # every body the controller parses (JSON and forms)
MAX_DEPTH = 32  # JSON nesting; the controller's own bodies are two levels deep
MAX_FIELDS = 100  # fields of a form
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_REASON = 500
SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]{1,100}")  # FSC Core serviceName
PEER_ID = re.compile(r"[0-9]{20}")  # an OIN
CONTENT_HASH = re.compile(r"\$1\$[0-9]+\$[A-Za-z0-9_-]{1,200}")
# A whole transaction id (a UUID) or its start: operators copy the first characters from a
# log line or a ticket.
TRANSACTION_ID = re.compile(r"[0-9a-fA-F-]{1,36}")
PROTOCOLS = ("PROTOCOL_TCP_HTTP_1.1", "PROTOCOL_TCP_HTTP_2")
CONTRACT_STATES = ("proposed", "accepted", "valid", "rejected", "revoked", "expired")
CONTRACT_KINDS = ("publication", "connection")
OUTCOMES = ("success", "failure", "denied")


def parse_time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 date and time") from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise bad_request(f"{name} is out of range") from None


def string(source: Mapping[str, Any], name: str) -> str:
    """The field as a string ("" when absent); 400 for a list, a non-string or text that is
    not Unicode (a lone surrogate from a JSON escape: it cannot be stored or hashed)."""
    value = source.get(name)
    if value is None:
        return ""
    if isinstance(value, list):  # a repeated query parameter or form field
        raise bad_request(f"{name} may be given once")
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{name} is not valid Unicode text") from None
    return value


def text(source: Mapping[str, Any], name: str) -> str | None:
    return string(source, name) or None


def matching(
    source: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str
) -> str | None:
    value = text(source, name)
    if value is not None and not pattern.fullmatch(value):
        raise bad_request(f"{name} must be {what}")
    return value


def one_of(source: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    value = text(source, name)
    if value is not None and value not in choices:
        raise bad_request(f"{name} must be one of {', '.join(choices)}")
    return value


def integer(source: Mapping[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    value = source.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,9}", value):
            raise bad_request(f"{name} must be an integer from {low} to {high}")
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return value


def reason(source: Mapping[str, Any]) -> str | None:
    value = text(source, "reason")
    if value is not None and len(value) > MAX_REASON:
        raise bad_request(f"reason has at most {MAX_REASON} characters")
    return value.strip() or None if value is not None else None


def required(value: str | None, name: str) -> str:
    if value is None:
        raise bad_request(f"{name} is required")
    return value


def role(source: Mapping[str, Any], name: str = "role") -> Role:
    value = required(one_of(source, name, tuple(r.value for r in Role)), name)
    return Role(value)


def time_range(source: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    after, before = text(source, "after"), text(source, "before")
    return (
        parse_time(after, "after") if after else None,
        parse_time(before, "before") if before else None,
    )


def transaction_filter(source: Mapping[str, Any]) -> TransactionFilter:
    after, before = time_range(source)
    return TransactionFilter(
        after=after,
        before=before,
        peer_id=matching(source, "peer_id", PEER_ID, "a 20-digit OIN"),
        service_name=matching(source, "service_name", SERVICE_NAME, "a service name"),
        direction=one_of(source, "direction", DIRECTIONS),
        transaction_id=matching(
            source, "transaction_id", TRANSACTION_ID, "a transaction id (a UUID) or its start"
        ),
        grant_hash=matching(source, "grant_hash", CONTENT_HASH, "a grant hash ($1$3$...)"),
    )


async def body(req: falcon.asgi.Request) -> bytes:
    """The raw body, at most :data:`MAX_BODY` bytes, read while it streams in (413 beyond)."""
    try:
        return await read_body(req, MAX_BODY)
    except BodyTooLarge as exc:
        raise too_large(str(exc)) from None


def _media_type(req: falcon.asgi.Request) -> str:
    return (req.content_type or "").split(";", 1)[0].strip().lower()


def _too_deep(value: Any) -> bool:
    # Iterative: a recursive walk could itself run out of stack on what json.loads accepted.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                pending.append((child, depth + 1))
    return False


async def json_body(req: falcon.asgi.Request) -> dict[str, Any]:
    """The request's JSON object (at most 64 KiB, ``application/json``)."""
    media_type = _media_type(req)
    raw = await body(req)
    if media_type != "application/json":
        if not raw and media_type == "":
            return {}
        raise ControllerError(
            falcon.HTTP_415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send application/json"
        )
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except RecursionError:  # nested deeper than the interpreter's stack allows
        raise bad_request(f"request body nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # also UnicodeDecodeError: JSON is UTF-8
        raise bad_request("request body is not JSON") from None
    if not isinstance(parsed, dict):
        raise bad_request("request body must be a JSON object")
    if _too_deep(parsed):
        raise bad_request(f"request body nested deeper than {MAX_DEPTH} levels")
    return parsed


async def form(req: falcon.asgi.Request) -> dict[str, Any]:
    """The fields of a form post (``application/x-www-form-urlencoded``, at most 64 KiB); a
    repeated field as a list, which the readers refuse. Read once per request: the CSRF check
    and the page share it."""
    cached: dict[str, Any] | None = getattr(req.context, "form", None)
    if cached is not None:
        return cached
    media_type = _media_type(req)
    if media_type not in (FORM_TYPE, "") or (media_type == "" and req.content_length):
        raise ControllerError(
            falcon.HTTP_415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"send {FORM_TYPE}"
        )
    raw = await body(req)
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:  # not ASCII, not UTF-8 once decoded, or too many fields
        raise bad_request(f"the form is not {FORM_TYPE} with at most {MAX_FIELDS} fields") from None
    fields: dict[str, Any] = {}
    for name, value in pairs:
        previous = fields.get(name)
        if previous is None:
            fields[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            fields[name] = [previous, value]
    req.context.form = fields
    return fields


def query(req: falcon.asgi.Request) -> dict[str, Any]:
    """The query parameters (a repeated one as a list, which the readers refuse)."""
    return dict(req.params)
