"""appliance.statelog alone: a line when a failure state begins, a count per period, a line when
it ends; nothing per failure above DEBUG."""

from __future__ import annotations

import logging

import pytest

from appliance.statelog import FailureState, FailureStates


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]


def test_begin_summary_and_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    state = FailureState(
        logging.getLogger("test.statelog"),
        "backend down",
        "requests refused",
        clock=clock,
        monotonic=clock,
    )
    with caplog.at_level(logging.DEBUG, logger="test.statelog"):
        state.recovered()  # not failing: nothing
        for _ in range(100):
            state.failed("connection refused")
            clock.now += 0.5  # 50 s
        assert _lines(caplog) == ["backend down: connection refused (since 1970-01-12T13:46:40Z)"]
        for _ in range(30):
            state.failed("timed out")
            clock.now += 0.5
        state.recovered()
        state.recovered()
    lines = _lines(caplog)
    assert len(lines) == 3, lines
    # The first failure begins the state; 119 more come by the time the period is over.
    assert lines[1] == (
        "backend down, since 1970-01-12T13:46:40Z: 120 requests refused in the last 60 s, "
        "because timed out"
    )
    assert lines[2] == (
        "backend down: over after 65 s (since 1970-01-12T13:46:40Z), 130 requests refused in all"
    )
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 130


def test_one_state_per_key(caplog: pytest.LogCaptureFixture) -> None:
    states = FailureStates(logging.getLogger("test.statelog"), "service {} down", "refused")
    with caplog.at_level(logging.INFO, logger="test.statelog"):
        for _ in range(10):
            states.failed("a", "refused")
            states.failed("b", "refused")
        states.recovered("a")
        states.recovered("c")  # never failed
    lines = _lines(caplog)
    names = [line.split(":")[0] for line in lines]
    assert names == ["service a down", "service b down", "service a down"]
    assert lines[2].endswith("10 refused in all")


def test_a_flapping_state_logs_about_a_line_a_period(caplog: pytest.LogCaptureFixture) -> None:
    """A peer with one good grant and one bad: failures and successes alternate."""
    clock = Clock()
    state = FailureState(
        logging.getLogger("test.statelog"), "peer refused", "refused", clock=clock, monotonic=clock
    )
    with caplog.at_level(logging.INFO, logger="test.statelog"):
        for _ in range(1000):  # 100 s: 10 failures and 10 successes a second
            state.failed("expired")
            clock.now += 0.05
            state.recovered()
            clock.now += 0.05
        clock.now += 60
        state.recovered()  # the last quiet episode's count is reported once a period allows
    lines = _lines(caplog)
    print(*lines, sep="\n")
    # Begin and end, then a summary or an end about once a minute, not 2,000 lines.
    assert len(lines) <= 8, lines
    assert lines[0].startswith("peer refused: expired")
    assert lines[-1].startswith("peer refused: over after")
    counted = sum(int(line.split(", ")[-1].split()[0]) for line in lines if "in all" in line)
    assert counted == 1000, lines
