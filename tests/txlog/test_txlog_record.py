"""The log record: logging.yaml's ``logRecord`` exactly, access-token claims, UUIDv7 ids, and
the local purpose fields that never reach the API (logging spec "Log record")."""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from txlogtest import (
    GRANT_1,
    PEER_A,
    PEER_B,
    PEER_C,
    PEER_D,
    T0,
    logging_spec,
    record,
    validate_log_record,
)

from appliance.txlog import (
    Destination,
    Direction,
    InvalidLogRecordError,
    InvalidTransactionIdError,
    LogRecord,
    PurposeBinding,
    Source,
    new_transaction_id,
    parse_transaction_id,
    trace_id_from_traceparent,
)
from appliance.txlog.record import transaction_id_time

CLAIMS: dict[str, Any] = {
    "gth": GRANT_1,
    "gid": "fsc.group.example.id",
    "sub": PEER_A,
    "iss": PEER_B,
    "svc": "basisregistratie",
    "aud": "https://inway.example.nl:443",
    "exp": 1493726400,
    "nbf": 1493722800,
    "cnf": {"x5t#S256": "DpAyDYakmVAQ4oOJC3UYLRk_ONRCqMj00TeGJemMiLA"},
}
PURPOSE = PurposeBinding(
    processing_activity_id="urn:uuid:6f1c1e0e-1b7a-4c57-9d59-0c6a3f0e8a11",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    data_subject_pseudonym="ab" * 32,
)


# -- logging.yaml -----------------------------------------------------------------------------


@pytest.mark.parametrize("source_delegator", [None, PEER_C])
@pytest.mark.parametrize("destination_delegator", [None, PEER_D])
@pytest.mark.parametrize("direction", list(Direction))
def test_to_api_is_a_logging_yaml_log_record(
    source_delegator: str | None, destination_delegator: str | None, direction: Direction
) -> None:
    item = record(
        source_delegator=source_delegator,
        destination_delegator=destination_delegator,
        direction=direction,
        created_at=T0 + timedelta(microseconds=999_999),
        purpose=PURPOSE,
    )
    data = item.to_api()
    validate_log_record(data)
    assert data["created_at"] == int(T0.timestamp())  # whole seconds (logging.yaml timestamp)
    assert data["direction"] == direction.value
    assert data["source"]["type"] == (
        "SOURCE_TYPE_DELEGATED_SOURCE" if source_delegator else "SOURCE_TYPE_SOURCE"
    )
    assert data["destination"]["type"] == (
        "DESTINATION_TYPE_DELEGATED_DESTINATION"
        if destination_delegator
        else "DESTINATION_TYPE_DESTINATION"
    )
    # Round trip: what another Manager's /logs gives back is the same record (without the
    # local purpose fields, and at the API's whole seconds).
    back = LogRecord.from_api(data)
    assert back.to_api() == data
    assert back == dataclasses.replace(item, created_at=T0, purpose=PurposeBinding()), (
        "from_api(to_api(r)) is r without local fields"
    )


def test_the_api_output_has_exactly_the_schema_fields() -> None:
    schema = logging_spec()["components"]["schemas"]
    data = record(source_delegator=PEER_C, destination_delegator=PEER_D, purpose=PURPOSE).to_api()
    assert (
        set(data) == set(schema["logRecord"]["properties"]) == set(schema["logRecord"]["required"])
    )
    assert set(data["source"]) == set(schema["sourceDelegated"]["properties"])
    assert set(data["destination"]) == set(schema["destinationDelegated"]["properties"])
    text = repr(data)
    for local in (PURPOSE.processing_activity_id, PURPOSE.trace_id, PURPOSE.data_subject_pseudonym):
        assert local is not None
        assert local not in text


def test_the_schema_check_is_not_vacuous() -> None:
    data = record().to_api()
    for broken in (
        {**data, "direction": "DIRECTION_SIDEWAYS"},
        {**data, "created_at": "yesterday"},
        {**data, "source": {"type": "SOURCE_TYPE_DELEGATED_SOURCE", "outway_peer_id": PEER_A}},
        {k: v for k, v in data.items() if k != "grant_hash"},
        {**data, "service_name": "x" * 256},
    ):
        with pytest.raises((jsonschema.ValidationError, AssertionError)):
            validate_log_record(broken)


def test_from_api_refuses_malformed_records() -> None:
    data = record().to_api()
    for broken in (
        {**data, "direction": "DIRECTION_SIDEWAYS"},
        {**data, "created_at": -1},
        {**data, "created_at": True},
        {
            **data,
            "source": {
                "type": "SOURCE_TYPE_SOURCE",
                "outway_peer_id": PEER_A,
                "delegator_peer_id": PEER_C,
            },
        },
        {**data, "destination": {"type": "X", "service_peer_id": PEER_B}},
        {**data, "transaction_id": "not-a-uuid"},
        [],
    ):
        with pytest.raises(InvalidLogRecordError):
            LogRecord.from_api(broken)  # type: ignore[arg-type]


# -- access-token claims (logging spec "Access token", READING.md item 5) ---------------------


def test_claims_map_to_fields() -> None:
    item = LogRecord.from_access_token(CLAIMS, direction=Direction.OUTGOING, created_at=T0)
    assert item.grant_hash == CLAIMS["gth"]
    assert item.source == Source(outway_peer_id=PEER_A)
    assert item.destination == Destination(service_peer_id=PEER_B)
    assert item.service_name == "basisregistratie"
    assert item.created_at == T0
    parse_transaction_id(item.transaction_id)  # the outway made a UUIDv7


def test_core_act_sub_is_the_source_delegator() -> None:
    item = LogRecord.from_access_token(
        {**CLAIMS, "act": {"sub": PEER_C}}, direction=Direction.OUTGOING
    )
    assert item.source == Source(PEER_A, PEER_C)
    assert item.to_api()["source"]["type"] == "SOURCE_TYPE_DELEGATED_SOURCE"


def test_the_logging_extensions_cdi_and_pdi_claims() -> None:
    item = LogRecord.from_access_token(
        {**CLAIMS, "cdi": PEER_C, "pdi": PEER_D}, direction=Direction.OUTGOING
    )
    assert item.source == Source(PEER_A, PEER_C)
    assert item.destination == Destination(PEER_B, PEER_D)
    same = LogRecord.from_access_token(
        {**CLAIMS, "cdi": PEER_C, "act": {"sub": PEER_C}}, direction=Direction.OUTGOING
    )
    assert same.source.delegator_peer_id == PEER_C


@pytest.mark.parametrize(
    "claims",
    [
        {**CLAIMS, "cdi": PEER_C, "act": {"sub": PEER_D}},  # two different delegators
        {**CLAIMS, "act": PEER_C},
        {**CLAIMS, "act": {}},
        {k: v for k, v in CLAIMS.items() if k != "gth"},
        {k: v for k, v in CLAIMS.items() if k != "sub"},
        {**CLAIMS, "iss": 12345},
        {**CLAIMS, "svc": ""},
        {**CLAIMS, "pdi": ""},
    ],
)
def test_unusable_claims_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidLogRecordError):
        LogRecord.from_access_token(claims, direction=Direction.OUTGOING)


def test_the_inway_must_use_the_outways_transaction_id() -> None:
    with pytest.raises(InvalidLogRecordError, match="Fsc-Transaction-Id"):
        LogRecord.from_access_token(CLAIMS, direction=Direction.INCOMING)
    given = new_transaction_id()
    item = LogRecord.from_access_token(
        CLAIMS, direction=Direction.INCOMING, transaction_id=given.upper()
    )
    assert item.transaction_id == given
    assert item.direction is Direction.INCOMING


# -- transaction ids: UUIDv7 (READING.md item 10) ---------------------------------------------


def test_new_transaction_ids_are_uuidv7() -> None:
    ids = [new_transaction_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:200]:
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value
        )
        assert parse_transaction_id(value) == value
    moment = transaction_id_time(ids[0])
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)
    assert new_transaction_id(now_ms=0).startswith("00000000-0000-7")
    with pytest.raises(ValueError, match="UUIDv7"):
        new_transaction_id(now_ms=1 << 48)


def test_a_forked_worker_never_repeats_its_parents_ids() -> None:
    """The random bits come from blocks read from the CSPRNG; a gunicorn worker forked with a
    half-used block in its parent must not hand out the same bits as the parent."""
    new_transaction_id(now_ms=0)  # the parent now holds a block it has used a little of
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, "\n".join(new_transaction_id(now_ms=0) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_transaction_id(now_ms=0) for _ in range(50)}
    assert len(child) == 50
    assert not parent & child


def test_the_time_prefix_sorts_ids_by_millisecond() -> None:
    early, late = new_transaction_id(now_ms=1_000), new_transaction_id(now_ms=1_001)
    assert early < late


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        "0197a000-0000-7000-c000-000000000001",  # variant 110 (Microsoft)
        "0197a000-0000-7000-8000-00000000000",  # one digit short
        "{0197a000-0000-7000-8000-000000000001}",
        "0197a0000000700080000000000000001",
        "0197a000-0000-7000-8000-000000000001\n",
        "0197a000-0000-7000-8000-000000000001; DROP TABLE txlog_records",
        "x" * 10_000,
    ],
)
def test_invalid_transaction_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidTransactionIdError):
        parse_transaction_id(value)
    with pytest.raises(InvalidLogRecordError):
        record(transaction_id=value or "-")


def test_the_header_check_wants_v7_and_a_record_any_rfc_9562_uuid() -> None:
    """Whether a foreign outway's UUIDv4 is let in is the inway's decision (the header check);
    once it is, the record stores it rather than refusing the request with a 500."""
    v4 = "6f1c1e0e-1b7a-4c57-9d59-0c6a3f0e8a11"
    with pytest.raises(InvalidTransactionIdError, match="version 4"):
        parse_transaction_id(v4)
    assert parse_transaction_id(v4, any_version=True) == v4
    assert record(transaction_id=v4).transaction_id == v4
    for not_rfc in (
        "00000000-0000-0000-0000-000000000000",  # nil
        "ffffffff-ffff-ffff-ffff-ffffffffffff",  # max
        "6f1c1e0e-1b7a-9c57-9d59-0c6a3f0e8a11",  # version 9
    ):
        with pytest.raises(InvalidTransactionIdError):
            parse_transaction_id(not_rfc, any_version=True)
        with pytest.raises(InvalidLogRecordError):
            record(transaction_id=not_rfc)


def test_transaction_ids_are_case_insensitive_and_stored_lower_case() -> None:
    value = "0197A000-0000-7000-8000-00000000000F"
    assert parse_transaction_id(value) == value.lower()
    assert record(transaction_id=value).transaction_id == value.lower()
    with pytest.raises(InvalidTransactionIdError):  # HTTP servers strip the header already
        parse_transaction_id(" 0197a000-0000-7000-8000-000000000001")


# -- the local purpose fields -----------------------------------------------------------------


def test_traceparent_gives_the_trace_id() -> None:
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_from_traceparent(header) == "4bf92f3577b34da6a3ce929d0e0e4736"
    # A later version may add fields; version 00 may not.
    assert trace_id_from_traceparent(header.replace("00-", "01-", 1) + "-extra") is not None
    for invalid in (
        None,
        "",
        header + "-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "garbage",
    ):
        assert trace_id_from_traceparent(invalid) is None, invalid


@pytest.mark.parametrize(
    "fields",
    [
        {"data_subject_pseudonym": "999993653"},  # a raw BSN is not a pseudonym
        {"data_subject_pseudonym": "AB" * 32},
        {"trace_id": "4bf92f3577b34da6a3ce929d0e0e473"},
        {"trace_id": "0" * 32},
        {"processing_activity_id": "Aanvraag bijstand van J. Jansen"},  # a description
        {"processing_activity_id": "x" * 201},
        {"processing_activity_id": ""},
    ],
)
def test_purpose_fields_are_identifiers_only(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidLogRecordError):
        PurposeBinding(**fields)


# -- no field can carry message content -------------------------------------------------------


def test_a_record_has_no_field_for_content() -> None:
    assert [f.name for f in dataclasses.fields(LogRecord)] == [
        "transaction_id",
        "direction",
        "grant_hash",
        "service_name",
        "source",
        "destination",
        "created_at",
        "purpose",
    ]
    assert [f.name for f in dataclasses.fields(Source)] == ["outway_peer_id", "delegator_peer_id"]
    assert [f.name for f in dataclasses.fields(Destination)] == [
        "service_peer_id",
        "delegator_peer_id",
    ]
    assert [f.name for f in dataclasses.fields(PurposeBinding)] == [
        "processing_activity_id",
        "trace_id",
        "data_subject_pseudonym",
    ]
    item = record()
    with pytest.raises(AttributeError):
        item.body = b"{}"  # type: ignore[attr-defined]


CONTENT = [
    '{"bsn": "999993653", "naam": "J. Jansen"}',
    "GET /personen?bsn=999993653 HTTP/1.1",
    "Authorization: Bearer eyJhbGciOi",
    "line\nbreak",
    "x" * 2000,
]


@pytest.mark.parametrize("content", CONTENT)
@pytest.mark.parametrize(
    "field",
    [
        "grant_hash",
        "service_name",
        "outway_peer_id",
        "service_peer_id",
        "source_delegator",
        "destination_delegator",
    ],
)
def test_no_field_accepts_content(content: str, field: str) -> None:
    """Every text field is bounded by format and length: a body, a request line, a header or a
    long text does not fit in any of them."""
    kwargs: dict[str, Any] = {
        "grant_hash": {"grant": content},
        "service_name": {"service": content},
        "outway_peer_id": {"source": content},
        "service_peer_id": {"destination": content},
        "source_delegator": {"source_delegator": content},
        "destination_delegator": {"destination_delegator": content},
    }[field]
    with pytest.raises(InvalidLogRecordError):
        record(**kwargs)


def test_field_limits_follow_logging_yaml() -> None:
    record(source="1", destination="1" * 20, service="abc", grant="$")
    record(service="s" * 255, grant="g" * 1024)
    for bad in (
        {"source": ""},
        {"destination": "1" * 21},
        {"service": "ab"},  # serviceName minLength 3
        {"service": "s" * 256},
        {"service": "with space"},
        {"grant": ""},
        {"grant": "g" * 1025},
    ):
        with pytest.raises(InvalidLogRecordError):
            record(**bad)  # type: ignore[arg-type]


def test_created_at_must_be_aware_and_is_kept_in_utc() -> None:
    with pytest.raises(InvalidLogRecordError):
        record(created_at=datetime(2026, 1, 1))
    cet = timezone(timedelta(hours=1))
    item = record(created_at=datetime(2026, 1, 1, 13, 0, tzinfo=cet))
    assert item.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert item.created_at.tzinfo is UTC
    assert record(direction="DIRECTION_INCOMING").direction is Direction.INCOMING  # type: ignore[arg-type]
    with pytest.raises(InvalidLogRecordError):
        record(direction="DIRECTION_SIDEWAYS")  # type: ignore[arg-type]


def test_peer_ids_lists_every_named_peer() -> None:
    assert record().peer_ids() == {PEER_A, PEER_B}
    assert record(source_delegator=PEER_C, destination_delegator=PEER_D).peer_ids() == {
        PEER_A,
        PEER_B,
        PEER_C,
        PEER_D,
    }
