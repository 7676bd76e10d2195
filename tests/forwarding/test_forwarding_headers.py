"""The forwarding policy (appliance.forwarding.headers) as a function: which headers go on."""

from __future__ import annotations

import pytest

from appliance.forwarding.headers import (
    allow_list,
    inway_answer_headers,
    is_identity,
    request_headers,
    service_answer_headers,
)

FSC = (("Fsc-Authorization", "validated.token"), ("Fsc-Transaction-Id", "tx-1"))
# Every name issue 15 found passed on, and more of the same families.
IDENTITY = [
    "X-Forwarded-For",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded",
    "X-Forwarded-Anything-New",
    "X-Original-URL",
    "X-Original-Forwarded-For",
    "X-Rewrite-URL",
    "X-Real-IP",
    "X-Remote-User",
    "X-Remote-Addr",
    "Remote-User",
    "X-Client-IP",
    "X-Client-Cert",
    "X-Client-Verify",
    "True-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "CF-Anything",
    "Fastly-Client-IP",
    "X-SSL-Client-S-DN",
    "X-SSL-Client-Verify",
    "X-Ssl-Client-Cert",
    "Ssl-Client-Verify",
    "Ssl-Client-Cert",
    "X-ARR-ClientCert",
    "Client-Cert",
    "Client-Cert-Chain",
    "Forwarded",
    "Via",
    "X-Auth-Request-User",
    "X-Authenticated-Userid",
    "X-Amzn-Oidc-Identity",
    "X-Goog-Authenticated-User-Email",
    "X-MS-Client-Principal-Name",
    "X-Envoy-External-Address",
    "X-HTTP-Method-Override",
    "X-Host",
]
ORDINARY = ["Accept", "Content-Type", "Content-Length", "traceparent", "X-Public", "Cookie"]


def _raw(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in headers]


@pytest.mark.parametrize("name", IDENTITY)
def test_identity_families_are_refused_in_any_case(name: str) -> None:
    for spelling in (name, name.lower(), name.upper()):
        assert is_identity(spelling.lower())
        assert request_headers(_raw([(spelling, "x")]), fsc=()) == []


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_headers_go_on_unchanged(name: str) -> None:
    assert not is_identity(name.lower())
    assert request_headers(_raw([(name, "v")]), fsc=()) == [(name, "v")]


def test_of_fsc_only_what_the_gateway_validated_goes_on() -> None:
    sent = [
        ("Fsc-Authorization", "forged.or.second"),
        ("Fsc-Transaction-Id", "other"),
        ("Fsc-Peer-Id", "00000001000000000999"),
        ("Fsc-Manager-Address", "https://evil.example:443"),
        ("Fsc-Grant-Hash", "$1$3$x"),
        ("Fsc-Error-Code", "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        ("fsc-foo", "bar"),
        ("X-Public", "yes"),
    ]
    assert request_headers(_raw(sent), fsc=FSC) == [("X-Public", "yes"), *FSC]


def test_sluis_headers_from_the_client_never_go_on_unless_allowed() -> None:
    sent = [("Sluis-Processing-Activity", "a"), ("Sluis-Data-Subject", "1"), ("Sluis-Foo", "b")]
    assert request_headers(_raw(sent), fsc=()) == []
    allowed = request_headers(_raw(sent), fsc=(), allow=frozenset({"sluis-processing-activity"}))
    assert allowed == [("Sluis-Processing-Activity", "a")]


def test_the_allow_list_passes_named_identity_headers_only() -> None:
    sent = [("X-Remote-User", "alice"), ("X-Forwarded-For", "10.0.0.1"), ("Remote-User", "eve")]
    allow = allow_list(" X-Remote-User ")
    assert allow == frozenset({"x-remote-user"})
    assert request_headers(_raw(sent), fsc=(), allow=allow) == [("X-Remote-User", "alice")]


def test_hop_by_hop_headers_go_even_when_allowed_or_named_by_connection() -> None:
    sent = [
        ("Connection", "keep-alive, X-Private, Fsc-Transaction-Id"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic x"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Upgrade", "h2c"),
        ("Host", "inway"),
        ("Expect", "100-continue"),
        ("X-Private", "named"),
        ("Fsc-Transaction-Id", "tx-1"),
    ]
    assert request_headers(_raw(sent), fsc=FSC, allow=frozenset({"x-private"})) == list(FSC)


@pytest.mark.parametrize(
    "names",
    ["Fsc-Authorization", "fsc-foo", "Connection", "Proxy-Foo", "Host", "Expect", "X Bad", ""],
)
def test_the_allow_list_refuses_what_it_may_not_pass(names: str) -> None:
    with pytest.raises(ValueError, match=r"header name|cannot be passed|sets this header"):
        allow_list(f"X-Ok, {names}")


def test_a_services_fsc_headers_are_renamed_never_a_gateways() -> None:
    answer = [
        ("Fsc-Error-Code", "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        ("Connection", "Fsc-Other, X-Private"),
        ("Fsc-Other", "1"),
        ("X-Private", "1"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("Content-Type", "text/plain"),
    ]
    assert service_answer_headers(_raw(answer)) == [
        ("Sluis-Service-Fsc-Error-Code", "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        ("Sluis-Service-Fsc-Other", "1"),
        ("Content-Type", "text/plain"),
    ]
    # The inway's own error reaches the application as it is.
    assert inway_answer_headers(_raw(answer)) == [
        ("Fsc-Error-Code", "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        ("Fsc-Other", "1"),
        ("Content-Type", "text/plain"),
    ]
