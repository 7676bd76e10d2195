"""Forward a request to the inway in the token's ``aud`` over mutual TLS; stream both ways.

The gateways' shared :class:`~appliance.forwarding.proxy.Forwarder` (one connection pool per
worker, made in the worker's loop; keep-alive; connect, read and write timeouts; streaming
with flow control) with connections that present this appliance's certificate (HSM key) to
the inways, and the outway's error for an inway that cannot be reached (502
``ERROR_CODE_INWAY_UNREACHABLE``; 503 ``ERROR_CODE_SERVICE_BUSY`` for an inway and service
whose share of the pool is full). The inway's answer, an FSC error of the inway or the
service's own answer included, is passed back with only its hop-by-hop headers removed.

What the application's request loses on the way (every ``Fsc-*`` header, identity and
forwarding headers, ``Sluis-*``) is the forwarding policy, :mod:`appliance.forwarding.headers`.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping
from typing import Any

from appliance.forwarding.headers import Headers, RawHeaders, inway_answer_headers
from appliance.forwarding.limits import Shares
from appliance.forwarding.proxy import ForwardedResponse, Forwarder
from appliance.outway.errors import OutwayError, OutwayErrorCode
from appliance.statelog import FailureStates
from appliance.tls import revocation
from appliance.tls.peer import PeerIdentity, PeerIdentityError
from appliance.upstream import UpstreamPool, UpstreamResponse

log = logging.getLogger("sluis.outway")
# Per worker and inway: an inway that is down refuses every request for it; logged as a state
# with counts (appliance.statelog), not a line per request.
_UNREACHABLE = FailureStates(log, "inway {} unreachable", "requests refused")

GRANT_HASH_HEADER = "Fsc-Grant-Hash"
# The inway's gunicorn keeps an idle connection 75 s; the outway lets go earlier.
INWAY_KEEPALIVE_SECONDS = 60.0


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
    """The shared Forwarder, over mutual TLS to inways."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        connections: int,
        ssl_context: ssl.SSLContext,
        write_timeout: float | None = None,
        resolve: Mapping[str, tuple[str, int]] | None = None,
        shares: Shares | None = None,
    ) -> None:
        super().__init__(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            connections=connections,
            write_timeout=write_timeout,
            shares=shares,
        )
        self._ssl_context = ssl_context
        self._resolve = resolve  # host:port -> (ip, port): the demo and tests on one host

    def _make_pool(self, **options: Any) -> UpstreamPool:
        return super()._make_pool(
            keepalive=INWAY_KEEPALIVE_SECONDS,
            ssl_context=self._ssl_context,
            resolve=self._resolve,
            peer_check=inway_refusal,
            # A kept-alive connection cut after the request went out (the inway's address
            # moved to another node, a worker died): sent again, the inway refuses the same
            # transaction id if it took the first (check_resent).
            resend_unanswered=True,
            **options,
        )

    def answer_headers(self, raw: RawHeaders) -> Headers:
        return inway_answer_headers(raw)

    async def send(self, origin: str, **kwargs: Any) -> ForwardedResponse:
        answer = await super().send(origin, **kwargs)
        _UNREACHABLE.recovered(origin)
        return answer

    def check_resent(self, response: UpstreamResponse, name: str, origin: str) -> None:
        code = OutwayErrorCode.INVALID_LOG_RECORD_ID.value.encode()
        if response.status == 400 and any(
            key.lower() == b"fsc-error-code" and value == code for key, value in response.headers
        ):
            response.close()
            raise self.unreachable(
                name,
                origin,
                "the connection closed after the request was sent, before any answer; sent "
                "again, the inway refused its transaction id as already used, so it took the "
                "first sending, whose outcome is unknown",
            )

    def unreachable(self, name: str, origin: str, reason: str) -> Exception:
        _UNREACHABLE.failed(origin, reason)
        return OutwayError(
            OutwayErrorCode.INWAY_UNREACHABLE,
            f"the outway cannot reach the inway at {origin}: {reason}",
        )

    def busy(self, name: str, limit: int) -> Exception:
        return OutwayError(
            OutwayErrorCode.SERVICE_BUSY,
            f"{name} has {limit} requests in progress from this outway, as many as it may "
            "have; try again later",
        )
