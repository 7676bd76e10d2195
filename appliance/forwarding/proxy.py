"""Send a request to the next hop (a service's backend, or an inway) and stream the answer back.

One :class:`~appliance.upstream.UpstreamPool` per worker, made lazily in the worker's event
loop, with keep-alive connections to the next hops (see ``appliance.upstream`` for why the
gateways have a client of their own). Bodies are streamed both ways and never held whole:
the request body goes out as it arrives from the ASGI receive stream (chunked unless the
client gave a Content-Length), the answer's body goes back through Falcon's ``resp.stream``
as the next hop sends it, with flow control on both sides. An answer that is complete when
its head has been read (most small ones) is passed on whole (``ForwardedResponse.data``), so
that the gateway answers with one write.

Timeouts: connecting (including the wait for a pooled connection), every wait for the next
hop to send something, and every wait for it to take more of the request body. A next hop
that is down, silent for too long before its answer starts, or that stops taking the
request body is the gateway's own FSC error (:meth:`Forwarder.unreachable`), and its
connection is closed; one that stalls while its answer's body is streaming gets the client's
connection aborted, so the client never takes a cut-off body for a whole one.

Shares (:mod:`appliance.forwarding.limits`): each service may have only so many requests in
flight (:meth:`Forwarder.admit`; refused at once with the gateway's 503 when its share is
full), so that a service that hangs cannot take every connection of the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from appliance.forwarding.headers import Headers, RawHeaders
from appliance.forwarding.limits import Shares, Slot
from appliance.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from appliance.upstream.client import Origin, describe, parse_origin

log = logging.getLogger("sluis.forwarding")

# Statuses whose responses have no body (RFC 9110 6.4.1).
_BODILESS = frozenset({204, 304})
# Idle backend connections are dropped before most backends drop them (uvicorn: 5 s), so a
# pooled connection is rarely reused just as the backend closes it.
BACKEND_KEEPALIVE_SECONDS = 4.0


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class BackendStalled(Exception):
    """The next hop failed while its answer's body was being streamed."""


@dataclass(frozen=True, slots=True)
class ForwardedResponse:
    status: int
    headers: Headers
    body: AsyncIterator[bytes] | None  # None: nothing to stream (see data)
    data: bytes | None = None  # the whole body, when it was complete with the head
    waited: float = 0.0  # seconds from sending the request to the answer's head


class Forwarder:
    """The worker's pool to the next hops; subclasses say which answer headers go back."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        connections: int,
        write_timeout: float | None = None,
        shares: Shares | None = None,
    ) -> None:
        """``shares``: requests in flight per service (default: no limit below the pool's)."""
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout  # None: no write timeout
        self._connections = connections
        self._pool: UpstreamPool | None = None
        self._origins: dict[str, Origin] = {}
        self.shares = shares or Shares(connections)

    def _make_pool(self, **options: Any) -> UpstreamPool:
        """The pool with this forwarder's timeouts; ``options`` add to or override the rest."""
        return UpstreamPool(
            connections=self._connections,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            write_timeout=self._write_timeout,
            **{"keepalive": BACKEND_KEEPALIVE_SECONDS, **options},
        )

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    def pool(self) -> UpstreamPool:
        """This worker's pool, made on first use in the running loop."""
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = self._make_pool()
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    def _origin(self, origin: str) -> Origin:
        parsed = self._origins.get(origin)
        if parsed is None:
            parsed = self._origins[origin] = parse_origin(origin)
        return parsed

    def answer_headers(self, raw: RawHeaders) -> Headers:
        """The next hop's answer headers as the gateway passes them on."""
        raise NotImplementedError

    def unreachable(self, name: str, origin: str, reason: str) -> Exception:
        """The gateway's error for a next hop that is down, silent or not reading."""
        raise NotImplementedError

    def busy(self, name: str, limit: int) -> Exception:
        """The gateway's error for a service whose share is full (503, ``Retry-After``)."""
        raise NotImplementedError

    def check_resent(self, response: UpstreamResponse, name: str, origin: str) -> None:
        """Raise the gateway's error when the answer to a request sent a second time
        (``UpstreamResponse.resent``) shows that the next hop took the first one."""

    def admit(self, share: str, *, name: str, config_key: str | None = None) -> Slot:
        """A place for one request in ``share`` (its limit is ``config_key``'s), or the
        gateway's :meth:`busy` error at once. Release it if the request goes no further;
        :meth:`send` releases it with the answer."""
        slot = self.shares.enter(share, config_key)
        if slot is None:
            limit = self.shares.limit(share if config_key is None else config_key)
            refused = self.shares.refused(share, time.monotonic())
            if refused:
                log.warning(
                    "%s: %d requests in flight, its limit: %d refused (503) since the last report",
                    name,
                    limit,
                    refused,
                )
            raise self.busy(name, limit)
        return slot

    async def send(
        self,
        origin: str,
        *,
        name: str,
        method: str,
        path: str,
        query_string: bytes,
        headers: Headers,
        body: AsyncIterator[bytes] | None,
        slot: Slot | None = None,
        deadline: float | None = None,
    ) -> ForwardedResponse:
        """Send the request (``headers`` as the policy left them) to ``origin``; return once the
        answer's status and headers are in. ``name`` names the next hop in errors. ``slot``
        (from :meth:`admit`) is released once the answer is passed on or its stream ends;
        ``deadline`` (loop time): the answer's head must be in by then."""
        target = path
        if query_string:
            target += "?" + query_string.decode("latin-1")
        sent = time.perf_counter()
        try:
            response = await self.pool().request(
                self._origin(origin), method, target, headers, body, deadline=deadline
            )
        except (UpstreamError, OSError) as exc:
            raise self.unreachable(name, origin, describe(exc)) from None
        if response.resent:
            self.check_resent(response, name, origin)
        answer = self._answer(response, method, name, slot, time.perf_counter() - sent)
        if answer.body is None and slot is not None:
            slot.release()
        return answer

    def _answer(
        self,
        response: UpstreamResponse,
        method: str,
        name: str,
        slot: Slot | None,
        waited: float,
    ) -> ForwardedResponse:
        status = response.status
        headers = self.answer_headers(response.headers)
        if method == "HEAD" or status in _BODILESS:
            response.close()
            return ForwardedResponse(status, headers, None, waited=waited)
        data = response.whole()
        if data is not None:
            return ForwardedResponse(status, headers, None, data, waited)
        return ForwardedResponse(status, headers, _relay(response, name, slot), waited=waited)


async def _relay(response: UpstreamResponse, name: str, slot: Slot | None) -> AsyncIterator[bytes]:
    chunks = response.chunks()
    try:
        async for chunk in chunks:
            yield chunk
    except (UpstreamError, OSError) as exc:
        raise BackendStalled(
            f"{name!r} failed while sending its response body: {describe(exc)}"
        ) from None
    finally:
        await chunks.aclose()  # an early stop closes the connection, never reused half-read
        if slot is not None:
            slot.release()


class BodyProgress:
    """Whether the ASGI server has delivered the request body's last event, and how many
    bytes of the body went on (for the metrics)."""

    __slots__ = ("complete", "received")

    def __init__(self) -> None:
        self.complete = False
        self.received = 0


async def request_body(
    chunks: AsyncIterator[bytes], *, content_length: int | None, progress: BodyProgress
) -> AsyncIterator[bytes]:
    """The request body for the next hop, chunk by chunk as the client sends it.

    Raises :class:`ClientDisconnected` (aborting the next hop's request, so that it never
    sees a cut-off body as a whole one) when the body ends without being complete.
    """
    async for chunk in chunks:
        progress.received += len(chunk)
        yield chunk
    received = progress.received
    if not (progress.complete or (content_length is not None and received >= content_length)):
        raise ClientDisconnected("the client disconnected before its request body was complete")
