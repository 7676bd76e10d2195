"""The FSC transaction log record (logging.yaml ``logRecord``) and Sluis's local purpose fields.

A record says *that* a request passed a gateway, never *what* it carried: the transaction id,
the direction, the grant hash, the service name, the peers on both ends (and their delegators)
and the time. Those fields, and only those, are what ``GET /logs`` shows (:meth:`LogRecord.to_api`).

Sluis adds three fields for purpose binding under the AVG (GDPR), kept locally and never part of
the FSC API output (:class:`PurposeBinding`): the processing activity the request serves, the
W3C trace id that connects it to the application's own logs, and the data subject as a keyed
pseudonym (:mod:`appliance.txlog.pseudonym`); the subject's identifier itself is never stored.

There is no field for a path, a query, a header or a body, and every field is checked for
format and length, so no field can carry message content.

Transaction ids are UUIDv7 (RFC 9562), the format the Sluis profile chooses (READING.md item
10; OpenFSC's gateways expect the same): :func:`new_transaction_id` makes them and
:func:`parse_transaction_id` checks an incoming header. A stored record accepts any RFC 9562
UUID, so that whether a foreign UUIDv4 is let in stays the gateway's decision.

Access-token claims map to fields as the logging specification says, with READING.md item 5:
the source delegator is ``act.sub`` (Core), or the logging extension's ``cdi`` when a token
carries that instead.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from appliance.txlog.errors import InvalidLogRecordError, InvalidTransactionIdError

# logging.yaml: peerID 1..20 characters, serviceName 3..255, grantHash up to 1024.
PEER_ID_MAX = 20
SERVICE_NAME_MIN, SERVICE_NAME_MAX = 3, 255
GRANT_HASH_MAX = 1024
PROCESSING_ACTIVITY_MAX = 200

# Printable ASCII without spaces: what peer ids (OINs) and grant hashes ($1$3$ + base64url) are.
_PEER_ID = re.compile(rf"[!-~]{{1,{PEER_ID_MAX}}}")
_GRANT_HASH = re.compile(rf"[!-~]{{1,{GRANT_HASH_MAX}}}")
# FSC Core service names are [a-zA-Z0-9._-]; logging.yaml wants 3..255 of them.
_SERVICE_NAME = re.compile(rf"[A-Za-z0-9._-]{{{SERVICE_NAME_MIN},{SERVICE_NAME_MAX}}}")
# An identifier from the register of processing activities: a UUID, URN or URL-like token.
_PROCESSING_ACTIVITY = re.compile(rf"[A-Za-z0-9._~:/#@+=-]{{1,{PROCESSING_ACTIVITY_MAX}}}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_UUID_HEADER_MAX = 64  # longer header values are refused before any parsing


class Direction(StrEnum):
    """logging.yaml ``logRecord.direction``: the outway sends, the inway receives."""

    INCOMING = "DIRECTION_INCOMING"
    OUTGOING = "DIRECTION_OUTGOING"


class SourceType(StrEnum):
    SOURCE = "SOURCE_TYPE_SOURCE"
    DELEGATED_SOURCE = "SOURCE_TYPE_DELEGATED_SOURCE"


class DestinationType(StrEnum):
    DESTINATION = "DESTINATION_TYPE_DESTINATION"
    DELEGATED_DESTINATION = "DESTINATION_TYPE_DELEGATED_DESTINATION"


# --- transaction ids -------------------------------------------------------------------------


class _RandomBlock(threading.local):
    """Bytes from os.urandom, taken in blocks; per thread, and never shared across a fork."""

    SIZE = 4096

    def __init__(self) -> None:
        self.data = b""
        self.offset = 0


_RANDOM = _RandomBlock()


def _forget_random_after_fork() -> None:
    # A forked child (a gunicorn worker) must not hand out the bytes its parent hands out.
    global _RANDOM
    _RANDOM = _RandomBlock()


os.register_at_fork(after_in_child=_forget_random_after_fork)


def _random_bytes(count: int) -> bytes:
    block = _RANDOM
    start = block.offset
    if start + count > len(block.data):
        block.data = os.urandom(block.SIZE)
        start = 0
    block.offset = start + count
    return block.data[start : start + count]


def new_transaction_id(now_ms: int | None = None) -> str:
    """A new UUIDv7: 48 bits of Unix milliseconds, version 7, variant 10, 74 random bits."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"timestamp {millis} ms does not fit a UUIDv7")
    # 74 of 80 bits from the system CSPRNG, read in blocks (a getrandom call per id cost
    # more than the rest of the id).
    random = int.from_bytes(_random_bytes(10), "big")
    rand_a, rand_b = random >> 68, random & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def parse_transaction_id(value: str | None, *, any_version: bool = False) -> str:
    """Check an ``Fsc-Transaction-Id`` (a UUIDv7); return it in canonical lower case.

    Raises :class:`InvalidTransactionIdError` for anything else (the gateway answers
    ``INVALID_LOG_RECORD_ID``, 400); a missing header is the caller's to answer with
    ``MISSING_LOG_RECORD_ID`` before calling this. ``any_version`` accepts every RFC 9562
    UUID (versions 1 to 8, not the nil or max UUID): what a stored record may carry, so that
    an inway that chooses to accept another outway's UUIDv4 can still log it.
    """
    if not isinstance(value, str) or not value:
        raise InvalidTransactionIdError("the transaction id is empty")
    if len(value) > _UUID_HEADER_MAX:
        raise InvalidTransactionIdError("the transaction id is too long for a UUID")
    text = value.lower()
    if not _UUID.fullmatch(text):
        raise InvalidTransactionIdError(
            "the transaction id is not a UUID in its 8-4-4-4-12 hexadecimal form"
        )
    if any_version:
        if text[14] not in "12345678":
            raise InvalidTransactionIdError("the transaction id is not an RFC 9562 UUID")
    elif text[14] != "7":
        raise InvalidTransactionIdError(
            f"the transaction id is a version {text[14]} UUID; this profile uses UUIDv7"
        )
    if text[19] not in "89ab":
        raise InvalidTransactionIdError("the transaction id does not have the RFC 9562 variant")
    return text


def transaction_id_time(transaction_id: str) -> datetime:
    """The creation time a UUIDv7 carries (millisecond precision)."""
    text = parse_transaction_id(transaction_id)
    millis = int(text[:8] + text[9:13], 16)
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


# --- purpose binding --------------------------------------------------------------------------


def trace_id_from_traceparent(header: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when it is absent or invalid.

    W3C Trace Context: an invalid traceparent is ignored (a new trace starts), so this never
    raises. Version ``ff`` and all-zero ids are invalid; version 00 has exactly four parts.
    """
    if not header:
        return None
    match = _TRACEPARENT.fullmatch(header.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id


@dataclass(frozen=True)
class PurposeBinding:
    """Sluis-local AVG fields: why a request was made and about whom. Never in ``/logs``.

    ``data_subject_pseudonym`` is the HMAC-SHA256 (64 hex characters) that
    :class:`appliance.txlog.pseudonym.Pseudonymiser` makes of a subject's identifier; the
    identifier itself never reaches the record. Every field may be absent.
    """

    processing_activity_id: str | None = None
    trace_id: str | None = None
    data_subject_pseudonym: str | None = None

    def __post_init__(self) -> None:
        if self.processing_activity_id is not None and not _PROCESSING_ACTIVITY.fullmatch(
            self.processing_activity_id
        ):
            raise InvalidLogRecordError(
                f"processing_activity_id must be 1..{PROCESSING_ACTIVITY_MAX} characters of "
                "A-Z a-z 0-9 . _ ~ : / # @ + = - (an identifier, not a description)"
            )
        if self.trace_id is not None and (
            not _TRACE_ID.fullmatch(self.trace_id) or self.trace_id == "0" * 32
        ):
            raise InvalidLogRecordError(
                "trace_id must be a W3C trace id: 32 lower-case hexadecimal characters, not all 0"
            )
        if self.data_subject_pseudonym is not None and not _PSEUDONYM.fullmatch(
            self.data_subject_pseudonym
        ):
            raise InvalidLogRecordError(
                "data_subject_pseudonym must be a pseudonym (64 lower-case hexadecimal "
                "characters from Pseudonymiser), never the data subject's identifier"
            )

    @property
    def is_empty(self) -> bool:
        return (
            self.processing_activity_id is None
            and self.trace_id is None
            and self.data_subject_pseudonym is None
        )


NO_PURPOSE = PurposeBinding()


# --- the record -------------------------------------------------------------------------------


def _peer_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _PEER_ID.fullmatch(value):
        raise InvalidLogRecordError(
            f"{what} must be a peer id of 1..{PEER_ID_MAX} printable characters, got {value!r}"
        )
    return value


def _optional_peer_id(value: object, what: str) -> str | None:
    return None if value is None else _peer_id(value, what)


@dataclass(frozen=True)
class Source:
    """The requesting side: the Outway's peer, and the peer it acts for when delegated."""

    outway_peer_id: str
    delegator_peer_id: str | None = None

    def __post_init__(self) -> None:
        _peer_id(self.outway_peer_id, "source.outway_peer_id")
        _optional_peer_id(self.delegator_peer_id, "source.delegator_peer_id")

    def to_api(self) -> dict[str, str]:
        if self.delegator_peer_id is None:
            return {"type": SourceType.SOURCE.value, "outway_peer_id": self.outway_peer_id}
        return {
            "type": SourceType.DELEGATED_SOURCE.value,
            "outway_peer_id": self.outway_peer_id,
            "delegator_peer_id": self.delegator_peer_id,
        }


@dataclass(frozen=True)
class Destination:
    """The serving side: the Service's peer, and the peer it offers for when delegated."""

    service_peer_id: str
    delegator_peer_id: str | None = None

    def __post_init__(self) -> None:
        _peer_id(self.service_peer_id, "destination.service_peer_id")
        _optional_peer_id(self.delegator_peer_id, "destination.delegator_peer_id")

    def to_api(self) -> dict[str, str]:
        if self.delegator_peer_id is None:
            return {
                "type": DestinationType.DESTINATION.value,
                "service_peer_id": self.service_peer_id,
            }
        return {
            "type": DestinationType.DELEGATED_DESTINATION.value,
            "service_peer_id": self.service_peer_id,
            "delegator_peer_id": self.delegator_peer_id,
        }


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogRecord:
    """One FSC transaction log record (logging.yaml ``logRecord``) plus local purpose fields.

    ``created_at`` is an aware datetime (UTC, microseconds kept locally); the API shows it as
    whole Unix seconds. Construction validates every field and raises
    :class:`InvalidLogRecordError` (a ``ValueError``).
    """

    transaction_id: str
    direction: Direction
    grant_hash: str
    service_name: str
    source: Source
    destination: Destination
    created_at: datetime = field(default_factory=_now)
    purpose: PurposeBinding = NO_PURPOSE

    def __post_init__(self) -> None:
        try:
            canonical = parse_transaction_id(self.transaction_id, any_version=True)
        except InvalidTransactionIdError as exc:
            raise InvalidLogRecordError(f"transaction_id: {exc}") from None
        if canonical != self.transaction_id:
            object.__setattr__(self, "transaction_id", canonical)
        direction: object = self.direction  # callers may pass the enum's text
        if not isinstance(direction, Direction):
            try:
                object.__setattr__(self, "direction", Direction(str(direction)))
            except ValueError:
                raise InvalidLogRecordError(
                    f"direction must be one of {[d.value for d in Direction]}"
                ) from None
        if not isinstance(self.grant_hash, str) or not _GRANT_HASH.fullmatch(self.grant_hash):
            raise InvalidLogRecordError(
                f"grant_hash must be 1..{GRANT_HASH_MAX} printable characters"
            )
        if not isinstance(self.service_name, str) or not _SERVICE_NAME.fullmatch(self.service_name):
            raise InvalidLogRecordError(
                f"service_name must be {SERVICE_NAME_MIN}..{SERVICE_NAME_MAX} characters of "
                f"A-Z a-z 0-9 . _ - (logging.yaml serviceName), got {self.service_name!r}"
            )
        if not isinstance(self.source, Source) or not isinstance(self.destination, Destination):
            raise InvalidLogRecordError("source and destination must be Source and Destination")
        if not isinstance(self.purpose, PurposeBinding):
            raise InvalidLogRecordError("purpose must be a PurposeBinding")
        created = self.created_at
        if not isinstance(created, datetime) or created.utcoffset() is None:
            raise InvalidLogRecordError("created_at must be a timezone-aware datetime")
        if created.timestamp() < 0:
            raise InvalidLogRecordError("created_at must not be before 1970")
        if created.tzinfo is not UTC:
            object.__setattr__(self, "created_at", created.astimezone(UTC))

    @property
    def created_at_unix(self) -> int:
        """``created_at`` as logging.yaml's ``timestamp``: whole seconds since the epoch."""
        return int(self.created_at.timestamp())

    def peer_ids(self) -> frozenset[str]:
        """Every peer the record names (who may read it through ``/logs``)."""
        named = {self.source.outway_peer_id, self.destination.service_peer_id}
        for extra in (self.source.delegator_peer_id, self.destination.delegator_peer_id):
            if extra is not None:
                named.add(extra)
        return frozenset(named)

    def to_api(self) -> dict[str, Any]:
        """The record as logging.yaml's ``logRecord`` JSON; the purpose fields are left out."""
        return {
            "transaction_id": self.transaction_id,
            "direction": self.direction.value,
            "grant_hash": self.grant_hash,
            "source": self.source.to_api(),
            "destination": self.destination.to_api(),
            "service_name": self.service_name,
            "created_at": self.created_at_unix,
        }

    @classmethod
    def from_api(cls, data: Mapping[str, Any], *, fractional_time: bool = False) -> LogRecord:
        """A record from another Manager's ``/logs`` answer (``logRecord`` JSON), or, with
        ``fractional_time``, a gateway's own record, whose ``created_at`` has the fraction of
        the second (kept to the microsecond, as the outway's records are)."""
        if not isinstance(data, Mapping):
            raise InvalidLogRecordError("a log record must be a JSON object")
        source, destination = data.get("source"), data.get("destination")
        if not isinstance(source, Mapping) or not isinstance(destination, Mapping):
            raise InvalidLogRecordError("source and destination must be JSON objects")
        source_delegated = _delegated(
            source, SourceType.SOURCE.value, SourceType.DELEGATED_SOURCE.value, "source"
        )
        destination_delegated = _delegated(
            destination,
            DestinationType.DESTINATION.value,
            DestinationType.DELEGATED_DESTINATION.value,
            "destination",
        )
        created = data.get("created_at")
        stamp = (int, float) if fractional_time else (int,)
        if (
            not isinstance(created, stamp)
            or isinstance(created, bool)
            or not math.isfinite(created)
            or created < 0
        ):
            raise InvalidLogRecordError("created_at must be a non-negative Unix timestamp")
        try:
            direction = Direction(_text(data, "direction"))
        except ValueError:
            raise InvalidLogRecordError(
                f"direction must be one of {[d.value for d in Direction]}"
            ) from None
        return cls(
            transaction_id=_text(data, "transaction_id"),
            direction=direction,
            grant_hash=_text(data, "grant_hash"),
            service_name=_text(data, "service_name"),
            source=Source(
                outway_peer_id=_text(source, "outway_peer_id"),
                delegator_peer_id=_text(source, "delegator_peer_id") if source_delegated else None,
            ),
            destination=Destination(
                service_peer_id=_text(destination, "service_peer_id"),
                delegator_peer_id=_text(destination, "delegator_peer_id")
                if destination_delegated
                else None,
            ),
            created_at=datetime.fromtimestamp(created, tz=UTC),
        )

    @classmethod
    def from_access_token(
        cls,
        claims: Mapping[str, Any],
        *,
        direction: Direction,
        transaction_id: str | None = None,
        created_at: datetime | None = None,
        purpose: PurposeBinding = NO_PURPOSE,
    ) -> LogRecord:
        """The record of a request made with an access token of these (verified) ``claims``.

        ``gth`` is the grant hash, ``sub`` the source (Outway) peer, ``iss`` the destination
        (Service) peer, ``svc`` the service; ``act.sub`` (Core) or ``cdi`` the source's
        delegator, ``pdi`` the destination's delegator. The Outway creates the transaction id
        (a new UUIDv7 when ``transaction_id`` is None); the Inway must pass the one from the
        ``Fsc-Transaction-Id`` header.
        """
        direction = Direction(direction)
        if transaction_id is None:
            if direction is Direction.INCOMING:
                raise InvalidLogRecordError(
                    "an incoming record must use the Fsc-Transaction-Id the Outway sent"
                )
            transaction_id = new_transaction_id()
        return cls(
            transaction_id=transaction_id,
            direction=direction,
            grant_hash=_claim(claims, "gth"),
            service_name=_claim(claims, "svc"),
            source=Source(
                outway_peer_id=_claim(claims, "sub"),
                delegator_peer_id=_source_delegator(claims),
            ),
            destination=Destination(
                service_peer_id=_claim(claims, "iss"),
                delegator_peer_id=_optional_claim(claims, "pdi"),
            ),
            created_at=_now() if created_at is None else created_at,
            purpose=purpose,
        )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise InvalidLogRecordError(f"{name} must be a string")
    return value


def _delegated(data: Mapping[str, Any], plain: str, delegated: str, what: str) -> bool:
    kind = data.get("type")
    if kind == plain:
        if "delegator_peer_id" in data:
            raise InvalidLogRecordError(f"{what} of type {plain} has a delegator_peer_id")
        return False
    if kind == delegated:
        return True
    raise InvalidLogRecordError(f"{what}.type must be {plain} or {delegated}")


def _claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidLogRecordError(f"the access token has no usable {name!r} claim")
    return value


def _optional_claim(claims: Mapping[str, Any], name: str) -> str | None:
    if name not in claims or claims[name] is None:
        return None
    return _claim(claims, name)


def _source_delegator(claims: Mapping[str, Any]) -> str | None:
    act = claims.get("act")
    from_act: str | None = None
    if act is not None:
        if not isinstance(act, Mapping):
            raise InvalidLogRecordError("the access token's 'act' claim must be an object")
        from_act = _claim(act, "sub")
    from_cdi = _optional_claim(claims, "cdi")
    if from_act is not None and from_cdi is not None and from_act != from_cdi:
        raise InvalidLogRecordError(
            f"the access token names two delegators: act.sub {from_act!r} and cdi {from_cdi!r}"
        )
    return from_act if from_act is not None else from_cdi
