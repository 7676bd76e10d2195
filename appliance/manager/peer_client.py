"""Calls from this Manager to other Managers of the Group, over mutual TLS with the HSM key.

Every POST and PUT carries ``Fsc-Manager-Address`` (this Manager's own URL), as the
specification requires. Errors say whether a retry can help: a 4xx answer is the peer refusing
(retrying the same request will not change that), anything else is transient. A 2xx answer
counts as a contact with the peer whose certificate the connection verified
(``sluis_manager_peer_last_contact_timestamp_seconds``, :mod:`appliance.metrics.peers`).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection
from aiohttp.resolver import DefaultResolver

from appliance.errors import SluisError
from appliance.manager.addresses import (
    AddressError,
    AddressRefused,
    check_manager_address,
    host_of,
    refusal,
)

API_PREFIX = "/v1"


class PeerCallError(SluisError):
    def __init__(self, address: str, message: str, *, status: int | None, code: str | None) -> None:
        super().__init__(f"{address}: {message}")
        self.status = status
        self.code = code

    @property
    def permanent(self) -> bool:
        """The peer understood and refused: retrying the same request will not help."""
        return self.status is not None and 400 <= self.status < 500


class _PeerResponse(aiohttp.ClientResponse):
    """An answer that keeps the certificate of the server it came from (DER): read when the
    answer starts, since a body-less answer hands its connection back before the caller
    sees it."""

    peer_certificate: bytes | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            self.peer_certificate = ssl_object.getpeercert(binary_form=True)
        return await super().start(connection)


def _contacted(resp: aiohttp.ClientResponse) -> None:
    certificate = getattr(resp, "peer_certificate", None)
    if certificate:
        # Here, not at the top: gunicorn's master must not import prometheus-client.
        from appliance.metrics import peers

        peers.contacted(certificate)


@dataclass
class PeerClient:
    ssl_context: ssl.SSLContext
    own_address: str
    timeout_seconds: float = 10.0
    # Test hook: connect to this host:port instead of the address' host (FQDN is still
    # checked against the certificate); the demo runs everything on 127.0.0.1.
    resolve: dict[str, tuple[str, int]] | None = None
    # [manager] allow_loopback_peer_addresses (appliance.manager.addresses).
    allow_loopback: bool = False
    _session: aiohttp.ClientSession | None = None
    _resolver: AbstractResolver | None = None

    def resolver(self) -> AbstractResolver:
        """Every name this client connects to is resolved here, and checked on each lookup."""
        if self._resolver is None:
            inner: AbstractResolver = DefaultResolver()
            if self.resolve:
                inner = _StaticResolver(self.resolve, inner)
            self._resolver = _GuardedResolver(inner, allow_loopback=self.allow_loopback)
        return self._resolver

    async def check_resolution(self, address: str) -> None:
        """:class:`AddressError` if ``address``'s host resolves to an address it may not have.

        A name that does not resolve now passes: it is resolved (and checked) again on every
        connection, and a peer's DNS entry may well follow its announcement."""
        try:
            await self.resolver().resolve(host_of(address), urlsplit(address).port or 443)
        except AddressRefused as exc:
            raise AddressError(str(exc)) from None
        except OSError:
            return

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context, limit=100, resolver=self.resolver()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                response_class=_PeerResponse,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self,
        method: str,
        address: str,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
    ) -> Any:
        url = check_manager_address(address) + API_PREFIX + path
        headers = {"Fsc-Manager-Address": self.own_address} if method in ("POST", "PUT") else {}
        session = await self.session()
        try:
            async with session.request(method, url, json=json, data=data, headers=headers) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    code = resp.headers.get("Fsc-Error-Code")
                    text = body[:500].decode("utf-8", "replace")
                    raise PeerCallError(
                        address,
                        f"{method} {path} -> {resp.status} {text}",
                        status=resp.status,
                        code=code,
                    )
                _contacted(resp)
                return await resp.json(content_type=None) if body else None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise PeerCallError(
                address,
                f"{method} {path} failed: {type(exc).__name__}: {exc}",
                status=None,
                code=None,
            ) from None

    async def submit_contract(self, address: str, content: dict[str, Any], signature: str) -> None:
        await self._call(
            "POST",
            address,
            "/contracts",
            json={"contract_content": content, "signature": signature},
        )

    async def send_signature(
        self, address: str, content_hash: str, kind: str, content: dict[str, Any], signature: str
    ) -> None:
        path = f"/contracts/{quote(content_hash, safe='')}/{kind}"
        await self._call(
            "PUT", address, path, json={"contract_content": content, "signature": signature}
        )

    async def jwks(self, address: str) -> dict[str, Any]:
        result = await self._call("GET", address, "/.well-known/jwks.json")
        return dict(result or {})

    async def peer_info(self, address: str) -> dict[str, Any]:
        return dict(await self._call("GET", address, "/peer") or {})

    async def announce(self, address: str) -> None:
        await self._call("PUT", address, "/announce")

    async def token(self, address: str, grant_hash: str, client_id: str) -> dict[str, Any]:
        form = {"grant_type": "client_credentials", "scope": grant_hash, "client_id": client_id}
        return dict(await self._call("POST", address, "/token", data=form) or {})

    async def peers(self, address: str, peer_ids: list[str]) -> list[dict[str, Any]]:
        query = quote(",".join(peer_ids), safe=",")
        listing = await self._call("GET", address, f"/peers?peer_id={query}")
        peers = (listing or {}).get("peers", [])
        return [p for p in peers if isinstance(p, dict)]

    async def contracts(self, address: str, **params: str) -> dict[str, Any]:
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        return dict(
            await self._call("GET", address, "/contracts" + ("?" + query if query else "")) or {}
        )


class _GuardedResolver(AbstractResolver):
    """Refuse names that resolve to an address no peer's Manager may have."""

    def __init__(self, inner: AbstractResolver, *, allow_loopback: bool) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = refusal(result["host"], allow_loopback=self._allow_loopback)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to {result['host']}, {reason}: not a peer's Manager"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


class _StaticResolver(AbstractResolver):
    """Resolve Manager FQDNs to fixed addresses (the demo and the tests run on one host);
    other names go to ``fallback`` (DNS)."""

    def __init__(self, table: dict[str, tuple[str, int]], fallback: AbstractResolver) -> None:
        self._table = table
        self._fallback = fallback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        mapped = self._table.get(f"{host}:{port}")
        if mapped is None:
            return await self._fallback.resolve(host, port, family)
        ip, mapped_port = mapped
        return [
            {
                "hostname": host,
                "host": ip,
                "port": mapped_port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        await self._fallback.close()
