"""What a first-time operator meets in the controller (issue 17, items 2-8), in-process.

Health that says what an answer means (and the demo's outway probed where it listens), least
privilege by default, the organisation on every page, names next to OINs and words for enums,
the transaction log's filters, the previous chain while components still present it, the
services page's next step, and ``/tokens`` after a reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from contracttest import NOW, OIN_A, OIN_B, OIN_C
from controllertest import SERVICE, Env, lone_member, sample_records, write_transactions

from appliance.cli.contract import _grant_summary, _grant_text
from appliance.config import ControllerSettings, OutwaySettings, load_config
from appliance.controller.auth import SESSION_COOKIE, TOKEN_DAYS
from appliance.controller.health import HealthProber, Target, interpret, targets_from
from appliance.controller.roles import DEFAULT_ROLE, Role
from appliance.demo.gateways import configure_gateways
from appliance.demo.group import MemberPlan
from appliance.manager.proposals import connection_content, publication_content
from appliance.pki.identity import OrganisationIdentity


def text(html: str) -> str:
    """The page's text without tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def get(env: Env, path: str, role: Role = Role.ADMINISTRATOR, **kwargs: Any) -> Any:
    return env.client.simulate_get(path, **env.as_role(role), **kwargs)


# -- 2. health ------------------------------------------------------------------------------


def answer_with(payload: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        writer.close()

    return handle


def probe(payload: bytes | None) -> dict[str, Any]:
    """Probe a listener that answers ``payload`` (None: a port where nothing listens)."""

    async def scenario() -> dict[str, Any]:
        server = await asyncio.start_server(answer_with(payload or b""), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        if payload is None:
            server.close()
            await server.wait_closed()
        try:
            prober = HealthProber([Target("outway", f"http://127.0.0.1:{port}")], timeout=2)
            (result,) = await prober.check()
        finally:
            server.close()
        return result

    return asyncio.run(scenario())


def http(status: str, body: str = "") -> bytes:
    data = body.encode()
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data


READY = json.dumps(
    {"status": "ready", "checks": {"crls": {"ok": True, "detail": "none past its next update"}}}
)
NOT_READY = json.dumps(
    {
        "status": "not ready",
        "checks": {
            "crls": {"ok": False, "detail": "stale (peers of that CA are refused): CN=Demo CA"},
            "hsm": {"ok": True, "detail": "token present, logged in"},
        },
    }
)


def test_health_reads_the_readiness_and_says_what_an_answer_means(env: Env) -> None:
    up = probe(http("200 OK", READY))
    assert (up["status"], up["http_status"], up["check"]) == ("up", 200, "GET /health/ready")
    assert up["meaning"] == "running and ready (crls pass)"

    degraded = probe(http("503 Service Unavailable", NOT_READY))
    assert degraded["status"] == "degraded"
    assert (
        degraded["meaning"] == "not ready: crls: stale (peers of that CA are refused): CN=Demo CA"
    )

    # A version without the endpoint, or another program: not errors, but not the check.
    for status in ("404 Not Found", "401 Unauthorized"):
        other = probe(http(status))
        assert other["status"] == "up"
        assert "not to its health check" in other["meaning"]
    assert probe(http("500 Internal Server Error"))["status"] == "degraded"

    refused = probe(None)
    assert refused["status"] == "down"
    assert "nothing listens at http://127.0.0.1:" in refused["meaning"]
    assert interpret(200, b"hello")[1].startswith("answers HTTP 200, but not with Sluis's")


def test_health_page_shows_the_meaning(env: Env) -> None:
    html = text(get(env, "/health").text)
    assert "What it means" in html
    assert "nothing listens at http://127.0.0.1:9" in html  # the test controller's outway
    api = get(env, "/api/v1/health").json["components"][0]
    assert api["status"] == "down"
    assert api["meaning"].startswith("nothing listens")


def test_outway_address_from_its_bind(env: Env) -> None:
    base = dataclasses.replace(env.controller.config, manager=None, controller=None)
    config = dataclasses.replace(base, outway=OutwaySettings(bind="0.0.0.0:18080"))
    assert [t.address for t in targets_from(config)] == ["http://127.0.0.1:18080"]
    config = dataclasses.replace(
        config, controller=ControllerSettings(outway_address="http://outway.intern:8080")
    )
    assert [t.address for t in targets_from(config)] == ["http://outway.intern:8080"]


def test_demo_writes_the_outway_bind_it_starts_with(tmp_path: Path) -> None:
    """The demo wrote an empty [outway]: the controller probed 127.0.0.1:8080 (refused)."""
    member = lone_member(
        tmp_path,
        MemberPlan("solo", OrganisationIdentity("Solo", "00000001000000000277", ("solo.test",))),
        "sluis.operator-test",
    )
    gateways = configure_gateways(
        {"solo": member},
        provider="solo",
        consumer="solo",
        service=SERVICE,
        backend_url="http://127.0.0.1:1/api",
        root=tmp_path,
    )
    config = load_config(member.config_path)
    outway = [t for t in targets_from(config) if t.name == "outway"]
    assert [t.address for t in outway] == [f"http://127.0.0.1:{gateways.outway_port}"]


# -- 3. least privilege by default ----------------------------------------------------------


def test_new_users_and_tokens_default_to_the_smallest_role(env: Env) -> None:
    assert DEFAULT_ROLE is Role.AUDITOR
    html = get(env, "/users").text
    for select in ("u-role", "t-role"):
        chosen = re.search(rf'<select id="{select}"[^>]*>.*?<option selected>(\w+)<', html, re.S)
        assert chosen is not None
        assert chosen.group(1) == "auditor"
    assert f'name="days" type="number" min="0" max="3650" value="{TOKEN_DAYS}"' in html


def test_api_tokens_expire_after_90_days_unless_asked_otherwise(env: Env) -> None:
    created = env.client.simulate_post(
        "/api/v1/tokens",
        json={"name": "ci-default", "role": "auditor"},
        **env.as_role(Role.ADMINISTRATOR),
    )
    assert created.status_code == 201, created.text
    (token,) = [t for t in env.store.list_tokens() if t.name == "ci-default"]
    assert token.expires_at is not None
    assert token.expires_at - token.created_at == timedelta(days=TOKEN_DAYS)
    never = env.client.simulate_post(
        "/api/v1/tokens",
        json={"name": "ci-never", "role": "auditor", "days": 0},
        **env.as_role(Role.ADMINISTRATOR),
    )
    assert never.status_code == 201
    assert [t.expires_at for t in env.store.list_tokens() if t.name == "ci-never"] == [None]


# -- 4. which organisation am I in? -------------------------------------------------------


def test_the_organisation_is_on_the_login_page_and_every_page(env: Env) -> None:
    name = env.service.settings.peer_name
    login = env.client.simulate_get("/login").text
    title = re.search(r"<title>(.*?)</title>", login)
    assert title is not None
    assert title.group(1) == f"Log in — {name} ({OIN_B}) — Sluis controller"
    assert f"to the controller of <strong>{name}</strong> (OIN <code>{OIN_B}</code>)" in login
    page = get(env, "/contracts").text
    assert f"{name} OIN {OIN_B}" in text(re.search(r"<header.*?</header>", page, re.S)[0])  # type: ignore[index]
    assert f"— {name} ({OIN_B}) —" in page


def test_names_next_to_oins_and_words_for_enums(env: Env) -> None:
    names = env.controller.manager.peer_names()
    contracts = text(get(env, "/contracts").text)
    if names.get(OIN_C):  # the directory accepted our publication
        assert f"Accepted by {names[OIN_C]} {OIN_C}" in contracts or names[OIN_C] in contracts
    assert "service publication" in contracts
    services = get(env, "/services").text
    assert "PROTOCOL_TCP_HTTP_1.1" not in text(services)
    assert "HTTP/1.1" in text(services)
    assert '<option value="PROTOCOL_TCP_HTTP_2">HTTP/2</option>' in services


def test_audit_entries_link_to_their_contract(env: Env) -> None:
    (content_hash,) = [
        c.hash for c in env.controller.manager.all_contracts() if c.pending_our_action
    ]
    csrf = env.as_role(Role.SECURITY_OFFICER)
    rejected = env.client.simulate_post(
        f"/api/v1/contracts/{content_hash}/reject", json={"reason": "CHG-17"}, **csrf
    )
    assert rejected.status_code == 200, rejected.text
    audit = get(env, "/audit", params={"action": "contract.reject"}).text
    link = f'href="/contracts?hash={quote(content_hash, safe="")}"'
    assert link in audit
    one = get(env, f"/contracts?hash={quote(content_hash, safe='')}").text
    assert one.count('<li class="contract') == 1
    assert f'data-hash="{content_hash}"' in one
    assert "Showing contract" in one


# -- 5. the transaction log -------------------------------------------------------------------


@pytest.fixture(scope="module")
def logged(env: Env) -> list[str]:
    records = sample_records("$1$3$" + "g" * 86, NOW - timedelta(hours=2), 5)
    write_transactions(f"sqlite:///{env.root / 'txlog.db'}", records)
    return [r.transaction_id for r in records]


def test_a_transaction_id_prefix_finds_the_record(env: Env, logged: list[str]) -> None:
    wanted = logged[2]
    page = get(env, "/transactions", params={"transaction_id": wanted[:13]})
    assert page.status_code == 200
    assert wanted in page.text
    assert page.text.count('<code class="tx">') == 1
    api = get(env, "/api/v1/transactions", params={"transaction_id": wanted[:8].upper()})
    assert api.status_code == 200, api.text
    assert wanted in [r["transaction_id"] for r in api.json["records"]]


def test_a_bad_filter_says_one_thing(env: Env) -> None:
    page = get(env, "/transactions", params={"transaction_id": "not-an-id"})
    assert page.status_code == 400
    body = text(page.text)
    assert "transaction_id must be a transaction id (a UUID) or its start" in body
    assert "No records match" not in body
    assert "No records shown: correct the filter above" in body


def test_time_fields_are_utc_text_and_take_an_offset(env: Env, logged: list[str]) -> None:
    page = get(env, "/transactions").text
    assert 'type="datetime-local"' not in page
    assert "Times are UTC" in text(page)
    # 09:00 CET is 08:00 UTC: an offset is honoured.
    start = NOW - timedelta(hours=2)
    local = (start + timedelta(hours=1, minutes=2)).strftime("%Y-%m-%d %H:%M") + "+01:00"
    found = get(env, "/transactions", params={"after": local, "direction": "DIRECTION_INCOMING"})
    assert found.status_code == 200, found.text
    assert found.text.count('<code class="tx">') == 3  # minutes 2, 3, 4


def test_peer_names_and_labels_in_the_transaction_log(env: Env, logged: list[str]) -> None:
    names = env.controller.manager.peer_names()
    page = text(get(env, "/transactions").text)
    assert "incoming (inway)" in page
    assert "DIRECTION_INCOMING" not in page.replace('"DIRECTION_INCOMING"', "")
    if names.get(OIN_A):
        assert f"{names[OIN_A]} {OIN_A}" in page


def test_the_transaction_log_page_asks_for_its_own_peers_names_only(
    env: Env, logged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every known peer's name per view grew with the Group (10,000 rows at 10,000 peers).
    manager = env.controller.manager
    asked: list[set[str] | None] = []
    real = manager.peer_names

    def peer_names(peer_ids: Any = None) -> dict[str, str | None]:
        asked.append(None if peer_ids is None else set(peer_ids))
        return real(peer_ids)

    monkeypatch.setattr(manager, "peer_names", peer_names)
    api = get(env, "/api/v1/transactions", params={"transaction_id": logged[0]}).json
    (shown,) = api["records"]
    page = text(get(env, "/transactions", params={"transaction_id": logged[0]}).text)
    named = {
        shown[field]
        for field in (
            "source_outway_peer_id",
            "source_delegator_peer_id",
            "destination_service_peer_id",
            "destination_delegator_peer_id",
        )
        if shown[field]
    }
    assert asked == [named]
    for peer, name in real(named).items():
        if name:
            assert f"{name} {peer}" in page


# -- 7. services ------------------------------------------------------------------------------


def test_services_say_how_to_put_a_service_in_the_inway(env: Env) -> None:
    form = get(env, "/services", role=Role.SERVICE_OWNER).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf is not None
    published = env.client.simulate_post(
        "/services",
        body="name=woz&protocol=PROTOCOL_TCP_HTTP_1.1&days=30"
        f"&backend_url={quote('http://10.0.0.5:8000/woz', safe='')}"
        f"&csrf_token={csrf.group(1)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        **env.as_role(Role.SERVICE_OWNER, csrf=False),
    )
    assert published.status_code == 303, published.text
    location = published.headers["Location"]
    assert location.startswith("/services?done=published&service=woz&backend=")
    page = text(get(env, location, role=Role.SERVICE_OWNER).text)
    assert 'Next step for woz : add "woz=http://10.0.0.5:8000/woz" to services in [inway]' in page
    assert "woz HTTP/1.1 proposed" in page
    assert 'no : peers cannot reach it yet. Add "woz=http://10.0.0.5:8000/woz"' in page
    # A URL that is not one is not repeated on the page.
    odd = text(get(env, "/services?done=published&service=woz&backend=javascript:x").text)
    assert "javascript:x" not in odd
    # The test's own service is in the inway: no hint for it.
    assert re.search(rf"{SERVICE} HTTP/1.1 valid \S+ [0-9: -]+UTC yes", page)


def test_contract_list_names_peers_and_services() -> None:
    publication = publication_content(
        group_id="g",
        directory_peer_id=OIN_C,
        service_peer_id=OIN_B,
        service_name="woz",
        protocol="PROTOCOL_TCP_HTTP_1.1",
        now=NOW,
        days=1,
    )
    connection = connection_content(
        group_id="g",
        service_peer_id=OIN_B,
        service_name="woz",
        outway_peer_id=OIN_A,
        outway_public_key_thumbprint="x" * 43,
        now=NOW,
        days=1,
    )
    (pub,) = [_grant_summary(g["data"]) for g in publication["grants"]]
    (conn,) = [_grant_summary(g["data"]) for g in connection["grants"]]
    assert _grant_text(pub) == f"SERVICE_PUBLICATION woz of {OIN_B} in directory {OIN_C}"
    assert _grant_text(conn) == f"SERVICE_CONNECTION {OIN_A} -> woz of {OIN_B}"
    assert conn["service_name"] == "woz"
    assert conn["outway_peer_id"] == OIN_A


# -- 8. /tokens after a reload ----------------------------------------------------------------


def test_reopening_tokens_goes_to_the_token_list(env: Env) -> None:
    result = get(env, "/tokens")
    assert result.status_code == 303
    assert result.headers["Location"] == "/users#tokens"
    assert 'id="tokens"' in get(env, "/users").text
    # Not for those who may not manage tokens.
    assert get(env, "/tokens", role=Role.AUDITOR).status_code == 403


# -- 3. a generated password is changed at the first login -----------------------------------


def form_post(env: Env, path: str, cookie: str, fields: dict[str, str]) -> Any:
    return env.client.simulate_post(
        path,
        body="&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        cookies={SESSION_COOKIE: cookie},
    )


def test_a_generated_password_must_be_changed_at_the_first_login(env: Env) -> None:
    page = get(env, "/users").text
    created = env.client.simulate_post(
        "/users",
        body=f"username=newbie&role=auditor&password=&csrf_token={csrf_of(page)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        **env.as_role(Role.ADMINISTRATOR, csrf=False),
    )
    assert created.status_code == 201, created.text
    generated = re.search(r'id="secret" value="([^"]+)"', created.text)
    assert generated is not None
    assert "to be changed at the first login" in created.text
    user = env.store.get_user("newbie")
    assert user is not None
    assert user.must_change_password

    login = env.client.simulate_post(
        "/api/v1/session", json={"username": "newbie", "password": generated.group(1)}
    )
    assert login.status_code == 201
    cookie = login.cookies[SESSION_COOKIE].value
    for path in ("/", "/contracts", "/transactions"):
        moved = env.client.simulate_get(path, cookies={SESSION_COOKIE: cookie})
        assert (moved.status_code, moved.headers.get("Location")) == (303, "/password"), path
    refused = env.client.simulate_get("/api/v1/overview", cookies={SESSION_COOKIE: cookie})
    assert refused.status_code == 403
    assert "choose your own password first" in refused.text
    assert env.client.simulate_get("/api/v1/session", cookies={SESSION_COOKIE: cookie}).json

    form = env.client.simulate_get("/password", cookies={SESSION_COOKIE: cookie})
    assert form.status_code == 200
    assert "someone else has seen it" in form.text
    token = csrf_of(form.text)
    mine = "a phrase of my own choosing"
    wrong = form_post(
        env,
        "/password",
        cookie,
        {"csrf_token": token, "current": "not it", "password": mine, "repeat": mine},
    )
    assert wrong.status_code == 400
    assert "The current password is wrong" in wrong.text
    differ = form_post(
        env,
        "/password",
        cookie,
        {"csrf_token": token, "current": generated.group(1), "password": mine, "repeat": "x"},
    )
    assert differ.status_code == 400
    done = form_post(
        env,
        "/password",
        cookie,
        {"csrf_token": token, "current": generated.group(1), "password": mine, "repeat": mine},
    )
    assert (done.status_code, done.headers["Location"]) == (303, "/login?done=password")
    assert env.client.simulate_get("/", cookies={SESSION_COOKIE: cookie}).status_code == 303
    user = env.store.get_user("newbie")
    assert user is not None
    assert not user.must_change_password
    again = env.client.simulate_post(
        "/api/v1/session", json={"username": "newbie", "password": mine}
    )
    assert again.status_code == 201
    home = env.client.simulate_get(
        "/", cookies={SESSION_COOKIE: again.cookies[SESSION_COOKIE].value}
    )
    assert home.status_code == 200
    assert env.last_audit()["action"] == "login"


def test_a_chosen_password_need_not_be_changed(env: Env) -> None:
    created = env.client.simulate_post(
        "/api/v1/users",
        json={"username": "chooser", "role": "auditor", "password": "chosen by the admin 1"},
        **env.as_role(Role.ADMINISTRATOR),
    )
    assert created.status_code == 201, created.text
    generated = env.client.simulate_post(
        "/api/v1/users",
        json={"username": "api-newbie", "role": "auditor"},
        **env.as_role(Role.ADMINISTRATOR),
    )
    assert generated.status_code == 201
    chooser, newbie = env.store.get_user("chooser"), env.store.get_user("api-newbie")
    assert chooser is not None
    assert newbie is not None
    assert not chooser.must_change_password
    assert newbie.must_change_password
