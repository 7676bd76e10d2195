"""What an operator sees of each proxied request: the data path's metrics and one log line.

:class:`ObserveMiddleware` is the first middleware of both gateways. It notes when a request
arrives and, once the answer is done (its last byte handed to the server, for a streamed
answer), records it (:class:`appliance.metrics.datapath.GatewayMetrics`) and writes one JSON
line to stdout (journald under systemd), logger ``sluis.requests``::

    {"ts": "2026-12-07T16:20:01.123Z", "gateway": "outway", "transaction_id": "...",
     "service": "basisregistratie", "peer": "00000001000000000302", "status": 200,
     "fsc_error_code": null, "duration_ms": 3.1, "upstream_ms": 2.2, "bytes_in": 0,
     "bytes_out": 512, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

Never the path or the query: they may carry personal data (a BSN in a URL). ``trace_id`` is
the one of the request's W3C ``traceparent`` (the header itself goes on to the next hop by
the forwarding policy), so the line can be found from the application's own trace.
``SLUIS_REQUEST_LOG=off`` leaves the lines out. What only the gateway's sink knows it leaves
on ``req.context`` (:func:`routed`, :func:`upstream`; the transaction id); a request refused
before that is recorded without them.

Answers the app made before routing (``/metrics``, the health endpoints: they set
``resp.complete``) are not the data path and are left out.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import falcon.asgi

from appliance.forwarding.asgi import GatewayRequest
from appliance.forwarding.proxy import ForwardedResponse
from appliance.metrics.datapath import GatewayMetrics
from appliance.txlog.record import trace_id_from_traceparent

_FSC_ERROR_CODE = "Fsc-Error-Code"
LOG_SWITCH_ENV = "SLUIS_REQUEST_LOG"
requests_log = logging.getLogger("sluis.requests")


# The start every request line has (the keys in this order, compact JSON): how a reader of a
# component's combined output tells the request lines from its diagnostic log.
_REQUEST_LINE_START = re.compile(r'\{"ts":"[^"]*","gateway":"(?:inway|outway)",')


def is_request_line(line: str) -> bool:
    return _REQUEST_LINE_START.match(line) is not None


def request_log_enabled() -> bool:
    return os.environ.get(LOG_SWITCH_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


class _Stdout(logging.Handler):
    """Each line written and flushed to the current ``sys.stdout`` (a pipe to journald:
    block-buffered, the lines would come in bursts)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(record.getMessage() + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def _stdout_lines() -> logging.Logger:
    """``sluis.requests`` as bare lines on stdout (gunicorn's own log is on stderr)."""
    if not requests_log.handlers:
        handler = _Stdout()
        requests_log.addHandler(handler)
        requests_log.setLevel(logging.INFO)
        requests_log.propagate = False
    return requests_log


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def routed(req: falcon.asgi.Request, *, peer: str, service: str | None = None) -> None:
    """The sink's part: which peer and Service the request is for (as far as known)."""
    context = req.context
    context.peer_id = peer
    if service is not None:
        context.service = service


def upstream(req: falcon.asgi.Request, answer: ForwardedResponse) -> ForwardedResponse:
    """The sink's part: how long the next hop took to answer (``answer`` is returned)."""
    req.context.upstream_seconds = answer.waited
    return answer


class _Counted:
    """The answer's body stream, counted; ``done`` gets the byte count once it is closed
    (Falcon closes a stream that has ``close``, also when the client went away)."""

    __slots__ = ("_closed", "_done", "_inner", "_sent")

    def __init__(self, inner: Any, done: Callable[[int], None]) -> None:
        self._inner = inner
        self._done = done
        self._sent = 0
        self._closed = False

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await self._inner.__anext__()
        self._sent += len(chunk)
        return chunk

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()  # at once: the relay's connection and share slot go back
        finally:
            self._done(self._sent)


class ObserveMiddleware:
    def __init__(self, gateway: str, *, metrics: bool = True, lines: bool = True) -> None:
        self._gateway = gateway
        self._metrics = GatewayMetrics(gateway) if metrics else None
        self._log = _stdout_lines() if lines else None

    async def process_request(self, req: GatewayRequest, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: GatewayRequest, resp: falcon.asgi.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if resp.complete:
            return
        context = req.context
        metrics, lines = self._metrics, self._log
        started: float = context.started
        service: str | None = getattr(context, "service", None)
        peer: str | None = getattr(context, "peer_id", None)
        waited: float | None = getattr(context, "upstream_seconds", None)
        status = resp.status_code
        code = resp.get_header(_FSC_ERROR_CODE)
        received = req.body_progress.received
        traceparent = req.get_header("traceparent")
        gateway = self._gateway

        def done(sent: int) -> None:
            duration = time.perf_counter() - started
            if metrics is not None:
                metrics.record(
                    service=service,
                    peer=peer,
                    status=status,
                    code=code,
                    duration=duration,
                    upstream=waited,
                    received=received,
                    sent=sent,
                )
            if lines is not None:
                line = {
                    "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "gateway": gateway,
                    "transaction_id": getattr(context, "transaction_id", None),
                    "service": service,
                    "peer": peer,
                    "status": status,
                    "fsc_error_code": code,
                    "duration_ms": _ms(duration),
                    "upstream_ms": _ms(waited),
                    "bytes_in": received,
                    "bytes_out": sent,
                    "trace_id": trace_id_from_traceparent(traceparent),
                }
                lines.info(json.dumps(line, separators=(",", ":")))

        stream = resp.stream
        if stream is not None:
            resp.stream = _Counted(stream, done)
        else:
            data = resp.data
            done(len(data) if data else 0)
