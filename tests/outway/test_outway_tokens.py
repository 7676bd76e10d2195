"""The token cache alone, against fetchers that fail, hang or answer: what a Manager outage
costs (tests/gateway/test_chain_faults.py has the same with real processes)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from outwaytest import GROUP_ID, ROUTES, claims_for, unsigned_token

from appliance.outway.errors import OutwayError
from appliance.outway.grants import Route
from appliance.outway.tokens import ClientLeft, TokenCache

ROUTE = ROUTES[0]


class Manager:
    """A fetcher whose Manager answers, refuses, or hangs, as the test says; counts attempts."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.mode = "up"
        self.attempts = 0
        self.release = asyncio.Event()

    async def fetch(self, route: Route) -> str:
        self.attempts += 1
        if self.mode == "down":
            raise OSError("connection refused")
        if self.mode == "hung":
            await self.release.wait()
        return unsigned_token(claims_for(route, lifetime=60, now=self.clock[0]))


def _cache(
    manager: Manager, clock: list[float], monotonic: list[float], refresh: float = 30
) -> TokenCache:
    return TokenCache(
        manager,
        group_id=GROUP_ID,
        refresh=refresh,
        timeout=0.3,
        clock=lambda: clock[0],
        monotonic=lambda: monotonic[0],
    )


def _hung() -> tuple[Manager, TokenCache]:
    """A cache whose Manager hangs (until ``manager.release`` is set)."""
    clock = [1_800_000_000.0]
    manager = Manager(clock)
    manager.mode = "hung"
    return manager, _cache(manager, clock, [0.0])


def test_the_valid_token_serves_through_an_outage_and_one_refresh_runs_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock, monotonic = [1_800_000_000.0], [0.0]
        manager = Manager(clock)
        tokens = _cache(manager, clock, monotonic)
        first = await tokens.token(ROUTE)
        manager.mode = "down"
        clock[0] += 40  # 20 s left: in the refresh window
        for _ in range(100):
            assert await tokens.token(ROUTE) is first
            await asyncio.sleep(0)
        assert manager.attempts == 2  # one refresh, then back-off (1 s)
        monotonic[0] += 1.5
        assert await tokens.token(ROUTE) is first
        await asyncio.sleep(0)
        assert manager.attempts == 3  # the next after the back-off, which doubles
        clock[0] += 21  # expired
        with pytest.raises(OutwayError) as refused:
            await tokens.token(ROUTE)  # within the back-off: at once, no attempt
        assert refused.value.fsc_code == "ERROR_CODE_TOKEN_UNAVAILABLE"
        assert manager.attempts == 3
        manager.mode = "up"
        monotonic[0] += 2.5
        assert (await tokens.token(ROUTE)) is not first

    with caplog.at_level(logging.DEBUG, logger="sluis.outway"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "gives no access token since" in warnings[0]
    assert "gives access tokens again" in warnings[1]
    assert "2 failed attempts, 1 requests refused" in warnings[1]


def test_waiting_requests_share_one_fetch_and_give_up_within_the_timeout() -> None:
    async def scenario() -> None:
        manager, tokens = _hung()
        loop = asyncio.get_running_loop()
        began = loop.time()
        results = await asyncio.gather(
            *(tokens.token(ROUTE) for _ in range(20)), return_exceptions=True
        )
        assert loop.time() - began < 0.6
        assert all(isinstance(r, OutwayError) for r in results)
        assert manager.attempts == 1

    asyncio.run(scenario())


def test_a_request_whose_client_left_stops_waiting_and_the_fetch_goes_on() -> None:
    async def scenario() -> None:
        manager, tokens = _hung()
        left = asyncio.Event()

        async def departed() -> None:
            await left.wait()

        waiting = asyncio.ensure_future(tokens.token(ROUTE, departed=departed))
        await asyncio.sleep(0.05)
        left.set()
        with pytest.raises(ClientLeft):
            await waiting
        manager.release.set()  # the Manager answers: the shared fetch completes for the rest
        await asyncio.sleep(0.01)
        await tokens.token(ROUTE)
        assert manager.attempts == 1

    asyncio.run(scenario())


def test_tokens_that_live_shorter_than_the_refresh_window_are_not_fetched_nonstop() -> None:
    async def scenario() -> None:
        clock = [1_800_000_000.0]
        manager = Manager(clock)  # tokens for 60 s
        tokens = _cache(manager, clock, [0.0], refresh=100)
        first = await tokens.token(ROUTE)
        clock[0] += 29  # before half the token's life: no refresh, though within 100 s of exp
        assert await tokens.token(ROUTE) is first
        await asyncio.sleep(0)
        assert manager.attempts == 1
        clock[0] += 2
        assert await tokens.token(ROUTE) is first  # served while the refresh runs
        await asyncio.sleep(0)
        assert manager.attempts == 2
        assert await tokens.token(ROUTE) is not first

    asyncio.run(scenario())
