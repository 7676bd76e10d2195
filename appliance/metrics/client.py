"""prometheus-client's metric classes as this package defines its series with them.

Every module here that defines a series imports ``Counter``, ``Gauge`` and ``Histogram`` from
this module, never from ``prometheus_client`` itself (tests/metrics check it), so that this
runs before the process makes its first value:

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, the gunicorn workers) every increment of
a value asks the process id, to notice a fork, and ``os.getpid()`` is a system call: with a
dozen increments per proxied request it was a sixth of what the metrics cost there
(bench/record_path.py). The values here get the id from a variable that a fork renews
(``os.register_at_fork``), so a forked child still writes files of its own, the same files
with the same names, at no system call per increment. It must be set before the first value
exists: a value of the default class would open the same file a second time.
"""

from __future__ import annotations

import os

import prometheus_client.values as _values
from prometheus_client import Counter, Gauge, Histogram

__all__ = ["Counter", "Gauge", "Histogram", "process_id"]

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_id() -> int:
    """This process's id, as of its start or its last fork (no system call)."""
    return _pid


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _values.ValueClass = _values.MultiProcessValue(process_identifier=process_id)  # type: ignore[no-untyped-call]
