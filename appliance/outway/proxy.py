"""Forward a request to the inway in the token's ``aud`` over mutual TLS; stream both ways.

The gateways' shared :class:`~appliance.forwarding.proxy.Forwarder` (one connection pool per
worker, made in the worker's loop; keep-alive; connect, read and write timeouts; streaming
with flow control) with connections that present this appliance's certificate (HSM key) to
the inways, and the outway's error for an inway that cannot be reached (502
``ERROR_CODE_INWAY_UNREACHABLE``; 503 ``ERROR_CODE_SERVICE_BUSY`` for an inway and service
whose share of the pool is full). The inway's answer, an FSC error of the inway or the
service's own answer included, is passed back with only its hop-by-hop headers removed.

A handshake that fails on a signature (the inway's certificate or CRL "badly signed", or an
error of OpenSSL's provider layer) may be this outway's own HSM module gone broken: the
provider checks the peer's signatures in the token too. Such a failure is checked in this
process (``appliance.hsm.watch.check_here``, at most once a second): a dead key is logged once
by the key watch, which replaces the worker once the token is back, and requests get 503
``ERROR_CODE_HSM_UNAVAILABLE`` without a handshake until then; a live key makes it the inway's
failure (502) as before.

What the application's request loses on the way (every ``Fsc-*`` header, identity and
forwarding headers, ``Sluis-*``) is the forwarding policy, :mod:`appliance.forwarding.headers`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from collections.abc import Mapping
from typing import Any

from appliance.forwarding.headers import Headers, RawHeaders, inway_answer_headers
from appliance.forwarding.limits import Shares
from appliance.forwarding.proxy import ForwardedResponse, Forwarder
from appliance.hsm import watch
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
# Handshake failures that a broken module of this process causes (OpenSSL's texts).
# "[SSL] EVP lib": tpm2-pkcs11 could not sign; "... signature failure": see the docstring.
_MAYBE_OWN_KEY = re.compile(
    r"signature failure|EVP lib|\[(EVP|PROV|PKCS11)[:\]]|provider", re.IGNORECASE
)
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
        if watch.outgoing_refused():
            raise _own_key_unusable()
        try:
            answer = await super().send(origin, **kwargs)
        except _MaybeOwnKey as exc:
            if await asyncio.to_thread(watch.check_here, exc.reason):
                raise _own_key_unusable() from None
            raise self._unreachable(origin, exc.reason) from None
        _UNREACHABLE.recovered(origin)
        return answer

    def check_resent(self, response: UpstreamResponse, name: str, origin: str) -> None:
        code = OutwayErrorCode.INVALID_LOG_RECORD_ID.value.encode()
        if response.status == 400 and any(
            key.lower() == b"fsc-error-code" and value == code for key, value in response.headers
        ):
            response.close()
            raise self._unreachable(
                origin,
                "the connection closed after the request was sent, before any answer; sent "
                "again, the inway refused its transaction id as already used, so it took the "
                "first sending, whose outcome is unknown",
            )

    def unreachable(self, name: str, origin: str, reason: str) -> Exception:
        if _MAYBE_OWN_KEY.search(reason):
            return _MaybeOwnKey(reason)  # send() decides whose failure it is
        return self._unreachable(origin, reason)

    def _unreachable(self, origin: str, reason: str) -> OutwayError:
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


class _MaybeOwnKey(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _own_key_unusable() -> OutwayError:
    error = OutwayError(
        OutwayErrorCode.HSM_UNAVAILABLE,
        "the outway's organisation key (its HSM token) cannot be used now; nothing was sent; "
        "try again later",
    )
    error.log_level = logging.DEBUG  # the key watch's lines say it, not one per request
    return error
