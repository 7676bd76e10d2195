"""The controller's web pages: server-rendered HTML (Jinja2), plain forms, no build step.

The pages show the same data as the API and change it through the same
:class:`~appliance.controller.app.Controller` methods, so the same role checks, CSRF checks
and audit entries apply. Every change is a POST form carrying the session's CSRF token,
answered with a redirect (post/redirect/get) or, when refused, with the page and the reason.
The small script in ``static/app.js`` only adds confirmations and conveniences; every page
works without it.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import falcon
import falcon.asgi
import jinja2

from appliance.controller import params as p
from appliance.controller.access import (
    Rule,
    audit,
    audit_login_refused,
    by_method,
    peer_address,
    principal_of,
)
from appliance.controller.auth import LOGIN_COOKIE, TOKEN_DAYS, LoginFailed, clear_cookie
from appliance.controller.errors import ControllerError
from appliance.controller.listing import CursorError as ListingCursorError
from appliance.controller.listing import Filter
from appliance.controller.oidc import (
    CALLBACK_PATH,
    FLOW_COOKIE,
    FLOW_LIFETIME,
    START_PATH,
    Flow,
    OidcError,
)
from appliance.controller.passwords import generate_password
from appliance.controller.roles import DEFAULT_ROLE, Permission, Role, allowed
from appliance.controller.store import StoreError
from appliance.controller.transactions import CursorError, peers_of
from appliance.manager.contracts.signatures import SignatureType

if TYPE_CHECKING:
    from appliance.controller.app import Controller

Request = falcon.asgi.Request
Response = falcon.asgi.Response

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("appliance.controller", "templates"),
    autoescape=jinja2.select_autoescape(("html",)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

NAV = (
    ("/", "Overview", Permission.VIEW),
    ("/services", "Services", Permission.VIEW),
    ("/contracts", "Contracts", Permission.VIEW),
    ("/transactions", "Transaction log", Permission.VIEW),
    ("/audit", "Audit log", Permission.AUDIT_READ),
    ("/certificates", "Certificates", Permission.VIEW),
    ("/integrity", "Log integrity", Permission.VIEW),
    ("/health", "Health", Permission.VIEW),
    ("/users", "Users and tokens", Permission.USERS_MANAGE),
)
DONE = {
    "published": "The publication was proposed to the directory (signed in the HSM).",
    "withdrawn": "The service's publication was revoked (signed in the HSM).",
    "proposed": "The connection was proposed (signed in the HSM); the other peer must accept.",
    "accept": "The contract was accepted (signed in the HSM).",
    "reject": "The contract was rejected (signed in the HSM).",
    "revoke": "The contract was revoked (signed in the HSM).",
    "unlocked": "The account was unlocked.",
    "revoked-token": "The API token was revoked.",
    "password": "Your password was changed. Log in with the new one.",
}


BACKEND_URL = re.compile(r"https?://[^\s\"'<>]{1,490}")


def when(value: str | None) -> str:
    """``2026-11-28T17:40:00Z`` as ``2026-11-28 17:40 UTC``."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def stamp(value: str | None) -> str:
    """``2026-11-28T17:40:12.345678Z`` as ``2026-11-28 17:40:12.345 UTC``."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def short(value: str | None, keep: int = 14) -> str:
    if not value:
        return "—"
    return value if len(value) <= keep + 1 else value[:keep] + "…"


# What the FSC enums mean to an operator; an unknown value is shown as it is.
LABELS = {
    "PROTOCOL_TCP_HTTP_1.1": "HTTP/1.1",
    "PROTOCOL_TCP_HTTP_2": "HTTP/2",
    "DIRECTION_INCOMING": "incoming (inway)",
    "DIRECTION_OUTGOING": "outgoing (outway)",
    "GRANT_TYPE_SERVICE_PUBLICATION": "service publication",
    "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION": "delegated service publication",
    "GRANT_TYPE_SERVICE_CONNECTION": "service connection",
    "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION": "delegated service connection",
}


def label(value: str | None) -> str:
    return LABELS.get(value or "", value or "—")


ENV.filters["when"] = when
ENV.filters["short"] = short
ENV.filters["stamp"] = stamp
ENV.filters["label"] = label


class Organisation:
    """Puts this appliance's organisation (name, OIN) on every page: the three demo
    controllers on 127.0.0.1 ports looked the same. First in the middleware, so that the
    login page and the error pages of refused requests have it too."""

    def __init__(self, controller: Controller) -> None:
        manager = controller.config.manager
        self._organisation = {
            "name": manager.peer_name if manager else "",
            "oin": controller.manager.peer_id,  # from our certificate, as the Manager's
        }

    async def process_request(self, req: Request, resp: Response) -> None:
        req.context.organisation = self._organisation


def render(
    req: Request, resp: Response, template: str, *, status: int = 200, **context: Any
) -> None:
    principal = principal_of(req)
    role = principal.role if principal else None
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = ENV.get_template(template).render(
        principal=principal,
        csrf=principal.csrf_token if principal else None,
        nav=[(href, label) for href, label, perm in NAV if role and allowed(role, perm)],
        path=req.path,
        organisation=getattr(req.context, "organisation", None) or {"name": "", "oin": ""},
        can=lambda permission: role is not None and allowed(role, Permission(permission)),
        done=DONE.get(req.get_param("done") or ""),
        **context,
    )


async def render_error(req: Request, resp: Response, ex: falcon.HTTPError) -> None:
    resp.status = ex.status
    for name, value in dict(ex.headers or {}).items():
        resp.set_header(name, value)
    description = ex.description or ""
    if isinstance(ex, ControllerError):
        description = ex.message
    render(
        req,
        resp,
        "error.html",
        status=ex.status_code,
        title=ex.title or "Error",
        description=description,
    )


def safe_next(value: str | None) -> str:
    """Only a path of this site (no ``//host``, no scheme) is a place to go after login."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value if all(ch.isprintable() and ch != "\\" for ch in value) else "/"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Page:
    rules: Mapping[str, Rule] = by_method()

    def __init__(self, controller: Controller) -> None:
        self.c = controller


class Login(Page):
    async def on_get(self, req: Request, resp: Response) -> None:
        if principal_of(req) is not None:
            raise falcon.HTTPSeeOther(safe_next(req.get_param("next")))
        self.show(req, resp)

    def show(
        self, req: Request, resp: Response, *, error: str | None = None, status: int = 200
    ) -> None:
        token = secrets.token_urlsafe(24)
        resp.set_cookie(
            LOGIN_COOKIE,
            token,
            secure=True,
            http_only=True,
            same_site="Strict",
            path="/",
            max_age=900,
        )
        render(
            req,
            resp,
            "login.html",
            status=status,
            login_token=token,
            next=safe_next(req.get_param("next")),
            error=error,
            oidc=self.c.oidc.provider_name if self.c.oidc else None,
        )

    async def on_post(self, req: Request, resp: Response) -> None:
        data: dict[str, Any] = {}
        try:
            data = await p.form(req)
            username = p.string(data, "username")
            password = p.string(data, "password")
        except ControllerError as exc:
            detail = f"malformed login request: {exc.message}"
            audit_login_refused(self.c, req, data.get("username"), detail)
            raise
        cookie = (req.get_cookie_values(LOGIN_COOKIE) or [""])[0]
        field = data.get("login_token")
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
        if not cookie or not isinstance(field, str) or not _same(cookie, field):
            audit_login_refused(self.c, req, username, "login form token missing or wrong")
            self.show(req, resp, error="The login form had expired. Please try again.", status=400)
            return
        try:
            session = await self.c.auth.login(username, password, peer_address(req))
        except LoginFailed:
            self.show(
                req,
                resp,
                error="Login failed: wrong username or password, or the account is locked.",
                status=401,
            )
            return
        self.c.set_session_cookie(resp, session.session_id)
        clear_cookie(resp, LOGIN_COOKIE)
        next_page = data.get("next")
        raise falcon.HTTPSeeOther(safe_next(next_page if isinstance(next_page, str) else None))


class OidcStart(Page):
    """``GET /login/oidc``: begin a login at the OpenID Connect provider (public)."""

    async def on_get(self, req: Request, resp: Response) -> None:
        oidc = self.c.oidc
        if oidc is None:
            raise falcon.HTTPNotFound(description="Login with OpenID Connect is not configured.")
        flow = Flow(secrets.token_urlsafe(32))
        now = self.c.auth.clock()
        try:
            url = await oidc.authorization_url(flow)
        except OidcError as exc:
            self.c.auth.audit(
                "-", None, "login", "failure", peer_address(req), detail=f"oidc: {exc.reason}"
            )
            Login(self.c).show(req, resp, error=exc.message, status=503)
            return
        self.c.auth.store.add_oidc_login(
            flow.id_hash, safe_next(req.get_param("next")), now, now + FLOW_LIFETIME
        )
        # Lax, not Strict: the cookie must come back with the provider's redirect, a
        # navigation from another site. It only names this login, for ten minutes.
        resp.set_cookie(
            FLOW_COOKIE,
            flow.flow_id,
            secure=True,
            http_only=True,
            same_site="Lax",
            path="/",
            max_age=int(FLOW_LIFETIME.total_seconds()),
        )
        raise falcon.HTTPSeeOther(url)


class OidcCallback(Page):
    """``GET /login/oidc/callback``: the provider sends the browser back here (public)."""

    async def on_get(self, req: Request, resp: Response) -> None:
        oidc = self.c.oidc
        if oidc is None:
            raise falcon.HTTPNotFound(description="Login with OpenID Connect is not configured.")
        flow_id = (req.get_cookie_values(FLOW_COOKIE) or [""])[0]
        clear_cookie(resp, FLOW_COOKIE, "Lax")
        auth = self.c.auth
        try:
            next_page = (
                auth.store.take_oidc_login(Flow(flow_id).id_hash, auth.clock())
                if 0 < len(flow_id) <= 128
                else None
            )
            if next_page is None:
                raise OidcError(
                    "no login in progress for this browser (flow cookie missing, expired or "
                    "already used)",
                    "The login took too long or was already used. Please start again.",
                )
            flow = Flow(flow_id)
            error = req.get_param("error")
            if error:
                raise OidcError(
                    f"the provider answered {error[:100]!r}",
                    f"The identity provider did not log you in ({error[:100]}).",
                )
            if not flow.state_matches(req.get_param("state")):
                raise OidcError("state is not the one of the login begun in this browser")
            code = req.get_param("code")
            if not code or len(code) > 4096:
                raise OidcError("no authorization code in the provider's answer")
            identity = await oidc.identity(code, flow)
        except OidcError as exc:
            auth.audit(
                (exc.username or "-")[:64],
                None,
                "login",
                "failure",
                peer_address(req),
                detail=f"oidc: {exc.reason}",
            )
            Login(self.c).show(req, resp, error=exc.message, status=401)
            return
        try:
            session = await auth.login_oidc(identity, peer_address(req))
        except LoginFailed:
            Login(self.c).show(
                req,
                resp,
                error=(
                    f"Your account {identity.username} cannot log in here: the name is "
                    "taken by another account, or the account is disabled. Ask an "
                    "administrator."
                ),
                status=403,
            )
            return
        self.c.set_session_cookie(resp, session.session_id)
        render(
            req,
            resp,
            "continue.html",
            next=next_page,
            username=session.principal.actor,
            role=session.principal.role.value,
        )


class Logout(Page):
    before_password_change = True
    rules = by_method(POST=Rule(Permission.VIEW, "logout"))

    async def on_post(self, req: Request, resp: Response) -> None:
        principal = principal_of(req)
        assert principal is not None
        if principal.session_id:
            self.c.auth.end_session(principal.session_id)
        audit(self.c, req, "logout", "success")
        self.c.clear_session_cookie(resp)
        raise falcon.HTTPSeeOther("/login")


class Password(Page):
    """``/password``: choose one's own password; the only page for an account whose password
    was generated (by an administrator or ``sluis controller create-user``) until it is done."""

    before_password_change = True
    rules = by_method(
        GET=Rule(Permission.VIEW, "password.read"),
        POST=Rule(Permission.VIEW, "user.password"),
    )

    def show(
        self, req: Request, resp: Response, *, error: str | None = None, status: int = 200
    ) -> None:
        render(req, resp, "password.html", status=status, error=error)

    async def on_get(self, req: Request, resp: Response) -> None:
        self.show(req, resp)

    async def on_post(self, req: Request, resp: Response) -> None:
        principal = principal_of(req)
        assert principal is not None
        data = await p.form(req)
        current, new = p.text(data, "current") or "", p.text(data, "password") or ""
        if new != (p.text(data, "repeat") or ""):
            self.show(req, resp, error="The two new passwords differ.", status=400)
            return
        if new == current:
            self.show(req, resp, error="Choose a password other than the current one.", status=400)
            return
        try:
            # Checked like a login: the limits apply to guesses made from an open session.
            await asyncio.to_thread(
                self.c.auth.check_password, principal.actor, current, peer_address(req)
            )
            self.c.auth.set_password(principal.actor, new)
        except LoginFailed as exc:
            audit(
                self.c, req, "user.password", "failure", target=principal.actor, detail=exc.reason
            )
            self.show(req, resp, error="The current password is wrong.", status=400)
            return
        except (StoreError, ValueError) as exc:
            audit(self.c, req, "user.password", "failure", target=principal.actor, detail=str(exc))
            self.show(req, resp, error=str(exc), status=400)
            return
        audit(self.c, req, "user.password", "success", target=principal.actor)
        # A new password ends every session of the account, this one too.
        self.c.clear_session_cookie(resp)
        raise falcon.HTTPSeeOther("/login?done=password")


class Overview(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "overview.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        render(
            req,
            resp,
            "overview.html",
            overview=self.c.manager.overview(),
            due=await self.c.certificates_due(),
        )


class Services(Page):
    rules = by_method(
        GET=Rule(Permission.VIEW, "services.read"),
        POST=Rule(Permission.SERVICES_MANAGE, "service.publish"),
    )

    def show(
        self, req: Request, resp: Response, *, error: str | None = None, status: int = 200
    ) -> None:
        render(
            req,
            resp,
            "services.html",
            status=status,
            services=self.c.manager.services(),
            protocols=p.PROTOCOLS,
            inway=self.c.manager.inway_services,
            **self._next_step(req),
            error=error,
        )

    @staticmethod
    def _next_step(req: Request) -> dict[str, str | None]:
        """The service just published and the backend URL entered, from the redirect."""
        service, backend = req.get_param("service") or "", req.get_param("backend") or ""
        if req.get_param("done") != "published" or not p.SERVICE_NAME.fullmatch(service):
            return {"backend_for": None, "backend": None}
        return {
            "backend_for": service,
            "backend": backend if BACKEND_URL.fullmatch(backend) else None,
        }

    async def on_get(self, req: Request, resp: Response) -> None:
        self.show(req, resp)

    async def on_post(self, req: Request, resp: Response) -> None:
        data = await p.form(req)
        try:
            name = p.required(p.matching(data, "name", p.SERVICE_NAME, "a service name"), "name")
            protocol = p.one_of(data, "protocol", p.PROTOCOLS) or p.PROTOCOLS[0]
            days = p.integer(data, "days", default=365, low=1, high=3650)
            backend = p.matching(data, "backend_url", BACKEND_URL, "an http(s):// URL")
            self.c.publish(req, name, protocol, days, p.reason(data))
        except ControllerError as exc:
            self.show(req, resp, error=exc.message, status=exc.status_code)
            return
        # The backend URL is not part of the contract: the page says what to put in [inway].
        following = {
            "done": "published",
            "service": name,
            **({"backend": backend} if backend else {}),
        }
        raise falcon.HTTPSeeOther("/services?" + urlencode(following))


class ServiceWithdrawal(Page):
    rules = by_method(POST=Rule(Permission.SERVICES_MANAGE, "service.withdraw"))

    async def on_post(self, req: Request, resp: Response, name: str) -> None:
        data = await p.form(req)
        try:
            self.c.withdraw(req, name, p.reason(data))
        except ControllerError as exc:
            Services(self.c).show(req, resp, error=exc.message, status=exc.status_code)
            return
        raise falcon.HTTPSeeOther("/services?done=withdrawn")


class Contracts(Page):
    rules = by_method(
        GET=Rule(Permission.VIEW, "contracts.read"),
        POST=Rule(Permission.CONTRACTS_PROPOSE, "contract.propose"),
    )

    def show(
        self, req: Request, resp: Response, *, error: str | None = None, status: int = 200
    ) -> None:
        q = p.query(req)
        try:
            state = p.one_of(q, "state", p.CONTRACT_STATES)
            kind = p.one_of(q, "kind", p.CONTRACT_KINDS)
            # One contract: the audit log links its contract.* entries here.
            only = p.matching(q, "hash", p.CONTENT_HASH, "a contract hash ($1$1$...)")
            cursor = p.matching(q, "cursor", p.CONTENT_HASH, "a contract hash ($1$1$...)")
        except ControllerError as exc:
            state = kind = only = cursor = None
            error, status = exc.message, exc.status_code
        # Keyset pages: the ones waiting for us first (on the first page), then newest first.
        where = Filter(state=state, kind=kind, content_hash=only)
        try:
            waiting = [] if cursor else self.c.manager.contracts(replace(where, pending=True))[0]
            listed, following = self.c.manager.contracts(where, cursor=cursor)
        except ListingCursorError as exc:
            waiting, listed, following = [], [], None
            error, status = str(exc), 400
        shown = {c.hash for c in waiting}
        contracts = waiting + [c for c in listed if c.hash not in shown]
        onward = {"state": state or "", "kind": kind or "", "cursor": following or ""}
        render(
            req,
            resp,
            "contracts.html",
            status=status,
            contracts=contracts,
            names=self.c.manager.names_of(contracts),
            own=self.c.manager.peer_id,
            state=state,
            kind=kind,
            only=only,
            next_query=urlencode({k: v for k, v in onward.items() if v}) if following else None,
            states=p.CONTRACT_STATES,
            pending=sum(1 for c in contracts if c.pending_our_action),
            error=error,
        )

    async def on_get(self, req: Request, resp: Response) -> None:
        self.show(req, resp)

    async def on_post(self, req: Request, resp: Response) -> None:
        data = await p.form(req)
        try:
            peer = p.required(
                p.matching(data, "service_peer_id", p.PEER_ID, "a 20-digit OIN"),
                "service_peer_id",
            )
            name = p.required(
                p.matching(data, "service_name", p.SERVICE_NAME, "a service name"),
                "service_name",
            )
            days = p.integer(data, "days", default=365, low=1, high=3650)
            self.c.propose_connection(req, peer, name, days, p.reason(data))
        except ControllerError as exc:
            self.show(req, resp, error=exc.message, status=exc.status_code)
            return
        raise falcon.HTTPSeeOther("/contracts?done=proposed")


class ContractSignature(Page):
    def __init__(self, controller: Controller, kind: SignatureType) -> None:
        super().__init__(controller)
        self.kind = kind
        self.rules = by_method(POST=Rule(Permission.CONTRACTS_SIGN, f"contract.{kind.value}"))

    async def on_post(self, req: Request, resp: Response, content_hash: str) -> None:
        data = await p.form(req)
        try:
            self.c.sign(req, content_hash, self.kind, p.reason(data))
        except ControllerError as exc:
            Contracts(self.c).show(req, resp, error=exc.message, status=exc.status_code)
            return
        raise falcon.HTTPSeeOther(f"/contracts?done={self.kind.value}")


class Transactions(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "transactions.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        q = p.query(req)
        filters = {
            k: q[k]
            for k in (
                "after",
                "before",
                "peer_id",
                "service_name",
                "direction",
                "transaction_id",
                "grant_hash",
            )
            if isinstance(q.get(k), str) and q[k]
        }
        records: list[dict[str, Any]] = []
        following, error, status = "", None, 200
        try:
            where = p.transaction_filter(q)
            limit = p.integer(q, "limit", default=50, low=1, high=1000)
            records, following = self.c.transactions.query(
                where, cursor=p.text(q, "cursor"), limit=limit
            )
        except ControllerError as exc:
            error, status = exc.message, exc.status_code
        except CursorError as exc:
            error, status = str(exc), 400
        render(
            req,
            resp,
            "transactions.html",
            status=status,
            records=records,
            filters=filters,
            next_query=urlencode({**filters, "cursor": following}) if following else None,
            export_query=urlencode(filters),
            first_page=bool(q.get("cursor")),
            first_query=urlencode(filters),
            configured=self.c.transactions.configured,
            names=self.c.manager.peer_names(peers_of(records)),
            error=error,
        )


class Audit(Page):
    rules = by_method(GET=Rule(Permission.AUDIT_READ, "audit.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        q = p.query(req)
        filters = {
            k: q[k]
            for k in ("after", "before", "actor", "action", "outcome")
            if isinstance(q.get(k), str) and q[k]
        }
        entries: list[Any] = []
        following, error, status = None, None, 200
        try:
            after, before = p.time_range(q)
            entries, following = self.c.auth.store.query_audit(
                after=after,
                before=before,
                actor=p.text(q, "actor"),
                action=p.text(q, "action"),
                outcome=p.one_of(q, "outcome", p.OUTCOMES),
                cursor=p.integer(q, "cursor", default=0, low=0, high=2**62) or None,
                limit=p.integer(q, "limit", default=50, low=1, high=1000),
            )
        except ControllerError as exc:
            error, status = exc.message, exc.status_code
        render(
            req,
            resp,
            "audit.html",
            status=status,
            entries=entries,
            filters=filters,
            outcomes=p.OUTCOMES,
            next_query=urlencode({**filters, "cursor": following}) if following else None,
            first_query=urlencode(filters) if q.get("cursor") else None,
            error=error,
        )


class Certificates(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "certificates.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        report = await self.c.certificate_report()
        presenting: list[str] = []
        previous = report.get("previous_organisation")
        if previous and previous.get("items"):
            # The previous chain is not "not in use" while a running component still presents
            # it: ask them (the health probes) which certificate they show now.
            leaf = previous["items"][0]["thumbprint_sha256"]
            components = await self.c.health.check()
            presenting = [c["name"] for c in components if c.get("certificate_sha256") == leaf]
        render(req, resp, "certificates.html", report=report, presenting=presenting)


class Health(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "health.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        render(req, resp, "health.html", components=await self.c.health.check())


class Users(Page):
    rules = by_method(
        GET=Rule(Permission.USERS_MANAGE, "users.read"),
        POST=Rule(Permission.USERS_MANAGE, "user.create"),
    )

    def show(
        self,
        req: Request,
        resp: Response,
        *,
        error: str | None = None,
        status: int = 200,
        created: dict[str, str] | None = None,
    ) -> None:
        now = self.c.auth.clock()
        render(
            req,
            resp,
            "users.html",
            status=status,
            users=[u.as_api(now) for u in self.c.auth.store.list_users()],
            tokens=[t.as_api() for t in self.c.auth.store.list_tokens()],
            roles=[r.value for r in Role],
            default_role=DEFAULT_ROLE.value,
            token_days=TOKEN_DAYS,
            error=error,
            created=created,
        )

    async def on_get(self, req: Request, resp: Response) -> None:
        self.show(req, resp)

    async def on_post(self, req: Request, resp: Response) -> None:
        data = await p.form(req)
        try:
            username = p.required(p.text(data, "username"), "username")
            role = p.role(data)
        except ControllerError as exc:
            self.show(req, resp, error=exc.message, status=exc.status_code)
            return
        password = p.text(data, "password")
        chosen = password or generate_password()
        try:
            user = self.c.auth.create_user(username, role, chosen, generated=not password)
        except (StoreError, ValueError) as exc:
            audit(self.c, req, "user.create", "failure", target=username[:64], detail=str(exc))
            self.show(req, resp, error=str(exc), status=400)
            return
        audit(self.c, req, "user.create", "success", target=user.username, detail=f"role {role}")
        created = {"what": f"user {user.username} ({role})"}
        if not password:
            created["secret"] = chosen
            created["label"] = "Generated password (shown once; to be changed at the first login)"
        self.show(req, resp, created=created, status=201)


class UserUnlock(Page):
    rules = by_method(POST=Rule(Permission.USERS_MANAGE, "user.unlock"))

    async def on_post(self, req: Request, resp: Response, username: str) -> None:
        try:
            self.c.auth.store.unlock_user(username)
        except StoreError as exc:
            audit(self.c, req, "user.unlock", "failure", target=username[:64], detail=str(exc))
            Users(self.c).show(req, resp, error=str(exc), status=404)
            return
        audit(self.c, req, "user.unlock", "success", target=username)
        raise falcon.HTTPSeeOther("/users?done=unlocked")


class Tokens(Page):
    rules = by_method(
        GET=Rule(Permission.USERS_MANAGE, "users.read"),
        POST=Rule(Permission.USERS_MANAGE, "token.create"),
    )

    async def on_get(self, req: Request, resp: Response) -> None:
        # The address bar says /tokens after a token was created (its secret is shown once,
        # in the POST's answer, so no redirect there); reopening it shows the tokens.
        raise falcon.HTTPSeeOther("/users#tokens")

    async def on_post(self, req: Request, resp: Response) -> None:
        data = await p.form(req)
        principal = principal_of(req)
        assert principal is not None
        try:
            name = p.required(p.text(data, "name"), "name")
            role = p.role(data)
            days = p.integer(data, "days", default=TOKEN_DAYS, low=0, high=3650)
            secret, record = self.c.auth.create_token(
                name, role, principal.actor, days=days or None
            )
        except ControllerError as exc:
            Users(self.c).show(req, resp, error=exc.message, status=exc.status_code)
            return
        except StoreError as exc:
            audit(self.c, req, "token.create", "failure", detail=str(exc))
            Users(self.c).show(req, resp, error=str(exc), status=400)
            return
        audit(
            self.c,
            req,
            "token.create",
            "success",
            target=f"{record.id} {record.name}",
            detail=f"role {role}",
        )
        Users(self.c).show(
            req,
            resp,
            status=201,
            created={
                "what": f"API token {record.name} ({role})",
                "secret": secret,
                "label": "API token (shown once; store it in your automation's secret store)",
            },
        )


class TokenRevocation(Page):
    rules = by_method(POST=Rule(Permission.USERS_MANAGE, "token.revoke"))

    async def on_post(self, req: Request, resp: Response, token_id: int) -> None:
        try:
            record = self.c.auth.store.revoke_token(token_id, self.c.auth.clock())
        except StoreError as exc:
            audit(self.c, req, "token.revoke", "failure", target=str(token_id), detail=str(exc))
            Users(self.c).show(req, resp, error=str(exc), status=404)
            return
        audit(self.c, req, "token.revoke", "success", target=f"{record.id} {record.name}")
        raise falcon.HTTPSeeOther("/users?done=revoked-token")


# The pages (not part of the API document); tests/controller checks that this list and the
# app's non-API routes are the same.
WEB_ROUTES = (
    "/login",
    START_PATH,
    CALLBACK_PATH,
    "/logout",
    "/password",
    "/",
    "/services",
    "/services/{name}/withdraw",
    "/contracts",
    "/contracts/{content_hash}/accept",
    "/contracts/{content_hash}/reject",
    "/contracts/{content_hash}/revoke",
    "/transactions",
    "/audit",
    "/certificates",
    "/integrity",
    "/health",
    "/users",
    "/users/{username}/unlock",
    "/tokens",
    "/tokens/{token_id:int(min=0, max=9223372036854775807)}/revoke",
)


def add_web_routes(app: falcon.asgi.App[Any, Any], controller: Controller) -> None:
    app.add_route("/login", Login(controller))
    app.add_route(START_PATH, OidcStart(controller))
    app.add_route(CALLBACK_PATH, OidcCallback(controller))
    app.add_route("/logout", Logout(controller))
    app.add_route("/password", Password(controller))
    app.add_route("/", Overview(controller))
    app.add_route("/services", Services(controller))
    app.add_route("/services/{name}/withdraw", ServiceWithdrawal(controller))
    app.add_route("/contracts", Contracts(controller))
    for kind in SignatureType:
        app.add_route(
            f"/contracts/{{content_hash}}/{kind.value}", ContractSignature(controller, kind)
        )
    app.add_route("/transactions", Transactions(controller))
    app.add_route("/audit", Audit(controller))
    app.add_route("/certificates", Certificates(controller))
    app.add_route("/health", Health(controller))
    app.add_route("/users", Users(controller))
    app.add_route("/users/{username}/unlock", UserUnlock(controller))
    app.add_route("/tokens", Tokens(controller))
    app.add_route(
        "/tokens/{token_id:int(min=0, max=9223372036854775807)}/revoke", TokenRevocation(controller)
    )
    static = str(jinja2_static_dir())
    app.add_static_route("/static", static)


def jinja2_static_dir() -> Any:
    from importlib import resources

    return resources.files("appliance.controller").joinpath("static")
