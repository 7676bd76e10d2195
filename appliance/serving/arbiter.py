"""gunicorn's master with a side-by-side reload: the old workers serve until the new ones do.

gunicorn's HUP forks the new workers and stops the old ones at once. A Sluis worker needs
seconds before it accepts (the PKCS#11 login, the TLS context; 5 s and more under load), so
during every reload nobody accepted and clients timed out. SluisArbiter's HUP:

1. re-reads the configuration as gunicorn does and starts ``num_workers`` new workers
   (a "generation": the workers spawned from now on, told apart by gunicorn's ``worker.age``);
2. leaves the old workers alone while the new ones boot: they keep accepting;
3. once every worker of the new generation has reported that it serves
   (``appliance.serving.readiness``), stops the old ones with SIGTERM, as gunicorn stops excess
   workers: they finish their open requests and exit.

Bounds and corner cases:

- If the new generation is not all serving within ``SLUIS_RELOAD_READY_TIMEOUT`` seconds
  (default 60), the old workers are stopped anyway (what plain gunicorn would have done) and
  the workers that did not report are named in an error.
- A new worker that dies before it serves is replaced as always (``manage_workers``); the
  replacement belongs to the new generation and the reload waits for it (within the timeout).
  One that fails to boot (``WORKER_BOOT_ERROR``) halts the master, as in gunicorn.
- A HUP while a reload is pending starts a fresh generation. The workers of the superseded
  generation that do not serve yet are stopped at once (they serve nobody and carry an outdated
  configuration); those that do serve stay with the old ones, and all of them stop once the
  newest generation serves. So a burst of HUPs boots one generation, not one per HUP.
- A stopped worker takes a while to drain. Until it has exited it is not counted: it gets no
  second SIGTERM, and a missing active worker is replaced at once. With no reload pending and
  nothing draining, ``manage_workers`` (TTIN, TTOU, replacing dead workers) is gunicorn's own.

Workers that cannot start (the HSM token is gone, say): such a worker reports why
(``appliance.serving.readiness``) and exits (``appliance.serving.worker``). gunicorn would halt
the master on its boot error, or, for an error after its "booted" mark, start the next worker
at once: about two attempts a second, each with a traceback, until the token is back. Instead
the master waits before the next attempt, 0.5 s doubling up to 30 s, and starts one worker at a
time while they fail; once one serves the back-off is reset and the others start. The log has
one line when workers stop starting (why, and the next delay), a count every minute while it
lasts (``appliance.statelog``), and one when a worker serves again; gunicorn's own lines per
attempt are left out meanwhile. The master stays up: the component recovers by itself.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import Any

from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.pidfile import Pidfile
from gunicorn.sock import create_sockets

from appliance.serving.readiness import ReadinessPipe
from appliance.statelog import FailureState

READY_TIMEOUT_ENV = "SLUIS_RELOAD_READY_TIMEOUT"
DEFAULT_READY_TIMEOUT = 60.0
# While a reload is pending the main loop looks for reports this often (else once a second).
_PENDING_POLL = 0.1
# The wait before the next attempt after workers failed to start n times: 0.5 s * 2**(n-1).
BOOT_BACKOFF_FIRST = 0.5
BOOT_BACKOFF_MAX = 30.0


class _AttemptLines(logging.Filter):
    """Leaves out gunicorn's own lines per boot attempt while workers cannot start.

    Installed on gunicorn's error logger in the master; a forked worker inherits ``quiet``.
    """

    _PER_ATTEMPT = frozenset({"Booting worker with pid: %s", "Worker exiting (pid: %s)"})
    _EXITED = "Worker (pid:%s) exited with code %s."

    def __init__(self) -> None:
        super().__init__()
        self.quiet = False
        self.reported: set[int] = set()  # pids of workers that said why they could not start

    def filter(self, record: logging.LogRecord) -> bool:
        if self.quiet and record.msg in self._PER_ATTEMPT:
            return False
        args = record.args
        return not (
            record.msg == self._EXITED and isinstance(args, tuple) and args[0] in self.reported
        )


@dataclass
class _Reload:
    first_age: int  # the new generation: workers with this age or higher
    deadline: float  # time.monotonic()
    timeout: float


def _pids(pids: list[int]) -> str:
    return ", ".join(str(pid) for pid in sorted(pids)) or "none"


class SluisArbiter(Arbiter):  # type: ignore[misc]
    # gunicorn's attributes this class assigns (gunicorn has no type hints).
    LISTENERS: list[Any]
    pidfile: Any

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._readiness = ReadinessPipe()
        self._ready_ages: set[int] = set()
        self._retiring: set[int] = set()  # sent SIGTERM by us, not reaped yet
        self._reload: _Reload | None = None
        self._signalled: set[int] = set()  # any signal from us: its end is no boot failure
        self._boot_failures = 0  # in a row, since a worker last served
        self._next_boot = 0.0  # time.monotonic(): no new worker before
        self._boot_reasons: dict[int, str] = {}
        self._attempt_lines = _AttemptLines()
        logging.getLogger("gunicorn.error").addFilter(self._attempt_lines)
        self._boot_state = FailureState(
            logging.getLogger("gunicorn.error"),
            "worker cannot start",
            "boot attempts failed",
            level=logging.ERROR,
        )

    def reload(self) -> None:
        self._reload_configuration()
        self._collect_reports()
        if self._reload is not None:
            superseded = [
                pid
                for pid, worker in self._active().items()
                if worker.age >= self._reload.first_age and worker.age not in self._ready_ages
            ]
            if superseded:
                self.log.info(
                    "reload: superseded, stopping its workers not serving yet: pids %s",
                    _pids(superseded),
                )
                self._retire(superseded)
        timeout = self._ready_timeout()
        self._reload = _Reload(self.worker_age + 1, time.monotonic() + timeout, timeout)
        self.log.info(
            "reload: starting %s new workers, the old ones serve until they are ready",
            self.num_workers,
        )
        self.manage_workers()

    def _reload_configuration(self) -> None:
        # gunicorn's Arbiter.reload (27.0.1) up to spawning the new workers; the rest (spawn,
        # stop the oldest at once, wait for them) is what this class replaces.
        stats = getattr(self, "_stats", None)  # gunicorn >= 27
        if stats is not None:
            stats["reloads"] += 1
        old_address = self.cfg.address
        for k in self.cfg.env:
            if k in self.cfg.env_orig:
                os.environ[k] = self.cfg.env_orig[k]
            else:
                os.environ.pop(k, None)
        self.app.reload()
        self.setup(self.app)
        self.log.reopen_files()
        if old_address != self.cfg.address:
            # The old workers keep their copies of the old sockets until they stop.
            for listener in self.LISTENERS:
                listener.close()
            self.LISTENERS = create_sockets(self.cfg, self.log)
            self.log.info("Listening at: %s", ",".join(str(lnr) for lnr in self.LISTENERS))
        self.cfg.on_reload(self)
        if self.pidfile is not None:
            self.pidfile.unlink()
        if self.cfg.pidfile is not None:
            self.pidfile = Pidfile(self.cfg.pidfile)
            self.pidfile.create(self.pid)
        util._setproctitle(f"master [{self.proc_name}]")

    def _ready_timeout(self) -> float:
        raw = os.environ.get(READY_TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_READY_TIMEOUT
        try:
            return max(0.0, float(raw))
        except ValueError:
            self.log.error(
                "reload: %s=%r is no number, using %gs",
                READY_TIMEOUT_ENV,
                raw,
                DEFAULT_READY_TIMEOUT,
            )
            return DEFAULT_READY_TIMEOUT

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:
        if self._reload is not None:
            timeout = min(timeout, _PENDING_POLL)
        if self._boot_failures and not self._booting():
            # Wake up for the next attempt (a booting one's end arrives as SIGCHLD).
            timeout = min(timeout, max(self._next_boot - time.monotonic(), 0.05))
        signals: list[int] = super().wait_for_signals(timeout=timeout)
        return signals

    def manage_workers(self) -> None:
        self._collect_reports()
        if self._reload is None and not self._retiring:
            super().manage_workers()
            return
        # Count only the workers that are to stay: not the ones draining, and while a reload is
        # pending not the old generation (it serves until the new one does).
        first_age = self._reload.first_age if self._reload is not None else 0
        current = sorted(
            (w for w in self._active().values() if w.age >= first_age), key=lambda w: w.age
        )
        for _ in range(self.num_workers - len(current)):
            self.spawn_worker()
            time.sleep(0.1 * random.random())  # noqa: S311 (jitter, as gunicorn's spawn_workers)
        excess = len(current) - self.num_workers
        if excess > 0:
            self._retire([w.pid for w in current[:excess]])  # the oldest, as gunicorn does
        if self._reload is not None:
            self._check_reload(self._reload)

    def _check_reload(self, pending: _Reload) -> None:
        active = self._active()
        new = {pid: w for pid, w in active.items() if w.age >= pending.first_age}
        waiting = [pid for pid, w in new.items() if w.age not in self._ready_ages]
        old = [pid for pid, w in active.items() if w.age < pending.first_age]
        if len(new) >= self.num_workers and not waiting:
            self.log.info(
                "reload: %s new workers serving, stopping the old ones: pids %s",
                len(new),
                _pids(old),
            )
        elif time.monotonic() >= pending.deadline:
            self.log.error(
                "reload: new workers not serving after %gs: pids %s; "
                "stopping the old ones anyway: pids %s",
                pending.timeout,
                _pids(waiting),
                _pids(old),
            )
        else:
            return
        self._reload = None
        self._retire(old)

    def spawn_worker(self) -> int | None:
        # While workers fail to start: one attempt at a time, after the back-off.
        if self._boot_failures and (time.monotonic() < self._next_boot or self._booting()):
            return None
        pid: int = super().spawn_worker()
        return pid

    def _booting(self) -> bool:
        return any(
            w.age not in self._ready_ages and pid not in self._signalled
            for pid, w in self.WORKERS.items()
        )

    def kill_worker(self, pid: int, sig: int) -> None:
        self._signalled.add(pid)
        super().kill_worker(pid, sig)

    def reap_workers(self) -> None:
        self._collect_reports()  # a worker that could not start said why before it exited
        before = set(self.WORKERS)
        super().reap_workers()
        for pid in before.difference(self.WORKERS):
            reason = self._boot_reasons.pop(pid, None)
            self._attempt_lines.reported.discard(pid)
            if reason is not None and pid not in self._signalled:
                self._boot_failed(reason)
        self._signalled.intersection_update(self.WORKERS)

    def _boot_failed(self, reason: str) -> None:
        self._boot_failures += 1
        delay = min(BOOT_BACKOFF_FIRST * 2 ** (self._boot_failures - 1), BOOT_BACKOFF_MAX)
        self._next_boot = time.monotonic() + delay
        self._attempt_lines.quiet = True
        self._boot_state.failed(f"{reason}; retrying in {delay:g} s")

    def _collect_reports(self) -> None:
        for pid, age, failure in self._readiness.read_reports():
            worker = self.WORKERS.get(pid)
            if worker is None or worker.age != age:
                continue  # gone already
            if failure is not None:
                self._boot_reasons[pid] = failure
                self._attempt_lines.reported.add(pid)
                continue
            self._ready_ages.add(age)
            if self._boot_failures:
                self._boot_failures = 0
                self._attempt_lines.quiet = False
                self._boot_state.recovered()
            if pid in self._retiring:
                # SIGTERM reached it before it had installed its handlers (just after fork)
                # and was lost: it would serve on, uncounted.
                self.kill_worker(pid, signal.SIGTERM)
        self._retiring.intersection_update(self.WORKERS)
        self._ready_ages.intersection_update(w.age for w in self.WORKERS.values())

    def _active(self) -> dict[int, Any]:
        return {pid: w for pid, w in self.WORKERS.items() if pid not in self._retiring}

    def _retire(self, pids: list[int]) -> None:
        for pid in pids:
            self._retiring.add(pid)
            self.kill_worker(pid, signal.SIGTERM)
