"""Per-service shares of a gateway's connections: a hung service cannot take them all.

A worker's pool to its next hops is one (``backend_connections``, ``inway_connections``); a
service that stops answering keeps every request sent to it, and with it a connection, until
the read timeout. Without a limit per service, load on one hung service fills the pool within
seconds and every other service behind the same gateway waits for a connection and fails
(issue 16: 502 for a healthy service for as long as the hang lasted). So each service (the
inway: a service name; the outway: an inway and a service) may have at most ``limit``
requests in flight per worker; one more is refused at once (503 with ``Retry-After``)
instead of waiting, and the rest of the pool stays for the others.

A request holds its :class:`Slot` from before its log record is written (a refused request
is not logged) until its answer has been passed on, or its stream has ended or been dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

RETRY_AFTER_SECONDS = 1  # a slot is freed by any answer; try again soon, not at once
WARN_EVERY_SECONDS = 10.0


class Slot:
    """One request's place in its share; :meth:`release` is idempotent."""

    __slots__ = ("_key", "_shares")

    def __init__(self, shares: Shares, key: str) -> None:
        self._shares: Shares | None = shares
        self._key = key

    def release(self) -> None:
        shares, self._shares = self._shares, None
        if shares is not None:
            shares.leave(self._key)

    def __del__(self) -> None:
        # A streamed answer that Falcon never started (the client left before the head went
        # out) is dropped without being closed: its slot is freed with it.
        self.release()


class Shares:
    """How many requests each share has in flight in this worker (one event loop)."""

    def __init__(self, default: int, limits: Mapping[str, int] | None = None) -> None:
        self._default = default
        self._limits = dict(limits or {})
        self._busy: dict[str, int] = {}
        self._refused: dict[str, tuple[float, int]] = {}  # since the last warning: when, how many

    def limit(self, config_key: str) -> int:
        return self._limits.get(config_key, self._default)

    def enter(self, key: str, config_key: str | None = None) -> Slot | None:
        """A slot in share ``key`` (its limit: ``config_key``'s), or None when it is full."""
        busy = self._busy.get(key, 0)
        if busy >= self.limit(key if config_key is None else config_key):
            return None
        self._busy[key] = busy + 1
        return Slot(self, key)

    def leave(self, key: str) -> None:
        busy = self._busy.get(key, 0) - 1
        if busy > 0:
            self._busy[key] = busy
        else:
            self._busy.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._busy.get(key, 0)

    def refused(self, key: str, now: float) -> int:
        """Count a refusal; how many to report now (0: not yet, one line per
        ``WARN_EVERY_SECONDS`` and share, so that an overload does not flood the log)."""
        warned, count = self._refused.get(key, (now - WARN_EVERY_SECONDS, 0))
        count += 1
        if now - warned < WARN_EVERY_SECONDS:
            self._refused[key] = (warned, count)
            return 0
        self._refused[key] = (now, 0)
        return count
