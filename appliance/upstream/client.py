"""An HTTP/1.1 client made for one job: forward a request to the next hop, stream the answer back.

Why not aiohttp: in the profile of the whole chain (``bench/chain.py``, py-spy) aiohttp's client
took about a quarter of each gateway's CPU per request: cookie jars, redirects, URL objects,
multidicts, tracing hooks, a task per request body, and three layers of streams. Forwarding
needs none of that. This client does only what a reverse proxy's upstream hop needs:

- :class:`UpstreamPool`, one per worker and event loop: keep-alive connections per origin, at
  most ``connections`` open at once (a request waits for a free one, within the connect
  timeout), the most recently used idle connection first, idle ones dropped after
  ``keepalive`` seconds (shorter than the peer keeps them, so that a connection is rarely
  reused just as the peer closes it); at most ``TLS_CONNECTING`` TLS handshakes per origin at
  once: beyond that a request waits for a connection to come free rather than open another;
- the request head goes out in one write (with the body, when it is bytes already); a
  streamed body goes out as it comes, chunked unless the caller gave a ``Content-Length``;
  ``Host`` is the origin's; no other header is added;
- the response is parsed by httptools (llhttp, the parser uvicorn uses); its body is handed on
  as it arrives, with flow control both ways (reading pauses while 256 KiB wait unread; body
  writes wait while the socket's buffer is full);
- timeouts: connecting (TCP and TLS handshake, and the wait for a free connection); every
  wait for the peer to send something (the read timeout restarts with every piece that
  arrives); every wait for the socket to take more of the request body (the write timeout);
  and, per request, a deadline for the answer's head that shortens the connect and read
  timeouts (the inway answers before the outway that called it gives up: docs/inway.md);
- a response that is complete when its head has been read (most small answers) can be taken
  whole (:meth:`UpstreamResponse.whole`), so that the gateway answers with one write;
- a pooled connection is checked just before reuse: one with anything to read (the peer's
  EOF or TLS close_notify not yet handled by the loop: a stale keep-alive connection) is
  dropped, and the request takes another; a request is sent again only when nothing of it can
  have reached the peer (the write of its head failed at once), and only for a body-less safe
  method (RFC 9110 9.2.1). A connection that closes after the request went out is an
  :class:`UpstreamClosed` that says the outcome is unknown: the peer may have executed it (an
  inway that logged and forwarded it, then died), and sending it again would run it twice or,
  with the same transaction id, be refused as a duplicate. A pool made with
  ``resend_unanswered`` (the outway's, towards inways) sends such a body-less safe request
  once more on a new connection (RFC 9110 9.2.2 allows it for idempotent methods), with the
  same headers, so the same transaction id: a Sluis inway logs that id before it forwards and
  refuses it the second time, so the service never sees it twice, and the answer says
  :attr:`UpstreamResponse.resent` so the caller can tell that refusal from the peer's own
  (a virtual address that moved to another node cuts every kept-alive connection: docs/ha.md);
- nothing else: no redirects, cookies, proxies, decompression, or automatic headers.

The pool reports its connections (in use, idle, opened, reused) to
:mod:`appliance.metrics.upstream` unless ``SLUIS_METRICS=off``.

A failure is an :class:`UpstreamError` (:class:`UpstreamTimeout` for the timeouts,
:class:`UpstreamClosed` for a peer that went away); an exception raised by the request body
iterator (the gateway's client left mid-upload) is re-raised as it is, and the upstream
connection is aborted, so that the next hop never takes a cut-off body for a whole one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import select
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import httptools

from appliance.metrics import registry

if TYPE_CHECKING:
    from appliance.metrics.upstream import PoolMetrics

log = logging.getLogger("sluis.upstream")

READ_BUFFER_LIMIT = 256 * 1024  # unread response body at which reading pauses
# TLS handshakes under way at once per origin; a request that finds no idle connection
# while these are taken waits for one to come free (issue 16: when an inway worker died, every
# request that found no idle connection opened one, and the handshakes, signed in the HSM at
# both ends, starved the surviving worker: the more requests waited, the more connections they
# opened; 7 -> 62 connections in 3 s, requests up to 10 s, shares full, 503 SERVICE_BUSY).
TLS_CONNECTING = 2
# Sent again only when none of it reached the peer; PUT and DELETE never (no idempotency rule
# of the service says that running them twice is harmless).
_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # RFC 9110 8.6: send Length 0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host, port
RawHeaders = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The next hop could not be reached, or failed before its answer was complete."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """Connecting, reading or writing took longer than its timeout."""


class UpstreamClosed(UpstreamError):
    """The peer closed or reset the connection before its answer was complete."""


def parse_origin(origin: str) -> Origin:
    """``http://host:port`` or ``https://host`` -> (scheme, host, port)."""
    scheme, sep, rest = origin.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    if rest.startswith("["):  # [IPv6]:port
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = rest.partition(":")
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"not an http(s) origin: {origin!r}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    return scheme, host, port


def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def _check(text: str) -> str:
    # The servers in front of us refuse CR and LF in header fields already; a header the
    # gateway adds itself must never be able to start another line either.
    if "\r" in text or "\n" in text:
        raise ValueError("a header field contains CR or LF")
    return text


class _Connection(asyncio.Protocol):
    """One connection to one origin, and the exchange it is in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin, read_timeout: float):
        self._loop = loop
        self.origin = origin
        self._read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.peer_certificate: bytes | None = None  # DER, on a TLS connection
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._fd = -1  # the socket's descriptor, for the check before reuse
        self.used = False  # has carried an exchange before (a reused pooled connection)
        self.peer_label = "-"  # the metrics' peer (appliance.metrics.upstream)
        self.state: str | None = None  # the metrics' state: in_use, idle (None: not counted)
        self.idle_since = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._silence = read_timeout  # the read timeout of the wait in progress
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: RawHeaders = []
        self.complete = False  # the response message has ended
        self.keep_alive = False
        self.request_sent = False  # the whole request (head and body) is in the socket
        self.error: BaseException | None = None
        self.received_any = False
        self.unsent = False  # the head's write failed at once: nothing reached the peer
        self.sender: asyncio.Task[None] | None = None
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._interim = False
        self._skip_body = False
        self._last_data = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses; they behave as one.
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.peer_certificate = ssl_object.getpeercert(binary_form=True)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                self._fd = sock.fileno()
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._last_data = self._loop.time()
        if self._skip_body and self.complete:
            return  # a HEAD answer's announced body never comes; the connection is not reused
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if (
            exc is None
            and self.status
            and not self.complete
            and self._delimited_by_close()
            and self.error is None
        ):
            # A body without Content-Length or chunked framing ends with the connection.
            self.complete = True
            self.keep_alive = False
            self._wake()
            return
        if not self.complete:
            reason = f"the connection was closed ({exc})" if exc else "the connection was closed"
            self.fail(UpstreamClosed(reason), abort=False)
        # A complete answer stays valid (a peer may answer early, say 413, and close): only
        # the rest of the request body stops.
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamClosed("the connection was closed"))

    def stale(self) -> bool:
        """Whether this idle connection has something to read: the peer closed it (EOF, a TLS
        close_notify) and the loop has not handled that yet. An idle HTTP/1.1 connection
        never has anything else to read."""
        if self._fd < 0:
            return False
        poller = select.poll()  # not select(): descriptors above 1023 are common here
        poller.register(self._fd, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                self.fail(UpstreamError("the peer switched protocols; that is not supported"))
                return
            self._interim = True  # 100 Continue, 103 Early Hints: wait for the final answer
            self.headers = []
            return
        self.status = status
        self.keep_alive = bool(self._parser.should_keep_alive())
        if self._skip_body:
            self.complete = True
            self.keep_alive = False
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._skip_body:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_BUFFER_LIMIT and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._wake()

    # -- the exchange -----------------------------------------------------------------------------

    def _delimited_by_close(self) -> bool:
        if self._skip_body or self.status in (204, 304):
            return False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException, *, abort: bool = True) -> None:
        """End the exchange with ``error``: whoever waits gets it; the connection is dropped."""
        if self.error is None:
            self.error = error
        for future in (self._head, self._waiter, self._drain):
            if future is not None and not future.done():
                future.set_exception(error)
        if abort and self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        sender = self.sender
        if sender is not None and not sender.done():
            sender.cancel()

    def start(self, head: bytes, *, method: str) -> asyncio.Future[None]:
        """Write the request head (and a body given as bytes); the future is the answer's head."""
        assert self.transport is not None
        self._reset()
        self.used = True
        self._skip_body = method == "HEAD"
        self._head = self._loop.create_future()
        self._last_data = self._loop.time()
        self.transport.write(head)
        # A write the socket refused at once (EPIPE, ECONNRESET: the peer had closed) closes
        # the transport before anything was sent.
        self.unsent = self.transport.is_closing()
        return self._head

    async def wait(self, future: asyncio.Future[None], timeout: float | None = None) -> None:
        """Await ``future``, failing with UpstreamTimeout when the peer is silent too long
        (``timeout``, at most the read timeout, or the read timeout)."""
        silence = self._silence = (
            self._read_timeout if timeout is None else min(timeout, self._read_timeout)
        )
        self._timer = self._loop.call_at(self._last_data + silence, self._expire)
        try:
            await future
        finally:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        sender = self.sender
        if sender is not None and not sender.done():
            # Still sending the request body: the peer's silence does not count yet (the
            # write timeout covers a peer that stops taking it).
            self._last_data = now
        silent = now - self._last_data
        if silent >= self._silence * 0.999:
            self.fail(UpstreamTimeout("timed out"))
        else:
            self._timer = self._loop.call_at(self._last_data + self._silence, self._expire)

    async def head(self, future: asyncio.Future[None], timeout: float | None = None) -> None:
        try:
            await self.wait(future, timeout)
        finally:
            self._head = None

    def body_sent(self) -> None:
        self.request_sent = True
        self._last_data = self._loop.time()  # the read timeout counts from the body's end

    def take_whole(self) -> bytes | None:
        """The whole body, when the message is complete and nothing is left to read."""
        if not self.complete or self.error is not None:
            return None
        chunks = self._chunks
        if not chunks:
            return b""
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered <= READ_BUFFER_LIMIT // 2:
                    self._reading_paused = False
                    if self.transport is not None and not self.closed:
                        self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self.wait(self._waiter)
            finally:
                self._waiter = None

    async def drain(self, timeout: float | None) -> None:
        """Wait until the socket takes more (the write timeout; None: no limit)."""
        if not self._write_paused:
            return
        if self.error is not None:
            raise self.error
        self._drain = self._loop.create_future()
        try:
            if timeout is None:
                await self._drain
            else:
                await asyncio.wait_for(self._drain, timeout)
        finally:
            self._drain = None


class UpstreamResponse:
    """The status and headers of an answer; its body to be read once, whole or streamed."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "resent", "status")

    def __init__(self, conn: _Connection, pool: UpstreamPool) -> None:
        self.status = conn.status
        self.headers: RawHeaders = conn.headers
        # The answer to a second sending after the first went out unanswered
        # (``resend_unanswered``): a refusal as a duplicate means the first was taken.
        self.resent = False
        self._conn = conn
        self._pool = pool
        self._done = False

    def whole(self) -> bytes | None:
        """The body when it has arrived completely already (the connection goes back to the
        pool); None when it must be streamed with :meth:`chunks`."""
        if self._done:
            raise RuntimeError("the body was read already")
        body = self._conn.take_whole()
        if body is not None:
            self._finish(clean=True)
        return body

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives. Raises UpstreamError when the peer fails mid-body; the
        connection is reused only after a clean, complete read."""
        if self._done:
            raise RuntimeError("the body was read already")
        clean = False
        try:
            while chunk := await self._conn.read():
                yield chunk
            clean = True
        finally:
            self._finish(clean=clean)

    def __del__(self) -> None:
        # An answer nobody read to the end (its stream was never started) frees its slot.
        if not self._done:
            with contextlib.suppress(Exception):  # the loop may be gone already
                self._finish(clean=False)

    def close(self) -> None:
        """Drop the answer unread (its connection is closed, never reused half-read)."""
        if not self._done:
            self._finish(clean=False)

    def _finish(self, *, clean: bool) -> None:
        self._done = True
        conn = self._conn
        reusable = clean and conn.complete and conn.keep_alive and conn.request_sent
        self._pool.release(conn, reusable=reusable)


class UpstreamPool:
    """Keep-alive connections of one worker to its next hops (make it in the worker's loop)."""

    def __init__(
        self,
        *,
        connections: int,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float | None = None,
        keepalive: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Mapping[str, tuple[str, int]] | None = None,
        peer_check: Callable[[bytes], str | None] | None = None,
        resend_unanswered: bool = False,
    ) -> None:
        """``peer_check`` (TLS): given the peer's DER certificate, why a pooled connection
        may no longer be used (revoked, expired since it was opened), or None.
        ``resend_unanswered``: a body-less safe request whose connection closed after it was
        sent, before any answer, is sent once more (the module's docstring says when that is
        right)."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._limit = connections
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._resolve = dict(resolve or {})
        self._peer_check = peer_check
        self._resend_unanswered = resend_unanswered
        self._loop = asyncio.get_running_loop()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        # TLS handshakes under way per origin (each costs a signature in the HSM at both ends).
        self._connecting: dict[Origin, int] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._metrics: PoolMetrics | None = None
        if registry.enabled():
            # Here, in the worker, not at the top: gunicorn's master imports prometheus-client
            # too early otherwise (appliance.metrics.registry).
            from appliance.metrics.upstream import PoolMetrics

            self._metrics = PoolMetrics()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once the answer's status and headers are in.

        ``headers`` are sent as given (latin-1), after ``Host``; framing is added: the
        caller's ``Content-Length`` is kept (the body must match it), otherwise a streamed
        body goes chunked and a bytes body gets its length.

        ``deadline`` (the loop's time): the caller must have the answer's head by then, so
        connecting ends by then, and the wait for the head (which counts from the body's end,
        as the read timeout) is at most what is left of it once connected.
        """
        if self._closed:
            raise UpstreamError("the client is closed")
        head, chunked = _request_head(origin, method, target, headers, body)
        retry = body is None and method in _SAFE
        resend = retry and self._resend_unanswered
        fresh = resent = False
        while True:
            conn = await self._acquire(origin, fresh=fresh, deadline=deadline)
            reused = conn.used
            left = None if deadline is None else max(deadline - self._loop.time(), 0.001)
            try:
                response = await self._exchange(conn, head, method, body, chunked, left)
                response.resent = resent
                return response
            except UpstreamClosed as exc:
                if retry and reused and conn.unsent:
                    # Once, on a new connection: the other idle ones to this peer are likely
                    # closed too (a peer's worker that stops closes all of its idle ones).
                    retry, fresh = False, True
                    continue
                if conn.unsent or conn.received_any:
                    raise
                if resend:
                    # Once, on a new connection, the same transaction id: the peer refuses it
                    # if it took the first (the caller sees ``resent``).
                    retry = resend = False
                    fresh = resent = True
                    continue
                # The request went out and no answer came: it may have been executed. FSC has
                # no outway code for this; the outway answers 502 ERROR_CODE_INWAY_UNREACHABLE
                # (the closest: no answer from the inway) with this message.
                raise UpstreamClosed(
                    f"{exc} after the request was sent, before any answer: the outcome is "
                    "unknown (the peer may have executed it; it is not sent again)"
                ) from None

    async def _exchange(
        self,
        conn: _Connection,
        head: bytes,
        method: str,
        body: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
        head_timeout: float | None = None,
    ) -> UpstreamResponse:
        try:
            if isinstance(body, bytes | bytearray):
                answered = conn.start(head + bytes(body), method=method)
                conn.request_sent = True
            else:
                answered = conn.start(head, method=method)
                if body is None:
                    conn.request_sent = True
                else:
                    conn.sender = self._loop.create_task(self._send_body(conn, body, chunked))
            await conn.head(answered, head_timeout)
        except BaseException:
            self.release(conn, reusable=False)
            raise
        return UpstreamResponse(conn, self)

    async def _send_body(
        self, conn: _Connection, body: AsyncIterator[bytes], chunked: bool
    ) -> None:
        transport = conn.transport
        assert transport is not None
        try:
            async for chunk in body:  # waiting for our own client: not timed
                if not chunk:
                    continue
                if conn.error is not None or conn.closed:
                    return
                if chunked:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    transport.write(chunk)
                try:
                    await conn.drain(self._write_timeout)
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"timed out sending the request body ({self._write_timeout:g} s)"
                    ) from None
            if conn.error is not None or conn.closed:
                return
            if chunked:
                transport.write(b"0\r\n\r\n")
            conn.body_sent()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            conn.fail(exc)  # the head's waiter (or the body's reader) gets it; conn aborted
        finally:
            close = getattr(body, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    # -- the pool ---------------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, *, fresh: bool = False, deadline: float | None = None
    ) -> _Connection:
        """An idle connection to ``origin`` (most recently used first), or a new one; only a
        new one when ``fresh``; within the connect timeout and ``deadline``."""
        loop = self._loop
        own = loop.time() + self._connect_timeout
        deadline = own if deadline is None else min(own, deadline)
        while True:
            idle = None if fresh else self._idle.get(origin)
            now = loop.time()
            while idle:
                conn = idle.pop()
                if conn.closed or now - conn.idle_since > self._keepalive or conn.stale():
                    self._discard(conn)
                    continue
                if self._refused(conn):
                    self._discard(conn)
                    continue
                if self._metrics is not None:
                    self._metrics.reused(conn.peer_label)
                    self._moved(conn, "in_use")
                return conn
            connecting = self._connecting.get(origin, 0)
            handshakes_free = self._ssl is None or connecting < TLS_CONNECTING
            if self._open < self._limit and handshakes_free:
                self._open += 1
                self._connecting[origin] = connecting + 1
                try:
                    conn = await self._connect(origin, deadline)
                except BaseException:
                    self._open -= 1
                    raise
                finally:
                    left = self._connecting[origin] - 1
                    if left:
                        self._connecting[origin] = left
                    else:
                        del self._connecting[origin]
                    self._wake_one()  # one that waits for a handshake slot may connect now
                if self._metrics is not None:
                    conn.peer_label = self._metrics.label(conn.peer_certificate)
                    self._metrics.opened(conn.peer_label)
                    self._moved(conn, "in_use")
                return conn
            if handshakes_free and self._drop_idle():
                continue  # an idle connection to another origin made room
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
            except TimeoutError:
                raise UpstreamTimeout(
                    f"timed out waiting for a free connection ({self._open} of {self._limit} "
                    f"open, {self._connecting.get(origin, 0)} being opened)"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _refused(self, conn: _Connection) -> bool:
        # A kept-alive connection outlives a revocation or the end of the peer's certificate:
        # check before every reuse (a new connection meets the CRLs in its handshake).
        if self._peer_check is None or conn.peer_certificate is None:
            return False
        reason = self._peer_check(conn.peer_certificate)
        if reason is None:
            return False
        log.warning(
            "pooled connection to %s:%d dropped: peer certificate not usable: %s",
            conn.origin[1],
            conn.origin[2],
            reason,
        )
        return True

    async def _connect(self, origin: Origin, deadline: float) -> _Connection:
        scheme, host, port = origin
        address, to_port = self._resolve.get(f"{host}:{port}", (host, port))
        context = None
        if scheme == "https":
            if self._ssl is None:
                raise UpstreamError(f"no TLS context for {host}:{port}")
            context = self._ssl
        timeout = max(deadline - self._loop.time(), 0.001)
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _Connection(self._loop, origin, self._read_timeout),
                    address,
                    to_port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    ssl_handshake_timeout=timeout if context is not None else None,
                ),
                timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            raise UpstreamError(f"cannot connect to {host}:{port}: {reason}") from None
        return conn

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        """Back to the pool (a clean, complete exchange on a keep-alive connection) or closed."""
        sender = conn.sender
        if sender is not None and not sender.done():
            reusable = False
        if reusable and not conn.closed and not self._closed:
            conn.sender = None
            conn.idle_since = self._loop.time()
            self._idle.setdefault(conn.origin, []).append(conn)
            if self._metrics is not None:
                self._moved(conn, "idle")
        else:
            self._discard(conn)
        self._wake_one()

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        self._open -= 1
        if self._metrics is not None:
            self._moved(conn, None)

    def _moved(self, conn: _Connection, state: str | None) -> None:
        assert self._metrics is not None
        self._metrics.moved(conn.peer_label, conn.state, state)
        conn.state = state

    def _drop_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._discard(idle.pop(0))  # the oldest
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                self._discard(idle.pop())
        self._idle.clear()


def _request_head(
    origin: Origin,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None,
) -> tuple[bytes, bool]:
    if not target.startswith("/") or " " in target or "\r" in target or "\n" in target:
        raise ValueError(f"not a request target: {target!r}")
    lines = [f"{_check(method)} {target} HTTP/1.1\r\nHost: {_host_header(origin)}\r\n"]
    has_length = False
    for name, value in headers:
        if name.lower() == "content-length":
            has_length = True
        lines.append(f"{_check(name)}: {_check(value)}\r\n")
    chunked = False
    if body is None:
        if method in _EMPTY_BODY_METHODS and not has_length:
            lines.append("Content-Length: 0\r\n")
    elif isinstance(body, bytes | bytearray):
        if not has_length:
            lines.append(f"Content-Length: {len(body)}\r\n")
    elif not has_length:
        chunked = True
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1"), chunked


def describe(exc: BaseException) -> str:
    """A short reason for the error message of a failed exchange."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__


__all__ = [
    "Origin",
    "UpstreamClosed",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
    "describe",
    "parse_origin",
]
