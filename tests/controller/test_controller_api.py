"""The REST API on a real Manager service: contracts, the overview, the logs, sessions, CSRF,
and the OpenAPI document against the app's routes."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import falcon.inspect
import pytest
import yaml
from contracttest import OIN_A, OIN_B, OIN_C
from controllertest import SERVICE, Env, sample_records, write_transactions

from appliance.controller.api import openapi_document
from appliance.controller.app import build_app
from appliance.controller.auth import CSRF_HEADER, SESSION_COOKIE
from appliance.controller.roles import Role
from appliance.controller.web import WEB_ROUTES

OWNER = Role.SERVICE_OWNER


def q(value: str) -> str:
    return quote(value, safe="")


# -- the OpenAPI document and the app ------------------------------------------------------


def test_every_route_is_in_the_openapi_document_and_vice_versa(env: Env) -> None:
    """The API routes and methods of the app are exactly the document's; every other route of
    the app is one of the web pages (``web.WEB_ROUTES``) or the static files."""
    document = yaml.safe_load(openapi_document())
    assert document["servers"] == [{"url": "/api/v1"}]
    documented = {
        ("/api/v1" + path, method.upper())
        for path, item in document["paths"].items()
        for method in item
    }
    app_routes: set[tuple[str, str]] = set()
    pages: set[str] = set()
    for route in falcon.inspect.inspect_routes(build_app(env.controller)):
        methods = {m.method for m in route.methods if not m.internal}
        if route.path.startswith("/api/"):
            path = route.path.replace(
                "{token_id:int(min=0, max=9223372036854775807)}", "{token_id}"
            )
            app_routes |= {(path, method) for method in methods}
        else:
            pages.add(route.path)
    assert app_routes == documented
    assert pages == set(WEB_ROUTES)


def test_the_document_is_served(env: Env) -> None:
    result = env.client.simulate_get("/api/v1/openapi.yaml")
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "application/yaml"
    assert yaml.safe_load(result.text)["info"]["title"] == "Sluis controller API"


# -- contracts and the overview -----------------------------------------------------------


def test_approving_a_connection_grants_it_in_the_overview(env: Env) -> None:
    pending = env.connection_from_a()
    listed = env.client.simulate_get(
        "/api/v1/contracts", params={"pending": "true"}, **env.as_role(OWNER)
    )
    assert pending in [c["hash"] for c in listed.json["contracts"]]
    assert all(c["pending_our_action"] for c in listed.json["contracts"])

    result = env.client.simulate_post(
        f"/api/v1/contracts/{q(pending)}/accept",
        json={"reason": "ticket CHG-1234: approved by the data owner"},
        **env.as_role(OWNER),
    )
    assert result.status_code == 200, result.text
    assert result.json["state"] == "valid"
    assert result.json["accepted_by"] == sorted([OIN_A, OIN_B])

    entry = env.last_audit()
    assert entry["action"] == "contract.accept"
    assert entry["outcome"] == "success"
    assert entry["target"] == pending
    assert "ticket CHG-1234" in entry["detail"]

    overview = env.client.simulate_get("/api/v1/overview", **env.as_role(Role.AUDITOR)).json
    (service,) = [s for s in overview["provided"] if s["service_name"] == SERVICE]
    grants = {c["contract_hash"]: c for c in service["consumers"]}
    assert grants[pending]["peer_id"] == OIN_A
    assert grants[pending]["outway_public_key_thumbprint"] == env.group[OIN_A].public_key_thumbprint
    assert grants[pending]["not_after"] > grants[pending]["not_before"]


def test_signing_twice_or_in_the_wrong_state_is_a_conflict(env: Env) -> None:
    pending = env.connection_from_a()
    rejected = env.client.simulate_post(
        f"/api/v1/contracts/{q(pending)}/reject",
        json={"reason": "unknown purpose"},
        **env.as_role(OWNER),
    )
    assert rejected.json["state"] == "rejected"
    again = env.client.simulate_post(
        f"/api/v1/contracts/{q(pending)}/accept", json={}, **env.as_role(OWNER)
    )
    assert again.status_code == 409
    assert again.headers["Fsc-Error-Code"] == "ERROR_CODE_CONFLICT"
    entry = env.last_audit()
    assert (entry["action"], entry["outcome"]) == ("contract.accept", "failure")
    missing = env.client.simulate_post(
        "/api/v1/contracts/$1$1$nothing/accept", json={}, **env.as_role(OWNER)
    )
    assert missing.status_code == 404
    assert env.last_audit()["outcome"] == "failure"


def test_publish_propose_and_withdraw(env: Env) -> None:
    published = env.client.simulate_post(
        "/api/v1/services",
        json={"name": "kentekens", "reason": "new API"},
        **env.as_role(OWNER),
    )
    assert published.status_code == 201, published.text
    assert published.json["kind"] == "publication"
    assert published.json["state"] == "proposed"
    assert published.json["awaiting"] == [OIN_C]
    services = env.client.simulate_get("/api/v1/services", **env.as_role(OWNER)).json["services"]
    by_name = {s["name"]: s for s in services}
    assert by_name["kentekens"]["state"] == "proposed"
    assert by_name[SERVICE]["state"] == "valid"
    assert by_name[SERVICE]["in_inway"] is True

    withdrawn = env.client.simulate_post(
        "/api/v1/services/kentekens/withdraw", json={"reason": "typo"}, **env.as_role(OWNER)
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert [c["state"] for c in withdrawn.json["contracts"]] == ["revoked"]
    assert env.last_audit()["detail"].endswith("reason: typo")

    proposed = env.client.simulate_post(
        "/api/v1/contracts",
        json={"service_peer_id": OIN_C, "service_name": "kadaster", "days": 90},
        **env.as_role(Role.SECURITY_OFFICER),
    )
    assert proposed.status_code == 201, proposed.text
    (grant,) = proposed.json["grants"]
    assert grant["outway_peer_id"] == OIN_B
    assert grant["service_peer_id"] == OIN_C
    assert proposed.json["awaiting"] == [OIN_C]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "no spaces allowed"}, 400),
        ({"name": "x", "days": 0}, 400),
        ({"name": "x", "protocol": "GOPHER"}, 400),
        ({"name": "x", "reason": "r" * 501}, 400),
        ({}, 400),
    ],
)
def test_bad_input_is_refused_and_audited(env: Env, body: dict[str, Any], status: int) -> None:
    result = env.client.simulate_post("/api/v1/services", json=body, **env.as_role(OWNER))
    assert result.status_code == status
    assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_REQUEST_INVALID"
    entry = env.last_audit()
    assert (entry["action"], entry["outcome"]) == ("service.publish", "failure")


def test_only_json_bodies(env: Env) -> None:
    result = env.client.simulate_post(
        "/api/v1/services",
        body="name=x",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **env.as_role(OWNER)["headers"],
        },
        cookies=env.as_role(OWNER)["cookies"],
    )
    assert result.status_code == 415


# -- sessions and CSRF --------------------------------------------------------------------


def test_login_sets_a_strict_cookie_and_logout_ends_the_session(env: Env) -> None:
    result = env.client.simulate_post(
        "/api/v1/session", json={"username": "auditor", "password": "correct horse auditor staple"}
    )
    assert result.status_code == 201
    cookie = result.cookies[SESSION_COOKIE]
    assert cookie.secure
    assert cookie.http_only
    assert cookie.same_site == "Strict"
    assert cookie.path == "/"
    assert cookie.max_age is None  # ends with the browser session
    token = result.json["csrf_token"]
    cookies = {SESSION_COOKIE: cookie.value}
    assert env.client.simulate_get("/api/v1/session", cookies=cookies).json["csrf_token"] == token
    out = env.client.simulate_delete(
        "/api/v1/session", cookies=cookies, headers={CSRF_HEADER: token}
    )
    assert out.status_code == 204
    assert env.client.simulate_get("/api/v1/session", cookies=cookies).status_code == 401


def test_failed_logins_are_refused_alike_and_audited(env: Env) -> None:
    for username in ("auditor", "nobody"):
        result = env.client.simulate_post(
            "/api/v1/session", json={"username": username, "password": "wrong password!"}
        )
        assert result.status_code == 401
        assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_LOGIN_FAILED"
        assert "wrong username or password" in result.json["message"]
        entry = env.last_audit()
        assert (entry["actor"], entry["action"], entry["outcome"]) == (
            username,
            "login",
            "failure",
        )
    env.store.unlock_user("auditor")


def test_state_changes_with_a_session_need_the_csrf_token(env: Env) -> None:
    pending = env.connection_from_a()
    path = f"/api/v1/contracts/{q(pending)}/accept"
    for headers in ({}, {CSRF_HEADER: "forged"}):
        result = env.client.simulate_post(
            path, json={}, cookies=env.as_role(OWNER)["cookies"], headers=headers
        )
        assert result.status_code == 403
        assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_CSRF_TOKEN_INVALID"
        entry = env.last_audit()
        assert (entry["action"], entry["outcome"]) == ("contract.accept", "denied")
        assert "CSRF" in entry["detail"]
    other_site = env.client.simulate_post(
        path,
        json={},
        **{
            **env.as_role(OWNER),
            "headers": {**env.as_role(OWNER)["headers"], "Origin": "https://evil.example"},
        },
    )
    assert other_site.status_code == 403
    assert env.service.get(pending).state == "proposed"


# -- the transaction log ------------------------------------------------------------------


@pytest.fixture(scope="module")
def transactions(env: Env) -> list[Any]:
    grant = env.service.get(env.published("register-tx")).grant_hashes[0]
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    records = sample_records(grant, start, 30)
    write_transactions(f"sqlite:///{env.root / 'txlog.db'}", records)
    return records


def test_transactions_filter_and_page(env: Env, transactions: list[Any]) -> None:
    kwargs = env.as_role(Role.AUDITOR)
    seen: list[str] = []
    params: dict[str, str] = {"direction": "DIRECTION_INCOMING", "limit": "7"}
    while True:
        page = env.client.simulate_get("/api/v1/transactions", params=params, **kwargs).json
        seen += [r["transaction_id"] for r in page["records"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    incoming = [r.transaction_id for r in transactions if r.direction == "DIRECTION_INCOMING"]
    assert seen == list(reversed(incoming))  # newest first, each once

    window = env.client.simulate_get(
        "/api/v1/transactions",
        params={"after": "2026-03-01T08:10:00Z", "before": "2026-03-01T08:15:00", "peer_id": OIN_A},
        **kwargs,
    ).json["records"]
    assert [r["created_at"] for r in window] == [
        f"2026-03-01T08:{minute}:00Z" for minute in (14, 13, 12, 11, 10)
    ]
    one = env.client.simulate_get(
        "/api/v1/transactions",
        params={"transaction_id": transactions[3].transaction_id.upper()},
        **kwargs,
    ).json["records"]
    assert [r["transaction_id"] for r in one] == [transactions[3].transaction_id]
    outgoing = env.client.simulate_get(
        "/api/v1/transactions", params={"peer_id": OIN_C}, **kwargs
    ).json["records"]
    assert [r["service_name"] for r in outgoing] == ["kadaster"]
    assert "data_subject_pseudonym" not in outgoing[0]
    bad = env.client.simulate_get("/api/v1/transactions", params={"cursor": "x"}, **kwargs)
    assert bad.status_code == 400


def test_transactions_export_as_csv(env: Env, transactions: list[Any]) -> None:
    result = env.client.simulate_get(
        "/api/v1/transactions/export", params={"service_name": SERVICE}, **env.as_role(OWNER)
    )
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in result.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(result.text)))
    assert len(rows) == 30
    assert {row["source_outway_peer_id"] for row in rows} == {OIN_A}
    entry = env.last_audit()
    assert (entry["action"], entry["outcome"]) == ("transactions.export", "success")
    assert "service_name=basisregistratie" in entry["detail"]


# -- the audit log ------------------------------------------------------------------------


def test_audit_log_filters_and_pages(env: Env) -> None:
    kwargs = env.as_role(Role.SECURITY_OFFICER)
    denied = env.client.simulate_get(
        "/api/v1/audit", params={"outcome": "denied", "limit": "2"}, **kwargs
    ).json
    assert len(denied["entries"]) == 2
    assert all(e["outcome"] == "denied" for e in denied["entries"])
    following = env.client.simulate_get(
        "/api/v1/audit",
        params={"outcome": "denied", "limit": "2", "cursor": denied["next_cursor"]},
        **kwargs,
    ).json
    assert following["entries"][0]["id"] < denied["entries"][-1]["id"]
    contracts = env.client.simulate_get(
        "/api/v1/audit", params={"action": "contract"}, **kwargs
    ).json["entries"]
    assert contracts
    assert all(e["action"].startswith("contract.") for e in contracts)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (
        env.client.simulate_get("/api/v1/audit", params={"after": future}, **kwargs).json["entries"]
        == []
    )


# -- certificates and health --------------------------------------------------------------


def test_certificates_show_expiry_and_no_secrets(env: Env) -> None:
    report = env.client.simulate_get("/api/v1/certificates", **env.as_role(Role.AUDITOR)).json
    leaf = report["organisation"]["items"][0]
    certificate = env.group[OIN_B].certificate
    assert leaf["oin"] == OIN_B
    assert leaf["not_after"].startswith(certificate.not_valid_after_utc.date().isoformat())
    expected = (certificate.not_valid_after_utc - datetime.now(UTC)).days
    assert abs(leaf["days_to_expiry"] - expected) <= 1
    assert leaf["public_key_thumbprint"] == env.group[OIN_B].public_key_thumbprint
    assert [crl["revoked_certificates"] for crl in report["crls"]["items"]] == [0, 0]
    assert report["token"]["objects"][0]["extractable"] is False
    assert "PRIVATE" not in str(report)


def test_health_reports_a_component_that_is_down(env: Env) -> None:
    (outway,) = env.client.simulate_get("/api/v1/health", **env.as_role(OWNER)).json["components"]
    assert outway["status"] == "down"
    assert outway["error"]


def test_security_headers(env: Env) -> None:
    result = env.client.simulate_get("/api/v1/overview", **env.as_role(OWNER))
    assert "frame-ancestors 'none'" in result.headers["Content-Security-Policy"]
    assert result.headers["Cache-Control"] == "no-store"
    assert result.headers["X-Content-Type-Options"] == "nosniff"
