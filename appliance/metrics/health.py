"""Liveness and readiness: ``GET /health/live`` and ``GET /health/ready`` on every component.

- ``/health/live``: 200 whenever the process serves (a worker answered). A load balancer or
  systemd watchdog restarts on its failure; nothing below is asked.
- ``/health/ready``: 200 when every check passes, else 503; a load balancer and keepalived take
  the box out of service on 503. The body names every check::

      {"status": "ready", "checks": {"certificate": {"ok": true, "detail": "..."}, ...}}

Checks, each answering within :data:`CHECK_TIMEOUT` seconds or failing:

- ``certificate``: the live chain and trust anchors are readable and none has expired;
- ``crls``: no CRL is past its nextUpdate (its CA's peers are refused, fail closed);
- ``hsm``: the organisation key is usable (a session, the key, random bytes from the token);
  ``HSM token gone: ...`` when not, until the key watch has replaced the worker;
- ``transaction_log`` (gateways): the last write of this worker did not fail, and a SQLite
  file (if that is the store) is writable;
- ``manager`` (outway): the Manager that issues its access tokens accepts connections.

A worker answers for itself; the results are kept :data:`CACHE_SECONDS`, so that a probe
every second costs a check every few seconds. The controller's Health page asks the same
endpoint (``appliance.controller.health``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.config import SluisConfig, TlsSettings
from appliance.metrics import hsm as hsm_metrics
from appliance.pki.expiry import collect

LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
CHECK_TIMEOUT = 2.0
CACHE_SECONDS = 2.0

# A check returns None when it passes, else why not.
CheckFunction = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFunction
    passed: str  # the detail shown when it passes


class Readiness:
    def __init__(self, checks: Sequence[Check], *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.checks = tuple(checks)
        self._cache_seconds = cache_seconds
        self._last: tuple[float, bool, dict[str, Any]] | None = None

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)``."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self._cache_seconds:
            return self._last[1], self._last[2]
        results = await asyncio.gather(*(self._one(check) for check in self.checks))
        checks = {
            check.name: {"ok": problem is None, "detail": problem or check.passed}
            for check, problem in zip(self.checks, results, strict=True)
        }
        ready = all(problem is None for problem in results)
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        self._last = (now, ready, body)
        return ready, body

    async def _one(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                return await check.run()
        except TimeoutError:
            return f"no result within {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a check that breaks is a failed check, not a 500
            return f"{type(exc).__name__}: {exc}"


def live_body() -> bytes:
    return json.dumps({"status": "live", "pid": os.getpid()}).encode()


def ready_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


# --- the checks --------------------------------------------------------------------------------


def tls_checks(tls: TlsSettings) -> list[Check]:
    """``certificate`` and ``crls``, from the files behind ``[tls]`` (as ``/metrics`` reads)."""

    async def certificate() -> str | None:
        report = collect(tls)
        now = datetime.now(UTC)
        if report.problems:
            return "; ".join(report.problems)
        expired = [
            f"{item.role} {item.name}"
            for item in report.items
            if item.kind == "certificate" and (item.days_left(now) or 0) <= 0
        ]
        return f"expired: {', '.join(expired)}" if expired else None

    async def crls() -> str | None:
        report = collect(tls)
        now = datetime.now(UTC)
        stale = [
            item.name
            for item in report.items
            if item.kind == "crl" and (item.days_left(now) or 0) <= 0
        ]
        return f"stale (peers of that CA are refused): {', '.join(stale)}" if stale else None

    return [
        Check("certificate", certificate, "readable, none expired"),
        Check("crls", crls, "none past its next update"),
    ]


def hsm_check(config: SluisConfig) -> Check:
    """``hsm``: the organisation key can be used now (``appliance.hsm.status.token_status``:
    a session, the key, random bytes from the device); when it cannot, the detail starts with
    ``HSM token gone``.

    In a worker with a key watch (``appliance.hsm.watch``) the module is never re-initialised
    here: under pkcs11-provider that broke the listener's TLS contexts (measured, docs/keys.md).
    The failure goes to the watch instead, which replaces the worker once a fresh process can
    use the token; until then the check fails with the watch's reason.
    """

    def check() -> str | None:
        from appliance.hsm import watch
        from appliance.hsm.status import token_status

        keys = watch.current()
        if keys is not None and keys.problem is not None:
            hsm_metrics.key_usable(False)
            return f"HSM token gone: {keys.problem}"
        status = token_status(config.hsm, recover=keys is None)
        hsm_metrics.key_usable(status.usable)
        if status.usable:
            return None
        watch.report("readiness check", status.reason or "key not usable")
        return f"HSM token gone: {status.reason}"

    async def hsm() -> str | None:
        return await asyncio.to_thread(check)

    return Check("hsm", hsm, "token present, logged in")


def log_check(failing: Callable[[], bool], sqlite_file: Path | None) -> Check:
    """``transaction_log``: this worker's writes are not failing; a SQLite file is writable."""

    async def transaction_log() -> str | None:
        if failing():
            return "the last write failed: requests are refused"
        if sqlite_file is not None:
            target = sqlite_file if sqlite_file.exists() else sqlite_file.parent
            if not os.access(target, os.W_OK):
                return f"{target} is not writable"
        return None

    return Check("transaction_log", transaction_log, "writes succeed")


def sqlite_file(database_url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, else None."""
    prefix = "sqlite:///"
    return Path(database_url.removeprefix(prefix)) if database_url.startswith(prefix) else None


def reachable_check(name: str, host: str, port: int) -> Check:
    """``name``: ``host:port`` accepts a TCP connection."""

    async def reachable() -> str | None:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return f"{host}:{port}: {exc.strerror or exc}"
        writer.close()
        return None

    return Check(name, reachable, f"{host}:{port} accepts connections")


def component_checks(config: SluisConfig) -> list[Check]:
    """What every component needs: its certificate, CRLs and HSM."""
    return [*tls_checks(config.tls), hsm_check(config)]


def gateway_checks(
    config: SluisConfig, *, log_spec: str, failing: Callable[[], bool]
) -> list[Check]:
    """A gateway's: the component's, and its transaction log (``log_spec``: its
    ``transaction_log`` setting; empty: the durable log of ``[txlog]``)."""
    database = config.txlog.database if config.txlog is not None and not log_spec.strip() else ""
    return [*component_checks(config), log_check(failing, sqlite_file(database))]
