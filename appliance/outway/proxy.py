"""Forward a request to the inway in the token's ``aud`` over mutual TLS; stream both ways.

This is the inway's :class:`~appliance.inway.proxy.Forwarder` (one connection pool per worker,
made in the worker's loop; keep-alive; connect, read and write timeouts; streaming with flow
control; hop-by-hop headers removed, ``Fsc-*`` kept) with connections that present this
appliance's certificate (HSM key) to the inways, and the outway's error for an inway that
cannot be reached (502 ``ERROR_CODE_INWAY_UNREACHABLE``). The inway's answer, an FSC error
of the inway or the service's own error included, is passed back unaltered.

Before the request leaves, the app's headers lose whatever could speak for this appliance or
for someone else: every ``Fsc-*`` header (the outway sets ``Fsc-Authorization`` and
``Fsc-Transaction-Id`` itself; ``Fsc-Grant-Hash`` is for the outway only), the forwarding and
client-certificate headers proxies use to pass an identity on (:data:`IDENTITY_HEADERS`), and,
unless configured otherwise, the purpose-binding headers (``appliance.outway.logging``).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.inway.headers import IDENTITY_HEADERS
from appliance.inway.proxy import BackendResponse, Forwarder
from appliance.inway.settings import Backend
from appliance.outway.errors import OutwayError, OutwayErrorCode
from appliance.tls import revocation
from appliance.tls.peer import PeerIdentity, PeerIdentityError
from appliance.upstream import UpstreamPool

AUTHORIZATION_HEADER = "Fsc-Authorization"
GRANT_HASH_HEADER = "Fsc-Grant-Hash"
# The inway's gunicorn keeps an idle connection 75 s; the outway lets go earlier.
INWAY_KEEPALIVE_SECONDS = 60.0


def outgoing_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    token: str,
    transaction_id: str,
    drop: frozenset[str] = frozenset(),
) -> list[tuple[bytes, bytes]]:
    """The app's headers without identity (and ``drop``) headers, plus the outway's FSC ones.

    Hop-by-hop headers go later, in the inway's ``request_headers``.
    """
    kept = [
        (name, value)
        for name, value in raw
        if not (
            (lower := name.decode("latin-1").lower()).startswith("fsc-")
            or lower in IDENTITY_HEADERS
            or lower in drop
        )
    ]
    kept.append((AUTHORIZATION_HEADER.encode(), token.encode("ascii")))
    kept.append((b"Fsc-Transaction-Id", transaction_id.encode("ascii")))
    return kept


@functools.lru_cache(maxsize=256)
def _inway_identity(der: bytes) -> PeerIdentity | None:
    try:
        return PeerIdentity.from_der(der)
    except (PeerIdentityError, ValueError):
        return None


def inway_refusal(der: bytes) -> str | None:
    """Why a kept-alive connection to an inway with this certificate may not be reused: the
    certificate was revoked (a CRL loaded since the handshake) or has expired since."""
    identity = _inway_identity(der)
    return None if identity is None else revocation.peer_refusal(identity)


class OutwayForwarder(Forwarder):
    """The inway's Forwarder, over mutual TLS to inways."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        connections: int,
        ssl_context: ssl.SSLContext,
        write_timeout: float | None = None,
        resolve: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            connections=connections,
            write_timeout=write_timeout,
        )
        self._ssl_context = ssl_context
        self._resolve = resolve  # host:port -> (ip, port): the demo and tests on one host

    def _make_pool(self, **options: Any) -> UpstreamPool:
        return super()._make_pool(
            keepalive=INWAY_KEEPALIVE_SECONDS,
            ssl_context=self._ssl_context,
            resolve=self._resolve,
            peer_check=inway_refusal,
            **options,
        )

    async def to_inway(
        self,
        inway: str,
        *,
        method: str,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> BackendResponse:
        """Send the request to ``inway`` (https://host:port); return once its headers are in."""
        try:
            return await self.forward(
                Backend(name=inway, origin=inway, path=""),
                method=method,
                path=path,
                query_string=query_string,
                headers=headers,
                body=body,
            )
        except InwayError as exc:
            if exc.inway_code is not InwayErrorCode.SERVICE_UNREACHABLE:
                raise
            reason = exc.message.rpartition(": ")[2]
            raise OutwayError(
                OutwayErrorCode.INWAY_UNREACHABLE,
                f"the outway cannot reach the inway at {inway}: {reason}",
            ) from None
