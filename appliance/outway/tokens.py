"""Access tokens for the outway: fetched from the service peer's Manager, cached per grant.

Core "Outway" > "Obtaining access tokens": the client credentials flow against the ``/token``
endpoint of the Manager of ``grant.data.service.peer_id``, over mutual TLS with this
appliance's certificate (the token is bound to it through ``cnf``). The outway does not
verify the token's signature (the inway does); it reads the claims it needs to route and log
(``aud``, ``exp``, ``gth``, ``iss``, ``sub``, ``svc``, ``gid``) and checks that they belong to
the grant it asked for and to its own Group (Core: "MUST validate ... ``gid``").

A token is reused for its grant until ``refresh`` seconds before its ``exp``; one fetch per
grant at a time (concurrent requests for the same grant wait for the same fetch).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.inway.settings import normalise_address
from appliance.manager.peer_client import PeerCallError, PeerClient
from appliance.outway.errors import OutwayError, OutwayErrorCode
from appliance.outway.grants import Route

log = logging.getLogger("sluis.outway")


class TokenFetcher(Protocol):
    async def fetch(self, route: Route) -> str:
        """The serialised access token (a JWS) for ``route``'s grant; raises when none."""
        ...


class ManagerDirectory(Protocol):
    async def manager_address(self, peer_id: str) -> str: ...


@dataclass(frozen=True)
class AccessToken:
    raw: str
    claims: Mapping[str, Any]
    inway: str  # the normalised ``aud``
    expires_at: float


class TokenUnavailable(Exception):
    """No usable access token for a grant (the reason is for the log and the app)."""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_claims(raw: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (the inway verifies the signature)."""
    parts = raw.split(".")
    if len(parts) != 3:
        raise TokenUnavailable("the access token is not a compact JWS")
    try:
        claims = json.loads(_b64url(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise TokenUnavailable("the access token's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise TokenUnavailable("the access token's payload is not a JSON object")
    return claims


def checked_token(raw: str, route: Route, *, group_id: str, now: float) -> AccessToken:
    claims = read_claims(raw)
    if claims.get("gth") != route.grant_hash:
        raise TokenUnavailable("the access token is for another grant (gth)")
    if claims.get("iss") != route.service_peer_id:
        raise TokenUnavailable("the access token was not issued by the service's peer (iss)")
    if claims.get("svc") != route.service_name:
        raise TokenUnavailable("the access token is for another service (svc)")
    if claims.get("gid") != group_id:
        raise TokenUnavailable(
            f"the access token is for Group {claims.get('gid')!r}, not this outway's {group_id!r}"
        )
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenUnavailable("the access token has no sub")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenUnavailable("the access token has no numeric exp")
    if exp <= now:
        raise TokenUnavailable("the Manager issued an access token that has already expired")
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str):
        raise TokenUnavailable("the access token names no single inway (aud)")
    try:
        inway = normalise_address(aud)
    except ValueError as exc:
        raise TokenUnavailable(str(exc)) from None
    return AccessToken(raw=raw, claims=claims, inway=inway, expires_at=float(exp))


class TokenCache:
    def __init__(
        self,
        fetcher: TokenFetcher,
        *,
        group_id: str,
        refresh: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetcher = fetcher
        self._group_id = group_id
        self._refresh = refresh
        self._clock = clock
        self._tokens: dict[str, AccessToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _fresh(self, grant_hash: str) -> AccessToken | None:
        token = self._tokens.get(grant_hash)
        if token is not None and self._clock() < token.expires_at - self._refresh:
            return token
        return None

    async def token(self, route: Route) -> AccessToken:
        """A cached or new token for ``route``; :class:`OutwayError` TOKEN_UNAVAILABLE if none."""
        token = self._fresh(route.grant_hash)
        if token is not None:
            return token
        lock = self._locks.setdefault(route.grant_hash, asyncio.Lock())
        async with lock:
            token = self._fresh(route.grant_hash)  # fetched while we waited
            if token is not None:
                return token
            try:
                raw = await self._fetcher.fetch(route)
                token = checked_token(raw, route, group_id=self._group_id, now=self._clock())
            except (TokenUnavailable, PeerCallError, OSError, TimeoutError, ValueError) as exc:
                self._tokens.pop(route.grant_hash, None)
                log.warning(
                    "no access token for grant %s (service %s of peer %s): %s",
                    route.grant_hash,
                    route.service_name,
                    route.service_peer_id,
                    exc,
                )
                raise OutwayError(
                    OutwayErrorCode.TOKEN_UNAVAILABLE,
                    f"no access token for service {route.service_name!r} of peer "
                    f"{route.service_peer_id} could be obtained: {exc}",
                ) from None
            self._tokens[route.grant_hash] = token
            return token

    def forget(self, grant_hash: str) -> None:
        """Drop a token the inway refused, so that the next request fetches a new one."""
        self._tokens.pop(grant_hash, None)


class ManagerTokenFetcher:
    """``POST /v1/token`` at the service peer's Manager (PeerClient: mTLS with the HSM key)."""

    def __init__(self, client: PeerClient, directory: ManagerDirectory, client_id: str) -> None:
        self._client = client
        self._directory = directory
        self._client_id = client_id

    async def fetch(self, route: Route) -> str:
        try:
            address = await self._directory.manager_address(route.service_peer_id)
        except Exception as exc:  # ManagerError, PeerCallError, a store error: no address
            raise TokenUnavailable(
                f"no Manager address for peer {route.service_peer_id}: {exc}"
            ) from None
        answer = await self._client.token(address, route.grant_hash, self._client_id)
        raw = answer.get("access_token")
        if not isinstance(raw, str) or not raw:
            raise TokenUnavailable(f"the Manager at {address} answered without an access_token")
        return raw
