"""How a worker tells the gunicorn master that it serves (for the side-by-side reload).

One pipe per master, made before the first fork (``appliance.serving.arbiter``). Every worker
inherits its write end and writes one line, ``<pid> <age>``, once uvicorn listens. A write of a
few bytes to a pipe is atomic, so lines of several workers never interleave. The age (gunicorn's
per-master worker counter) makes a line unambiguous even if the pid has been reused by then.

The write end's number lives in this module: it is set only in a master that made the pipe and
inherited only by its forks. A worker under plain gunicorn (or an exec'd process, which
re-imports this module) reports nothing; it never writes to an fd number it does not own.
"""

from __future__ import annotations

import contextlib
import os

# Set in the master by ReadinessPipe; a forked worker finds it here.
_write_fd: int | None = None


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

    def read_reports(self) -> list[tuple[int, int]]:
        """The ``(pid, age)`` of each worker that has reported since the last call."""
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
                pid, age = line.split()
                reports.append((int(pid), int(age)))
        return reports


def report_serving(age: int) -> None:
    """In a worker: tell the master that this worker (gunicorn's ``worker.age``) serves."""
    global _write_fd
    fd, _write_fd = _write_fd, None
    if fd is None:
        return
    try:
        os.write(fd, f"{os.getpid()} {age}\n".encode())
    except OSError:
        pass  # the master's reload then ends by its timeout, as plain gunicorn would have
    finally:
        os.close(fd)
