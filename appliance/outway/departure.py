"""Whether the application that sent a request is still waiting for its answer.

A request that waits (for an access token) may outlive its client: an application that gave
up must not have its request logged and forwarded later. The ASGI receive channel says
``http.disconnect`` once the client has closed its connection; it can be watched only once
the request body's last event has been taken from it (a body-less request, or a body that
came whole with the head, as most small ones do), since any other event on it is body the
next hop needs. A request whose body is still streaming in is not watched here; its body
stream notices the client leaving (:class:`~appliance.forwarding.proxy.ClientDisconnected`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from appliance.forwarding.asgi import GatewayRequest


def departure(req: GatewayRequest) -> Callable[[], Awaitable[None]] | None:
    """A coroutine function that returns once the client has gone, or None when the request
    body is still to come (watching would take it from the next hop)."""
    if not req.body_progress.complete:
        return None
    receive = req._receive  # Falcon keeps the ASGI callable; no public name for it

    async def departed() -> None:
        while (await receive()).get("type") != "http.disconnect":
            # Nothing else should come once the body is complete; never spin on it.
            await asyncio.sleep(0.05)

    return departed
