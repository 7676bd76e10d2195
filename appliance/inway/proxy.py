"""Forward a request to a Service's backend and stream the answer back.

One ``aiohttp.ClientSession`` per worker, created lazily in the worker's event loop (a
session belongs to the loop it was made in), with a keep-alive pool to the backends. Bodies
are streamed both ways and never held whole: the request body goes out as it arrives from the
ASGI receive stream (aiohttp sends it chunked unless the client gave a Content-Length), the
response body goes back through Falcon's ``resp.stream`` as the backend sends it, with flow
control on both sides.

Timeouts: connecting (including the wait for a pooled connection), every read from the
backend, and every write of the request body to it. A backend that is down, silent for too
long before its response starts, or that stops taking the request body gives
``ERROR_CODE_SERVICE_UNREACHABLE`` (502) and its connection is closed; one that stalls while its
response body is streaming gets the connection to the Outway aborted, so the Outway never takes
a cut-off body for a whole one.

The write timeout (:class:`WriteWatchdog`): aiohttp has none, and its read timeout only starts
once the whole request body has been sent, so a backend that accepts a connection, reads the
head and then stops reading would hold the request (and both connections) forever. The
watchdog times each piece of the body from the moment aiohttp takes it until aiohttp asks for
the next one (that is, until the piece went into the socket); waiting for the Outway's next
piece does not count. When a piece is not taken within the timeout, the backend connection is
aborted (a graceful close would wait for the unsent bytes forever) and the task writing the
body cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.inway.headers import Headers, request_headers, response_headers
from appliance.inway.settings import Backend

log = logging.getLogger("sluis.inway")

# Headers aiohttp would otherwise add on its own; the backend gets what the Outway sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Statuses whose responses have no body (RFC 9110 6.4.1).
_BODILESS = frozenset({204, 304})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _caused_by_disconnect(exc: BaseException) -> bool:
    """aiohttp wraps an error of the request body (our ClientDisconnected) in its own."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ClientDisconnected):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class WriteWatchdog:
    """Aborts the backend body write when one piece of it takes longer than ``timeout``."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.fired = False
        self.transport: asyncio.Transport | None = None  # set by WatchedRequest.send
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, task: asyncio.Task[Any] | None) -> None:
        self._disarm()
        if task is not None and not task.done():
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._fire, task)

    def _disarm(self, *_: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, task: asyncio.Task[Any]) -> None:
        self._timer = None
        if not task.done():
            self.fired = True
            if self.transport is not None:  # uvloop's transports are no asyncio subclasses
                self.transport.abort()
            task.cancel()

    async def watch(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body``, with each piece timed from being handed out until the next is asked for."""
        try:
            async for chunk in body:  # waiting for the Outway: not timed
                self._arm(asyncio.current_task())
                yield chunk  # aiohttp writes it and waits until the socket takes it
                self._disarm()
            # aiohttp still writes the end of the body (and waits for the socket once more).
            task = asyncio.current_task()
            self._arm(task)
            if task is not None:
                task.add_done_callback(self._disarm)
        except BaseException:
            self._disarm()
            raise


_WATCHDOG: contextvars.ContextVar[WriteWatchdog | None] = contextvars.ContextVar(
    "sluis_write_watchdog", default=None
)


class WatchedRequest(aiohttp.ClientRequest):
    """Tells the request's :class:`WriteWatchdog` which connection its body goes out on.

    A session used with a write timeout must be made with ``request_class=WatchedRequest``;
    without it a timed-out write is only cancelled, and aiohttp's graceful close then waits
    for the unsent bytes as long as the peer does not read.
    """

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        watchdog = _WATCHDOG.get()
        if watchdog is not None:
            watchdog.transport = conn.transport
        return await super().send(conn)


class ClientDisconnected(Exception):
    """The Outway went away before its request body was complete."""


class BackendStalled(Exception):
    """The backend failed while its response body was being streamed."""


@dataclass(frozen=True)
class BackendResponse:
    status: int
    headers: Headers
    body: AsyncIterator[bytes] | None  # None: nothing to stream (HEAD, 204, 304)


class Forwarder:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        connections: int,
        write_timeout: float | None = None,
    ) -> None:
        self._write_timeout = write_timeout  # None: no write timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """This worker's session, made on first use in the running loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # No await between the check and the assignment: one session per loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._connections,
                    limit_per_host=0,
                    # Shorter than most backends keep idle connections (uvicorn: 5 s), so a
                    # pooled connection is rarely reused just as the backend closes it.
                    keepalive_timeout=4,
                ),
                timeout=self._timeout,
                auto_decompress=False,  # the body goes back exactly as the backend sent it
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry cookies between requests
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                trust_env=False,  # no proxy from the environment
                request_class=WatchedRequest,
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def forward(
        self,
        backend: Backend,
        *,
        method: str,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> BackendResponse:
        """Send the request; return once the backend's status and headers are in."""
        target = backend.origin + path
        if query_string:
            target += "?" + query_string.decode("latin-1")
        url = URL(target, encoded=True)
        watchdog = None
        if body is not None and self._write_timeout is not None:
            watchdog = WriteWatchdog(self._write_timeout)
            body = watchdog.watch(body)
        watching = _WATCHDOG.set(watchdog)
        try:
            response = await self.session().request(
                method,
                url,
                headers=CIMultiDict(request_headers(headers)),
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except ClientDisconnected:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if _caused_by_disconnect(exc):
                raise ClientDisconnected(
                    "the Outway disconnected mid-body; request aborted"
                ) from None
            reason = _reason(exc)
            if watchdog is not None and watchdog.fired:
                reason = f"timed out sending the request body ({watchdog.timeout:g} s)"
            log.warning("service %s unreachable at %s: %s", backend.name, backend.url, reason)
            raise InwayError(
                InwayErrorCode.SERVICE_UNREACHABLE,
                f"the inway cannot reach the service {backend.name!r}: {reason}",
            ) from None
        finally:
            _WATCHDOG.reset(watching)
        if method == "HEAD" or response.status in _BODILESS or response.status < 200:
            response.release()
            return BackendResponse(response.status, response_headers(response.raw_headers), None)
        return BackendResponse(
            response.status, response_headers(response.raw_headers), _relay(response, backend)
        )


async def _relay(response: aiohttp.ClientResponse, backend: Backend) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for chunk in response.content.iter_any():
            yield chunk
        finished = True
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = _reason(exc)
        raise BackendStalled(
            f"service {backend.name!r} failed while sending its response body: {reason}"
        ) from None
    finally:
        if finished:
            response.release()
        else:
            response.close()  # do not return a half-read connection to the pool


class BodyProgress:
    """Whether the ASGI server has delivered the request body's last event."""

    def __init__(self) -> None:
        self.complete = False


async def request_body(
    chunks: AsyncIterator[bytes], *, content_length: int | None, progress: BodyProgress
) -> AsyncIterator[bytes]:
    """The request body for aiohttp, chunk by chunk as the Outway sends it.

    Raises :class:`ClientDisconnected` (aborting the backend request, so that the backend never
    sees a cut-off body as a whole one) when the body ends without being complete.
    """
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        yield chunk
    if not (progress.complete or (content_length is not None and received >= content_length)):
        raise ClientDisconnected("the Outway disconnected before its request body was complete")
