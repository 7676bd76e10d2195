"""Request paths: appended to the backend's base path, never able to climb out of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import falcon.util.sync
import pytest
from inwaytest import SERVICE, EchoBackend, asgi_call, fsc_headers, inway

from appliance.inway.errors import InwayError
from appliance.inway.logging import MemoryLogWriter
from appliance.inway.paths import backend_path, checked_path

ESCAPES = [
    "/..",
    "/.",
    "/a/../b",
    "/a/./b",
    "/a/..",
    "/%2e%2e/admin",
    "/%2E%2E/admin",
    "/a/.%2e/b",
    "/a/%2e./b",
    "/a/%2e/b",
    "/a/%2fb",
    "/a%2Fb",
    "/..%2f..%2fadmin",
    "/a/%5c..%5cb",
    "/a/..%5C",
    "/a/..;/b",
    "/a/%2e%2e;x=1/b",
    "/a/%252e%252e/b",
    "/a/%252f",
    "/a/%255c",
    "/a/%00",
    "/a/%0d%0aX-Injected:1",
    "/a/%7f",
    "/a/%zz",
    "/a/%2",
    "/a/%",
    "/a\\b",
    "/a/..\\b",
    "/a b",
    "/a/\x00",
    "/a/é",
    "a/b",
    "*",
    "//..",
]
SAFE = [
    ("/", "/"),
    ("/a/b/", "/a/b/"),
    ("/a%20b/c%3Bd", "/a%20b/c%3Bd"),
    ("/...", "/..."),
    ("/a/.b/c..", "/a/.b/c.."),
    ("/a/%2e%2e%2e", "/a/%2e%2e%2e"),
    ("/a;v=1/b", "/a;v=1/b"),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("/a/%25/b", "/a/%25/b"),
    ("/a//b", "/a//b"),
    ("/~user/@x:y!$&'()*+,=", "/~user/@x:y!$&'()*+,="),
]


@pytest.mark.parametrize("path", ESCAPES)
def test_escapes_are_refused(path: str) -> None:
    with pytest.raises(InwayError) as caught:
        checked_path(path.encode("utf-8"))
    assert caught.value.fsc_code == "ERROR_CODE_INVALID_PATH"
    assert caught.value.status_code == 400


@pytest.mark.parametrize(("path", "forwarded"), SAFE)
def test_safe_paths_pass_unchanged(path: str, forwarded: str) -> None:
    assert checked_path(path.encode()) == forwarded
    assert backend_path("/base", path.encode()) == "/base" + forwarded
    assert backend_path("", path.encode()) == forwarded


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoBackend]:
    backend = EchoBackend()
    yield backend
    backend.stop()


async def _no_body() -> AsyncIterator[dict[str, Any]]:
    yield {"type": "http.request", "body": b"", "more_body": False}


def _through_the_app(path: str, echo: EchoBackend) -> tuple[int, bytes, list[Any]]:
    """The raw path as an ASGI server hands it over (no client library normalising it)."""
    log = MemoryLogWriter()
    chunks: list[bytes] = []
    with inway({SERVICE: echo.url + "/base"}, log=log) as gw:
        headers = [(k.lower().encode(), v.encode()) for k, v in fsc_headers().items()]
        status, _ = falcon.util.sync.async_to_sync(
            asgi_call,
            gw.app,
            method="GET",
            raw_path=path.encode("utf-8"),
            headers=headers,
            body=_no_body(),
            on_body=chunks.append,
        )
    return status, b"".join(chunks), log.records


@pytest.mark.parametrize("path", ESCAPES)
def test_the_app_refuses_escapes_before_logging_or_forwarding(path: str, echo: EchoBackend) -> None:
    before = len(echo.state.seen())
    status, body, records = _through_the_app(path, echo)
    assert status == 400
    assert b"ERROR_CODE_INVALID_PATH" in body
    assert records == []
    assert len(echo.state.seen()) == before


@pytest.mark.parametrize(("path", "forwarded"), SAFE)
def test_the_app_forwards_safe_paths_below_the_base(
    path: str, forwarded: str, echo: EchoBackend
) -> None:
    status, _, records = _through_the_app(path, echo)
    assert status == 200
    assert len(records) == 1
    assert echo.state.seen()[-1].raw_path == "/base" + forwarded
