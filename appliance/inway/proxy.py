"""The inway's next hop: a Service's backend.

The pool, the timeouts and the streaming are the gateways' shared
:class:`~appliance.forwarding.proxy.Forwarder`; the inway adds its answer-header policy (a
service's ``Fsc-*`` headers renamed, :mod:`appliance.forwarding.headers`) and its error for a
backend that is down, silent, or that stops taking the request body:
``ERROR_CODE_SERVICE_UNREACHABLE`` (502), and for a service whose share of the pool is full:
``ERROR_CODE_SERVICE_BUSY`` (503).
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.forwarding.headers import Headers, RawHeaders, service_answer_headers
from appliance.forwarding.proxy import BackendStalled as BackendStalled  # where tests find it
from appliance.forwarding.proxy import ForwardedResponse, Forwarder
from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.statelog import FailureStates

log = logging.getLogger("sluis.inway")
# Per worker and service: a backend that is down refuses every request for it; logged as a
# state with counts (appliance.statelog), not a line per request.
_UNREACHABLE = FailureStates(log, "service {} unreachable", "requests refused")


class InwayForwarder(Forwarder):
    def answer_headers(self, raw: RawHeaders) -> Headers:
        return service_answer_headers(raw)

    async def send(self, origin: str, **kwargs: Any) -> ForwardedResponse:
        answer = await super().send(origin, **kwargs)
        _UNREACHABLE.recovered(kwargs["name"])
        return answer

    def unreachable(self, name: str, origin: str, reason: str) -> Exception:
        _UNREACHABLE.failed(name, f"at {origin}: {reason}")
        return InwayError(
            InwayErrorCode.SERVICE_UNREACHABLE,
            f"the inway cannot reach the service {name!r}: {reason}",
        )

    def busy(self, name: str, limit: int) -> Exception:
        return InwayError(
            InwayErrorCode.SERVICE_BUSY,
            f"the service {name!r} has {limit} requests in progress at this inway, as many as "
            "it may have; try again later",
        )
