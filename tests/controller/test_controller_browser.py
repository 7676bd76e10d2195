"""The controller in a browser, on a real Group: three appliances (directory, a, b), each with
its own SoftHSM token and its own Manager process, and b's controller under gunicorn (HTTPS
with b's key in its token).

Real contracts with real signatures: b publishes ``basisregistratie`` (the directory accepts),
a asks for a connection; in b's controller a service owner logs in, approves the pending
contract (signed in b's HSM by the controller), finds the grant in the overview, sees the
signature arrive at a, and filters the transaction log. Headless Chromium (Debian's package)
through Playwright.

With ``SLUIS_CONTROLLER_SCREENSHOTS=1`` the screenshots of the main pages are written to
docs/controller/ (``scripts/controller-screenshots.py`` does that).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from controllertest import SERVICE, sample_records, write_transactions
from cryptography import x509
from hosttools import require
from oidcidp import IdentityProvider

from appliance.config import load_config
from appliance.controller.auth import CSRF_HEADER, SESSION_COOKIE
from appliance.controller.demo import ControllerAccess, start_controller
from appliance.demo.group import Member, MemberPlan, provision_group, state_of, wait_for
from appliance.demo.processes import free_port, start_component
from appliance.manager.storage import ManagerStore
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.tls.revocation import parse_bundle

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = Path("/usr/bin/chromium")
require("chromium")

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS_ENV = "SLUIS_CONTROLLER_SCREENSHOTS"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "controller"
PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(organisation, oin, (f"{name}.sluis.test",)))
    for name, organisation, oin in (
        ("directory", "Groepsdirectory", "00000001000000000200"),
        ("a", "Gemeente Sluisdam", "00000001000000000201"),
        ("b", "Dienst Registers", "00000001000000000202"),
    )
)
RECORDS = 60


@dataclass
class World:
    members: dict[str, Member]
    controller: ControllerAccess
    publication: str
    connection: str
    transaction_ids: list[str]
    idp: IdentityProvider


def has_contract(member: Member, content_hash: str, *, signed_by: str | None = None) -> bool:
    """Whether ``member``'s Manager holds the contract (with an accept of ``signed_by``)."""
    assert member.config.manager is not None
    store = ManagerStore.open(member.config.manager.database)
    try:
        if store.get_contract(content_hash) is None:
            return False
        return signed_by is None or any(
            s.peer_id == signed_by and s.signature_type == "accept"
            for s in store.signatures(content_hash)
        )
    finally:
        store.close()


class Api:
    """b's controller API over HTTPS, as an administrator (for the set-up only)."""

    def __init__(self, access: ControllerAccess, anchors: Path) -> None:
        self.url = urlsplit(access.url)
        # The chain is checked against the Group's root; the name is b's FQDN, not 127.0.0.1.
        self.context = ssl.create_default_context(cafile=str(anchors))
        self.context.check_hostname = False
        login = self.call(
            "POST", "/api/v1/session", {"username": access.username, "password": access.password}
        )
        self.cookie = f"{SESSION_COOKIE}={login['cookie']}"
        self.csrf = login["body"]["csrf_token"]

    def call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        connection = http.client.HTTPSConnection(
            self.url.hostname or "", self.url.port, context=self.context, timeout=60
        )
        headers = {"Content-Type": "application/json"}
        if hasattr(self, "cookie"):
            headers.update({"Cookie": self.cookie, CSRF_HEADER: self.csrf})
        connection.request(method, path, json.dumps(body), headers)
        response = connection.getresponse()
        data = json.loads(response.read() or b"{}")
        assert response.status < 300, (response.status, data)
        cookie = SimpleCookie(response.getheader("Set-Cookie") or "")
        return {"body": data, "cookie": cookie[SESSION_COOKIE].value if cookie else None}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("controller-group")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        PLANS,
        group_id="sluis.controller-test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    directory, a, b = members["directory"], members["a"], members["b"]
    txlog = f"sqlite:///{root / 'b' / 'txlog.db'}"
    # b's controller also offers login with an OpenID Connect provider (a real one, in a
    # thread: tests/controller/oidcidp.py).
    idp = IdentityProvider(root / "idp").start()
    controller_port = free_port()
    idp.redirect_uri = f"https://127.0.0.1:{controller_port}/login/oidc/callback"
    secret = root / "oidc-client-secret"
    secret.write_text(idp.client_secret)
    with b.config_path.open("a") as config:
        config.write(
            f"""
[txlog]
database = "{txlog}"

[controller]
database = "sqlite:///{root / "b" / "controller.db"}"
bind = "127.0.0.1:{controller_port}"

[controller.oidc]
issuer = "{idp.issuer}"
client_id = "{idp.client_id}"
client_secret_file = "{secret}"
redirect_url = "{idp.redirect_uri}"
ca_bundle = "{idp.ca_file}"
provider_name = "Test IdP"

[controller.oidc.roles]
"sluis-security" = "security_officer"
"""
        )
    b.config = load_config(b.config_path)
    logs = root / "logs"
    started: list[Any] = [idp]
    try:
        # Every Manager and b's controller start at once (each logs in to its own token).
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            managers = {
                name: pool.submit(
                    start_component,
                    f"manager-{name}",
                    m.config_path,
                    "manager",
                    port=m.port,
                    workers=1,
                    log_dir=logs,
                )
                for name, m in members.items()
            }
            controller_future = pool.submit(
                start_controller, b.config_path, logs, name="b", port=controller_port
            )
            for name, future in managers.items():
                members[name].manager = future.result()
                started.append(members[name].manager)
            controller = controller_future.result()
            started.append(controller)

        # b publishes through its own controller's API (signed in b's HSM by the controller).
        api = Api(controller, b.config.tls.trust_anchors)
        publication = api.call("POST", "/api/v1/services", {"name": SERVICE})["body"]["hash"]
        wait_for(lambda: has_contract(directory, publication), "the publication at the directory")
        directory.sluis("contract", "accept", publication)
        wait_for(
            lambda: has_contract(b, publication, signed_by=directory.oin), "the directory's accept"
        )
        asked = a.sluis(
            "contract", "propose-connection", "--service-peer", b.oin, "--service", SERVICE
        )
        wait_for(lambda: has_contract(b, asked["hash"]), "a's request at b")
        records = sample_records(
            asked["grant_hashes"][0],
            datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
            RECORDS,
            consumer=a.oin,
            provider=b.oin,
            other=directory.oin,
        )
        write_transactions(txlog, records)
        yield World(
            members,
            controller,
            publication,
            asked["hash"],
            [r.transaction_id for r in records],
            idp,
        )
    finally:
        for component in started:
            component.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(world: World, browser: Any) -> Iterator[Any]:
    # The controller presents b's certificate from the demo CA, which Chromium does not know.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []  # console errors (a CSP violation would show up here)
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def test_login_approve_and_find_the_grant(page: Any, world: World) -> None:
    url = world.controller.url
    a, b = world.members["a"], world.members["b"]
    expect = sync_api.expect

    page.goto(url)  # not logged in: to the login page
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.get_by_label("Username").fill(world.controller.username)
    page.get_by_label("Password").fill(world.controller.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Who may use what")).to_be_visible()
    expect(page.get_by_text("1 contract waiting for your approval")).to_be_visible()
    expect(page.locator("main")).to_contain_text(SERVICE)

    page.get_by_role("link", name="Contracts").click()
    pending = page.locator(f'li.contract.pending[data-hash="{world.connection}"]')
    expect(pending).to_contain_text("Needs your approval")
    expect(pending).to_contain_text(a.oin)
    pending.get_by_label("Reason").fill("CHG-42: Gemeente Sluisdam may read the register")
    if os.environ.get(SCREENSHOTS_ENV):
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / "contracts-pending.png"), full_page=True)
    pending.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").first).to_contain_text("accepted (signed in the HSM)")
    approved = page.locator(f'li.contract[data-hash="{world.connection}"]')
    expect(approved).not_to_have_class(re.compile("pending"))
    expect(approved.locator(".state")).to_have_text("valid")

    # The signature was made in b's HSM and b's Manager delivered it to a.
    wait_for(lambda: has_contract(a, world.connection, signed_by=b.oin), "b's accept at a")
    assert state_of(a, world.connection) == "valid"

    page.get_by_role("link", name="Overview").click()
    card = page.locator("article.card", has=page.get_by_role("heading", name=SERVICE))
    grant = card.locator("tr.grant", has_text=a.oin)
    expect(grant).to_contain_text("Gemeente Sluisdam")
    expect(page.get_by_text("waiting for your approval")).to_have_count(0)

    page.get_by_role("link", name="Audit log").click()
    row = page.locator("tr", has_text="contract.accept").first
    expect(row).to_contain_text("CHG-42")
    expect(row).to_contain_text("success")
    assert page.errors == []


def test_filter_the_transaction_log(page: Any, world: World) -> None:
    expect = sync_api.expect
    a = world.members["a"]
    page.goto(world.controller.url + "transactions")
    page.get_by_label("Peer (OIN)").fill(a.oin)
    page.get_by_label("Direction").select_option("DIRECTION_INCOMING")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(50)  # one page
    expect(page.get_by_text("50 records on this page")).to_be_visible()
    page.get_by_role("link", name="Next page").click()
    expect(rows).to_have_count(RECORDS - 50)
    expect(page).to_have_url(re.compile(f"peer_id={a.oin}"))

    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Transaction id").fill(world.transaction_ids[7])
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(world.transaction_ids[7])

    page.get_by_label("From (UTC)").fill("2026-03-02T09:10:00")
    page.get_by_label("Until (UTC)").fill("2026-03-02T09:13:00")
    page.get_by_label("Transaction id").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export as CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("created_at,transaction_id")
    assert page.errors == []


def test_pages_for_the_screenshots_and_the_keyboard(page: Any, world: World) -> None:
    """Every main page renders (no console error, which includes CSP violations); the skip link
    comes first in the tab order. Screenshots go to docs/controller/ when asked for."""
    expect = sync_api.expect
    target = DOCS if os.environ.get(SCREENSHOTS_ENV) else None
    shots = [
        ("overview", ""),
        ("services", "services"),
        ("transactions", "transactions?direction=DIRECTION_INCOMING&limit=12"),
        ("audit", "audit"),
        ("certificates", "certificates"),
        ("health", "health"),
    ]
    for name, path in shots:
        page.goto(world.controller.url + path)
        expect(page.locator("main h1")).to_be_visible()
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target / f"{name}.png"), full_page=True)
    page.goto(world.controller.url + "health")
    expect(page.locator("tr", has_text="manager")).to_contain_text("up")
    page.goto(world.controller.url + "certificates")
    expect(page.locator("main")).to_contain_text(world.members["b"].oin)
    expect(page.locator("main")).to_contain_text("extractable: no")
    expect(page.locator("#due")).to_contain_text("Nothing is due")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    if target is not None:
        page.screenshot(path=str(target / "login.png"))
    assert page.errors == []


def test_expiry_figures_from_the_running_controller(world: World) -> None:
    """The controller under gunicorn reports b's live certificate and the CRLs b's components
    use, with the files' own figures; nothing is due in a fresh Group."""
    b = world.members["b"]
    report = Api(world.controller, b.config.tls.trust_anchors).call(
        "GET", "/api/v1/certificates", {}
    )["body"]
    chain = x509.load_pem_x509_certificates(b.config.tls.certificate_chain.read_bytes())
    leaf = report["organisation"]["items"][0]
    assert leaf["oin"] == b.oin
    assert leaf["serial_number"] == format(chain[0].serial_number, "x")
    expected = (chain[0].not_valid_after_utc - datetime.now(UTC)).days
    assert abs(leaf["days_to_expiry"] - expected) <= 1
    assert leaf["due"] is False
    crls = parse_bundle(b.config.tls.crls.read_bytes())
    shown = report["crls"]["items"]
    assert len(shown) == len(crls) == 2
    for item, crl in zip(shown, crls, strict=True):
        assert crl.next_update_utc is not None
        hours = (crl.next_update_utc - datetime.now(UTC)).total_seconds() / 3600
        assert abs(item["hours_to_next_update"] - hours) <= 1
        assert item["revoked_certificates"] == len(list(crl))
        assert item["stale"] is False
        assert item["due"] is False
    assert report["due"] == []
    assert report["problems"] == []


def test_log_in_with_the_identity_provider(browser: Any, world: World) -> None:
    """The login page's button, the provider's redirect back, and a session cookie that the
    browser sends (SameSite=Strict, set at the end of a navigation from another site)."""
    expect = sync_api.expect
    context = browser.new_context(ignore_https_errors=True)  # the demo CA's and the IdP's
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(30_000)
    try:
        page.goto(world.controller.url + "contracts")
        page.get_by_role("link", name="Log in with Test IdP").click()
        expect(page.get_by_role("heading", name="Contracts")).to_be_visible()
        expect(page).to_have_url(re.compile(r"/contracts$"))
        expect(page.locator("header .who")).to_contain_text("olga (security officer)")
        assert world.idp.token_requests, "the controller redeemed the code at the provider"
        assert page.errors == []
    finally:
        context.close()


def test_demo_hook_prints_an_account(world: World) -> None:
    text = world.controller.describe()
    assert world.controller.url in text
    assert world.controller.password in text


NARROW = {"width": 1024, "height": 768}
OVERFLOW = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
HEADER_SPANS = (
    "document.querySelector('header.top').getBoundingClientRect().width"
    " >= document.documentElement.scrollWidth - 1"
)


@pytest.fixture(scope="module")
def narrow(world: World, browser: Any) -> Iterator[Any]:
    """A 1024 px wide window, logged in as the administrator through the login page."""
    context = browser.new_context(ignore_https_errors=True, viewport=NARROW)
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def test_the_login_page_names_the_organisation(narrow: Any, world: World) -> None:
    expect = sync_api.expect
    b = world.members["b"]
    narrow.goto(world.controller.url + "login")
    expect(narrow).to_have_title(f"Log in — Dienst Registers ({b.oin}) — Sluis controller")
    expect(narrow.locator("main")).to_contain_text(
        f"to the controller of Dienst Registers (OIN {b.oin})"
    )
    expect(narrow.locator("header .org")).to_contain_text(f"Dienst Registers OIN {b.oin}")
    assert narrow.evaluate(OVERFLOW)
    narrow.get_by_label("Username").fill(world.controller.username)
    narrow.get_by_label("Password").fill(world.controller.password)
    narrow.get_by_role("button", name="Log in").click()
    expect(narrow).to_have_title(re.compile(f"^Overview — Dienst Registers \\({b.oin}\\)"))
    assert narrow.errors == []


@pytest.mark.parametrize(
    "path",
    [
        "",
        "services",
        "contracts",
        "transactions",
        "transactions?transaction_id=nope",
        "audit",
        "certificates",
        "health",
        "users",
    ],
)
def test_no_page_is_wider_than_1024_px(narrow: Any, world: World, path: str) -> None:
    """The transaction log overflowed at 1024 px and the header band stopped halfway."""
    narrow.goto(world.controller.url + path)
    sync_api.expect(narrow.locator("main h1")).to_be_visible()
    sizes = narrow.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert narrow.evaluate(OVERFLOW), (path, sizes)
    assert narrow.evaluate(HEADER_SPANS), path
    if "=nope" in path:  # a refused filter is a 400, which Chromium logs
        narrow.errors.clear()
    assert narrow.errors == []


def test_transaction_log_at_1024_px(narrow: Any, world: World) -> None:
    expect = sync_api.expect
    a = world.members["a"]
    narrow.goto(world.controller.url + "transactions")
    assert narrow.get_by_label("From (UTC)").get_attribute("type") in (None, "text")
    expect(narrow.locator("#t-zone")).to_contain_text("Times are UTC")
    rows = narrow.locator("table.records tbody tr")
    incoming = rows.filter(has_text="incoming (inway)").first
    expect(incoming).to_contain_text("Gemeente Sluisdam")  # the name next to the OIN
    expect(incoming).to_contain_text(a.oin)

    wanted = world.transaction_ids[11]
    narrow.get_by_label("Transaction id").fill(wanted[:13])  # a start, as copied from a log
    narrow.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(wanted)
    assert narrow.evaluate(OVERFLOW)

    narrow.get_by_label("Transaction id").fill("not-an-id")
    narrow.get_by_role("button", name="Filter").click()
    expect(narrow.get_by_role("alert")).to_contain_text("a transaction id (a UUID) or its start")
    expect(narrow.get_by_text("No records match")).to_have_count(0)
    narrow.errors.clear()  # the refused filter's 400

    # 10:10 in Amsterdam (UTC+1 in March) is 09:10 UTC, typed with its offset.
    narrow.get_by_label("Transaction id").fill("")
    narrow.get_by_label("From (UTC)").fill("2026-03-02 10:10+01:00")
    narrow.get_by_label("Until (UTC)").fill("2026-03-02 09:13")
    narrow.get_by_label("Direction").select_option("DIRECTION_INCOMING")
    narrow.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)
    assert narrow.errors == []


def test_health_certificates_services_and_tokens_at_1024_px(narrow: Any, world: World) -> None:
    expect = sync_api.expect
    url = world.controller.url
    narrow.goto(url + "health")
    manager = narrow.locator("tr", has_text="manager")
    expect(manager).to_contain_text("running and ready (certificate, crls, hsm pass)")
    expect(manager).to_contain_text("HTTP 200")

    # The controller has made TLS handshakes with its key (the probes, this browser): the
    # token still lists the organisation key once, as `sluis hsm list` does.
    narrow.goto(url + "certificates")
    keys = narrow.locator("section", has_text="HSM token").locator(
        "tbody tr", has_text="private-key"
    )
    expect(keys).to_have_count(1)

    narrow.goto(url + "services")
    expect(narrow.locator("main table")).to_contain_text("HTTP/1.1")
    expect(narrow.locator("main table")).not_to_contain_text("PROTOCOL_TCP_HTTP")
    expect(narrow.locator("main table")).to_contain_text("peers cannot reach it yet")
    expect(narrow.get_by_label("Backend URL (where the inway forwards)")).to_be_visible()

    narrow.goto(url + "users")
    expect(narrow.locator("#u-role")).to_have_value("auditor")
    expect(narrow.locator("#t-role")).to_have_value("auditor")
    expect(narrow.locator("#t-days")).to_have_value("90")
    narrow.get_by_label("Name", exact=True).fill("siem")
    narrow.get_by_role("button", name="Create token").click()
    expect(narrow.get_by_label("API token (shown once")).to_have_value(re.compile("^sluis_ctl_"))
    expect(narrow).to_have_url(re.compile(r"/tokens$"))
    # Reopening the address the browser shows now: the token list, not "405".
    narrow.goto(url + "tokens")
    expect(narrow).to_have_url(re.compile(r"/users#tokens$"))
    expect(narrow.locator("#tokens")).to_contain_text("siem")
    assert narrow.evaluate(OVERFLOW)
    assert narrow.errors == []


def test_audit_entry_links_to_its_contract(narrow: Any, world: World) -> None:
    """The approval of the first test is in the audit log; its contract is one click away."""
    expect = sync_api.expect
    narrow.goto(world.controller.url + "audit?action=contract.accept")
    narrow.locator("td a", has_text=world.connection).first.click()
    contract = narrow.locator("li.contract")
    expect(contract).to_have_count(1)
    expect(contract).to_have_attribute("data-hash", world.connection)
    expect(narrow.locator("main")).to_contain_text("Showing contract")
    expect(contract).to_contain_text("Gemeente Sluisdam")  # a name next to the OIN
    expect(contract).to_contain_text("service connection")
    assert narrow.evaluate(OVERFLOW)
    assert narrow.errors == []


def test_a_generated_password_is_changed_at_the_first_login(
    narrow: Any, browser: Any, world: World
) -> None:
    expect = sync_api.expect
    url = world.controller.url
    narrow.goto(url + "users")
    narrow.get_by_label("Username").fill("piet")
    narrow.get_by_role("button", name="Create user").click()
    secret = narrow.get_by_label(
        "Generated password (shown once; to be changed at the first login)"
    )
    password = secret.input_value()
    expect(narrow.locator("main table").first).to_contain_text("piet")

    context = browser.new_context(ignore_https_errors=True, viewport=NARROW)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(url + "contracts")
        page.get_by_label("Username").fill("piet")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/password$"))
        expect(page.get_by_role("status")).to_contain_text("someone else has seen it")
        assert page.evaluate(OVERFLOW)
        page.get_by_label("Current password").fill(password)
        page.get_by_label("New password (at least 12 characters)").fill("piet's own passphrase")
        page.get_by_label("New password again").fill("piet's own passphrase")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password was changed")
        page.get_by_label("Username").fill("piet")
        page.get_by_label("Password").fill("piet's own passphrase")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("header .who")).to_contain_text("piet (auditor)")
        expect(page.get_by_role("heading", name="Who may use what")).to_be_visible()
    finally:
        context.close()
