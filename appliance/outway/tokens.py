"""Access tokens for the outway: fetched from the service peer's Manager, cached per grant.

Core "Outway" > "Obtaining access tokens": the client credentials flow against the ``/token``
endpoint of the Manager of ``grant.data.service.peer_id``, over mutual TLS with this
appliance's certificate (the token is bound to it through ``cnf``). The outway does not
verify the token's signature (the inway does); it reads the claims it needs to route and log
(``aud``, ``exp``, ``gth``, ``iss``, ``sub``, ``svc``, ``gid``) and checks that they belong to
the grant it asked for and to its own Group (Core: "MUST validate ... ``gid``").

A token is used for its grant until it expires. From ``refresh`` seconds before its ``exp``
(not before half its life), one fetch of a new one runs in the background while requests go
on with the valid one; a Manager that is down or hung then costs nothing until the token
really expires. Requests without a valid token wait for the grant's one fetch (never one
each), at most ``timeout`` seconds, and stop waiting when their client leaves
(:mod:`.departure`). After a failed fetch the next one waits (back-off per Manager: 1 s,
doubling to 15 s); meanwhile a request without a valid token is refused at once instead of
opening yet another connection to that Manager. An outage is logged when it starts and when
it ends (with how many requests it cost), not once per request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.forwarding.settings import normalise_address
from appliance.manager.peer_client import PeerClient
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


BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 15.0
# An outage that lasts is mentioned again this often (with its count), not per request.
OUTAGE_REMINDER_SECONDS = 300.0

Departure = Callable[[], Awaitable[None]]


class ClientLeft(OutwayError):
    """The application left while its request waited for a token: nothing is logged or sent."""

    def __init__(self) -> None:
        super().__init__(
            OutwayErrorCode.TOKEN_UNAVAILABLE,
            "the application closed the connection while its request waited for an access token",
        )
        self.log_level = logging.DEBUG  # nobody reads the answer; not an operator's concern


@dataclass
class _Outage:
    """A Manager that gives no token, since ``since`` (wall clock, for the log)."""

    since: float
    reason: str
    failures: int = 0
    refused: int = 0
    retry_at: float = 0.0  # monotonic: no new fetch before
    reported_at: float = 0.0  # monotonic


@dataclass
class _Grant:
    token: AccessToken | None = None
    # When the background refresh starts: ``refresh`` s before exp, but not before half the
    # token's life (a Manager whose tokens live shorter than ``refresh`` is not asked nonstop).
    refresh_at: float = 0.0
    fetch: asyncio.Task[None] | None = None  # the one fetch in flight for this grant


class TokenCache:
    def __init__(
        self,
        fetcher: TokenFetcher,
        *,
        group_id: str,
        refresh: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._group_id = group_id
        self._refresh = refresh
        self._timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self._grants: dict[str, _Grant] = {}
        self._outages: dict[str, _Outage] = {}  # per service peer (its Manager)

    def _valid(self, grant: _Grant) -> AccessToken | None:
        token = grant.token
        if token is not None and self._clock() < token.expires_at:
            return token
        return None

    async def token(self, route: Route, *, departed: Departure | None = None) -> AccessToken:
        """A valid token for ``route``; :class:`OutwayError` TOKEN_UNAVAILABLE if none comes
        within the timeout; :class:`ClientLeft` when ``departed()`` returns first (the client
        closed its connection)."""
        grant = self._grants.get(route.grant_hash)
        if grant is None:
            grant = self._grants[route.grant_hash] = _Grant()
        token = self._valid(grant)
        if token is not None:
            if self._clock() >= grant.refresh_at:
                self._start_fetch(grant, route)  # in the background; this one still serves
            return token
        fetch = self._start_fetch(grant, route)
        if fetch is None:
            raise self._refusal(route, "the last attempt failed; the next one waits (back-off)")
        waits: set[asyncio.Future[Any]] = {fetch}
        gone = None if departed is None else asyncio.ensure_future(departed())
        if gone is not None:
            waits.add(gone)
        try:
            # The fetch is shared: a request that stops waiting (timeout, client gone) leaves
            # it running for the others.
            done, _ = await asyncio.wait(
                waits, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if gone is not None:
                gone.cancel()
        if gone is not None and gone in done:
            raise ClientLeft()
        token = self._valid(grant)
        if token is not None:
            return token
        if fetch in done:
            raise self._refusal(route, "the Manager gave none")
        raise self._refusal(route, f"no answer within {self._timeout:g} s")

    def _start_fetch(self, grant: _Grant, route: Route) -> asyncio.Task[None] | None:
        """The grant's fetch in flight, or a new one; None while its Manager is backed off."""
        fetch = grant.fetch
        if fetch is not None and fetch.get_loop() is asyncio.get_running_loop():
            return fetch
        outage = self._outages.get(route.service_peer_id)
        if outage is not None and self._monotonic() < outage.retry_at:
            return None
        task = asyncio.get_running_loop().create_task(self._fetch(grant, route))
        grant.fetch = task
        return task

    async def _fetch(self, grant: _Grant, route: Route) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._fetcher.fetch(route)
            now = self._clock()
            token = checked_token(raw, route, group_id=self._group_id, now=now)
        except Exception as exc:  # in a task of its own: whatever the cause, no token came
            # The token in hand stays: it is valid until it expires, whatever the Manager does.
            self._failed(route, str(exc) or type(exc).__name__)
        else:
            grant.token = token
            half_life = now + (token.expires_at - now) / 2
            grant.refresh_at = max(token.expires_at - self._refresh, half_life)
            self._recovered(route)
        finally:
            grant.fetch = None

    def _outage(self, route: Route, reason: str) -> _Outage:
        """The outage of the Manager of ``route``'s service peer; a new one is logged."""
        peer = route.service_peer_id
        outage = self._outages.get(peer)
        if outage is None:
            outage = self._outages[peer] = _Outage(since=self._clock(), reason=reason)
            outage.reported_at = self._monotonic()
            log.warning(
                "the Manager of peer %s gives no access token since %s (grant %s, service "
                "%s): %s; tokens in hand are used until they expire, new ones are asked for "
                "with back-off; the next line says when it answers again",
                peer,
                _moment(outage.since),
                route.grant_hash,
                route.service_name,
                reason,
            )
        return outage

    def _failed(self, route: Route, reason: str) -> None:
        now = self._monotonic()
        outage = self._outage(route, reason)
        if now - outage.reported_at >= OUTAGE_REMINDER_SECONDS:
            outage.reported_at = now
            log.warning(
                "the Manager of peer %s still gives no access token (since %s, %d attempts, "
                "%d requests refused): %s",
                route.service_peer_id,
                _moment(outage.since),
                outage.failures + 1,
                outage.refused,
                reason,
            )
        outage.failures += 1
        outage.reason = reason
        backoff = min(BACKOFF_FIRST_SECONDS * 2 ** (outage.failures - 1), BACKOFF_MAX_SECONDS)
        outage.retry_at = now + backoff

    def _recovered(self, route: Route) -> None:
        outage = self._outages.pop(route.service_peer_id, None)
        if outage is not None:
            log.warning(
                "the Manager of peer %s gives access tokens again, after %.0f s (since %s): "
                "%d failed attempts, %d requests refused for want of a token",
                route.service_peer_id,
                self._clock() - outage.since,
                _moment(outage.since),
                outage.failures,
                outage.refused,
            )

    def _refusal(self, route: Route, why: str) -> OutwayError:
        outage = self._outage(route, why)
        outage.refused += 1
        error = OutwayError(
            OutwayErrorCode.TOKEN_UNAVAILABLE,
            f"no access token for service {route.service_name!r} of peer "
            f"{route.service_peer_id} could be obtained: {why}: {outage.reason}",
        )
        error.log_level = logging.DEBUG  # counted in the outage's lines, not one per request
        return error

    def forget(self, grant_hash: str) -> None:
        """Drop a token the inway refused, so that the next request fetches a new one."""
        grant = self._grants.get(grant_hash)
        if grant is not None:
            grant.token = None


def _moment(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


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
