"""How a worker tells the gunicorn master that it serves (for the side-by-side reload), or
why it could not start (for the master's back-off).

One pipe per master, made before the first fork (``appliance.serving.arbiter``). Every worker
inherits its write end and writes one line, ``<pid> <age>`` once uvicorn listens, or
``<pid> <age> <reason>`` when it cannot start. A write of at most ``PIPE_BUF`` (4096) bytes to a
pipe is atomic, so lines of several workers never interleave. The age (gunicorn's per-master
worker counter) makes a line unambiguous even if the pid has been reused by then.

The write end's number lives in this module: it is set only in a master that made the pipe and
inherited only by its forks. A worker under plain gunicorn (or an exec'd process, which
re-imports this module) reports nothing; it never writes to an fd number it does not own.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

# Set in the master by ReadinessPipe; a forked worker finds it here.
_write_fd: int | None = None
# A reason longer than this is cut: the line (UTF-8) must stay one atomic write.
_MAX_REASON = 900


class Report(NamedTuple):
    pid: int
    age: int
    failure: str | None  # None: it serves; else why it could not start


class ReadinessPipe:
    """The master's end: collects the workers' reports without blocking."""

    def __init__(self) -> None:
        global _write_fd
        self._read_fd, write_fd = os.pipe()  # close-on-exec: an exec'd child gets neither end
        os.set_blocking(self._read_fd, False)
        # A worker never waits for the master: a full pipe (impossible in practice, the master
        # drains it every loop) would lose a report, and the reload would end by its timeout.
        os.set_blocking(write_fd, False)
        _write_fd = write_fd
        self._pending = b""

    def read_reports(self) -> list[Report]:
        """The reports of the workers since the last call."""
        while True:
            try:
                chunk = os.read(self._read_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        reports = []
        for line in lines:
            with contextlib.suppress(ValueError):
                pid, age, *failure = line.decode("utf-8", "replace").split(" ", 2)
                reports.append(Report(int(pid), int(age), failure[0] if failure else None))
        return reports


def report_serving(age: int) -> None:
    """In a worker: tell the master that this worker (gunicorn's ``worker.age``) serves."""
    _report(f"{os.getpid()} {age}")


def report_boot_failure(age: int, reason: str) -> None:
    """In a worker: tell the master why this worker cannot start (one line, ``reason``)."""
    reason = " ".join(reason.split())[:_MAX_REASON] or "no reason given"
    _report(f"{os.getpid()} {age} {reason}")


def _report(line: str) -> None:
    global _write_fd
    fd, _write_fd = _write_fd, None
    if fd is None:
        return
    try:
        os.write(fd, f"{line}\n".encode())
    except OSError:
        pass  # the master's reload then ends by its timeout, as plain gunicorn would have
    finally:
        os.close(fd)
