"""Access control for every request: who is asking, may their role do this, is the CSRF token
there; and the audit of every refusal.

Each resource names, per HTTP method, a :class:`Rule`: the permission it needs and the action
name the audit log uses. A resource with no rule for a method is public (the login page, the
stylesheet, the OpenAPI document). The checks run in :meth:`AccessControl.process_resource`,
after routing and before the responder, so no responder can forget them:

1. no live session and no valid API token: 401 (API) or a redirect to the login page (UI);
2. the role lacks the permission: 403;
3. a state change with a session cookie needs the session's CSRF token (``X-CSRF-Token``
   header, or the ``csrf_token`` form field) and, when the browser sends one, a matching
   ``Origin``: 403 otherwise.

Refusals are written to the audit log with the action, the role and the peer address. A state
change that fails later (bad input, a contract in the wrong state) is audited by the resource,
or, if it was not, by :meth:`AccessControl.process_response`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import falcon
import falcon.asgi

from appliance.controller.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    shown_username,
)
from appliance.controller.errors import ControllerError, ErrorCode, forbidden, unauthenticated
from appliance.controller.params import form as read_form
from appliance.controller.roles import Permission, allowed

if TYPE_CHECKING:
    from appliance.controller.app import Controller

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Outcome = Literal["success", "failure", "denied"]


@dataclass(frozen=True)
class Rule:
    permission: Permission
    action: str


def by_method(**rules: Rule) -> Mapping[str, Rule]:
    """A resource's rules: ``by_method(GET=Rule(...), POST=Rule(...))``."""
    return MappingProxyType(rules)


class UiForbidden(falcon.HTTPForbidden):
    """A page the role may not see (rendered as an HTML page)."""


def is_api(req: falcon.asgi.Request) -> bool:
    return req.path.startswith("/api/")


def peer_address(req: falcon.asgi.Request) -> str:
    return req.remote_addr or "-"


def principal_of(req: falcon.asgi.Request) -> Principal | None:
    principal: Principal | None = getattr(req.context, "principal", None)
    return principal


def audit(
    controller: Controller,
    req: falcon.asgi.Request,
    action: str,
    outcome: Outcome,
    *,
    target: str | None = None,
    detail: str | None = None,
    actor: str | None = None,
) -> None:
    """Write one audit entry for this request (and remember that the request was audited)."""
    principal = principal_of(req)
    controller.auth.audit(
        actor or (principal.actor if principal else "-"),
        principal.role if principal else None,
        action,
        outcome,
        peer_address(req),
        target=target,
        detail=detail,
    )
    req.context.audited = True


def audit_login_refused(
    controller: Controller, req: falcon.asgi.Request, tried: object, detail: str
) -> None:
    """A login refused before its password was checked (malformed, too large, stale form):
    audited like every login attempt, with the name tried in a safe form."""
    actor = shown_username(tried) if isinstance(tried, str) else "-"
    audit(controller, req, "login", "failure", actor=actor, detail=detail)


def _target(route: dict[str, Any]) -> str | None:
    values = [str(v) for v in route.values()]
    return ", ".join(values) if values else None


def _netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc
    except ValueError:  # e.g. "http://[::1": no origin of ours
        return None


class AccessControl:
    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.principal = None
        req.context.audited = False
        req.context.auth_problem = None
        auth = self._controller.auth
        header = req.get_header("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            principal = auth.bearer(value.strip()) if scheme.lower() == "bearer" else None
            if principal is None:
                req.context.auth_problem = "invalid, expired or revoked API token"
            req.context.principal = principal
            return
        cookies = req.get_cookie_values(SESSION_COOKIE) or []
        for value in cookies[:2]:
            principal = auth.session(value)
            if principal is not None:
                req.context.principal = principal
                return
        if cookies:
            req.context.auth_problem = "session expired or unknown"

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        rules: Mapping[str, Rule] = getattr(resource, "rules", {})
        rule = rules.get("GET" if req.method == "HEAD" else req.method)
        if rule is None:
            return
        principal = principal_of(req)
        target = _target(params)
        api = is_api(req)
        if principal is None:
            problem = req.context.auth_problem or "not logged in"
            if api or req.method not in SAFE_METHODS:
                audit(self._controller, req, rule.action, "denied", target=target, detail=problem)
            if api:
                raise unauthenticated()
            raise falcon.HTTPSeeOther("/login?next=" + quote(req.relative_uri, safe="/?=&"))
        if not allowed(principal.role, rule.permission):
            detail = f"role {principal.role} lacks permission {rule.permission}"
            audit(self._controller, req, rule.action, "denied", target=target, detail=detail)
            if api:
                raise forbidden(f"the role {principal.role} may not do this ({rule.permission})")
            raise UiForbidden(description=f"Your role ({principal.role}) may not do this.")
        if principal.must_change_password and not getattr(
            resource, "before_password_change", False
        ):
            # A generated password was shown to whoever made the account: nothing but choosing
            # one's own (or logging out) until then.
            if api:
                raise forbidden("choose your own password first: log in on the web pages")
            raise falcon.HTTPSeeOther("/password")
        if req.method in SAFE_METHODS or principal.kind == "token":
            return
        token = req.get_header(CSRF_HEADER)
        if token is None and not api and req.content_type and "form" in req.content_type:
            value = (await read_form(req)).get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
        origin = req.get_header("Origin")
        problem = None
        if not principal.csrf_ok(token):
            problem = "missing or wrong CSRF token"
        elif origin is not None and _netloc(origin) != req.netloc:
            # Host and port must be ours; the scheme is not compared (behind TLS offload or
            # uvicorn's TLS the app may see "http").
            problem = f"cross-origin request from {origin[:100]}"
        if problem is not None:
            audit(self._controller, req, rule.action, "denied", target=target, detail=problem)
            if api:
                raise ControllerError(falcon.HTTP_403, ErrorCode.CSRF_TOKEN_INVALID, problem)
            raise UiForbidden(
                description="The form was stale or not sent from this site; try again."
            )

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        if req.method in SAFE_METHODS or req.context.audited or resource is None:
            return
        rules: Mapping[str, Rule] = getattr(resource, "rules", {})
        rule = rules.get(req.method)
        status = resp.status_code
        if rule is not None and status >= 400:
            audit(
                self._controller,
                req,
                rule.action,
                "failure",
                detail=f"HTTP {status}",
            )
