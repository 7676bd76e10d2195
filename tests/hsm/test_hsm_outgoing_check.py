"""``appliance.hsm.watch.check_here``, the outway's in-process check after an outgoing handshake
failed on a signature, against real SoftHSM2 tokens: a usable key (a false positive: the peer's
signature really was bad) costs one check per interval and reports nothing; a dead one is
reported once and makes the outway refuse without a handshake. The outage itself, with real
gunicorn workers and a network HSM, is test_hsm_outgoing_outage.py."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import appliance.hsm.status
from appliance.hsm import watch
from appliance.hsm.settings import HsmSettings

DETAIL = "certificate verify failed: CRL signature failure"


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The token checks made (the real check, counted)."""
    made: list[str] = []
    real = appliance.hsm.status.token_status

    def counted(settings: HsmSettings, **options: Any) -> appliance.hsm.status.TokenStatus:
        made.append(settings.token_label)
        return real(settings, **options)

    monkeypatch.setattr(appliance.hsm.status, "token_status", counted)
    monkeypatch.setattr(watch, "_last_check", None)
    yield made
    watch.install(None)


def install(settings: HsmSettings) -> watch.KeyWatch:
    # The fresh-process probe keeps failing: this test is about the in-process check.
    keys = watch.KeyWatch(settings, lambda: "still gone", lambda: None, first_check=60)
    watch.install(keys)
    return keys


def test_a_usable_key_costs_one_check_per_interval(
    p256_token: HsmSettings, checks: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    keys = install(p256_token)
    caplog.set_level(logging.INFO, logger="sluis.hsm")
    assert [watch.check_here(DETAIL, interval=60) for _ in range(5)] == [False] * 5
    assert checks == [p256_token.token_label]
    assert keys.failures() == {}
    assert keys.problem is None
    assert not watch.outgoing_refused()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The interval over: the next failure is checked again.
    assert watch.check_here(DETAIL, interval=0) is False
    assert len(checks) == 2


def test_a_dead_key_is_reported_once_and_refuses_outgoing(
    p256_token: HsmSettings, checks: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gone = dataclasses.replace(p256_token, token_label="no-such-token-here")
    keys = install(gone)
    caplog.set_level(logging.INFO, logger="sluis.hsm")
    assert not watch.outgoing_refused()
    assert [watch.check_here(DETAIL, interval=0) for _ in range(5)] == [True] * 5
    assert checks == [gone.token_label], "checked again after the key was found dead"
    assert keys.failures() == {watch.OUTGOING_TLS: 1}
    assert watch.outgoing_refused()
    assert not watch.refusing(), "the listener's handshakes are not refused for it"
    down = [r.getMessage() for r in caplog.records if "failed (outgoing TLS" in r.getMessage()]
    assert len(down) == 1, down
    assert DETAIL in down[0]
    assert "no-such-token-here" in down[0]


def test_no_watch_no_check(checks: list[str]) -> None:
    watch.install(None)
    assert watch.check_here(DETAIL) is False
    assert not watch.outgoing_refused()
    assert checks == []
