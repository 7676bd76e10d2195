"""Login with OpenID Connect, end to end: a real controller process (``sluis serve controller``
under gunicorn, HTTPS with the organisation key in its SoftHSM token) and a real provider
(``oidcidp.IdentityProvider``: HTTPS, discovery, JWKS, /authorize, /token), with a small
HTTP client in the role of the browser.

The good flow (PKCE S256, state, nonce; RS256 and ES256), the session it gives (the same cookie
and CSRF rules as a password login), and every refusal: a bad state, a replayed code, a
callback in another browser, a wrong nonce, audience or issuer, an expired token, a bad
signature, an unknown key, a symmetric algorithm, an unknown group, a username that is a local
account's, the provider's own error. Each is in the audit log with its reason, and no code,
token or secret ever is.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from controllertest import audit_entries, lone_member
from oidcidp import IdentityProvider

from appliance.config import OidcSettings, load_config
from appliance.controller.auth import CSRF_HEADER, SESSION_COOKIE
from appliance.controller.demo import ControllerAccess, start_controller
from appliance.controller.oidc import FLOW_COOKIE, OidcClient, check_settings
from appliance.controller.store import AuditEntry, ControllerStore
from appliance.demo.group import MemberPlan
from appliance.demo.processes import free_port
from appliance.errors import ConfigurationError
from appliance.pki.identity import OrganisationIdentity

pytestmark = pytest.mark.slow

PLAN = MemberPlan(
    "b", OrganisationIdentity("Dienst Registers", "00000001000000000302", ("b.sluis.test",))
)
ROLES = {
    "sluis-admins": "administrator",
    "sluis-security": "security_officer",
    "sluis-owners": "service_owner",
    "sluis-auditors": "auditor",
}
OLGA = {"sub": "248289761001", "preferred_username": "olga", "groups": ["staff", "sluis-security"]}


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        return self.headers["Location"]

    def set_cookies(self) -> dict[str, str]:
        """Each cookie set by this response: name -> the whole Set-Cookie line."""
        lines = self.headers.get_all("Set-Cookie") or []
        return {line.split("=", 1)[0]: line for line in lines}


@dataclass
class Browser:
    """Just enough of a browser: keeps the controller's cookies and follows nothing itself."""

    context: ssl.SSLContext
    controller: str  # host:port
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        parts = urlsplit(url)
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, context=self.context, timeout=60
        )
        sent = dict(headers or {})
        if parts.netloc == self.controller and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = json.dumps(body)
            sent["Content-Type"] = "application/json"
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), data, sent)
        raw = conn.getresponse()
        response = Response(raw.status, raw.headers, raw.read().decode("utf-8", "replace"))
        conn.close()
        if parts.netloc == self.controller:
            for line in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(line).items():
                    expired = morsel["max-age"] == "0" or "1970" in morsel["expires"]
                    if expired or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
        return response


@dataclass
class World:
    access: ControllerAccess
    idp: IdentityProvider
    database: str
    context: ssl.SSLContext

    @property
    def url(self) -> str:
        return self.access.url.rstrip("/")

    def browser(self) -> Browser:
        return Browser(self.context, urlsplit(self.url).netloc)

    def audit(self, action: str = "login") -> list[AuditEntry]:
        return audit_entries(self.database, action)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("controller-oidc")
    member = lone_member(root, PLAN, "sluis.oidc-test")
    idp = IdentityProvider(root / "idp").start()
    port = free_port()
    idp.redirect_uri = f"https://127.0.0.1:{port}/login/oidc/callback"
    secret = root / "oidc-client-secret"
    secret.write_text(idp.client_secret + "\n")
    secret.chmod(0o600)
    database = f"sqlite:///{root / 'b' / 'controller.db'}"
    roles = "\n".join(f'"{group}" = "{role}"' for group, role in ROLES.items())
    with member.config_path.open("a") as config:
        config.write(
            f"""
[controller]
database = "{database}"
bind = "127.0.0.1:{port}"

[controller.oidc]
issuer = "{idp.issuer}"
client_id = "{idp.client_id}"
client_secret_file = "{secret}"
redirect_url = "{idp.redirect_uri}"
scopes = ["openid", "profile", "groups"]
ca_bundle = "{idp.ca_file}"
provider_name = "Test IdP"
leeway_seconds = 30

[controller.oidc.roles]
{roles}
"""
        )
    config = load_config(member.config_path)
    access = start_controller(member.config_path, root / "logs", name="b", port=port)
    context = ssl.create_default_context(cafile=str(config.tls.trust_anchors))
    context.load_verify_locations(cafile=str(idp.ca_file))
    context.check_hostname = False  # the controller's certificate names b.sluis.test
    try:
        yield World(access, idp, database, context)
    finally:
        access.stop()
        idp.stop()


@pytest.fixture(autouse=True)
def fresh_provider(request: pytest.FixtureRequest) -> None:
    if "world" in request.fixturenames:
        idp = request.getfixturevalue("world").idp
        idp.user = dict(OLGA, groups=list(OLGA["groups"]))
        idp.tweaks = {}


def begin(world: World, browser: Browser, next_page: str = "/") -> str:
    """The controller's redirect to the provider (the authorization request)."""
    started = browser.request("GET", f"{world.url}/login/oidc?{urlencode({'next': next_page})}")
    assert started.status == 303, started.body
    assert started.location.startswith(f"{world.idp.issuer}/authorize?")
    return started.location


def at_provider(browser: Browser, authorize: str) -> str:
    """The provider logs the person in at once and sends them back: the callback URL."""
    answer = browser.request("GET", authorize)
    assert answer.status == 302, answer.body
    return answer.location


def log_in(world: World, browser: Browser, next_page: str = "/") -> Response:
    return browser.request("GET", at_provider(browser, begin(world, browser, next_page)))


def last_login(world: World) -> AuditEntry:
    return world.audit()[0]


def assert_no_session(world: World, browser: Browser, response: Response) -> None:
    assert SESSION_COOKIE not in response.set_cookies()
    assert SESSION_COOKIE not in browser.cookies
    assert browser.request("GET", f"{world.url}/api/v1/session").status == 401


# -- the good flow ------------------------------------------------------------------------------


def test_the_login_page_offers_the_provider(world: World) -> None:
    page = world.browser().request("GET", f"{world.url}/login?next=/contracts")
    assert page.status == 200
    assert 'href="/login/oidc?next=/contracts"' in page.body
    assert "Log in with Test IdP" in page.body


def test_a_login_with_the_provider_gives_a_session_like_a_password_login(world: World) -> None:
    browser = world.browser()
    authorize = begin(world, browser, "/contracts")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == world.idp.redirect_uri
    assert query["scope"] == "openid profile groups"
    assert len(query["state"]) == 43
    assert len(query["nonce"]) == 43
    assert FLOW_COOKIE in browser.cookies

    done = browser.request("GET", at_provider(browser, authorize))
    assert done.status == 200, done.body
    # The browser continues to the page it asked for with a navigation of the controller's
    # own (a meta refresh), so the SameSite=Strict session cookie is sent.
    assert '<meta http-equiv="refresh" content="0; url=/contracts">' in done.body
    assert "logged in as olga (security officer)" in done.body
    cookies = done.set_cookies()
    session_line = cookies[SESSION_COOKIE]
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in session_line
    assert "Max-Age" not in session_line  # a browser-session cookie, as after a password login
    # The flow cookie is cleared (with Secure: a browser ignores a __Host- cookie without it).
    assert FLOW_COOKIE not in browser.cookies
    for attribute in ("Max-Age=0", "Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookies[FLOW_COOKIE]

    # The PKCE verifier the controller sent matched the challenge (the provider checks it).
    token_request = world.idp.token_requests[-1]
    assert token_request["grant_type"] == "authorization_code"
    assert len(token_request["code_verifier"]) == 43
    assert "client_secret" not in token_request  # client_secret_basic

    session = browser.request("GET", f"{world.url}/api/v1/session")
    assert session.status == 200
    who = json.loads(session.body)
    assert (who["username"], who["role"], who["kind"]) == ("olga", "security_officer", "session")
    assert "contracts.sign" in who["permissions"]
    assert "users.manage" not in who["permissions"]
    assert browser.request("GET", f"{world.url}/api/v1/users").status == 403

    entry = last_login(world)
    assert (entry.actor, entry.role, entry.outcome) == ("olga", "security_officer", "success")
    assert entry.detail == f"oidc: subject {world.idp.issuer} {OLGA['sub']}, group sluis-security"

    # A change needs the session's CSRF token, as after a password login.
    refused = browser.request("DELETE", f"{world.url}/api/v1/session")
    assert refused.status == 403
    assert refused.headers["Fsc-Error-Code"] == "ERROR_CODE_CSRF_TOKEN_INVALID"
    ended = browser.request(
        "DELETE", f"{world.url}/api/v1/session", headers={CSRF_HEADER: who["csrf_token"]}
    )
    assert ended.status == 204
    assert "Max-Age=0" in ended.set_cookies()[SESSION_COOKIE]
    assert "Secure" in ended.set_cookies()[SESSION_COOKIE]
    assert browser.request("GET", f"{world.url}/api/v1/session").status == 401

    # The account the login made has no password.
    password = world.browser().request(
        "POST", f"{world.url}/api/v1/session", body={"username": "olga", "password": "x" * 16}
    )
    assert password.status == 401
    entry = last_login(world)
    assert entry.detail == "account logs in with OpenID Connect, not a password"


def test_es256_and_the_role_the_provider_gives_at_each_login(world: World) -> None:
    world.idp.tweaks = {"alg": "ES256"}
    world.idp.user["groups"] = ["sluis-auditors"]
    browser = world.browser()
    assert log_in(world, browser).status == 200
    who = json.loads(browser.request("GET", f"{world.url}/api/v1/session").body)
    assert who["role"] == "auditor"

    # Several groups: the first one of the mapping, in the order written, decides.
    world.idp.user["groups"] = ["sluis-auditors", "sluis-owners", "staff"]
    browser = world.browser()
    assert log_in(world, browser).status == 200
    who = json.loads(browser.request("GET", f"{world.url}/api/v1/session").body)
    assert who["role"] == "service_owner"

    store = ControllerStore.open(world.database, migrate_schema=False)
    try:
        olgas = [u for u in store.list_users() if u.username == "olga"]
    finally:
        store.close()
    assert len(olgas) == 1  # one account per person at the provider
    assert olgas[0].oidc_subject == f"{world.idp.issuer} {OLGA['sub']}"


# -- refusals -------------------------------------------------------------------------------------

NOW = int(time.time())
REFUSALS = {
    "wrong nonce": ({"claims": {"nonce": "A" * 43}}, "ID token: the nonce is not this login's"),
    "wrong audience": (
        {"claims": {"aud": "another-client"}},
        "ID token: audience 'another-client' is not our client id",
    ),
    "several audiences, no azp": (
        {"claims": {"aud": ["sluis-controller", "another-client"]}},
        "ID token: several audiences and no authorized party (azp)",
    ),
    "another authorized party": (
        {"claims": {"aud": ["sluis-controller", "another-client"], "azp": "another-client"}},
        "ID token: authorized party 'another-client' is not our client id",
    ),
    "wrong issuer": (
        {"claims": {"iss": "https://idp.example"}},
        "ID token: issuer 'https://idp.example' is not ours",
    ),
    "expired": ({"claims": {"exp": NOW - 120, "iat": NOW - 400}}, "ID token: expired"),
    "issued in the future": (
        {"claims": {"iat": NOW + 3600}},
        "ID token: issued in the future",
    ),
    "bad signature": ({"tamper": True}, "ID token: the RS256 signature does not verify"),
    "bad ES256 signature": (
        {"alg": "ES256", "tamper": True},
        "ID token: the ES256 signature does not verify",
    ),
    "unknown key": ({"kid": "rsa-9"}, "ID token: no RS256 key rsa-9 in the provider's JWKS"),
    "key of the other algorithm": (
        {"alg": "ES256", "kid": "rsa-1"},
        "ID token: no ES256 key rsa-1",
    ),
    "symmetric algorithm": ({"alg": "HS256"}, "ID token: algorithm 'HS256' not accepted"),
    "no sub": ({"claims": {"sub": None}}, "ID token: no valid sub"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_id_tokens_that_are_refused(world: World, case: str) -> None:
    tweaks, reason = REFUSALS[case]
    world.idp.tweaks = tweaks
    browser = world.browser()
    refused = log_in(world, browser)
    assert refused.status == 401, refused.body
    assert "The login with the identity provider did not succeed" in refused.body
    assert_no_session(world, browser, refused)
    entry = last_login(world)
    assert entry.outcome == "failure"
    assert entry.detail is not None
    assert entry.detail.startswith(f"oidc: {reason}"), entry.detail


def test_a_bad_state_is_refused(world: World) -> None:
    browser = world.browser()
    callback = at_provider(browser, begin(world, browser))
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    forged = f"{world.idp.redirect_uri}?{urlencode({**query, 'state': 'B' * 43})}"
    refused = browser.request("GET", forged)
    assert refused.status == 401
    assert_no_session(world, browser, refused)
    assert last_login(world).detail == (
        "oidc: state is not the one of the login begun in this browser"
    )
    # The login was used up by the try: the right state does not help now.
    again = browser.request("GET", callback)
    assert again.status == 401
    assert "took too long or was already used" in again.body


def test_a_replayed_code_and_a_callback_in_another_browser_are_refused(world: World) -> None:
    browser = world.browser()
    authorize = begin(world, browser)
    flow_id = browser.cookies[FLOW_COOKIE]
    callback = at_provider(browser, authorize)

    # Login CSRF: the callback opened in a browser that did not begin the login.
    other = world.browser()
    refused = other.request("GET", callback)
    assert refused.status == 401
    assert_no_session(world, other, refused)
    assert last_login(world).detail == (
        "oidc: no login in progress for this browser (flow cookie missing, expired or already used)"
    )

    assert browser.request("GET", callback).status == 200  # the real browser logs in

    # The same callback again, even with the old flow cookie: that login is used up.
    replay = world.browser()
    replay.cookies[FLOW_COOKIE] = flow_id
    assert replay.request("GET", callback).status == 401
    assert "no login in progress" in (last_login(world).detail or "")

    # The old code in a new login of its own: the provider refuses to redeem it twice.
    attacker = world.browser()
    fresh = at_provider(attacker, begin(world, attacker))
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    old_code = parse_qs(urlsplit(callback).query)["code"][0]
    reused = attacker.request(
        "GET", f"{world.idp.redirect_uri}?{urlencode({'code': old_code, 'state': state})}"
    )
    assert reused.status == 401
    assert_no_session(world, attacker, reused)
    assert last_login(world).detail == (
        "oidc: token endpoint refused the code: HTTP 400 invalid_grant"
    )


def test_a_person_in_no_mapped_group_is_refused_with_a_clear_message(world: World) -> None:
    world.idp.user["groups"] = ["staff", "canteen"]
    browser = world.browser()
    refused = log_in(world, browser)
    assert refused.status == 401
    assert (
        "Your account at Test IdP is in no group that has a role in this controller" in refused.body
    )
    assert_no_session(world, browser, refused)
    entry = last_login(world)
    assert (entry.actor, entry.outcome) == ("olga", "failure")
    assert entry.detail == "oidc: no group maps to a role (groups: staff, canteen)"


def test_a_provider_username_that_is_a_local_account_is_refused(world: World) -> None:
    world.idp.user = {"sub": "99", "preferred_username": "admin", "groups": ["sluis-admins"]}
    browser = world.browser()
    refused = log_in(world, browser)
    assert refused.status == 403
    assert "Your account admin cannot log in here" in refused.body
    assert_no_session(world, browser, refused)
    entry = last_login(world)
    assert (entry.actor, entry.outcome) == ("admin", "failure")
    assert entry.detail == "oidc: the username 'admin' is a local account here"


def test_the_providers_error_is_shown_and_audited(world: World) -> None:
    browser = world.browser()
    authorize = begin(world, browser)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    denied = browser.request(
        "GET", f"{world.idp.redirect_uri}?{urlencode({'error': 'access_denied', 'state': state})}"
    )
    assert denied.status == 401
    assert "The identity provider did not log you in (access_denied)" in denied.body
    assert last_login(world).detail == "oidc: the provider answered 'access_denied'"


def test_the_audit_log_holds_no_code_token_or_secret(world: World) -> None:
    """Every login of this module (this test runs last) and two of its own."""
    assert log_in(world, world.browser()).status == 200
    world.idp.tweaks = {"claims": {"aud": "another-client"}}
    assert log_in(world, world.browser()).status == 401
    secrets_seen = [world.idp.client_secret, *world.idp.used_codes, *world.idp.issued]
    secrets_seen += [token.split(".")[2] for token in world.idp.issued]
    entries = world.audit()
    assert {e.outcome for e in entries} == {"success", "failure"}
    for entry in entries:
        text = json.dumps(entry.as_api())
        assert not any(secret in text for secret in secrets_seen)


# -- configuration --------------------------------------------------------------------------------


def settings(**changes: Any) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": "https://idp.example/realms/x",
        "client_id": "sluis",
        "client_secret_file": "/nonexistent",
        "redirect_url": "https://controller.example:9443/login/oidc/callback",
        "roles": (("g", "auditor"),),
    }
    return OidcSettings(**(values | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": "http://idp.example"}, "issuer must be an https URL"),
        ({"redirect_url": "https://c.example/callback"}, "redirect_url must end in"),
        ({"scopes": ("profile",)}, "scopes must include openid"),
        ({"roles": ()}, "maps no group to a role"),
        ({"roles": (("g", "root"),)}, "unknown role 'root'"),
        ({"leeway_seconds": 3600}, "leeway_seconds must be 0 to 300"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_settings(settings(**changes))


def test_the_client_secret_comes_from_its_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="client_secret_file /nonexistent"):
        OidcClient.from_settings(settings())
    empty = tmp_path / "secret"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        OidcClient.from_settings(settings(client_secret_file=str(empty)))


BASE_CONFIG = """
[hsm]
token_label = "t"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/o.cnf"

[controller]
"""


def test_the_oidc_table_in_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "sluis.toml"
    path.write_text(
        BASE_CONFIG
        + """
[controller.oidc]
issuer = "https://idp.example"
client_id = "sluis"
client_secret_file = "/etc/sluis/oidc-client-secret"
redirect_url = "https://c.example:9443/login/oidc/callback"
scopes = ["openid", "groups"]
groups_claim = "realm_access.roles"

[controller.oidc.roles]
"sluis-admins" = "administrator"
auditors = "auditor"
"""
    )
    controller = load_config(path).controller
    assert controller is not None
    assert controller.oidc is not None
    assert controller.oidc.roles == (("sluis-admins", "administrator"), ("auditors", "auditor"))
    assert controller.oidc.scopes == ("openid", "groups")
    assert controller.oidc.leeway_seconds == 60

    path.write_text(BASE_CONFIG + 'oidc = "https://idp.example"\n')
    with pytest.raises(ConfigurationError, match=r"oidc must be a table \(\[section.oidc\]\)"):
        load_config(path)
    path.write_text(BASE_CONFIG + "[controller.oidc]\nissuer = 'x'\nclient_secret = 'inline'\n")
    with pytest.raises(ConfigurationError, match=r"\[controller.oidc\]: unknown setting"):
        load_config(path)
    path.write_text(
        BASE_CONFIG
        + "[controller.oidc]\nissuer='x'\nclient_id='c'\nclient_secret_file='/s'\n"
        + "redirect_url='x'\n[controller.oidc.roles]\nadmins = 1\n"
    )
    with pytest.raises(ConfigurationError, match="roles must be a table of strings"):
        load_config(path)
