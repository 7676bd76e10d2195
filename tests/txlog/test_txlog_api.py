"""``GET /v1/logs`` (logging.yaml ``getLogs``) with falcon.testing: the caller sees only the
records that name it, in logging.yaml's shape, and never the local purpose fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import pytest
from txlogtest import (
    GRANT_1,
    GRANT_2,
    PEER_A,
    PEER_B,
    PEER_C,
    PEER_D,
    PEER_E,
    T0,
    manager_spec,
    record,
    records_at,
    run,
    validate_logs_response,
    write_all,
)

from appliance.serving.fsc_errors import serialize_error
from appliance.tls.peer import PeerIdentity
from appliance.txlog import LogRecord, Pseudonymiser, PurposeBinding, TransactionLog
from appliance.txlog.api import (
    ENABLED_EXTENSIONS,
    LOGGING_EXTENSION,
    LOGGING_VERSION,
    REQUEST_INVALID,
    add_log_routes,
)

PEER_HEADER = "X-Test-Peer"


class PeerFromHeader:
    """Stands in for PeerIdentityMiddleware: the peer named in a test header."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer_id = req.get_header(PEER_HEADER)
        if peer_id:
            req.context.peer = PeerIdentity(
                peer_id=peer_id,
                organisation=f"Organisation {peer_id}",
                common_name="manager.test",
                certificate_thumbprint="x5t",
                public_key_thumbprint="0" * 64,
                not_after=datetime(2030, 1, 1, tzinfo=UTC),
                certificate_der=b"",
            )


@pytest.fixture
def client(log: TransactionLog) -> falcon.testing.TestClient:
    app = falcon.asgi.App(middleware=[PeerFromHeader()])
    app.set_error_serializer(serialize_error)
    add_log_routes(app, log)
    return falcon.testing.TestClient(app)


def _get(
    client: falcon.testing.TestClient, peer: str | None, query: str = ""
) -> falcon.testing.Result:
    headers = {PEER_HEADER: peer} if peer else {}
    return client.simulate_get("/v1/logs", query_string=query, headers=headers)


def _ok(client: falcon.testing.TestClient, peer: str, query: str = "") -> dict[str, Any]:
    result = _get(client, peer, query)
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json
    validate_logs_response(body)
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [r["transaction_id"] for r in body["records"]]


def _write(log: TransactionLog, items: list[LogRecord]) -> None:
    assert run(write_all(log, items)) == [None] * len(items)


def test_a_peer_sees_only_records_that_name_it(
    client: falcon.testing.TestClient, log: TransactionLog
) -> None:
    plain = record(source=PEER_A, destination=PEER_B)
    source_delegated = record(source=PEER_B, destination=PEER_E, source_delegator=PEER_C)
    destination_delegated = record(source=PEER_E, destination=PEER_B, destination_delegator=PEER_D)
    unrelated = record(source=PEER_E, destination=PEER_B)
    _write(log, [plain, source_delegated, destination_delegated, unrelated])

    def seen(peer: str) -> set[str]:
        return set(_ids(_ok(client, peer, "limit=1000")))

    assert seen(PEER_A) == {plain.transaction_id}
    assert seen(PEER_C) == {source_delegated.transaction_id}
    assert seen(PEER_D) == {destination_delegated.transaction_id}
    assert seen(PEER_E) == {
        source_delegated.transaction_id,
        destination_delegated.transaction_id,
        unrelated.transaction_id,
    }
    assert seen("00000009999999999999") == set()
    # Filters cannot widen the view: asking for another peer's transaction returns nothing.
    body = _ok(client, PEER_A, f"transaction_ids={unrelated.transaction_id}")
    assert body == {"records": [], "pagination": {"next_cursor": ""}}


def test_the_answer_is_logging_yaml_and_holds_no_local_field(
    client: falcon.testing.TestClient, log: TransactionLog, pseudonymiser: Pseudonymiser
) -> None:
    purpose = PurposeBinding(
        processing_activity_id="urn:sluis:pa:bijstand",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        data_subject_pseudonym=pseudonymiser.pseudonymise("999993653"),
    )
    item = record(
        source_delegator=PEER_C, destination_delegator=PEER_D, purpose=purpose, created_at=T0
    )
    _write(log, [item])
    result = _get(client, PEER_A)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["cache-control"] == "no-store"
    body = result.json
    validate_logs_response(body)
    assert body == {"records": [item.to_api()], "pagination": {"next_cursor": ""}}
    for local in (
        "urn:sluis:pa:bijstand",
        purpose.trace_id,
        purpose.data_subject_pseudonym,
        "999993653",
    ):
        assert local is not None
        assert local not in result.text
    assert body["records"][0]["created_at"] == int(T0.timestamp())


def test_pagination_with_the_cursor(client: falcon.testing.TestClient, log: TransactionLog) -> None:
    items = records_at(30)
    _write(log, items)
    first = _ok(client, PEER_A)
    assert len(first["records"]) == 25  # logging.yaml default limit
    assert _ids(first)[0] == items[-1].transaction_id  # newest first by default
    seen: list[str] = []
    cursor = ""
    for order in ("SORT_ORDER_ASCENDING", "SORT_ORDER_DESCENDING"):
        seen, cursor = [], ""
        while True:
            body = _ok(
                client,
                PEER_A,
                f"limit=7&sort_order={order}" + (f"&cursor={cursor}" if cursor else ""),
            )
            seen.extend(_ids(body))
            cursor = body["pagination"]["next_cursor"]
            if not cursor:
                break
        expected = [i.transaction_id for i in items]
        assert seen == (expected if order == "SORT_ORDER_ASCENDING" else expected[::-1])


def test_filters(client: falcon.testing.TestClient, log: TransactionLog) -> None:
    one = record(grant=GRANT_1, service="basisregistratie", created_at=T0)
    two = record(grant=GRANT_2, service="basisregistratie", created_at=T0 + timedelta(seconds=10))
    three = record(grant=GRANT_2, service="kadaster", created_at=T0 + timedelta(seconds=20))
    _write(log, [one, two, three])
    t0 = int(T0.timestamp())

    def ids(query: str) -> set[str]:
        return set(_ids(_ok(client, PEER_A, query)))

    every = {one.transaction_id, two.transaction_id, three.transaction_id}
    assert ids(f"grant_hash={GRANT_1}") == {one.transaction_id}
    # style: form, explode: false (one comma-separated value); repeating works as well.
    assert ids(f"grant_hash={GRANT_1},{GRANT_2}") == every
    assert ids(f"grant_hash={GRANT_1}&grant_hash={GRANT_2}") == every
    assert ids("service_name=kadaster") == {three.transaction_id}
    assert ids("service_name=kadaster,basisregistratie") == every
    assert ids(f"grant_hash={GRANT_1}&service_name=kadaster") == {
        one.transaction_id,
        three.transaction_id,
    }
    assert ids(f"after={t0}") == {two.transaction_id, three.transaction_id}
    assert ids(f"before={t0 + 20}") == {one.transaction_id, two.transaction_id}
    assert ids(f"after={t0}&before={t0 + 20}") == {two.transaction_id}
    # transaction_ids: the other filters and pagination are ignored (logging.yaml).
    body = _ok(
        client,
        PEER_A,
        f"transaction_ids={one.transaction_id},{three.transaction_id}"
        f"&limit=1&grant_hash=x&after={t0 + 99}",
    )
    assert set(_ids(body)) == {one.transaction_id, three.transaction_id}
    assert body["pagination"]["next_cursor"] == ""


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-5",
        "sort_order=SORT_ORDER_SIDEWAYS",
        "after=-1",
        "after=yesterday",
        "before=1.5",
        f"before={2**63}",
        "after=99999999999999",
        "cursor=garbage",
        "cursor=1-2-3",
        "transaction_ids=" + ",".join(["x"] * 501),
    ],
)
def test_bad_parameters_get_an_fsc_error(client: falcon.testing.TestClient, query: str) -> None:
    result = _get(client, PEER_A, query)
    assert result.status_code == 400, (query, result.text)
    assert result.headers["Fsc-Error-Code"] == REQUEST_INVALID
    body = json.loads(result.text)
    assert body["code"] == REQUEST_INVALID
    assert body["domain"] == "ERROR_DOMAIN_MANAGER"


def test_without_a_peer_there_is_no_answer(
    client: falcon.testing.TestClient, log: TransactionLog
) -> None:
    _write(log, [record()])
    result = _get(client, None)
    assert result.status_code == 400
    assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
    assert "records" not in result.text


def test_the_extension_for_the_peer_endpoint() -> None:
    """What GET /v1/peer reports: manager.yaml enabledExtensions and loggingVersion."""
    schemas = manager_spec()["components"]["schemas"]
    assert LOGGING_EXTENSION in schemas["enabledExtensions"]["properties"]
    assert schemas["enabledExtensions"]["properties"][LOGGING_EXTENSION] == {
        "$ref": "#/components/schemas/loggingVersion"
    }
    assert schemas["loggingVersion"]["enum"] == [LOGGING_VERSION]
    assert dict(ENABLED_EXTENSIONS) == {"EXTENSION_TRANSACTION_LOGGING": "1.0.0"}
    with pytest.raises(TypeError):
        ENABLED_EXTENSIONS["EXTENSION_DELEGATION"] = "1.0.0"  # type: ignore[index]


def test_the_error_code_is_the_managers() -> None:
    from appliance.manager.api import REQUEST_INVALID as MANAGER_REQUEST_INVALID

    assert REQUEST_INVALID == MANAGER_REQUEST_INVALID
