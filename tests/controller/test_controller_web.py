"""The web pages in-process: login form, redirects, role-dependent pages, forms with CSRF."""

from __future__ import annotations

import re
from urllib.parse import quote

import falcon.testing
import pytest
from contracttest import OIN_A
from controllertest import PASSWORDS, SERVICE, Env

from appliance.controller.auth import LOGIN_COOKIE, SESSION_COOKIE
from appliance.controller.roles import Role


def login_page(env: Env) -> tuple[str, str]:
    page = env.client.simulate_get("/login")
    assert page.status_code == 200
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return page.cookies[LOGIN_COOKIE].value, token.group(1)


def browser_login(env: Env, role: Role, next_page: str = "/") -> falcon.testing.Result:
    cookie, token = login_page(env)
    return env.client.simulate_post(
        "/login",
        body=f"username={role.value}&password={quote(PASSWORDS[role])}&login_token={token}"
        f"&next={quote(next_page)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        cookies={LOGIN_COOKIE: cookie},
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_pages_need_a_login(env: Env) -> None:
    result = env.client.simulate_get("/contracts", params={"state": "valid"})
    assert result.status_code == 303
    assert result.headers["Location"] == "/login?next=/contracts?state=valid"


def test_login_form_and_redirect(env: Env) -> None:
    result = browser_login(env, Role.AUDITOR, next_page="/transactions")
    assert result.status_code == 303
    assert result.headers["Location"] == "/transactions"
    assert result.cookies[SESSION_COOKIE].secure
    assert browser_login(env, Role.AUDITOR, next_page="//evil.example/").headers["Location"] == "/"


def test_login_form_needs_its_token(env: Env) -> None:
    cookie, _ = login_page(env)
    result = env.client.simulate_post(
        "/login",
        body=f"username=auditor&password={quote(PASSWORDS[Role.AUDITOR])}&login_token=forged",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        cookies={LOGIN_COOKIE: cookie},
    )
    assert result.status_code == 400
    assert SESSION_COOKIE not in result.cookies
    assert env.last_audit()["detail"] == "login form token missing or wrong"


def test_wrong_password_shows_the_form_again(env: Env) -> None:
    cookie, token = login_page(env)
    result = env.client.simulate_post(
        "/login",
        body=f"username=auditor&password=nope-nope-nope&login_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        cookies={LOGIN_COOKIE: cookie},
    )
    assert result.status_code == 401
    assert "Login failed" in result.text
    env.store.unlock_user("auditor")


def test_approve_with_the_form(env: Env) -> None:
    pending = env.connection_from_a()
    kwargs = env.as_role(Role.SERVICE_OWNER, csrf=False)
    page = env.client.simulate_get("/contracts", **kwargs)
    assert page.status_code == 200
    assert 'class="contract pending"' in page.text
    assert f'action="/contracts/{quote(pending, safe="")}/accept"' in page.text
    csrf = csrf_of(page.text)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    stolen = env.client.simulate_post(
        f"/contracts/{quote(pending, safe='')}/accept", body="reason=x", headers=form, **kwargs
    )
    assert stolen.status_code == 403
    assert env.service.get(pending).state == "proposed"
    assert env.last_audit()["outcome"] == "denied"
    done = env.client.simulate_post(
        f"/contracts/{quote(pending, safe='')}/accept",
        body=f"csrf_token={quote(csrf)}&reason=looks+good",
        headers=form,
        **kwargs,
    )
    assert done.status_code == 303, done.text
    assert done.headers["Location"] == "/contracts?done=accept"
    assert env.service.get(pending).state == "valid"
    assert env.last_audit()["detail"].endswith("reason: looks good")
    overview = env.client.simulate_get("/", **kwargs)
    assert OIN_A in overview.text
    assert SERVICE in overview.text


def test_auditors_see_no_buttons_and_cannot_post(env: Env) -> None:
    env.connection_from_a()
    kwargs = env.as_role(Role.AUDITOR, csrf=False)
    page = env.client.simulate_get("/contracts", **kwargs)
    assert "Approve" not in page.text
    assert "Ask another peer" not in page.text
    assert 'href="/audit"' in page.text
    assert 'href="/users"' not in page.text
    result = env.client.simulate_post(
        "/services",
        body=f"csrf_token={quote(csrf_of(page.text))}&name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        **kwargs,
    )
    assert result.status_code == 403
    assert "may not do this" in result.text


@pytest.mark.parametrize(
    "page",
    [
        "/",
        "/services",
        "/contracts",
        "/transactions",
        "/audit",
        "/certificates",
        "/integrity",
        "/health",
        "/users",
    ],
)
def test_every_page_renders_for_the_administrator(env: Env, page: str) -> None:
    result = env.client.simulate_get(page, **env.as_role(Role.ADMINISTRATOR, csrf=False))
    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"].startswith("text/html")
    assert '<main id="main"' in result.text


def test_a_new_token_is_shown_once(env: Env) -> None:
    kwargs = env.as_role(Role.ADMINISTRATOR, csrf=False)
    csrf = csrf_of(env.client.simulate_get("/users", **kwargs).text)
    result = env.client.simulate_post(
        "/tokens",
        body=f"csrf_token={quote(csrf)}&name=backup&role=auditor&days=30",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        **kwargs,
    )
    assert result.status_code == 201
    secret = re.search(r'value="(sluis_ctl_[^"]+)"', result.text)
    assert secret is not None
    assert env.controller.auth.bearer(secret.group(1)) is not None
    assert secret.group(1) not in env.client.simulate_get("/users", **kwargs).text


def test_the_integrity_page_is_in_the_menu_and_says_why_it_checked_nothing(env: Env) -> None:
    # The test controller has no signed checkpoints to check: the page says why, never a 500.
    result = env.client.simulate_get("/integrity", **env.as_role(Role.AUDITOR, csrf=False))
    assert result.status_code == 200, result.text
    assert 'href="/integrity"' in result.text
    assert result.text.count("no transaction log configured ([txlog])") == 1, result.text
