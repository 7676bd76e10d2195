"""A tiny ASGI app whose workers start as slowly as a file says (a stand-in for the HSM login).

Served by Sluis' gunicorn master and worker (plain HTTP listener). The lifespan startup runs
before uvicorn listens, so a worker that sleeps there does not serve, exactly like one still
logging in to its HSM. The delay is read from the file ``SLOWSTART_DELAY_FILE`` names at each
worker's start: a test starts fast workers, then makes the next generation slow. ``/sleep/<s>``
answers after that many seconds (a request in flight).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DELAY_FILE_ENV = "SLOWSTART_DELAY_FILE"

Message = dict[str, Any]


def _delay() -> float:
    path = Path(os.environ[DELAY_FILE_ENV])
    return float(path.read_text()) if path.exists() else 0.0


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(_delay())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        if scope["path"].startswith("/sleep/"):  # a request that takes this many seconds
            await asyncio.sleep(float(scope["path"].removeprefix("/sleep/")))
        body = str(os.getpid()).encode()  # which worker answered
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
