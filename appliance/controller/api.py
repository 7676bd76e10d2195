"""The controller's REST API under ``/api/v1`` (``openapi.yaml`` beside this module).

Sessions and API tokens authenticate; :mod:`~appliance.controller.access` checks the role and
the CSRF token before a responder runs. Every change is written to the audit log with the
operator's reason; errors are FSC error objects in the ``ERROR_DOMAIN_CONTROLLER`` domain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from appliance.controller import params as p
from appliance.controller.access import (
    Rule,
    audit,
    audit_login_refused,
    by_method,
    peer_address,
    principal_of,
)
from appliance.controller.auth import TOKEN_DAYS, LoginFailed, Principal
from appliance.controller.errors import (
    ControllerError,
    ErrorCode,
    bad_request,
    not_found,
    unauthenticated,
)
from appliance.controller.listing import CursorError as ListingCursorError
from appliance.controller.listing import Filter
from appliance.controller.passwords import generate_password
from appliance.controller.roles import MATRIX, Permission
from appliance.controller.store import StoreError
from appliance.controller.transactions import CursorError
from appliance.controller.views import Contract, UnknownContract
from appliance.manager.contracts.errors import ContractError
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.service import ManagerError

if TYPE_CHECKING:
    from appliance.controller.app import Controller

PREFIX = "/api/v1"
Request = falcon.asgi.Request
Response = falcon.asgi.Response


def openapi_document() -> bytes:
    return resources.files("appliance.controller").joinpath("openapi.yaml").read_bytes()


def contract_error(exc: Exception) -> ControllerError:
    """The API error for a refused contract change."""
    if isinstance(exc, UnknownContract):
        return not_found(str(exc))
    if isinstance(exc, ContractError):
        return ControllerError(falcon.HTTP_422, ErrorCode.CONTRACT_INVALID, exc.message)
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    return ControllerError(falcon.HTTP_409, ErrorCode.CONFLICT, str(exc))


def describe(reason: str | None, extra: str | None = None) -> str | None:
    parts = [part for part in (extra, f"reason: {reason}" if reason else None) if part]
    return "; ".join(parts) or None


class Resource:
    rules: Mapping[str, Rule] = by_method()

    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def contracts_json(self, contracts: list[Contract]) -> list[dict[str, Any]]:
        names = self.c.manager.names_of(contracts)
        return [contract.as_api(names) for contract in contracts]


def session_json(principal: Principal, controller: Controller) -> dict[str, Any]:
    return {
        "username": principal.actor,
        "role": principal.role.value,
        "kind": principal.kind,
        "csrf_token": principal.csrf_token,
        "permissions": sorted(perm.value for perm in MATRIX[principal.role]),
        "idle_timeout_minutes": controller.settings.session_idle_minutes,
    }


# -- documentation and sessions ------------------------------------------------------------


class OpenApi(Resource):
    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = "application/yaml"
        resp.data = openapi_document()


class Session(Resource):
    before_password_change = True  # see and end the session while a password must change
    rules = by_method(
        GET=Rule(Permission.VIEW, "session.read"),
        DELETE=Rule(Permission.VIEW, "logout"),
    )

    async def on_post(self, req: Request, resp: Response) -> None:
        body: dict[str, Any] = {}
        try:
            body = await p.json_body(req)
            if not isinstance(body.get("username"), str) or not isinstance(
                body.get("password"), str
            ):
                raise bad_request("username and password are required strings")
            username, password = p.string(body, "username"), p.string(body, "password")
        except ControllerError as exc:
            detail = f"malformed login request: {exc.message}"
            audit_login_refused(self.c, req, body.get("username"), detail)
            raise
        try:
            session = await self.c.auth.login(username, password, peer_address(req))
        except LoginFailed:
            req.context.audited = True
            raise ControllerError(
                falcon.HTTP_401,
                ErrorCode.LOGIN_FAILED,
                "login failed: wrong username or password, or the account is locked or disabled",
            ) from None
        self.c.set_session_cookie(resp, session.session_id)
        resp.status = falcon.HTTP_201
        resp.media = session_json(session.principal, self.c)

    async def on_get(self, req: Request, resp: Response) -> None:
        principal = principal_of(req)
        assert principal is not None
        resp.media = session_json(principal, self.c)

    async def on_delete(self, req: Request, resp: Response) -> None:
        principal = principal_of(req)
        assert principal is not None
        if principal.session_id is not None:
            self.c.auth.end_session(principal.session_id)
            self.c.clear_session_cookie(resp)
        audit(self.c, req, "logout", "success")
        resp.status = falcon.HTTP_204


# -- the overview, services and contracts --------------------------------------------------


class Overview(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "overview.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = self.c.manager.overview()


class Services(Resource):
    rules = by_method(
        GET=Rule(Permission.VIEW, "services.read"),
        POST=Rule(Permission.SERVICES_MANAGE, "service.publish"),
    )

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = {"services": self.c.manager.services()}

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await p.json_body(req)
        name = p.required(p.matching(body, "name", p.SERVICE_NAME, "a service name"), "name")
        protocol = p.one_of(body, "protocol", p.PROTOCOLS) or p.PROTOCOLS[0]
        days = p.integer(body, "days", default=365, low=1, high=3650)
        why = p.reason(body)
        contract = self.c.publish(req, name, protocol, days, why)
        resp.status = falcon.HTTP_201
        resp.media = self.contracts_json([contract])[0]


class ServiceWithdrawal(Resource):
    rules = by_method(POST=Rule(Permission.SERVICES_MANAGE, "service.withdraw"))

    async def on_post(self, req: Request, resp: Response, name: str) -> None:
        body = await p.json_body(req)
        if not p.SERVICE_NAME.fullmatch(name):
            raise bad_request("not a service name")
        contracts = self.c.withdraw(req, name, p.reason(body))
        resp.media = {"contracts": self.contracts_json(contracts)}


class Contracts(Resource):
    rules = by_method(
        GET=Rule(Permission.VIEW, "contracts.read"),
        POST=Rule(Permission.CONTRACTS_PROPOSE, "contract.propose"),
    )

    async def on_get(self, req: Request, resp: Response) -> None:
        q = p.query(req)
        state = p.one_of(q, "state", p.CONTRACT_STATES)
        kind = p.one_of(q, "kind", p.CONTRACT_KINDS)
        pending = p.one_of(q, "pending", ("true", "false"))
        peer = p.matching(q, "peer_id", p.PEER_ID, "a 20-digit OIN")
        cursor = p.matching(q, "cursor", p.CONTENT_HASH, "a contract hash ($1$1$...)")
        limit = p.integer(q, "limit", default=100, low=1, high=1000)
        where = Filter(
            state=state,
            kind=kind,
            pending=None if pending is None else pending == "true",
            peer_id=peer,
        )
        try:
            page, following = self.c.manager.contracts(where, cursor=cursor, limit=limit)
        except ListingCursorError as exc:
            raise bad_request(str(exc)) from None
        names = self.c.manager.names_of(page)
        resp.media = {
            # Keyset paging: a page filtered by a kind looks at the next WINDOW contracts, so
            # it may be short (even empty) while next_cursor still says where to go on.
            "contracts": [contract.as_api(names) for contract in page],
            "next_cursor": following,
        }

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await p.json_body(req)
        peer = p.required(
            p.matching(body, "service_peer_id", p.PEER_ID, "a 20-digit OIN"), "service_peer_id"
        )
        name = p.required(
            p.matching(body, "service_name", p.SERVICE_NAME, "a service name"), "service_name"
        )
        days = p.integer(body, "days", default=365, low=1, high=3650)
        contract = self.c.propose_connection(req, peer, name, days, p.reason(body))
        resp.status = falcon.HTTP_201
        resp.media = self.contracts_json([contract])[0]


class ContractItem(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "contracts.read"))

    async def on_get(self, req: Request, resp: Response, content_hash: str) -> None:
        try:
            contract = self.c.manager.get(content_hash)
        except ManagerError as exc:
            raise not_found(str(exc)) from None
        resp.media = self.contracts_json([contract])[0]


class ContractSignature(Resource):
    def __init__(self, controller: Controller, kind: SignatureType) -> None:
        super().__init__(controller)
        self.kind = kind
        self.rules = by_method(POST=Rule(Permission.CONTRACTS_SIGN, f"contract.{kind.value}"))

    async def on_post(self, req: Request, resp: Response, content_hash: str) -> None:
        body = await p.json_body(req)
        contract = self.c.sign(req, content_hash, self.kind, p.reason(body))
        resp.media = self.contracts_json([contract])[0]


# -- logs, certificates, health ----------------------------------------------------------


class Transactions(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "transactions.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        q = p.query(req)
        where = p.transaction_filter(q)
        limit = p.integer(q, "limit", default=50, low=1, high=1000)
        cursor = p.text(q, "cursor")
        try:
            records, following = self.c.transactions.query(where, cursor=cursor, limit=limit)
        except (CursorError, ValueError) as exc:
            raise bad_request(str(exc)) from None
        resp.media = {
            "records": records,
            "next_cursor": following,
            "configured": self.c.transactions.configured,
        }


class TransactionExport(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "transactions.export"))

    async def on_get(self, req: Request, resp: Response) -> None:
        where = p.transaction_filter(p.query(req))
        audit(
            self.c,
            req,
            "transactions.export",
            "success",
            detail=f"filter: {where_text(req)}" if req.query_string else "no filter",
        )
        chunks = self.c.transactions.export_csv(where)

        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header("Content-Disposition", 'attachment; filename="transactions.csv"')
        resp.stream = stream()


def where_text(req: Request) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(req.params.items()) if v)[:500]


class Audit(Resource):
    rules = by_method(GET=Rule(Permission.AUDIT_READ, "audit.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        q = p.query(req)
        after, before = p.time_range(q)
        cursor = p.integer(q, "cursor", default=0, low=0, high=2**62)
        limit = p.integer(q, "limit", default=50, low=1, high=1000)
        entries, following = self.c.auth.store.query_audit(
            after=after,
            before=before,
            actor=p.text(q, "actor"),
            action=p.text(q, "action"),
            outcome=p.one_of(q, "outcome", p.OUTCOMES),
            cursor=cursor or None,
            limit=limit,
        )
        resp.media = {
            "entries": [entry.as_api() for entry in entries],
            "next_cursor": str(following) if following is not None else "",
        }


class Certificates(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "certificates.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = await self.c.certificate_report()


class Health(Resource):
    rules = by_method(GET=Rule(Permission.VIEW, "health.read"))

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = {"components": await self.c.health.check()}


# -- users and API tokens (administrators) -------------------------------------------------


class Users(Resource):
    rules = by_method(
        GET=Rule(Permission.USERS_MANAGE, "users.read"),
        POST=Rule(Permission.USERS_MANAGE, "user.create"),
    )

    async def on_get(self, req: Request, resp: Response) -> None:
        now = self.c.auth.clock()
        resp.media = {"users": [u.as_api(now) for u in self.c.auth.store.list_users()]}

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await p.json_body(req)
        username = p.required(p.text(body, "username"), "username")
        role = p.role(body)
        password = p.text(body, "password")
        chosen = password or generate_password()
        try:
            user = self.c.auth.create_user(username, role, chosen, generated=not password)
        except (StoreError, ValueError) as exc:
            audit(self.c, req, "user.create", "failure", target=username[:64], detail=str(exc))
            raise ControllerError(
                falcon.HTTP_409 if "exists" in str(exc) else falcon.HTTP_400,
                ErrorCode.CONFLICT if "exists" in str(exc) else ErrorCode.REQUEST_INVALID,
                str(exc),
            ) from None
        audit(self.c, req, "user.create", "success", target=user.username, detail=f"role {role}")
        resp.status = falcon.HTTP_201
        resp.media = {
            "user": user.as_api(self.c.auth.clock()),
            # A generated password is shown once, here; a chosen one never again.
            "password": None if password else chosen,
        }


class UserUnlock(Resource):
    rules = by_method(POST=Rule(Permission.USERS_MANAGE, "user.unlock"))

    async def on_post(self, req: Request, resp: Response, username: str) -> None:
        await p.json_body(req)
        try:
            user = self.c.auth.store.unlock_user(username)
        except StoreError as exc:
            audit(self.c, req, "user.unlock", "failure", target=username[:64], detail=str(exc))
            raise not_found(str(exc)) from None
        audit(self.c, req, "user.unlock", "success", target=username)
        resp.media = {"user": user.as_api(self.c.auth.clock())}


class Tokens(Resource):
    rules = by_method(
        GET=Rule(Permission.USERS_MANAGE, "tokens.read"),
        POST=Rule(Permission.USERS_MANAGE, "token.create"),
    )

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = {"tokens": [t.as_api() for t in self.c.auth.store.list_tokens()]}

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await p.json_body(req)
        name = p.required(p.text(body, "name"), "name")
        role = p.role(body)
        days = p.integer(body, "days", default=TOKEN_DAYS, low=0, high=3650)
        principal = principal_of(req)
        assert principal is not None
        try:
            secret, record = self.c.auth.create_token(
                name, role, principal.actor, days=days or None
            )
        except StoreError as exc:
            audit(self.c, req, "token.create", "failure", target=name[:64], detail=str(exc))
            raise bad_request(str(exc)) from None
        audit(
            self.c,
            req,
            "token.create",
            "success",
            target=f"{record.id} {record.name}",
            detail=f"role {role}",
        )
        resp.status = falcon.HTTP_201
        resp.media = {"token": secret, "record": record.as_api()}


class TokenRevocation(Resource):
    rules = by_method(POST=Rule(Permission.USERS_MANAGE, "token.revoke"))

    async def on_post(self, req: Request, resp: Response, token_id: int) -> None:
        await p.json_body(req)
        try:
            record = self.c.auth.store.revoke_token(token_id, self.c.auth.clock())
        except StoreError as exc:
            audit(self.c, req, "token.revoke", "failure", target=str(token_id), detail=str(exc))
            raise not_found(str(exc)) from None
        audit(self.c, req, "token.revoke", "success", target=f"{record.id} {record.name}")
        resp.media = {"record": record.as_api()}


def add_api_routes(app: falcon.asgi.App[Any, Any], controller: Controller) -> None:
    app.add_route(f"{PREFIX}/openapi.yaml", OpenApi(controller))
    app.add_route(f"{PREFIX}/session", Session(controller))
    app.add_route(f"{PREFIX}/overview", Overview(controller))
    app.add_route(f"{PREFIX}/services", Services(controller))
    app.add_route(f"{PREFIX}/services/{{name}}/withdraw", ServiceWithdrawal(controller))
    app.add_route(f"{PREFIX}/contracts", Contracts(controller))
    app.add_route(f"{PREFIX}/contracts/{{content_hash}}", ContractItem(controller))
    for kind in SignatureType:
        app.add_route(
            f"{PREFIX}/contracts/{{content_hash}}/{kind.value}", ContractSignature(controller, kind)
        )
    app.add_route(f"{PREFIX}/transactions", Transactions(controller))
    app.add_route(f"{PREFIX}/transactions/export", TransactionExport(controller))
    app.add_route(f"{PREFIX}/audit", Audit(controller))
    app.add_route(f"{PREFIX}/certificates", Certificates(controller))
    app.add_route(f"{PREFIX}/health", Health(controller))
    app.add_route(f"{PREFIX}/users", Users(controller))
    app.add_route(f"{PREFIX}/users/{{username}}/unlock", UserUnlock(controller))
    app.add_route(f"{PREFIX}/tokens", Tokens(controller))
    app.add_route(
        f"{PREFIX}/tokens/{{token_id:int(min=0, max=9223372036854775807)}}/revoke",
        TokenRevocation(controller),
    )


__all__ = ["PREFIX", "add_api_routes", "contract_error", "describe", "unauthenticated"]
