"""The Falcon side of a proxied request, the same at both gateways: the request that knows
whether its body is complete, the path as sent, the answer passed on, shutdown."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import falcon
import falcon.asgi
from falcon.asgi_spec import AsgiEvent

from appliance.forwarding.proxy import BodyProgress, ForwardedResponse, Forwarder, request_body

log = logging.getLogger("sluis.forwarding")

_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_NO_CHUNKS: tuple[bytes, ...] = ()

AsgiReceive = Callable[[], Awaitable[AsgiEvent]]


class GatewayRequest(falcon.asgi.Request):
    """A Falcon request that notes whether the body's last ASGI event has arrived.

    Falcon's body stream ends quietly when the client disconnects; a gateway must know the
    difference, or the next hop would get a cut-off body as if it were complete.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        receive: AsgiReceive,
        first_event: AsgiEvent | None = None,
        options: falcon.request.RequestOptions | None = None,
    ) -> None:
        # The raw header list is forwarded; make sure it can be read twice (ASGI allows any
        # iterable of pairs, and Falcon's test client hands over iterators).
        scope["headers"] = [(name, value) for name, value in scope.get("headers") or ()]
        self.body_progress = BodyProgress()
        progress = self.body_progress
        if first_event is None or not first_event.get("more_body", False):
            progress.complete = first_event is None or first_event.get("type") == "http.request"

        async def tracked_receive() -> AsgiEvent:
            event = await receive()
            if event.get("type") == "http.request" and not event.get("more_body", False):
                progress.complete = True
            return event

        super().__init__(scope, tracked_receive, first_event=first_event, options=options)


def raw_path(scope: Mapping[str, Any]) -> bytes:
    """The request path as sent (percent-encoding intact), for the path checks."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw
    return urllib.parse.quote(str(scope.get("path", "")), safe=_PATH_SAFE).encode("ascii")


def raw_headers(req: GatewayRequest) -> list[tuple[bytes, bytes]]:
    """The request's headers as they came (name and value bytes), for the policy."""
    headers: list[tuple[bytes, bytes]] = req.scope.get("headers") or []
    return headers


def body_of(req: GatewayRequest) -> AsyncIterator[bytes] | None:
    """The request body to stream to the next hop, or None when there is none."""
    length = req.content_length
    if not req.get_header("Transfer-Encoding") and not (length is not None and length > 0):
        return None
    return request_body(req.stream.__aiter__(), content_length=length, progress=req.body_progress)


async def _empty_body() -> AsyncIterator[bytes]:
    for chunk in _NO_CHUNKS:
        yield chunk


def pass_on(answer: ForwardedResponse, resp: falcon.asgi.Response) -> None:
    """The next hop's answer as the gateway's own: status, headers, body (whole or streamed)."""
    resp.status = answer.status
    for name, value in answer.headers:
        resp.append_header(name, value)
    if answer.data is not None:
        resp.data = answer.data  # one write; Falcon sets Content-Length to its length
    else:
        # HEAD: Falcon sends no body, and an empty stream keeps it from adding Content-Length.
        resp.stream = answer.body if answer.body is not None else _empty_body()


async def client_gone(
    req: GatewayRequest, resp: falcon.asgi.Response, exc: BaseException, params: Any
) -> None:
    """Error handler for ``ClientDisconnected``: nobody reads this answer; the next hop's
    request was aborted, not completed."""
    log.info("%s request aborted: %s", req.method, exc)
    resp.status = falcon.HTTP_400
    resp.data = b""


class ForwarderLifecycle:
    """Falcon lifespan middleware: close the worker's next-hop connections at shutdown."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        await self._forwarder.close()
