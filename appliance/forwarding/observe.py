"""What an operator sees of each proxied request: the data path's metrics.

:class:`ObserveMiddleware` is the first middleware of both gateways. It notes when a request
arrives and, once the answer is done (its last byte handed to the server, for a streamed
answer), records it (:class:`appliance.metrics.datapath.GatewayMetrics`). What only the
gateway's sink knows it leaves on ``req.context`` (:func:`routed`, :func:`upstream`); a
request refused before that is recorded without them.

Answers the app made before routing (``/metrics``, the health endpoints: they set
``resp.complete``) are not the data path and are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import falcon.asgi

from appliance.forwarding.asgi import GatewayRequest
from appliance.forwarding.proxy import ForwardedResponse
from appliance.metrics.datapath import GatewayMetrics

_FSC_ERROR_CODE = "Fsc-Error-Code"


def routed(req: falcon.asgi.Request, *, peer: str, service: str | None = None) -> None:
    """The sink's part: which peer and Service the request is for (as far as known)."""
    context = req.context
    context.peer_id = peer
    if service is not None:
        context.service = service


def upstream(req: falcon.asgi.Request, answer: ForwardedResponse) -> ForwardedResponse:
    """The sink's part: how long the next hop took to answer (``answer`` is returned)."""
    req.context.upstream_seconds = answer.waited
    return answer


class _Counted:
    """The answer's body stream, counted; ``done`` gets the byte count once it is closed
    (Falcon closes a stream that has ``close``, also when the client went away)."""

    __slots__ = ("_closed", "_done", "_inner", "_sent")

    def __init__(self, inner: Any, done: Callable[[int], None]) -> None:
        self._inner = inner
        self._done = done
        self._sent = 0
        self._closed = False

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await self._inner.__anext__()
        self._sent += len(chunk)
        return chunk

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()  # at once: the relay's connection and share slot go back
        finally:
            self._done(self._sent)


class ObserveMiddleware:
    def __init__(self, gateway: str) -> None:
        self._metrics = GatewayMetrics(gateway)

    async def process_request(self, req: GatewayRequest, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: GatewayRequest, resp: falcon.asgi.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if resp.complete:
            return
        context = req.context
        metrics = self._metrics
        started: float = context.started
        service: str | None = getattr(context, "service", None)
        peer: str | None = getattr(context, "peer_id", None)
        waited: float | None = getattr(context, "upstream_seconds", None)
        status = resp.status_code
        code = resp.get_header(_FSC_ERROR_CODE)
        received = req.body_progress.received

        def done(sent: int) -> None:
            metrics.record(
                service=service,
                peer=peer,
                status=status,
                code=code,
                duration=time.perf_counter() - started,
                upstream=waited,
                received=received,
                sent=sent,
            )

        stream = resp.stream
        if stream is not None:
            resp.stream = _Counted(stream, done)
        else:
            data = resp.data
            done(len(data) if data else 0)
