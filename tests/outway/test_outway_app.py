"""The outway app in-process (falcon.testing) against a fake inway over real mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from outwaytest import (
    GRANT,
    GRANT_2,
    GRANT_OTHER,
    OIN_OTHER,
    OIN_OWN,
    OIN_SERVICE,
    SERVICE,
    TRANSACTION,
    FailingWriter,
    FakeFetcher,
    FakeInway,
    Pki,
    error_of,
    make_pki,
    outway,
)

from appliance.outway.logging import MemoryLogWriter
from appliance.txlog.pseudonym import Pseudonymiser
from appliance.txlog.record import Direction, parse_transaction_id


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("outway-pki"))


@pytest.fixture
def log() -> MemoryLogWriter:
    return MemoryLogWriter()


@pytest.fixture
def inway(pki: Pki, log: MemoryLogWriter) -> Iterator[FakeInway]:
    fake = FakeInway(pki, log)
    yield fake
    fake.stop()


def _headers(seen: list[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in seen:
        result.setdefault(name.lower(), []).append(value)
    return result


# -- routing ---------------------------------------------------------------------------------


def test_routing_by_grant_hash_header_forwards_the_whole_path(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter
) -> None:
    with outway(pki, inway.port, log=log) as gw:
        result = gw.request(
            "GET",
            "/persons/123",
            query_string="fields=name&x=%2F",
            headers={"Fsc-Grant-Hash": GRANT},
        )
    assert result.status_code == 200, result.text
    seen = inway.requests()
    assert len(seen) == 1
    assert seen[0].raw_path == "/persons/123?fields=name&x=%2F"
    assert "outway.sluis.test" in seen[0].client_cert_subject  # mutual TLS
    headers = _headers(seen[0].headers)
    token = headers["fsc-authorization"]
    assert len(token) == 1
    assert token[0].count(".") == 2
    assert "fsc-grant-hash" not in headers
    assert seen[0].logged  # the record was written before the inway saw the request
    transaction = headers["fsc-transaction-id"][0]
    assert result.headers["fsc-transaction-id"] == transaction
    assert parse_transaction_id(transaction) == transaction  # a UUIDv7
    [record] = log.records
    assert record.transaction_id == transaction
    assert record.direction is Direction.OUTGOING
    assert record.grant_hash == GRANT
    assert record.source.outway_peer_id == OIN_OWN
    assert record.destination.service_peer_id == OIN_SERVICE
    assert record.service_name == SERVICE


def test_routing_by_nlx_path_forwards_the_rest(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        result = gw.request("POST", f"/{OIN_SERVICE}/{SERVICE}/persons/1", body=b"hello")
        bare = gw.request("GET", f"/{OIN_OTHER}/kadaster")
    assert result.status_code == 200, result.text
    assert bare.status_code == 200, bare.text
    first, second = inway.requests()
    assert (first.method, first.raw_path, first.body) == ("POST", "/persons/1", b"hello")
    assert second.raw_path == "/"
    assert gw.fetcher.fetched == [GRANT, GRANT_OTHER]


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (f"/{OIN_SERVICE}/unknown/x", {}, 404, "ERROR_CODE_GRANT_NOT_FOUND"),
        (f"/{OIN_OTHER}/{SERVICE}/x", {}, 404, "ERROR_CODE_GRANT_NOT_FOUND"),
        (f"/{OIN_OTHER}/brp/x", {}, 409, "ERROR_CODE_GRANT_AMBIGUOUS"),
        ("/x", {}, 400, "ERROR_CODE_INVALID_PATH"),
        ("/x", {"Fsc-Grant-Hash": "$1$3$nope"}, 404, "ERROR_CODE_GRANT_NOT_FOUND"),
        ("/a/../b", {"Fsc-Grant-Hash": GRANT}, 400, "ERROR_CODE_INVALID_PATH"),
        (f"/{OIN_SERVICE}/{SERVICE}/%2e%2e/x", {}, 400, "ERROR_CODE_INVALID_PATH"),
        (f"/{OIN_SERVICE}/{SERVICE}/a%2fb", {}, 400, "ERROR_CODE_INVALID_PATH"),
    ],
)
def test_requests_without_a_usable_route_are_refused(
    pki: Pki,
    inway: FakeInway,
    log: MemoryLogWriter,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    with outway(pki, inway.port, log=log) as gw:
        result = gw.request("GET", path, headers=headers)
    assert error_of(result) == (status, code)
    assert result.headers.get("fsc-transaction-id")
    assert inway.requests() == []
    assert log.records == []
    assert gw.fetcher.fetched == []


def test_connect_is_refused(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        result = gw.request("CONNECT", "/", headers={"Fsc-Grant-Hash": GRANT})
    assert error_of(result) == (405, "ERROR_CODE_METHOD_UNSUPPORTED")
    assert inway.requests() == []


# -- the transaction id ----------------------------------------------------------------------


def test_the_apps_transaction_id_is_used_and_echoed(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter
) -> None:
    with outway(pki, inway.port, log=log) as gw:
        result = gw.request(
            "GET",
            "/x",
            headers={"Fsc-Grant-Hash": GRANT, "Fsc-Transaction-Id": TRANSACTION.upper()},
        )
    assert result.status_code == 200, result.text
    assert result.headers["fsc-transaction-id"] == TRANSACTION
    [seen] = inway.requests()
    assert _headers(seen.headers)["fsc-transaction-id"] == [TRANSACTION]
    assert log.records[0].transaction_id == TRANSACTION


@pytest.mark.parametrize(
    "value",
    ["nope", "0190a0b4-3c1e-4d2f-8e5a-0123456789ab", "0190a0b4-3c1e-7d2f-0e5a-0123456789ab"],
)
def test_an_invalid_transaction_id_is_refused(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter, value: str
) -> None:
    with outway(pki, inway.port, log=log) as gw:
        result = gw.request(
            "GET", "/x", headers={"Fsc-Grant-Hash": GRANT, "Fsc-Transaction-Id": value}
        )
    assert error_of(result) == (400, "INVALID_LOG_RECORD_ID")
    assert inway.requests() == []
    assert log.records == []


def test_each_request_gets_its_own_transaction_id(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        ids = {
            gw.request("GET", "/x", headers={"Fsc-Grant-Hash": GRANT}).headers["fsc-transaction-id"]
            for _ in range(3)
        }
    assert len(ids) == 3


# -- logging ---------------------------------------------------------------------------------


def test_no_log_record_no_request(pki: Pki, inway: FakeInway) -> None:
    writer = FailingWriter()
    with outway(pki, inway.port, log=writer) as gw:
        result = gw.request("POST", "/x", headers={"Fsc-Grant-Hash": GRANT}, body=b"secret")
    assert error_of(result) == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert writer.attempts == 1
    assert inway.requests() == []
    assert result.headers.get("fsc-transaction-id")


def test_a_reused_transaction_id_is_refused_by_the_durable_log(
    pki: Pki, inway: FakeInway, tmp_path: Path
) -> None:
    from appliance.txlog.store import TransactionLog

    durable = TransactionLog.open(f"sqlite:///{tmp_path / 'txlog.db'}")
    try:
        with outway(pki, inway.port, log=durable) as gw:
            headers = {"Fsc-Grant-Hash": GRANT, "Fsc-Transaction-Id": TRANSACTION}
            first = gw.request("GET", "/x", headers=headers)
            second = gw.request("GET", "/x", headers=headers)
    finally:
        durable.close()
    assert first.status_code == 200, first.text
    assert error_of(second) == (400, "INVALID_LOG_RECORD_ID")
    assert len(inway.requests()) == 1


def test_purpose_binding_is_logged_and_not_forwarded(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter
) -> None:
    pseudonymiser = Pseudonymiser(b"k" * 32)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with outway(pki, inway.port, log=log, pseudonymiser=pseudonymiser) as gw:
        result = gw.request(
            "GET",
            "/x",
            headers={
                "Fsc-Grant-Hash": GRANT,
                "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                "Sluis-Processing-Activity": "urn:uuid:verwerking-42",
                "Sluis-Data-Subject": "999993653",
                "Sluis-Data-Subject-Type": "bsn",
            },
        )
    assert result.status_code == 200, result.text
    [record] = log.records
    assert record.purpose.trace_id == trace
    assert record.purpose.processing_activity_id == "urn:uuid:verwerking-42"
    assert record.purpose.data_subject_pseudonym == pseudonymiser.pseudonymise(
        "999993653", kind="bsn"
    )
    headers = _headers(inway.requests()[0].headers)
    assert "traceparent" in headers
    assert not {"sluis-processing-activity", "sluis-data-subject", "sluis-data-subject-type"} & set(
        headers
    )


def test_purpose_headers_can_be_forwarded(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port, forward_purpose_headers=True) as gw:
        result = gw.request(
            "GET",
            "/x",
            headers={"Fsc-Grant-Hash": GRANT, "Sluis-Processing-Activity": "activity-1"},
        )
    assert result.status_code == 200, result.text
    assert _headers(inway.requests()[0].headers)["sluis-processing-activity"] == ["activity-1"]


def test_a_data_subject_without_a_pseudonym_key_is_not_sent(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter
) -> None:
    with outway(pki, inway.port, log=log) as gw:
        result = gw.request(
            "GET", "/x", headers={"Fsc-Grant-Hash": GRANT, "Sluis-Data-Subject": "999993653"}
        )
        bad = gw.request(
            "GET",
            "/x",
            headers={"Fsc-Grant-Hash": GRANT, "Sluis-Processing-Activity": "no spaces please"},
        )
    assert error_of(result) == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert error_of(bad) == (400, "ERROR_CODE_INVALID_PURPOSE")
    assert inway.requests() == []
    assert log.records == []


# -- tokens ----------------------------------------------------------------------------------


def test_one_token_serves_many_requests(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        for _ in range(5):
            assert gw.request("GET", "/x", headers={"Fsc-Grant-Hash": GRANT}).status_code == 200
    assert gw.fetcher.fetched == [GRANT]
    tokens = {_headers(s.headers)["fsc-authorization"][0] for s in inway.requests()}
    assert len(tokens) == 1


def test_a_token_is_fetched_again_shortly_before_it_expires(pki: Pki, inway: FakeInway) -> None:
    now = [1_800_000_000.0]
    fetcher = FakeFetcher(clock=lambda: now[0], lifetime=300)
    with outway(pki, inway.port, fetcher=fetcher, clock=lambda: now[0], refresh=30) as gw:
        headers = {"Fsc-Grant-Hash": GRANT}
        assert gw.request("GET", "/x", headers=headers).status_code == 200
        now[0] += 269  # 31 s left: still good
        assert gw.request("GET", "/x", headers=headers).status_code == 200
        assert fetcher.fetched == [GRANT]
        now[0] += 2  # 29 s left: within the refresh margin
        assert gw.request("GET", "/x", headers=headers).status_code == 200
    assert fetcher.fetched == [GRANT, GRANT]


@pytest.mark.parametrize(
    "fetcher",
    [
        FakeFetcher(fail=True),
        FakeFetcher(changes={"gid": "other.group"}),
        FakeFetcher(changes={"gth": GRANT_2}),
        FakeFetcher(changes={"aud": "http://inway.sluis.test:443"}),
        FakeFetcher(lifetime=-10),
    ],
    ids=["manager-down", "wrong-group", "wrong-grant", "plain-http-aud", "expired"],
)
def test_no_usable_token_is_a_502(
    pki: Pki, inway: FakeInway, log: MemoryLogWriter, fetcher: FakeFetcher
) -> None:
    with outway(pki, inway.port, log=log, fetcher=fetcher) as gw:
        result = gw.request("GET", "/x", headers={"Fsc-Grant-Hash": GRANT})
    assert error_of(result) == (502, "ERROR_CODE_TOKEN_UNAVAILABLE")
    assert inway.requests() == []
    assert log.records == []


def test_a_token_the_inway_refuses_is_not_reused(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        refused = gw.request("GET", "/status/401", headers={"Fsc-Grant-Hash": GRANT})
        gw.request("GET", "/x", headers={"Fsc-Grant-Hash": GRANT})
    assert refused.status_code == 401
    assert gw.fetcher.fetched == [GRANT, GRANT]


# -- proxying --------------------------------------------------------------------------------


def test_inway_errors_are_passed_back_unaltered(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        result = gw.request(
            "GET",
            "/status/502",
            query_string="code=ERROR_CODE_SERVICE_UNREACHABLE",
            headers={"Fsc-Grant-Hash": GRANT},
        )
    assert result.status_code == 502
    assert result.json == {
        "message": "inway says no",
        "domain": "ERROR_DOMAIN_INWAY",
        "code": "ERROR_CODE_SERVICE_UNREACHABLE",
    }
    assert result.headers["fsc-error-code"] == "ERROR_CODE_SERVICE_UNREACHABLE"
    assert result.headers["x-inway"] == "yes"
    assert result.headers["www-authenticate"] == "Bearer"


def test_an_unreachable_inway_is_a_502(pki: Pki, log: MemoryLogWriter) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with outway(pki, port, log=log) as gw:
        result = gw.request("GET", "/x", headers={"Fsc-Grant-Hash": GRANT})
    assert error_of(result) == (502, "ERROR_CODE_INWAY_UNREACHABLE")
    assert len(log.records) == 1  # logged before the attempt


def test_identity_and_hop_by_hop_headers_are_stripped(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        result = gw.request(
            "GET",
            "/x",
            headers={
                "Fsc-Grant-Hash": GRANT,
                "Fsc-Authorization": "forged.token.here",
                "Fsc-Manager-Address": "https://evil.example:443",
                "X-Forwarded-For": "10.0.0.1",
                "Forwarded": "for=10.0.0.1",
                "X-Ssl-Client-Cert": "forged",
                "Connection": "close, X-Drop-Me",
                "X-Drop-Me": "1",
                "Keep-Alive": "timeout=5",
                "Authorization": "Bearer app-own",
                "X-App": "kept",
            },
        )
    assert result.status_code == 200, result.text
    headers = _headers(inway.requests()[0].headers)
    assert headers["fsc-authorization"] != ["forged.token.here"]
    assert len(headers["fsc-authorization"]) == 1
    for gone in (
        "fsc-manager-address",
        "fsc-grant-hash",
        "x-forwarded-for",
        "forwarded",
        "x-ssl-client-cert",
        "x-drop-me",
        "keep-alive",
    ):
        assert gone not in headers, gone
    assert headers["authorization"] == ["Bearer app-own"]
    assert headers["x-app"] == ["kept"]


def test_large_responses_are_streamed_back(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port) as gw:
        result = gw.request("GET", "/stream/64", headers={"Fsc-Grant-Hash": GRANT})
    assert result.status_code == 200
    assert len(result.content) == 64 * 65536
    assert result.content[-1] == 63


def test_large_request_bodies_are_streamed_to_the_inway(pki: Pki, inway: FakeInway) -> None:
    body = bytes(range(256)) * 32768  # 8 MiB
    with outway(pki, inway.port) as gw:
        result = gw.request("PUT", "/upload", headers={"Fsc-Grant-Hash": GRANT}, body=body)
    assert result.status_code == 200, result.text
    assert result.json["body_size"] == len(body)
    assert inway.requests()[0].body == body


def test_a_silent_inway_times_out(pki: Pki, inway: FakeInway) -> None:
    with outway(pki, inway.port, read_timeout=0.5) as gw:
        result = gw.request("GET", "/slow/3", headers={"Fsc-Grant-Hash": GRANT})
    assert error_of(result) == (502, "ERROR_CODE_INWAY_UNREACHABLE")
    assert "timed out" in result.json["message"]


def test_shutdown_closes_the_workers_clients(pki: Pki, inway: FakeInway) -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("client")

    async def broken() -> None:
        raise OSError("already closed")

    async def lifespan(app: object) -> None:
        async with falcon.testing.ASGIConductor(app) as conductor:  # type: ignore[arg-type]
            result = await conductor.simulate_get("/x", headers={"Fsc-Grant-Hash": GRANT})
            assert result.status_code == 200

    with outway(pki, inway.port, closers=(broken, close)) as gw:
        asyncio.run(lifespan(gw.app))
    assert closed == ["client"]


def test_an_inway_that_stops_reading_the_upload_is_given_up(pki: Pki) -> None:
    import threading

    from outwaytest import INWAY_HOST, FakeFetcher, FakeGrants

    from appliance.outway.app import create_outway_app
    from appliance.outway.proxy import OutwayForwarder
    from appliance.outway.settings import OutwayRuntime
    from appliance.outway.tokens import TokenCache

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    release = asyncio.Event()

    async def stop_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 30)
        writer.close()

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(stop_reading, "127.0.0.1", 0, ssl=pki.server_context())

    server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    port = int(server.sockets[0].getsockname()[1])
    try:
        forwarder = OutwayForwarder(
            connect_timeout=2,
            read_timeout=30,
            connections=4,
            ssl_context=pki.client_context(),
            resolve={f"{INWAY_HOST}:443": ("127.0.0.1", port)},
            write_timeout=0.5,
        )
        app = create_outway_app(
            OutwayRuntime(group_id="sluis.test"),
            FakeGrants(),
            TokenCache(FakeFetcher(), group_id="sluis.test"),
            MemoryLogWriter(),
            forwarder,
        )

        async def upload() -> falcon.testing.Result:
            async with falcon.testing.ASGIConductor(app) as conductor:
                return await asyncio.wait_for(
                    conductor.simulate_post(
                        "/upload", headers={"Fsc-Grant-Hash": GRANT}, body=b"x" * (32 << 20)
                    ),
                    5,
                )

        result = asyncio.run(upload())
        assert error_of(result) == (502, "ERROR_CODE_INWAY_UNREACHABLE")
    finally:
        loop.call_soon_threadsafe(release.set)
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
