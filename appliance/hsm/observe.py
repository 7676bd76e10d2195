"""Where the HSM code reports its operations (``sign``, ``login``), for the metrics.

The HSM code names no metrics library (import arrows point down): it calls :func:`timed`, and
whoever keeps figures (``appliance.metrics.hsm``) sets the observer. Without one (the CLI)
nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (operation, seconds, error kind or None)
Observer = Callable[[str, float, str | None], None]

_observer: Observer | None = None


def set_observer(observer: Observer | None) -> None:
    global _observer
    _observer = observer


@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Time the block as one ``operation``; an exception counts as its error (re-raised)."""
    observer = _observer
    if observer is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        observer(operation, time.perf_counter() - started, type(exc).__name__)
        raise
    observer(operation, time.perf_counter() - started, None)
