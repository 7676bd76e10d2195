"""The FSC Manager REST API (manager.yaml), as Falcon ASGI resources under ``/v1``.

Every caller is another Peer's Manager (or Outway, for ``/token``) over mutual TLS; its
identity comes from the verified certificate (``req.context.peer``). Errors use the FSC format
(``Fsc-Error-Code`` header and JSON body, domain ``ERROR_DOMAIN_MANAGER``), except ``/token``,
which answers in the OAuth 2.0 format (RFC 6749 section 5.2) as the specification requires.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi

from appliance.manager.addresses import AddressError
from appliance.manager.contracts.errors import ContractError
from appliance.manager.contracts.model import GrantType
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.contracts.tokens import TokenError
from appliance.manager.errors import REQUEST_INVALID, bad_request, install_error_format, too_large
from appliance.manager.service import ManagerError, ManagerService
from appliance.manager.storage import PeerRow, ServiceRow, UnknownCursorError
from appliance.metrics.collectors import count_token
from appliance.serving.bodies import BodyTooLarge, read_body
from appliance.serving.fsc_errors import ErrorDomain, FscError
from appliance.tls.peer import PeerIdentity

MAX_BODY = 2 * 1024 * 1024  # contracts are small; properties are capped at 1 MB by the spec
MAX_FORM = 16 * 1024  # a token request is three short fields
MAX_FORM_FIELDS = 16


def _contract_error(exc: ContractError) -> FscError:
    return FscError(exc.status, exc.code, ErrorDomain.MANAGER, exc.message)


async def _body(req: falcon.asgi.Request, limit: int) -> bytes:
    try:
        return await read_body(req, limit)
    except BodyTooLarge as exc:
        raise too_large(str(exc)) from None


async def _json_body(req: falcon.asgi.Request) -> dict[str, Any]:
    raw = await _body(req, MAX_BODY)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"request body is not JSON: {exc}") from None
    except RecursionError:  # the C scanner's own depth limit, far beyond any contract
        raise bad_request("request body is JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def _signed_body(body: dict[str, Any]) -> tuple[Any, str]:
    content, signature = body.get("contract_content"), body.get("signature")
    if content is None or not isinstance(signature, str) or not signature:
        raise bad_request("body needs contract_content and signature")
    return content, signature


async def _manager_address(req: falcon.asgi.Request, service: ManagerService) -> str:
    """The sender's Manager address, checked before anything else of the request is used."""
    address = req.get_header("Fsc-Manager-Address")
    if not address:
        raise bad_request("the Fsc-Manager-Address header is required")
    try:
        return await service.check_peer_address(address, req.context.peer)
    except AddressError as exc:
        raise bad_request(str(exc)) from None


def _limit(req: falcon.asgi.Request) -> int:
    try:
        limit = req.get_param_as_int("limit", min_value=1, max_value=1000, default=100)
    except falcon.HTTPBadRequest:  # Falcon's own error lacks the FSC format
        raise bad_request("limit must be an integer from 1 to 1000") from None
    return int(limit) if limit is not None else 100


def _descending(req: falcon.asgi.Request) -> bool:
    order = req.get_param("sort_order", default="SORT_ORDER_DESCENDING")
    if order not in ("SORT_ORDER_ASCENDING", "SORT_ORDER_DESCENDING"):
        raise bad_request(f"unknown sort_order {order!r}")
    return order == "SORT_ORDER_DESCENDING"


def _list_param(req: falcon.asgi.Request, name: str) -> list[str] | None:
    """``style: form, explode: false``: one comma-separated value (repeats accepted too)."""
    values = req.get_param_as_list(name)
    if not values:
        return None
    return [item for value in values for item in value.split(",") if item]


class Contracts:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        address = await _manager_address(req, self._service)
        content, signature = _signed_body(await _json_body(req))
        peer: PeerIdentity = req.context.peer
        try:
            await self._service.receive_contract(content, signature, peer, address)
        except ContractError as exc:
            raise _contract_error(exc) from None
        resp.status = falcon.HTTP_201

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer: PeerIdentity = req.context.peer
        grant_hashes = _list_param(req, "grant_hash")
        grant_type = req.get_param("grant_type")
        if grant_type is not None and grant_type not in GrantType.__members__.values():
            raise bad_request(f"unknown grant_type {grant_type!r}")
        try:
            views, next_cursor = self._service.contracts(
                peer_id=peer.peer_id,
                # With grant_hash, pagination and the type filter are ignored (manager.yaml).
                grant_type=None if grant_hashes else grant_type,
                grant_hashes=grant_hashes,
                cursor=None if grant_hashes else req.get_param("cursor") or None,
                limit=1000 if grant_hashes else _limit(req),
                descending=_descending(req),
            )
        except UnknownCursorError as exc:
            raise bad_request(str(exc)) from None
        resp.media = {
            "contracts": [view.as_api() for view in views],
            "pagination": {"next_cursor": "" if grant_hashes else next_cursor},
        }


class ContractSignature:
    def __init__(self, service: ManagerService, kind: SignatureType) -> None:
        self._service = service
        self._kind = kind

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, content_hash: str
    ) -> None:
        address = await _manager_address(req, self._service)
        content, signature = _signed_body(await _json_body(req))
        peer: PeerIdentity = req.context.peer
        try:
            await self._service.receive_signature(
                content_hash, self._kind, content, signature, peer, address
            )
        except ContractError as exc:
            raise _contract_error(exc) from None
        resp.status = falcon.HTTP_201


async def _form(req: falcon.asgi.Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body, read within :data:`MAX_FORM`, or None
    when the body is of another type or not a form (RFC 6749: no parameter twice)."""
    # The type first: nothing of a body of another type is read.
    if req.content_type is None or not req.content_type.startswith(falcon.MEDIA_URLENCODED):
        return None
    raw = await _body(req, MAX_FORM)
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # not UTF-8, a field without "=", or too many fields
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


class Token:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.set_header("Cache-Control", "no-store")  # RFC 6749 section 5.1
        form = await _form(req)
        if form is None:
            return self._error(
                resp, "invalid_request", "send an application/x-www-form-urlencoded body"
            )
        grant_type, scope, client_id = (form.get(k) for k in ("grant_type", "scope", "client_id"))
        if not isinstance(grant_type, str) or not grant_type:
            return self._error(resp, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return self._error(
                resp, "unsupported_grant_type", "only client_credentials is supported"
            )
        if not isinstance(scope, str) or not scope or not isinstance(client_id, str):
            return self._error(resp, "invalid_request", "scope and client_id are required")
        try:
            token = self._service.issue_token(scope, client_id, req.context.peer)
        except TokenError as exc:
            return self._error(resp, exc.oauth_error, exc.description)
        resp.media = {"access_token": token, "token_type": "bearer"}
        count_token("issued")
        return None

    @staticmethod
    def _error(resp: falcon.asgi.Response, error: str, description: str) -> None:
        # manager.yaml gives /token only 400; a 401 would need WWW-Authenticate (RFC 9110),
        # and the client authenticates with its TLS certificate, not an HTTP scheme.
        count_token(error)
        resp.status = falcon.HTTP_400
        resp.media = {"error": error, "error_description": description}


class Announce:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._service.announce(req.context.peer, await _manager_address(req, self._service))
        resp.media = {}


class PeerInfo:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._service.peer_info()


def _page(req: falcon.asgi.Request, keys: list[str]) -> tuple[int, int, str]:
    """Cursor paging over an already sorted listing: (start, stop, next_cursor)."""
    cursor = req.get_param("cursor") or None
    start = 0
    if cursor is not None:
        if cursor not in keys:
            raise bad_request(f"unknown cursor {cursor!r}")
        start = keys.index(cursor) + 1
    stop = start + _limit(req)
    return start, stop, keys[stop - 1] if stop < len(keys) else ""


class Peers:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer_ids = _list_param(req, "peer_id")
        rows = [
            r
            for r in self._service.store.list_peers(
                peer_ids=peer_ids,
                name_contains=None if peer_ids else req.get_param("peer_name"),
            )
            if r.manager_address
        ]
        # With peer_id, pagination and the other filters are ignored (manager.yaml).
        rows.sort(key=lambda r: r.peer_id, reverse=_descending(req))
        start, stop, next_cursor = (
            (0, len(rows), "") if peer_ids else _page(req, [r.peer_id for r in rows])
        )
        resp.media = {
            "peers": [
                {"id": r.peer_id, "name": r.name or r.peer_id, "manager_address": r.manager_address}
                for r in rows[start:stop]
            ],
            "pagination": {"next_cursor": next_cursor},
        }


class Services:
    """The directory's service listing: one keyset page of the services table per request
    (``ManagerStore.services_page``) and the page's peers in one query, so a page costs the
    same at any number of published services."""

    def __init__(self, service: ManagerService) -> None:
        self._service = service

    @staticmethod
    def _peer(peer_id: str, peers: dict[str, PeerRow]) -> dict[str, str]:
        peer = peers.get(peer_id)
        return {
            "id": peer_id,
            # peerName needs 3+ characters: a peer known only by its address shows its OIN.
            "name": (peer.name if peer else None) or peer_id,
            "manager_address": (peer.manager_address if peer else None) or "",
        }

    def _listing(self, row: ServiceRow, peers: dict[str, PeerRow]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "SERVICE_TYPE_SERVICE",
            "peer": self._peer(row.peer_id, peers),
            "name": row.service_name,
            "protocol": row.protocol,
        }
        if row.delegator_peer_id:
            delegator = self._peer(row.delegator_peer_id, peers)
            data["type"] = "SERVICE_TYPE_DELEGATED_SERVICE"
            data["delegator"] = {"peer_id": delegator["id"], "peer_name": delegator["name"]}
        # manager.yaml's serviceListing requires ``type`` next to ``data``.
        return {"type": data["type"], "data": data}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cursor = req.get_param("cursor") or None
        after = None
        if cursor is not None:
            parts = cursor.split("/", 2)  # no part holds a "/": OIN, service name, $1$...
            if len(parts) != 3:
                raise bad_request(f"unknown cursor {cursor!r}")
            after = (parts[0], parts[1], parts[2])
        limit = _limit(req)
        store = self._service.store
        try:
            # Either filter may match when both are given (manager.yaml).
            rows = store.services_page(
                peer_id=req.get_param("peer_id"),
                name_contains=req.get_param("service_name") or None,
                after=after,
                limit=limit + 1,
                descending=_descending(req),
            )
        except UnknownCursorError:
            raise bad_request(f"unknown cursor {cursor!r}") from None
        page = rows[:limit]
        named = {r.peer_id for r in page} | {
            r.delegator_peer_id for r in page if r.delegator_peer_id
        }
        peers = {p.peer_id: p for p in store.list_peers(sorted(named))} if named else {}
        last = page[-1] if len(rows) > limit else None
        resp.media = {
            "services": [self._listing(r, peers) for r in page],
            "pagination": {
                "next_cursor": f"{last.peer_id}/{last.service_name}/{last.contract_hash}"
                if last
                else ""
            },
        }


class Jwks:
    def __init__(self, service: ManagerService) -> None:
        self._service = service

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._service.jwks()


def add_routes(app: falcon.asgi.App[Any, Any], service: ManagerService) -> None:
    """The Manager API on ``app``, with every error (404, 405, 500 too) in the FSC format."""
    install_error_format(app)
    app.add_route("/v1/announce", Announce(service))
    app.add_route("/v1/contracts", Contracts(service))
    for kind in SignatureType:
        app.add_route(
            f"/v1/contracts/{{content_hash}}/{kind.value}", ContractSignature(service, kind)
        )
    app.add_route("/v1/token", Token(service))
    app.add_route("/v1/peer", PeerInfo(service))
    app.add_route("/v1/peers", Peers(service))
    app.add_route("/v1/services", Services(service))
    app.add_route("/v1/.well-known/jwks.json", Jwks(service))


__all__ = ["REQUEST_INVALID", "ManagerError", "add_routes"]
