"""Stopping the demo on SIGINT and SIGTERM, leaving nothing running.

Python turns SIGINT into KeyboardInterrupt only when SIGINT was not ignored at start; a shell
starts a background job (``sluis demo --keep-running &`` in a script) with SIGINT ignored, and
nothing handled SIGTERM, so such a demo could only be killed, which left its Managers,
gateways and controllers running. :func:`run_until_stopped` handles both signals itself: the
first one unwinds the demo (its ``finally`` stops every component), further ones are ignored
so that the cleanup is not cut short, and whatever child process is still there afterwards
(one started in the very moment the signal came) is stopped too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from types import FrameType

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal arrived (a BaseException: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Stopped(signum)


def _is_resource_tracker(child: psutil.Process) -> bool:
    """multiprocessing's helper (started by provisioning's spawn pool): it ignores SIGTERM by
    design and ends by itself when this process does; terminating it cost the full timeout
    (30 s between "every component stopped" and the demo's exit)."""
    with contextlib.suppress(psutil.Error):
        return "multiprocessing.resource_tracker" in " ".join(child.cmdline())
    return False


def stop_children(timeout: float = 30) -> None:
    """Terminate every remaining descendant of this process (kill what does not stop)."""
    children = [c for c in psutil.Process().children(recursive=True) if not _is_resource_tracker(c)]
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


def run_until_stopped(run: Callable[[], int], say: Callable[[str], None]) -> int:
    """``run()``'s exit status, or 0 when SIGINT or SIGTERM stopped it cleanly."""
    previous = {each: signal.signal(each, _stop) for each in STOP_SIGNALS}
    try:
        return run()
    except Stopped as stopped:
        say(f"{signal.Signals(stopped.signum).name}: every component stopped")
        return 0
    finally:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        stop_children()
        for each, handler in previous.items():
            signal.signal(each, handler)
