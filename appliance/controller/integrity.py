"""``/integrity``: is the transaction log still what was written? The last signed checkpoint of
each stream, checked, and a warning when something is wrong.

The check is :func:`appliance.txlog.integrity.integrity` (the one ``sluis txlog status`` runs):
per stream the last checkpoint's signature against the organisation's certificates, the record
it signed, and the records after it; not the whole log (an auditor's ``sluis txlog verify``
does that). The answer is kept for ``max_age`` seconds, so that page views do not read the log
each time.

Mounted by :func:`add_integrity_route` (``app.add_route("/integrity", ...)``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from appliance.controller.access import Rule, by_method
from appliance.controller.roles import Permission
from appliance.controller.web import Page, render
from appliance.txlog.checkpoint import CheckpointError, organisation_certificates
from appliance.txlog.database import create_engine
from appliance.txlog.integrity import StreamIntegrity, integrity

if TYPE_CHECKING:
    import falcon.asgi

    from appliance.controller.app import Controller

PATH = "/integrity"
MAX_AGE_SECONDS = 30.0
# Records after the last checkpoint that a page view checks at most (about 2 s on a busy
# machine, in a thread); the checkpoint service checks them all before it signs.
CHECK_LIMIT = 20_000


class IntegrityStatus:
    """The log's integrity for the page, checked at most every ``max_age`` seconds."""

    def __init__(self, controller: Controller, *, max_age: float = MAX_AGE_SECONDS) -> None:
        config = controller.config
        self._database = config.txlog.database if config.txlog is not None else None
        self._chain, self._anchors = config.tls.certificate_chain, config.tls.trust_anchors
        self._max_age = max_age
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._checked: tuple[float, list[StreamIntegrity] | None, str | None] | None = None

    @property
    def configured(self) -> bool:
        return self._database is not None

    def current(self) -> tuple[list[StreamIntegrity] | None, str | None, float]:
        """The streams (None: not checked), why not, and when checked (``time.time()``)."""
        with self._lock:
            now = time.time()
            if self._checked is None or now - self._checked[0] > self._max_age:
                streams, error = self._check()
                self._checked = (now, streams, error)
            return self._checked[1], self._checked[2], self._checked[0]

    def _check(self) -> tuple[list[StreamIntegrity] | None, str | None]:
        if self._database is None:
            return None, "no transaction log configured ([txlog])"
        try:
            certificates = organisation_certificates(self._chain, self._anchors)
            if self._engine is None:
                self._engine = create_engine(self._database)
            return integrity(self._engine, certificates, check_limit=CHECK_LIMIT), None
        except (CheckpointError, OSError) as exc:
            return None, f"not checked: {exc}"
        except Exception as exc:  # the store is down: the page says so, it does not fail
            return None, f"not checked: the transaction log cannot be read ({type(exc).__name__})"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class Integrity(Page):
    rules = by_method(GET=Rule(Permission.VIEW, "integrity.read"))

    def __init__(self, controller: Controller, status: IntegrityStatus) -> None:
        super().__init__(controller)
        self.status = status

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # In a thread: reading and hashing the records may take a second or two.
        streams, error, checked = await asyncio.to_thread(self.status.current)
        render(
            req,
            resp,
            "integrity.html",
            streams=streams or [],
            problem=error,  # not "error": base.html shows that as a failed action
            ok=streams is not None and all(stream.ok for stream in streams),
            checked_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checked)),
        )


def add_integrity_route(app: Any, controller: Controller) -> IntegrityStatus:
    """Mount ``/integrity`` on the controller's app; the status, to close with the app."""
    status = IntegrityStatus(controller)
    app.add_route(PATH, Integrity(controller, status))
    return status
