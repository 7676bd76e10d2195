"""The inway app in-process (falcon.testing): authorisation, logging, forwarding, errors."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest
from inwaytest import (
    ADDRESS,
    CA,
    GRANT_HASH,
    GROUP_ID,
    OIN_OTHER,
    OIN_OWN,
    OIN_PEER,
    OTHER,
    OWN,
    PEER,
    PEER_OTHER_CERT,
    SERVICE,
    TRANSACTION,
    EchoBackend,
    EchoState,
    Inway,
    MemorySigner,
    RawBackend,
    claims,
    error_of,
    fsc_headers,
    inway,
    runtime,
    token,
)

from appliance.inway.app import create_inway_app
from appliance.inway.certificates import SigningCertificates
from appliance.inway.logging import MemoryLogWriter
from appliance.jcs import canonicalize
from appliance.manager.contracts import jose
from appliance.txlog.errors import DuplicateTransactionError


@pytest.fixture
def echo() -> Iterator[EchoBackend]:
    backend = EchoBackend()
    yield backend
    backend.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"x") -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature)]
    )


# -- the happy path ---------------------------------------------------------------------------


def test_an_authorised_request_is_logged_then_forwarded(echo: EchoBackend) -> None:
    log = MemoryLogWriter()
    echo.state.log = log
    access = token()
    with inway({SERVICE: echo.url + "/api/v1/"}, log=log) as gw:
        result = gw.request(
            "GET", "/persons/123", query_string="fields=name&x=%2F", headers=fsc_headers(access)
        )
    assert result.status_code == 200, result.text
    seen = echo.state.seen()
    assert len(seen) == 1
    assert seen[0].raw_path == "/api/v1/persons/123?fields=name&x=%2F"
    headers = {k.lower(): v for k, v in seen[0].headers}
    # Passed unchanged to the Service (Core "Routing", Logging "Inway").
    assert headers["fsc-authorization"] == access
    assert headers["fsc-transaction-id"] == TRANSACTION
    assert headers["host"] == f"127.0.0.1:{echo.port}"
    # The record was in the log before the backend saw the request.
    assert seen[0].logged is True
    (record,) = log.records
    created = record.pop("created_at")
    assert abs(created - time.time()) < 5
    assert record == {
        "transaction_id": TRANSACTION,
        "direction": "DIRECTION_INCOMING",
        "grant_hash": GRANT_HASH,
        "source": {"type": "SOURCE_TYPE_SOURCE", "outway_peer_id": OIN_PEER},
        "destination": {"type": "DESTINATION_TYPE_DESTINATION", "service_peer_id": OIN_OWN},
        "service_name": SERVICE,
    }


def test_bearer_prefix_is_accepted(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers("Bearer " + token()))
    assert result.status_code == 200, result.text


def test_delegation_goes_into_the_log_record(echo: EchoBackend) -> None:
    log = MemoryLogWriter()
    access = token(act={"sub": OIN_OTHER}, pdi="00000001000000000999")
    with inway({SERVICE: echo.url}, log=log) as gw:
        assert gw.request(headers=fsc_headers(access)).status_code == 200
    (record,) = log.records
    assert record["source"] == {
        "type": "SOURCE_TYPE_DELEGATED_SOURCE",
        "outway_peer_id": OIN_PEER,
        "delegator_peer_id": OIN_OTHER,
    }
    assert record["destination"] == {
        "type": "DESTINATION_TYPE_DELEGATED_DESTINATION",
        "service_peer_id": OIN_OWN,
        "delegator_peer_id": "00000001000000000999",
    }


def test_service_responses_pass_unaltered(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request("POST", "/status/418", body=b"{}")
    assert result.status_code == 418
    assert result.content == b"service says no"
    # The Service's own error passes with its own code, never as the inway's Fsc-Error-Code.
    assert "fsc-error-code" not in result.headers
    assert result.headers["sluis-service-fsc-error-code"] == "SERVICE_OWN_ERROR"
    assert result.headers["x-service"] == "yes"
    assert result.headers["content-type"] == "application/octet-stream"
    assert result.headers["content-length"] == str(len(b"service says no"))


def test_no_content_type_is_made_up() -> None:
    async def respond(reader: Any, writer: Any, head: bytes) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok")
        await writer.drain()

    backend = RawBackend(respond)
    try:
        with inway({SERVICE: backend.url}) as gw:
            result = gw.request("POST", "/x", body=b"{}")
    finally:
        backend.stop()
    assert result.status_code == 201
    assert result.content == b"ok"
    assert sorted(result.headers) == ["content-length", "x-a"]


def test_head_keeps_the_backend_content_length(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request("HEAD", "/x")
    assert result.status_code == 200
    assert result.content == b""
    assert int(result.headers["content-length"]) > 0
    assert echo.state.seen()[0].method == "HEAD"


def test_a_request_body_is_forwarded(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request("PUT", "/doc", body=b"a" * 100_000)
    assert result.status_code == 200
    assert result.json["body_size"] == 100_000
    assert result.json["method"] == "PUT"


# -- the access token -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "Bearer", "Bearer  "])
def test_missing_token(echo: EchoBackend, value: str | None) -> None:
    headers = {"Fsc-Transaction-Id": TRANSACTION}
    if value is not None:
        headers["Fsc-Authorization"] = value
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=headers)
    assert error_of(result)[:2] == (401, "ERROR_CODE_ACCESS_TOKEN_MISSING")
    assert result.headers["www-authenticate"] == "Bearer"
    assert echo.state.seen() == []


def _signed_by(key_owner: Any, x5t: str, payload: dict[str, Any], alg: str = "ES256") -> str:
    header = {"typ": "JWT", "alg": alg, "x5t#S256": x5t}
    return jose.sign(MemorySigner(key_owner.key), canonicalize(payload), header)


def _tampered(jwt: str) -> str:
    head, payload, signature = jwt.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[5] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(raw))}"


INVALID_TOKENS = {
    "not a JWS": lambda: "not-a-token",
    "garbage parts": lambda: "a.b.c",
    "alg none": lambda: _unsigned({"alg": "none", "x5t#S256": OWN.thumbprint}, claims()) + "",
    "alg HS256": lambda: _unsigned({"alg": "HS256", "x5t#S256": OWN.thumbprint}, claims()),
    "no x5t#S256": lambda: jose.sign(MemorySigner(OWN.key), canonicalize(claims()), {}),
    "signed by another peer's certificate": lambda: token(signer=OTHER, iss=OIN_OTHER),
    "own x5t, other key": lambda: _signed_by(OTHER, OWN.thumbprint, claims()),
    "signature altered": lambda: _tampered(token()),
    "typ not JWT": lambda: jose.sign(
        MemorySigner(OWN.key),
        canonicalize(claims()),
        {"typ": "JOSE+JSON", "x5t#S256": OWN.thumbprint},
    ),
    "issuer is another peer": lambda: token(iss=OIN_OTHER),
    "audience is another inway": lambda: token(aud="https://other.sluis.test:443"),
    "bound to another certificate of the same peer": lambda: token(
        cnf={"x5t#S256": PEER_OTHER_CERT.thumbprint}
    ),
    "bound to nothing": lambda: token(cnf=None),
    "cnf without x5t#S256": lambda: token(cnf={"jkt": "x"}),
    "subject is another peer": lambda: token(sub=OIN_OTHER),
    "no gth": lambda: token(gth=None),
    "no svc": lambda: token(svc=None),
    "no exp": lambda: token(exp=None),
    "exp is a string": lambda: token(exp="tomorrow"),
    "exp is a boolean": lambda: token(exp=True),
    "act without sub": lambda: token(act={"iss": "x"}),
    "pdi not a string": lambda: token(pdi=5),
}


@pytest.mark.parametrize("name", list(INVALID_TOKENS))
def test_invalid_tokens(echo: EchoBackend, name: str) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(INVALID_TOKENS[name]()))
    status, code, message = error_of(result)
    assert (status, code) == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID"), message
    assert result.headers["www-authenticate"] == "Bearer"
    assert echo.state.seen() == []


def test_token_signed_with_an_expired_own_certificate_is_invalid(echo: EchoBackend) -> None:
    expired = CA.issue(OIN_OWN, expired=True)
    app = create_inway_app(
        runtime({SERVICE: echo.url}),
        SigningCertificates([OWN.certificate, expired.certificate]),
        MemoryLogWriter(),
    )
    gw = Inway(app, falcon.testing.TestClient(app), MemoryLogWriter())
    try:
        result = gw.request(headers=fsc_headers(token(signer=expired)))
        assert error_of(result)[:2] == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID")
        assert gw.request().status_code == 200
    finally:
        gw.call(app.forwarder.close())


def test_token_bound_to_another_connection_is_refused(echo: EchoBackend) -> None:
    """The token of PEER's first certificate, presented over a connection with its second."""
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(peer=PEER_OTHER_CERT)
        assert error_of(result)[:2] == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID")
        assert "bound to another certificate" in result.json["message"]
        # ... and by another peer altogether.
        result = gw.request(peer=OTHER)
        assert error_of(result)[:2] == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID")
        # The same request over the certificate it is bound to passes.
        assert gw.request(peer=PEER).status_code == 200
    assert len(echo.state.seen()) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": -60, "nbf": -400}, "expired"),
        ({"exp": -6, "nbf": -400}, "expired"),  # beyond the 5 s clock skew
        ({"nbf": 60, "exp": 400}, "not valid yet"),
    ],
)
def test_expired_tokens(echo: EchoBackend, changes: dict[str, int], message: str) -> None:
    now = int(time.time())
    access = token(**{k: now + v for k, v in changes.items()})
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(access))
    status, code, text = error_of(result)
    assert (status, code) == (401, "ERROR_CODE_ACCESS_TOKEN_EXPIRED")
    assert message in text
    assert result.headers["www-authenticate"] == "Bearer"


def test_clock_skew_is_tolerated(echo: EchoBackend) -> None:
    now = int(time.time())
    with inway({SERVICE: echo.url}) as gw:
        assert gw.request(headers=fsc_headers(token(nbf=now + 3))).status_code == 200
        assert gw.request(headers=fsc_headers(token(exp=now - 2, nbf=now - 100))).status_code == 200


def test_wrong_group(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(token(gid="other.group")))
    assert error_of(result)[:2] == (403, "ERROR_CODE_WRONG_GROUP_ID_IN_TOKEN")
    assert "www-authenticate" not in result.headers
    assert GROUP_ID in result.json["message"]


def test_unknown_service(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(token(svc="kadaster")))
    assert error_of(result)[:2] == (404, "ERROR_CODE_SERVICE_NOT_FOUND")
    assert echo.state.seen() == []


def test_binding_is_checked_before_group_and_service(echo: EchoBackend) -> None:
    """A peer holding someone else's token learns nothing about Groups or Services."""
    access = token(gid="other.group", svc="kadaster")
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(access), peer=OTHER)
    assert error_of(result)[:2] == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID")


def test_audience_compares_scheme_and_host_case_insensitively(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        access = token(aud=ADDRESS.replace("inway", "INWAY") + "/")
        assert gw.request(headers=fsc_headers(access)).status_code == 200


def test_no_peer_identity_is_refused(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(peer=None)
    assert result.status_code == 400
    assert result.headers["fsc-error-code"] == "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
    assert result.json["domain"] == "ERROR_DOMAIN_INWAY"


# -- the transaction id and the log -----------------------------------------------------------


def test_missing_transaction_id(echo: EchoBackend) -> None:
    log = MemoryLogWriter()
    with inway({SERVICE: echo.url}, log=log) as gw:
        result = gw.request(headers=fsc_headers(transaction=None))
    assert error_of(result)[:2] == (400, "MISSING_LOG_RECORD_ID")
    assert echo.state.seen() == []
    assert log.records == []


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "0190a0b4-3c1e-7d2f-8e5a-0123456789a",  # one digit short
        "0190a0b43c1e7d2f8e5a0123456789ab",  # no hyphens
        "{0190a0b4-3c1e-7d2f-8e5a-0123456789ab}",
        "0190a0b4-3c1e-7d2f-8e5a-0123456789ag",
        "00000000-0000-0000-0000-000000000000",  # nil
        "ffffffff-ffff-ffff-ffff-ffffffffffff",  # max
        "0190a0b4-3c1e-0d2f-8e5a-0123456789ab",  # version 0
        "0190a0b4-3c1e-7d2f-ce5a-0123456789ab",  # not the RFC 9562 variant
        "0190a0b4-3c1e-7d2f-8e5a-0123456789ab,0190a0b4-3c1e-7d2f-8e5a-0123456789ab",
    ],
)
def test_invalid_transaction_id(echo: EchoBackend, value: str) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(transaction=value))
    assert error_of(result)[:2] == (400, "INVALID_LOG_RECORD_ID")
    assert echo.state.seen() == []


def test_a_version_4_uuid_from_another_outway_is_accepted(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request(headers=fsc_headers(transaction="6F9619FF-8B86-4011-B42D-00C04FC964FF"))
    assert result.status_code == 200


class FailingWriter:
    def __init__(self) -> None:
        self.calls = 0

    async def write(self, record: dict[str, Any]) -> None:
        self.calls += 1
        raise OSError("disk full")


def test_a_failing_log_write_forwards_nothing(echo: EchoBackend) -> None:
    writer = FailingWriter()
    with inway({SERVICE: echo.url}, log=writer) as gw:
        result = gw.request("POST", "/x", body=b"payload")
    status, code, message = error_of(result)
    assert (status, code) == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert "disk full" not in message  # no internals to the peer
    assert writer.calls == 1
    assert echo.state.seen() == []


def test_the_record_is_written_before_the_backend_answers() -> None:
    state = EchoState()
    log = MemoryLogWriter()
    state.log = log
    backend = EchoBackend(state)
    try:
        with inway({SERVICE: backend.url}, log=log) as gw:
            for transaction in (TRANSACTION, "0190a0b4-3c1e-7d2f-8e5a-0123456789ac"):
                result = gw.request(headers=fsc_headers(transaction=transaction))
                assert result.json["logged"] is True
    finally:
        backend.stop()
    assert [r["transaction_id"] for r in log.records] == [
        TRANSACTION,
        "0190a0b4-3c1e-7d2f-8e5a-0123456789ac",
    ]


# -- hop-by-hop headers -----------------------------------------------------------------------


def test_hop_by_hop_request_headers_are_stripped(echo: EchoBackend) -> None:
    headers = [
        *fsc_headers().items(),
        ("Connection", "keep-alive, X-Private, Fsc-Transaction-Id"),
        ("Connection", "fsc-authorization"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),
        ("X-Private", "named by Connection"),
        ("Expect", "100-continue"),
        ("X-Public", "kept"),
        ("Fsc-Custom", "never validated"),
    ]
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request("POST", "/h", headers=headers, body=b"abc")
    assert result.status_code == 200, result.text
    seen = {k.lower(): v for k, v in echo.state.seen()[0].headers}
    for gone in (
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "x-private",
        "expect",
    ):
        assert gone not in seen, gone
    assert seen["x-public"] == "kept"
    assert "fsc-custom" not in seen  # of Fsc-*, only what the inway verified goes on
    assert seen["fsc-transaction-id"] == TRANSACTION  # even though Connection names it
    assert "fsc-authorization" in seen
    assert echo.state.seen()[0].body_size == 3


def test_hop_by_hop_response_headers_are_stripped() -> None:
    async def respond(reader: Any, writer: Any, head: bytes) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: X-Backend-Private, Fsc-Backend\r\n"
            b"Keep-Alive: timeout=3\r\n"
            b"Proxy-Authenticate: Basic\r\n"
            b"Proxy-Anything: x\r\n"
            b"Trailer: X-Sum\r\n"
            b"Upgrade: h2c\r\n"
            b"X-Backend-Private: secret\r\n"
            b"Fsc-Backend: stays\r\n"
            b"X-Backend-Public: stays\r\n"
            b"Set-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\n"
            b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()

    backend = RawBackend(respond)
    try:
        with inway({SERVICE: backend.url}) as gw:
            result = gw.request("GET", "/r")
    finally:
        backend.stop()
    assert result.status_code == 200
    assert result.content == b"hello world"
    names = [name.lower() for name, _ in result.headers.items()]
    for gone in (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-anything",
        "trailer",
        "upgrade",
        "x-backend-private",
        "transfer-encoding",
        "date",
    ):
        assert gone not in names, gone
    assert result.headers["sluis-service-fsc-backend"] == "stays"  # renamed, not a gateway's
    assert result.headers["x-backend-public"] == "stays"
    assert result.headers["content-type"] == "text/plain"
    assert sorted(result.cookies) == ["a", "b"]  # two Set-Cookie lines, not one joined


def test_identity_headers_of_the_client_are_not_forwarded(echo: EchoBackend) -> None:
    """Who the peer is, the connection and the token say; a header another organisation wrote
    must never reach a backend that trusts such headers from its proxy."""
    forged = {
        "Forwarded": "for=10.1.2.3",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": "80",
        "X-Forwarded-Client-Cert": "Hash=abc;Subject=CN=someone-else",
        "X-Real-IP": "10.1.2.3",
        "X-Client-Cert": "forged",
        "X-Client-DN": "CN=someone-else",
        "X-SSL-Client-Cert": "forged",
        "X-SSL-Client-DN": "CN=someone-else",
        "SSL-Client-Cert": "forged",
        "Client-Cert": ":Zm9yZ2Vk:",
        "Client-Cert-Chain": ":Zm9yZ2Vk:",
    }
    with inway({SERVICE: echo.url}) as gw:
        result = gw.request("GET", "/who", headers={**fsc_headers(), **forged, "X-Kept": "1"})
    assert result.status_code == 200, result.text
    seen = {k.lower() for k, _ in echo.state.seen()[0].headers}
    assert not seen & {name.lower() for name in forged}
    assert "x-kept" in seen


class DuplicateWriter:
    async def write(self, record: dict[str, Any]) -> None:
        raise DuplicateTransactionError(record["transaction_id"], "DIRECTION_INCOMING")


def test_a_transaction_id_already_logged_is_invalid_not_a_write_error(echo: EchoBackend) -> None:
    with inway({SERVICE: echo.url}, log=DuplicateWriter()) as gw:
        result = gw.request("GET", "/again")
    assert error_of(result)[:2] == (400, "INVALID_LOG_RECORD_ID")
    assert "already used" in result.json["message"]
    assert echo.state.seen() == []


def test_connect_is_refused_before_anything_else(echo: EchoBackend) -> None:
    log = MemoryLogWriter()
    with inway({SERVICE: echo.url}, log=log) as gw:
        result = gw.request("CONNECT", "/", headers={})  # not even a token
    assert error_of(result)[:2] == (405, "ERROR_CODE_METHOD_UNSUPPORTED")
    assert log.records == []
    assert echo.state.seen() == []
