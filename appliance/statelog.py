"""Log a failure as a state, not per occurrence: a line when it begins, a count while it lasts,
a line when it ends.

A gateway refusing every request because its log store is locked or its backend is down used
to log one or two lines per request (about 200 a second at 100 requests a second): the log grew
with the failure rate and buried the one line that said what was wrong. A :class:`FailureState`
logs instead

- when the state begins: ``<state>: <reason> (since <UTC time>)``;
- while it lasts, at most once per ``summary_seconds`` (default 60), when a failure comes in:
  ``<state>, since <UTC time>: <n> <counted> in the last <s> s, because <latest reason>``;
- when it ends (:meth:`FailureState.recovered`):
  ``<state>: over after <s> s (since <UTC time>), <total> <counted> in all``.

A state that flaps (failures and successes interleaved: a peer with one good grant and one
bad, a backend going up and down) would log a begin and an end per failure; within a summary
period of the line that said "over", it begins again quietly and its end waits for the period,
so that it, too, logs about one line a period, with the counts.

Each occurrence is logged at DEBUG with its own reason, for whoever needs every one.
Thread-safe (the transaction log commits in a thread of its own). Per process: each gunicorn
worker logs its own state.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

DEFAULT_SUMMARY_SECONDS = 60.0


def _moment(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FailureState:
    """One failure state (e.g. "transaction log writes failing") of one process.

    ``counted`` names what :meth:`failed` counts, in the plural ("requests refused").
    """

    def __init__(
        self,
        logger: logging.Logger,
        state: str,
        counted: str,
        *,
        level: int = logging.WARNING,
        summary_seconds: float = DEFAULT_SUMMARY_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.state = state
        self._counted = counted
        self._level = level
        self._summary_seconds = summary_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._failing = False
        self._since = 0.0  # wall clock: the first failure since the log last said "over"
        self._began = 0.0  # the same, monotonic
        self._total = 0  # failures since the log last said "over"
        self._unreported = 0  # failures since the last line
        self._last_line = 0.0  # monotonic
        self._said_over = False  # the last line logged was an end
        self._end_pending = False

    @property
    def failing(self) -> bool:
        return self._failing

    def failed(self, reason: str, count: int = 1) -> None:
        """``count`` more failures, for ``reason``; logs only when the state begins or a summary
        is due."""
        self._log.debug("%s: %s", self.state, reason)
        with self._lock:
            now = self._monotonic()
            if not self._total:
                self._since, self._began = self._clock(), now
            self._total += count
            self._unreported += count
            begins, self._failing, self._end_pending = not self._failing, True, False
            recent = now - self._last_line < self._summary_seconds
            # A state that flaps (a peer with one good grant and one bad, a backend going up
            # and down) begins again quietly within a period of the line that said "over": at
            # most about a line a period, whatever the rate; the counts follow in the next line.
            if begins and not (self._said_over and recent):
                self._line(now, "%s: %s (since %s)", self.state, reason, _moment(self._since))
            elif not recent:
                self._line(
                    now,
                    "%s, since %s: %d %s in the last %.0f s, because %s",
                    self.state,
                    _moment(self._since),
                    self._unreported,
                    self._counted,
                    now - self._last_line,
                    reason,
                )

    def recovered(self) -> None:
        """The state is over (cheap when it was not failing: call it on every success)."""
        if not (self._failing or self._end_pending):
            return
        with self._lock:
            now = self._monotonic()
            recent = now - self._last_line < self._summary_seconds
            if self._failing:
                self._failing = False
                # The log says "over" already (it flaps): the count follows once a period allows.
                self._end_pending = self._said_over and recent
            if not self._end_pending or not recent:
                self._line(
                    now,
                    "%s: over after %.0f s (since %s), %d %s in all",
                    self.state,
                    now - self._began,
                    _moment(self._since),
                    self._total,
                    self._counted,
                    level=logging.INFO,
                )
                self._said_over, self._end_pending, self._total = True, False, 0

    def _line(self, now: float, message: str, *args: object, level: int | None = None) -> None:
        self._log.log(self._level if level is None else level, message, *args)
        self._last_line, self._unreported, self._said_over = now, 0, False


class FailureStates:
    """A :class:`FailureState` per key (a service, an inway, a Manager), made when it first
    fails; ``state`` names it with ``{}`` for the key ("service {} unreachable")."""

    def __init__(
        self, logger: logging.Logger, state: str, counted: str, *, level: int = logging.WARNING
    ) -> None:
        self._make = functools.partial(FailureState, logger, counted=counted, level=level)
        self._state = state
        self._states: dict[str, FailureState] = {}

    def failed(self, key: str, reason: str, count: int = 1) -> None:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = self._make(self._state.format(key))
        state.failed(reason, count)

    def recovered(self, key: str) -> None:
        state = self._states.get(key)
        if state is not None:
            state.recovered()

    def recovered_all(self) -> None:
        """Every key's state is over (a success that does not say which key it clears)."""
        for state in self._states.values():
            state.recovered()
