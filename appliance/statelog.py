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
        self._since: float | None = None  # wall clock, while failing
        self._began = 0.0  # monotonic
        self._reported = 0.0  # monotonic: the last line
        self._since_report = 0
        self._total = 0

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, count: int = 1) -> None:
        """``count`` more failures, for ``reason``; logs only when the state begins or a summary
        is due."""
        self._log.debug("%s: %s", self.state, reason)
        with self._lock:
            now = self._monotonic()
            self._total += count
            if self._since is None:
                self._since, self._began, self._reported = self._clock(), now, now
                self._since_report = 0
                since = _moment(self._since)
                self._log.log(self._level, "%s: %s (since %s)", self.state, reason, since)
                return
            self._since_report += count
            if now - self._reported < self._summary_seconds:
                return
            self._log.log(
                self._level,
                "%s, since %s: %d %s in the last %.0f s, because %s",
                self.state,
                _moment(self._since),
                self._since_report,
                self._counted,
                now - self._reported,
                reason,
            )
            self._reported, self._since_report = now, 0

    def recovered(self) -> None:
        """The state is over (cheap when it was not failing: call it on every success)."""
        with self._lock:
            if self._since is None:
                return
            self._log.info(
                "%s: over after %.0f s (since %s), %d %s in all",
                self.state,
                self._monotonic() - self._began,
                _moment(self._since),
                self._total,
                self._counted,
            )
            self._since, self._total = None, 0


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
