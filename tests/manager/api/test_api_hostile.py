"""Generated hostile input against the Manager's parsers (the real Falcon app, in-process):
JSON bodies, headers, paths, JWS and contract content. Whatever arrives, the Manager answers
below 500 and, but for /token's OAuth errors, in the FSC format. The smaller run against a real
process is in tests/manager/integration/test_manager_hostile.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import falcon.testing
import pytest
from apitest import Api, assert_fsc_error, hash_of, peer_headers, sign
from contracttest import OIN_A, Group
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.manager.api import MAX_BODY, MAX_FORM

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=25,
)
_header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_b64 = st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())
_json_b64 = _json.map(
    lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
)
_header = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES256", "RS512", "PS256", "none", "HS256"]) | _json,
        "x5t#S256": _b64 | _json,
        "typ": _json,
        "crit": _json,
    },
).map(lambda h: base64.urlsafe_b64encode(json.dumps(h).encode()).rstrip(b"=").decode())
_jws = st.tuples(_header | _json_b64 | _b64, _json_b64 | _b64, _b64).map(".".join) | _text


def assert_answered(
    result: falcon.testing.Result, *, oauth: bool = False, head: bool = False
) -> None:
    """Below 500; an error in the FSC format (or RFC 6749's on /token's own 400s)."""
    assert result.status_code < 500, result.text
    if result.status_code < 400:
        return
    if head:  # no body: the code is in the header
        assert result.headers.get("Fsc-Error-Code"), result.headers
        return
    if oauth and result.status_code == 400:
        assert set(json.loads(result.text)) <= {"error", "error_description", "error_uri"}
        return
    assert_fsc_error(result, result.status_code, result.headers.get("Fsc-Error-Code", "?"))


def _mutate(value: Any, path: list[Any], replacement: Any) -> Any:
    """``value`` with the member at ``path`` (as far as it exists) replaced."""
    if not path:
        return replacement
    key, rest = path[0], path[1:]
    if isinstance(value, dict) and value:
        name = sorted(value)[key % len(value)] if isinstance(key, int) else key
        return {**value, name: _mutate(value.get(name), rest, replacement)}
    if isinstance(value, list) and value:
        index = key % len(value) if isinstance(key, int) else 0
        return [*value[:index], _mutate(value[index], rest, replacement), *value[index + 1 :]]
    return replacement


@SETTINGS
@given(body=_json | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_body_on_contracts(provider: Api, group: Group, body: Any) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    result = provider.client.simulate_post(
        "/v1/contracts", body=raw, headers=provider.headers(group[OIN_A], "")
    )
    assert_answered(result)


@SETTINGS
@given(
    path=st.lists(st.integers(0, 20) | _text, max_size=5),
    replacement=_json,
    signature=_jws | st.none(),
    kind=st.sampled_from(["accept", "reject", "revoke", None]),
)
def test_mutated_contracts_and_signatures(
    provider: Api,
    connection: dict[str, Any],
    group: Group,
    path: list[Any],
    replacement: Any,
    signature: str | None,
    kind: str | None,
) -> None:
    content = _mutate(connection, path, replacement)
    jws = signature if signature is not None else sign(connection, group[OIN_A])
    if kind is None:
        result = provider.post_contract(content, jws, peer=group[OIN_A])
    else:
        result = provider.put_signature(
            kind, content, jws, peer=group[OIN_A], path_hash=hash_of(connection)
        )
    assert_answered(result)


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.sampled_from(
        [
            "/v1/contracts",
            "/v1/announce",
            "/v1/token",
            "/v1/peer",
            "/v1/peers",
            "/v1/services",
            "/v1/.well-known/jwks.json",
            "/v1/contracts/$1$1$x/accept",
        ]
    )
    | st.from_regex(r"/[a-zA-Z0-9%._~$/-]{0,40}", fullmatch=True),
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "sort_order", "grant_type", "grant_hash", "peer_id"]),
        _header_value,
        max_size=3,
    ),
    headers=st.dictionaries(
        st.sampled_from(["Fsc-Manager-Address", "Content-Type", "Content-Length", "Accept"]),
        _header_value,
        max_size=3,
    ),
    body=st.binary(max_size=300),
)
def test_any_request(
    provider: Api,
    group: Group,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    if "Content-Length" in headers:
        headers["Content-Length"] = str(len(body))  # the framing is the server's, not Falcon's
    result = provider.client.simulate_request(
        method,
        path,
        params=query,
        headers={**peer_headers(group[OIN_A]), **headers},
        body=body,
    )
    assert_answered(result, oauth=path == "/v1/token", head=method == "HEAD")


@SETTINGS
@given(form=st.dictionaries(_text, _text, max_size=5) | _text, content_type=_header_value)
def test_any_token_request(provider: Api, group: Group, form: Any, content_type: str) -> None:
    body = (
        "&".join(f"{k}={v}" for k, v in form.items()) if isinstance(form, dict) else form
    ).encode()
    result = provider.client.simulate_post(
        "/v1/token",
        body=body,
        headers={**peer_headers(group[OIN_A]), "Content-Type": content_type},
    )
    assert_answered(result, oauth=True)


@pytest.mark.parametrize("depth", [200, 5_000, 200_000])
def test_deeply_nested_json_is_a_bad_request(provider: Api, group: Group, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for body in (nested, f'{{"contract_content": {nested}, "signature": "a.b.c"}}'):
        result = provider.client.simulate_post(
            "/v1/contracts", body=body, headers=provider.headers(group[OIN_A], "")
        )
        assert_fsc_error(result, 400, result.headers.get("Fsc-Error-Code", "?"))


def test_unknown_paths_and_methods_are_answered_in_the_fsc_format(
    provider: Api, group: Group
) -> None:
    headers = peer_headers(group[OIN_A])
    assert_fsc_error(
        provider.client.simulate_get("/v1/nothing", headers=headers), 404, "ERROR_CODE_NOT_FOUND"
    )
    result = provider.client.simulate_delete("/v1/peers", headers=headers)
    assert_fsc_error(result, 405, "ERROR_CODE_METHOD_NOT_ALLOWED")
    assert result.headers["Allow"]


def test_an_unexpected_exception_is_a_500_in_the_fsc_format(
    provider: Api, group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug, with a detail that must not reach the caller")

    monkeypatch.setattr(provider.service, "peer_info", broken)
    result = provider.client.simulate_get("/v1/peer", headers=peer_headers(group[OIN_A]))

    body = assert_fsc_error(result, 500, "ERROR_CODE_INTERNAL")
    assert "detail" not in body["message"]


@pytest.mark.parametrize(
    ("path", "limit", "headers"),
    [
        ("/v1/token", MAX_FORM, {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/v1/contracts", MAX_BODY, {"Content-Type": "application/json"}),
    ],
)
def test_a_body_over_the_limit_is_413(
    provider: Api, group: Group, path: str, limit: int, headers: dict[str, str]
) -> None:
    result = provider.client.simulate_post(
        path,
        body=b"a" * (limit + 1),
        headers={**provider.headers(group[OIN_A], ""), **headers},
    )

    assert_fsc_error(result, 413, "ERROR_CODE_REQUEST_TOO_LARGE")
    assert result.headers["Connection"] == "close"
