"""The gateways' upstream client against a raw HTTP/1.1 server on a real socket.

The server is a few lines of asyncio that answer with exactly the bytes a test gives, so the
client meets keep-alive, chunked and close-delimited bodies, interim responses, peers that
close pooled connections, and peers that stop reading or answering. The gateways' own tests
(tests/inway, tests/outway, tests/gateway) cover the same client behind real gunicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from appliance.upstream import UpstreamClosed, UpstreamError, UpstreamPool, UpstreamTimeout
from appliance.upstream.client import READ_BUFFER_LIMIT, TLS_CONNECTING, parse_origin

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head, and its body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    elif b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    return head, body


class Server:
    """``handler`` answers each connection; ``answering(bytes)`` answers every request alike."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def origin(self) -> tuple[str, str, int]:
        assert self._server is not None
        return parse_origin(f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}")

    @classmethod
    def answering(cls, answer: bytes) -> Server:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.keep_answering(reader, writer, answer)

        server = cls(handler)
        return server

    async def keep_answering(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
    ) -> None:
        while True:
            head, body = await read_request(reader)
            self.heads.append(head)
            self.bodies.append(body)
            writer.write(answer)
            await writer.drain()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Answer: yes\r\n\r\nhello"


def pool(**kwargs: Any) -> UpstreamPool:
    settings: dict[str, Any] = {"connections": 4, "connect_timeout": 2.0, "read_timeout": 2.0}
    settings.update(kwargs)
    return UpstreamPool(**settings)


def test_keep_alive_reuses_one_connection_and_hands_small_answers_whole() -> None:
    async def scenario() -> None:
        async with Server.answering(OK) as server:
            client = pool()
            for _ in range(5):
                answer = await client.request(
                    server.origin, "GET", "/a?b=c", [("Fsc-Transaction-Id", "x")]
                )
                assert answer.status == 200
                assert (b"X-Answer", b"yes") in answer.headers
                assert answer.whole() == b"hello"
            assert server.connections == 1
            assert server.heads[0].startswith(b"GET /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:")
            assert b"Fsc-Transaction-Id: x\r\n" in server.heads[0]
            await client.close()

    asyncio.run(scenario())


def _pool_figures() -> dict[str, float]:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"peer": "-", **labels}) or 0.0

    return {
        "in_use": value("sluis_upstream_connections", state="in_use"),
        "idle": value("sluis_upstream_connections", state="idle"),
        "opened": value("sluis_upstream_connections_opened_total"),
        "reused": value("sluis_upstream_connections_reused_total"),
    }


def test_the_pool_reports_connections_in_use_idle_opened_and_reused() -> None:
    """``sluis_upstream_*`` (appliance.metrics.upstream); ``peer`` is ``-`` without TLS."""

    async def scenario() -> None:
        async with Server.answering(OK) as server:
            client = pool()
            before = _pool_figures()

            def change() -> dict[str, float]:
                return {k: v - before[k] for k, v in _pool_figures().items()}

            first = await asyncio.gather(
                *(client.request(server.origin, "GET", "/", []) for _ in range(3))
            )
            assert change() == {"in_use": 3, "idle": 0, "opened": 3, "reused": 0}
            for answer in first:
                assert answer.whole() == b"hello"
            assert change() == {"in_use": 0, "idle": 3, "opened": 3, "reused": 0}
            for _ in range(5):
                assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
            assert change() == {"in_use": 0, "idle": 3, "opened": 3, "reused": 5}
            unread = await client.request(server.origin, "GET", "/", [])
            assert change() == {"in_use": 1, "idle": 2, "opened": 3, "reused": 6}
            unread.close()  # dropped unread: closed, never reused
            assert change() == {"in_use": 0, "idle": 2, "opened": 3, "reused": 6}
            await client.close()
            assert change() == {"in_use": 0, "idle": 0, "opened": 3, "reused": 6}
            assert server.connections == 3

    asyncio.run(scenario())


def test_a_streamed_body_goes_chunked_and_a_bytes_body_with_its_length() -> None:
    async def scenario() -> None:
        server: Server

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.keep_answering(reader, writer, OK)

        async def upload() -> AsyncIterator[bytes]:
            for piece in (b"one ", b"", b"two ", b"three"):
                yield piece

        async with Server(handler) as server:
            client = pool()
            streamed = await client.request(server.origin, "POST", "/up", [], upload())
            assert streamed.whole() == b"hello"
            whole = await client.request(server.origin, "PUT", "/up", [], b"abc")
            assert whole.whole() == b"hello"
            empty = await client.request(server.origin, "POST", "/up", [])
            assert empty.whole() == b"hello"
            await client.close()
        assert b"transfer-encoding: chunked" in server.heads[0].lower()
        assert server.bodies[0] == b"one two three"
        assert b"Content-Length: 3\r\n" in server.heads[1]
        assert server.bodies[1] == b"abc"
        assert b"Content-Length: 0\r\n" in server.heads[2]  # RFC 9110 8.6 for POST
        assert server.connections == 1

    asyncio.run(scenario())


def test_a_large_answer_streams_with_flow_control() -> None:
    size = 8 * READ_BUFFER_LIMIT

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        for _ in range(size // len(block)):
            writer.write(b"%x\r\n%b\r\n" % (len(block), block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection until the client closes it

    async def scenario() -> None:
        async with Server(handler) as server:
            client = pool()
            answer = await client.request(server.origin, "GET", "/big", [])
            assert answer.whole() is None  # not complete with its head: streamed
            total = 0
            async for chunk in answer.chunks():
                total += len(chunk)
                await asyncio.sleep(0)  # a slow reader
            assert total == size
            assert client.open_connections == 1  # back in the pool, clean
            await client.close()

    asyncio.run(scenario())


def test_a_body_delimited_by_close_and_interim_answers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario() -> None:
        async with Server(handler) as server:
            client = pool()
            answer = await client.request(server.origin, "GET", "/", [])
            assert answer.status == 200
            assert (b"Link", b"</a>") not in answer.headers
            body = b"".join([chunk async for chunk in answer.chunks()])
            assert body == b"until the end"
            assert client.open_connections == 0  # not kept: it ended with the connection
            await client.close()

    asyncio.run(scenario())


def test_head_answers_end_with_their_head() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with Server(handler) as server:
            client = pool()
            answer = await asyncio.wait_for(client.request(server.origin, "HEAD", "/", []), 5)
            assert answer.status == 200
            assert answer.whole() == b""
            await client.close()

    asyncio.run(scenario())


def test_a_request_the_peer_took_and_dropped_is_not_sent_again() -> None:
    """A reused connection closed after the request went out: the peer may have executed it
    (an inway that logged and forwarded it, then died). Not sent again, whatever the method;
    the error says the outcome is unknown."""

    async def scenario() -> None:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(OK)  # keep-alive announced ...
            await writer.drain()
            await read_request(reader)  # ... but the next request is taken and dropped

        for method, body in (("GET", None), ("PUT", None), ("DELETE", None), ("POST", b"once")):
            async with Server(once) as server:
                client = pool()
                assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
                with pytest.raises(UpstreamClosed, match="outcome is unknown"):
                    await client.request(server.origin, method, "/", [], body)
                assert server.connections == 1, method
                await client.close()

    asyncio.run(scenario())


def test_a_pool_that_resends_sends_an_unanswered_safe_request_once_more() -> None:
    """``resend_unanswered`` (the outway's pool): the same GET, head for head, goes once more
    on a new connection and its answer says so; a PUT, a body or a second cut are not sent
    again."""

    async def scenario() -> None:
        cuts = 0

        async def cut_the_second(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal cuts
            server.heads.append((await read_request(reader))[0])
            writer.write(OK)  # keep-alive announced ...
            await writer.drain()
            server.heads.append((await read_request(reader))[0])  # ... the next is dropped
            cuts += 1

        async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                server.heads.append((await read_request(reader))[0])
                writer.write(OK)
                await writer.drain()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await (cut_the_second if server.connections == 1 else answer_all)(reader, writer)

        async with Server(handler) as server:
            client = pool(resend_unanswered=True)
            first = await client.request(server.origin, "GET", "/", [])
            assert first.whole() == b"hello"
            assert not first.resent
            headers = [("Fsc-Transaction-Id", "0190a5d4-0000-7000-8000-000000000001")]
            again = await client.request(server.origin, "GET", "/x", headers)
            assert again.whole() == b"hello"
            assert again.resent
            assert cuts == 1
            assert server.connections == 2
            # The dropped sending and the second one: the same head, so the same id.
            assert server.heads[1] == server.heads[2]
            assert b"0190a5d4-0000-7000-8000-000000000001" in server.heads[2]
            await client.close()

        for method, body in (("PUT", None), ("GET", b"x"), ("POST", b"once")):
            async with Server(ClosingAfterOne.handler) as server:
                client = pool(resend_unanswered=True)
                assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
                with pytest.raises(UpstreamClosed, match="outcome is unknown"):
                    await client.request(server.origin, method, "/", [], body)
                assert server.connections == 1, method
                await client.close()

        # Cut again on the new connection: an error, not a third sending.
        async def always_cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if server.connections == 1:
                await read_request(reader)
                writer.write(OK)
                await writer.drain()
            await read_request(reader)

        async with Server(always_cut) as server:
            client = pool(resend_unanswered=True)
            assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
            with pytest.raises(UpstreamClosed, match="outcome is unknown"):
                await client.request(server.origin, "GET", "/", [])
            assert server.connections == 2
            await client.close()

    asyncio.run(scenario())


class ClosingAfterOne:
    """Answers one request with keep-alive, then takes the next and drops it."""

    @staticmethod
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)


class ClosingServer:
    """Answers one request per connection with keep-alive, then, once ``close_idle()`` is
    called, closes every idle connection at once (a peer's worker that stops). In a thread of
    its own, so that the client's loop can be kept from seeing the close before it reuses one.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closing = threading.Event()
        self.connections = 0
        self.requests = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def origin(self) -> tuple[str, str, int]:
        return parse_origin(f"http://127.0.0.1:{self._listener.getsockname()[1]}")

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                self.connections += 1
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            self.requests += 1
            time.sleep(0.2)  # overlapping requests take a connection each
            conn.sendall(OK)
            self._closing.wait(10)

    def close_idle(self) -> None:
        """Close every connection and wait until they are closed (the FINs are sent)."""
        self._closing.set()
        for thread in self._threads:
            thread.join(5)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()


def test_a_stale_pooled_connection_is_not_used() -> None:
    """The race of keep-alive: the peer closed an idle connection and the client's loop has not
    handled that yet. The request takes a new connection; it is sent once, on it."""

    async def scenario() -> None:
        server = ClosingServer()
        try:
            client = pool()
            assert (await client.request(server.origin, "PUT", "/", [])).whole() == b"hello"
            server.close_idle()  # the loop does not run until the next request: not seen yet
            assert (await client.request(server.origin, "PUT", "/", [])).whole() == b"hello"
            assert (server.connections, server.requests) == (2, 2)
            await client.close()
        finally:
            server.close()

    asyncio.run(scenario())


def test_the_retry_takes_a_new_connection_not_another_idle_one() -> None:
    """A peer's worker that stops closes all its idle connections at once: the GET must not
    take another of them from the pool."""

    async def scenario() -> None:
        server = ClosingServer()
        try:
            client = pool()
            first = await asyncio.gather(
                client.request(server.origin, "GET", "/", []),
                client.request(server.origin, "GET", "/", []),
            )
            assert [r.whole() for r in first] == [b"hello", b"hello"]
            assert server.connections == 2
            server.close_idle()
            # Both idle connections are dead: the GET goes on a third connection, once.
            assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
            assert (server.connections, server.requests) == (3, 3)
            await client.close()
        finally:
            server.close()

    asyncio.run(scenario())


def test_a_post_is_never_sent_twice() -> None:
    async def scenario() -> None:
        async def silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)  # takes it, answers nothing

        async with Server(silent_close) as server:
            client = pool()
            with pytest.raises(UpstreamClosed):
                await client.request(server.origin, "POST", "/", [], b"once")
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_timeouts_connect_read_and_write() -> None:
    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def upload() -> AsyncIterator[bytes]:
        block = b"y" * (1 << 20)
        for _ in range(256):
            yield block

    async def scenario() -> None:
        async with Server(never_answers) as server:
            client = pool(read_timeout=0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout, match="timed out"):
                await client.request(server.origin, "GET", "/", [])
            assert 0.25 <= asyncio.get_running_loop().time() - started < 2
            await client.close()
        async with Server(never_reads) as server:
            client = pool(write_timeout=0.3, read_timeout=60)
            with pytest.raises(UpstreamTimeout, match="sending the request body"):
                await asyncio.wait_for(client.request(server.origin, "POST", "/", [], upload()), 10)
            assert client.open_connections == 0  # aborted, not pooled
            await client.close()
        client = pool(connections=1, connect_timeout=0.3)
        # Port 9 on the loopback: nothing listens, the connection is refused.
        with pytest.raises(UpstreamError, match="cannot connect"):
            await client.request(parse_origin("http://127.0.0.1:9"), "GET", "/", [])
        await client.close()

    asyncio.run(scenario())


def test_a_deadline_ends_the_wait_for_the_head_and_for_a_connection_sooner() -> None:
    """The inway's deadline from the outway's Sluis-Timeout: shorter than its own timeouts."""

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with Server(never_answers) as server:
            client = pool(connections=1, read_timeout=60, connect_timeout=60)
            started = loop.time()
            with pytest.raises(UpstreamTimeout, match="timed out"):
                await client.request(server.origin, "GET", "/", [], deadline=started + 0.3)
            assert 0.25 <= loop.time() - started < 2
            await client.close()
        async with Server.answering(OK) as server:
            client = pool(connections=1, connect_timeout=60)
            held = await client.request(server.origin, "GET", "/", [])
            started = loop.time()
            with pytest.raises(UpstreamTimeout, match="free connection"):
                await client.request(server.origin, "GET", "/", [], deadline=started + 0.3)
            assert loop.time() - started < 2
            assert held.whole() == b"hello"
            await client.close()

    asyncio.run(scenario())


def test_the_pool_limit_makes_requests_wait_within_the_connect_timeout() -> None:
    async def scenario() -> None:
        async with Server.answering(OK) as server:
            client = pool(connections=1, connect_timeout=0.3)
            held = await client.request(server.origin, "GET", "/", [])
            with pytest.raises(UpstreamTimeout, match="free connection"):
                await client.request(server.origin, "GET", "/", [])
            assert held.whole() == b"hello"  # released: the next one gets it
            assert (await client.request(server.origin, "GET", "/", [])).whole() == b"hello"
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_tls_handshakes_per_origin_are_bounded_and_requests_wait_for_a_free_connection() -> None:
    """Issue 16: a burst of requests that find no idle connection does not open a connection
    (a TLS handshake, signed in the HSM) each: at most TLS_CONNECTING handshakes run at once,
    the other requests take the connections that come free."""

    async def scenario() -> None:
        async with Server.answering(OK) as server:
            client = pool(connections=64, ssl_context=ssl.create_default_context())
            connect = client._connect
            running, most = 0, 0

            async def slow_handshake(origin: Any, deadline: float) -> Any:
                nonlocal running, most
                running += 1
                most = max(most, running)
                try:
                    await asyncio.sleep(0.1)  # the handshake; the origin is plain HTTP
                    return await connect(origin, deadline)
                finally:
                    running -= 1

            client._connect = slow_handshake  # type: ignore[method-assign]

            async def one() -> bytes | None:
                return (await client.request(server.origin, "GET", "/", [])).whole()

            answers = await asyncio.gather(*(one() for _ in range(30)))
            assert answers == [b"hello"] * 30
            assert most == TLS_CONNECTING
            assert server.connections <= 2 * TLS_CONNECTING  # not one per request
            await client.close()

    asyncio.run(scenario())


def test_a_failing_request_body_is_raised_as_it_is_and_the_connection_aborted() -> None:
    class Gone(Exception):
        pass

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def half() -> AsyncIterator[bytes]:
        yield b"part"
        raise Gone("the client left")

    async def scenario() -> None:
        async with Server(handler) as server:
            client = pool()
            with pytest.raises(Gone):
                await client.request(server.origin, "POST", "/", [], half())
            assert client.open_connections == 0
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Evil", "a\r\nInjected: yes"), ("X-Evil\r\nInjected", "yes"), ("X-Lf", "a\nb")],
)
def test_header_fields_cannot_start_a_new_line(name: str, value: str) -> None:
    async def scenario() -> None:
        client = pool()
        with pytest.raises(ValueError, match="CR or LF"):
            await client.request(parse_origin("http://127.0.0.1:9"), "GET", "/", [(name, value)])
        await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("origin", "parsed"),
    [
        ("http://backend:8080", ("http", "backend", 8080)),
        ("https://inway.example.nl", ("https", "inway.example.nl", 443)),
        ("HTTP://[::1]:81", ("http", "::1", 81)),
    ],
)
def test_origins(origin: str, parsed: tuple[str, str, int]) -> None:
    assert parse_origin(origin) == parsed


@pytest.mark.parametrize("origin", ["ftp://x", "http://", "http://x:0", "http://x/path", "x:80"])
def test_bad_origins_are_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        parse_origin(origin)
