"""Malformed input never gets a 5xx: generated JSON bodies, forms, headers and paths thrown at
the controller's parsers (hypothesis, in-process through falcon.testing; a smaller run against
a real process is in test_controller_limits.py). Every answer is the controller's own format:
an FSC error object under /api/, an HTML page elsewhere; every login attempt is audited."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import falcon.testing
import pytest
from controllertest import Env
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance.controller.auth import LOGIN_COOKIE
from appliance.controller.errors import CONTROLLER_DOMAIN
from appliance.controller.roles import Role

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Every code point, lone surrogates included (a JSON "\\ud800" escape gives one).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
LOGIN_LIKE = st.fixed_dictionaries(
    {}, optional={"username": JSON | ANY_TEXT, "password": JSON | ANY_TEXT}
)
API_POSTS = (
    "/api/v1/session",
    "/api/v1/services",
    "/api/v1/contracts",
    "/api/v1/users",
    "/api/v1/tokens",
    "/api/v1/users/admin/unlock",
    "/api/v1/tokens/1/revoke",
    "/api/v1/services/x/withdraw",
)
WEB_POSTS = ("/login", "/services", "/contracts", "/users", "/tokens", "/logout")
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


def assert_own_format(path: str, result: falcon.testing.Result) -> None:
    assert result.status_code < 500, (path, result.status, result.text[:500])
    if result.status_code < 400:
        return
    if path.startswith("/api/"):
        body = result.json
        assert body["domain"] == CONTROLLER_DOMAIN, body
        assert result.headers["Fsc-Error-Code"] == body["code"]
    else:
        assert result.headers["Content-Type"].startswith("text/html"), result.headers
        assert "<html" in result.text


@pytest.fixture(scope="module")
def admin(env: Env) -> dict[str, Any]:
    return env.as_role(Role.ADMINISTRATOR)


def test_deep_nesting_and_a_lone_surrogate_are_400_and_audited(env: Env) -> None:
    for body, detail in (
        (b"[" * 60_000, "nested deeper"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
        (b'{"username": "\\ud800", "password": "x"}', "not valid Unicode"),
    ):
        before = env.store.audit_count()
        result = env.client.simulate_post(
            "/api/v1/session", body=body, headers={"Content-Type": "application/json"}
        )
        assert result.status_code == 400, result.text
        assert_own_format("/api/v1/session", result)
        assert env.store.audit_count() == before + 1
        entry = env.last_audit()
        assert (entry["action"], entry["outcome"]) == ("login", "failure")
        assert detail in entry["detail"]
    # The name tried is in the log, escaped.
    assert env.last_audit()["actor"] == "\\ud800"


@SETTINGS
@given(body=JSON | LOGIN_LIKE, path=st.sampled_from(API_POSTS))
@example(body={"username": "\ud800", "password": "x"}, path="/api/v1/session")
@example(body={"username": "admin", "password": "\udfff"}, path="/api/v1/session")
@example(body={"name": "\ud800", "role": "auditor"}, path="/api/v1/tokens")
@example(
    body={"username": "x\ud800", "role": "auditor", "password": "\ud800" * 12}, path="/api/v1/users"
)
def test_generated_json_bodies_never_get_a_5xx(
    env: Env, admin: dict[str, Any], body: Any, path: str
) -> None:
    before = env.store.audit_count()
    result = env.client.simulate_post(
        path,
        body=json.dumps(body).encode(),
        headers={**admin.get("headers", {}), "Content-Type": "application/json"},
        cookies=admin["cookies"],
    )
    assert_own_format(path, result)
    if path == "/api/v1/session":  # every login attempt is audited
        assert env.store.audit_count() > before
        assert env.last_audit()["action"] == "login"


@SETTINGS
@given(
    fields=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=6),
    raw=st.binary(max_size=200),
    use_raw=st.booleans(),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "text/plain",
            "",
            "application/json",
        ]
    ),
    path=st.sampled_from(WEB_POSTS),
)
def test_generated_forms_never_get_a_5xx(
    env: Env,
    admin: dict[str, Any],
    fields: list[tuple[str, str]],
    raw: bytes,
    use_raw: bool,
    content_type: str,
    path: str,
) -> None:
    if use_raw:
        body = raw
    else:
        csrf = admin["headers"]["X-CSRF-Token"]
        encoded = [
            (k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
            for k, v in fields
        ]
        body = urlencode(
            [*encoded, (b"csrf_token", csrf.encode()), (b"login_token", b"t")]
        ).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    before = env.store.audit_count()
    result = env.client.simulate_post(
        path, body=body, headers=headers, cookies={**admin["cookies"], LOGIN_COOKIE: "t"}
    )
    assert_own_format(path, result)
    if path == "/login":
        assert env.store.audit_count() > before


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    segments=st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4),
    under=st.sampled_from(["/api/v1/", "/", "/users/", "/api/v1/users/", "/api/v1/contracts/"]),
    query=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=3),
    headers=st.dictionaries(
        st.sampled_from(
            ["Authorization", "Cookie", "X-CSRF-Token", "Origin", "Content-Type", "Accept", "Host"]
        ),
        HEADER_VALUE,
        max_size=4,
    ),
    logged_in=st.booleans(),
)
def test_generated_paths_queries_and_headers_never_get_a_5xx(
    env: Env,
    admin: dict[str, Any],
    method: str,
    segments: list[bytes],
    under: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    logged_in: bool,
) -> None:
    path = under + "/".join(quote(s, safe="") for s in segments)
    query_string = urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in query]
    )
    sent = {**(admin["headers"] if logged_in else {}), **headers}
    result = env.client.simulate_request(
        method,
        path,
        query_string=query_string,
        headers=sent,
        cookies=admin["cookies"] if logged_in and "Cookie" not in headers else None,
    )
    if method != "HEAD":
        assert_own_format(path, result)
    assert result.status_code < 500
