"""Bodies stream through the inway (never held whole); backends that fail never hang it."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import falcon.util.sync
import pytest
from inwaytest import (
    SERVICE,
    EchoBackend,
    RawBackend,
    asgi_call,
    closed_port,
    error_of,
    fsc_headers,
    inway,
)

from appliance.inway.proxy import BackendStalled

MIB = 1024 * 1024
TOTAL_MIB = 50
BLOCK = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def echo() -> Iterator[EchoBackend]:
    backend = EchoBackend()
    yield backend
    backend.stop()


def _fsc(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in fsc_headers().items()] + list(extra)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_50_mib_request_body_streams_to_the_backend(echo: EchoBackend, framing: str) -> None:
    """The last MiB is only handed to the inway once the backend holds 40 of the 50 MiB:
    an inway that collected the body before forwarding would never get there."""
    expected = hashlib.sha256()
    waited: list[float] = []

    async def body() -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        for index in range(TOTAL_MIB):
            if index == TOTAL_MIB - 1:
                start = loop.time()
                while echo.state.received_bytes < (TOTAL_MIB - 10) * MIB:
                    if loop.time() - start > 20:
                        raise AssertionError(
                            f"backend has only {echo.state.received_bytes} bytes: buffered?"
                        )
                    await asyncio.sleep(0.005)
                waited.append(loop.time() - start)
            expected.update(BLOCK)
            yield {"type": "http.request", "body": BLOCK, "more_body": index < TOTAL_MIB - 1}

    framing_header = (
        (b"transfer-encoding", b"chunked")
        if framing == "chunked"
        else (b"content-length", str(TOTAL_MIB * MIB).encode())
    )
    answer: list[bytes] = []
    tracemalloc.start()
    try:
        with inway({SERVICE: echo.url}) as gw:
            status, _ = falcon.util.sync.async_to_sync(
                asgi_call,
                gw.app,
                method="POST",
                raw_path=b"/upload",
                headers=_fsc(framing_header),
                body=body(),
                on_body=answer.append,
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200, b"".join(answer)
    (seen,) = echo.state.seen()
    assert seen.body_size == TOTAL_MIB * MIB
    assert seen.body_sha256 == expected.hexdigest()
    assert seen.chunks > TOTAL_MIB  # arrived piece by piece
    headers = {k.lower(): v for k, v in seen.headers}
    if framing == "chunked":
        assert headers["transfer-encoding"] == "chunked"
    else:
        assert headers["content-length"] == str(TOTAL_MIB * MIB)
    # Inway, backend and test client together never held more than a few MiB.
    assert peak < 20 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_50_mib_response_streams_to_the_outway(echo: EchoBackend) -> None:
    """The backend sends its last MiB only once the outway has 40 MiB of the response."""
    received = 0
    digest = hashlib.sha256()

    def on_body(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        digest.update(chunk)
        if received >= (TOTAL_MIB - 10) * MIB:
            echo.release_last.set()

    async def no_body() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "http.request", "body": b"", "more_body": False}

    tracemalloc.start()
    try:
        with inway({SERVICE: echo.url}) as gw:
            started = time.monotonic()
            status, headers = falcon.util.sync.async_to_sync(
                asgi_call,
                gw.app,
                method="GET",
                raw_path=f"/stream/{TOTAL_MIB}".encode(),
                headers=_fsc(),
                body=no_body(),
                on_body=on_body,
            )
            elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    assert received == TOTAL_MIB * MIB
    assert digest.hexdigest() == hashlib.sha256(BLOCK * TOTAL_MIB).hexdigest()
    assert echo.release_waits == [True], "a buffering inway never lets the backend finish"
    assert elapsed < 10
    assert (b"content-type", b"application/octet-stream") in headers
    assert not any(name == b"content-length" for name, _ in headers)
    assert peak < 20 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_backend_that_is_down_gives_502_at_once() -> None:
    with inway({SERVICE: f"http://127.0.0.1:{closed_port()}"}) as gw:
        started = time.monotonic()
        result = gw.request("GET", "/x")
        elapsed = time.monotonic() - started
    status, code, message = error_of(result)
    assert (status, code) == (502, "ERROR_CODE_SERVICE_UNREACHABLE")
    assert SERVICE in message
    assert elapsed < 2


def test_a_backend_that_does_not_answer_gives_502_after_the_read_timeout() -> None:
    async def never(reader: Any, writer: Any, head: bytes) -> None:
        await asyncio.sleep(30)

    backend = RawBackend(never)
    try:
        with inway({SERVICE: backend.url}, read_timeout=0.5) as gw:
            started = time.monotonic()
            result = gw.request("GET", "/slow")
            elapsed = time.monotonic() - started
    finally:
        backend.stop()
    status, code, message = error_of(result)
    assert (status, code) == (502, "ERROR_CODE_SERVICE_UNREACHABLE")
    assert "timed out" in message
    assert 0.5 <= elapsed < 3
    assert len(backend.heads) == 1  # it did get the request


def test_a_backend_that_stalls_mid_body_gets_the_outway_connection_aborted() -> None:
    async def stall(reader: Any, writer: Any, head: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(30)

    async def no_body() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "http.request", "body": b"", "more_body": False}

    backend = RawBackend(stall)
    events: list[bytes] = []
    try:
        with inway({SERVICE: backend.url}, read_timeout=0.5) as gw:
            started = time.monotonic()
            with pytest.raises(BackendStalled, match="timed out"):
                falcon.util.sync.async_to_sync(
                    asgi_call,
                    gw.app,
                    method="GET",
                    raw_path=b"/stall",
                    headers=_fsc(),
                    body=no_body(),
                    on_body=events.append,
                )
            elapsed = time.monotonic() - started
    finally:
        backend.stop()
    # The first 100 bytes went out; the response never ended (the server aborts it).
    assert b"".join(events) == b"x" * 100
    assert elapsed < 3


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_outway_that_disconnects_mid_body_never_completes_the_backend_request(
    framing: str,
) -> None:
    arrived: list[bytes] = []
    done = threading.Event()

    async def read_all(reader: asyncio.StreamReader, writer: Any, head: bytes) -> None:
        arrived.append(head)
        while chunk := await reader.read(65536):
            arrived.append(chunk)
        done.set()

    async def body() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "http.request", "body": b"a" * 1000, "more_body": True}
        yield {"type": "http.request", "body": b"b" * 1000, "more_body": True}
        yield {"type": "http.disconnect"}

    framing_header = (
        (b"transfer-encoding", b"chunked")
        if framing == "chunked"
        else (b"content-length", b"10000")
    )
    backend = RawBackend(read_all)
    try:
        with inway({SERVICE: backend.url}, read_timeout=2) as gw:
            status, _ = falcon.util.sync.async_to_sync(
                asgi_call,
                gw.app,
                method="POST",
                raw_path=b"/upload",
                headers=_fsc(framing_header),
                body=body(),
                on_body=lambda chunk: None,
            )
        done.wait(5)
    finally:
        backend.stop()
    data = b"".join(arrived)
    assert status == 400  # to nobody: the Outway is gone
    assert b"a" * 1000 in data  # the body was on its way ...
    assert not data.endswith(b"0\r\n\r\n")  # ... and never ended as if complete
    assert data.count(b"a") + data.count(b"b") < 10000 + 200


def test_a_backend_that_stops_reading_the_body_gives_502_after_the_write_timeout() -> None:
    """The backend reads the head, then nothing: without a write timeout the upload would
    wait for the socket forever (aiohttp's read timeout starts only after the body)."""
    closed = threading.Event()
    release = threading.Event()
    taken: list[int] = []

    async def stop_reading(reader: asyncio.StreamReader, writer: Any, head: bytes) -> None:
        # Reads nothing until the inway has answered (or for 10 s, when it hangs).
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        size = 0
        try:
            while chunk := await reader.read(1 << 20):
                size += len(chunk)
        except ConnectionError:
            pass
        taken.append(size)
        closed.set()

    async def body() -> AsyncIterator[dict[str, Any]]:
        for _ in range(TOTAL_MIB):
            yield {"type": "http.request", "body": BLOCK, "more_body": True}
        yield {"type": "http.request", "body": b"", "more_body": False}

    backend = RawBackend(stop_reading)
    answer: list[bytes] = []
    try:
        with inway({SERVICE: backend.url}, read_timeout=60, write_timeout=0.5) as gw:
            started = time.monotonic()
            status, _ = falcon.util.sync.async_to_sync(
                asgi_call,
                gw.app,
                method="POST",
                raw_path=b"/upload",
                headers=_fsc((b"transfer-encoding", b"chunked")),
                body=body(),
                on_body=answer.append,
            )
            elapsed = time.monotonic() - started
        release.set()
        assert closed.wait(10), "the inway never closed the backend connection"
    finally:
        release.set()
        backend.stop()
    assert status == 502, b"".join(answer)
    assert b"ERROR_CODE_SERVICE_UNREACHABLE" in b"".join(answer)
    assert b"timed out sending the request body" in b"".join(answer)
    assert 0.5 <= elapsed < 3
    assert taken
    assert taken[0] < TOTAL_MIB * MIB


def test_a_slow_outway_is_not_the_backends_write_timeout(echo: EchoBackend) -> None:
    """Waiting for the Outway's next piece of the body is not counted."""

    async def body() -> AsyncIterator[dict[str, Any]]:
        for _ in range(3):
            await asyncio.sleep(0.3)
            yield {"type": "http.request", "body": BLOCK, "more_body": True}
        yield {"type": "http.request", "body": b"", "more_body": False}

    answer: list[bytes] = []
    with inway({SERVICE: echo.url}, write_timeout=0.2) as gw:
        status, _ = falcon.util.sync.async_to_sync(
            asgi_call,
            gw.app,
            method="POST",
            raw_path=b"/upload",
            headers=_fsc((b"transfer-encoding", b"chunked")),
            body=body(),
            on_body=answer.append,
        )
    assert status == 200, b"".join(answer)
    (seen,) = echo.state.seen()
    assert seen.body_size == 3 * MIB
