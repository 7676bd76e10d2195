"""prometheus-client under gunicorn: one directory of sample files per component.

Every gunicorn worker is a process of its own; a scrape reaches one of them. In
prometheus-client's multiprocess mode each worker writes its samples to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` and the worker that answers the scrape sums the files of all,
so that the counts of every worker add up (and those of workers that exited stay counted).

The gunicorn master (``appliance.serving.gunicorn_conf``) prepares the directory once, before
the first worker forks (:func:`prepare_directory`): the one the environment names (a systemd
unit's ``RuntimeDirectory``), else a private one of its own, emptied of an earlier run's files
either way; a directory shared by two components would add their figures together. When a
worker exits, the master drops its live gauges (:func:`worker_exited`).

``SLUIS_METRICS=off`` in the environment leaves the data path's metrics out (for the cost
figure of ``bench/chain.py``); ``/metrics`` still answers with the certificate expiry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SWITCH_ENV = "SLUIS_METRICS"
# Set by prepare_directory when the directory is the master's own: removed when it exits.
_OWN_ENV = "SLUIS_METRICS_OWN_DIR"


def enabled() -> bool:
    """Whether this process keeps the data path's metrics (``SLUIS_METRICS`` is not ``off``)."""
    return os.environ.get(SWITCH_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def prepare_directory(proc_name: str) -> Path:
    """In the gunicorn master, before the first fork: the component's sample directory, empty,
    named in the environment that the workers inherit."""
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        directory = Path(named)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in directory.glob("*.db"):  # an earlier run's: not this run's counts
            leftover.unlink(missing_ok=True)
    else:
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in proc_name)
        directory = Path(tempfile.mkdtemp(prefix=f"{safe}-metrics-"))
        os.environ[_OWN_ENV] = str(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def worker_exited(pid: int) -> None:
    """In the master: an exited worker's live gauges (open connections) no longer count."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def master_exiting() -> None:
    """In the master at exit: remove the directory if it was made for this master."""
    own = os.environ.get(_OWN_ENV)
    if own and os.environ.get(MULTIPROC_ENV) == own:
        shutil.rmtree(own, ignore_errors=True)


def exposition(collectors: Sequence[Collector] = ()) -> bytes:
    """The samples of every worker (multiprocess), else of this process, in the text format,
    and those ``collectors`` read now."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        text = generate_latest(REGISTRY)
    else:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    if collectors:
        now = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            now.register(collector)
        text += generate_latest(now)
    return text
