"""``/integrity``: are the transaction log and the audit log still what was written? The last
signed checkpoint of each stream, checked, and a warning when something is wrong.

The check is :func:`appliance.txlog.integrity.integrity` (the one ``sluis txlog status`` runs),
once for the transaction log (its two streams) and once for the controller's audit log (one
stream): per stream the last checkpoint's signature against the organisation's certificates,
the record it signed, and the records after it; not the whole log (an auditor's ``sluis txlog
verify`` and ``sluis controller audit verify`` do that). The answer is kept for ``max_age``
seconds, so that page views do not read the logs each time.

The page opens no database of its own: the transaction log is read through the engine of the
controller's :class:`~appliance.controller.transactions.TransactionReader`, the audit log
through the controller's store. Whether there is a transaction log to check is the
configuration's word: without a ``[txlog]`` section the page says so and checks none, even
when a reader was handed an engine some other way (a test's controller).

Mounted by :func:`add_integrity_route` (``app.add_route("/integrity", ...)``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from appliance.controller.access import Rule, by_method
from appliance.controller.auditlog import AUDIT
from appliance.controller.roles import Permission
from appliance.controller.web import Page, render
from appliance.txlog.chain import TXLOG, Log
from appliance.txlog.checkpoint import CheckpointError, organisation_certificates
from appliance.txlog.integrity import StreamIntegrity, integrity

if TYPE_CHECKING:
    import falcon.asgi

    from appliance.controller.app import Controller

PATH = "/integrity"
MAX_AGE_SECONDS = 30.0
# Records after the last checkpoint that a page view checks at most (about 2 s on a busy
# machine, in a thread); the checkpoint service checks them all before it signs.
CHECK_LIMIT = 20_000
NO_TXLOG = "no transaction log configured ([txlog])"


@dataclass(frozen=True)
class LogIntegrity:
    """One log on the page: its streams (None: not checked) and why not."""

    title: str
    verify_command: str  # what an auditor runs for the whole log
    streams: list[StreamIntegrity] | None
    problem: str | None  # why it was not checked
    configured: bool = True

    @property
    def failed(self) -> bool:
        """A stream is broken, or a configured log could not be checked."""
        if self.streams is None:
            return self.configured
        return not all(stream.ok for stream in self.streams)


class IntegrityStatus:
    """The logs' integrity for the page, checked at most every ``max_age`` seconds."""

    def __init__(self, controller: Controller, *, max_age: float = MAX_AGE_SECONDS) -> None:
        config = controller.config
        self._chain, self._anchors = config.tls.certificate_chain, config.tls.trust_anchors
        txlog = controller.transactions.engine if config.txlog is not None else None
        self._logs: list[tuple[str, str, Log, Engine | None]] = [
            (
                "Transaction log",
                "sluis txlog verify --config",
                TXLOG,
                txlog,
            ),
            (
                "Audit log",
                "sluis controller audit verify --config",
                AUDIT,
                controller.auth.store.engine,
            ),
        ]
        self._max_age = max_age
        self._lock = threading.Lock()
        self._checked: tuple[float, list[LogIntegrity]] | None = None

    def current(self) -> tuple[list[LogIntegrity], float]:
        """Each log as checked, and when (``time.time()``)."""
        with self._lock:
            now = time.time()
            if self._checked is None or now - self._checked[0] > self._max_age:
                self._checked = (now, self._check())
            return self._checked[1], self._checked[0]

    def _check(self) -> list[LogIntegrity]:
        try:
            certificates = organisation_certificates(self._chain, self._anchors)
        except (CheckpointError, OSError) as exc:
            return [
                LogIntegrity(title, command, None, f"not checked: {exc}", engine is not None)
                for title, command, _, engine in self._logs
            ]
        found = []
        for title, command, log, engine in self._logs:
            if engine is None:
                found.append(LogIntegrity(title, command, None, NO_TXLOG, configured=False))
                continue
            try:
                streams = integrity(engine, certificates, check_limit=CHECK_LIMIT, log=log)
            except Exception as exc:  # the store is down: the page says so, it does not fail
                problem = f"not checked: the {log.name} cannot be read ({type(exc).__name__})"
                found.append(LogIntegrity(title, command, None, problem))
                continue
            found.append(LogIntegrity(title, command, streams, None))
        return found

    def close(self) -> None:
        """Nothing to close: the engines are the reader's and the store's."""


class Integrity(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "integrity.read"))

    def __init__(self, controller: Controller, status: IntegrityStatus) -> None:
        super().__init__(controller)
        self.status = status

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # In a thread: reading and hashing the records may take a second or two.
        logs, checked = await asyncio.to_thread(self.status.current)
        render(
            req,
            resp,
            "integrity.html",
            logs=logs,
            failed=[log for log in logs if log.failed],
            checked_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checked)),
        )


def add_integrity_route(app: Any, controller: Controller) -> IntegrityStatus:
    """Mount ``/integrity`` on the controller's app; the status, to close with the app."""
    status = IntegrityStatus(controller)
    app.add_route(PATH, Integrity(controller, status))
    return status
